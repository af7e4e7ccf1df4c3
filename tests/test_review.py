"""review/: the verdict store (SQLite, two writers, import / export with unknown files and labels listed), the queues
(filters, top / stratified / random, progress), and the web app's routes on a real server (files outside PRED's
predictions refused, a moved recording said, a port in use)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import serve_review, tiny_model, write_audio

from birdsed.errors import ReviewError
from birdsed.review.queue import QueueSpec, band_of, progress, select
from birdsed.review.verdicts import (
    VERDICT_COLUMNS,
    Verdict,
    VerdictStore,
    check_known,
    load_verdicts,
    read_verdict_table,
)

CLASSES = ["amecro", "woothr", "Turdus merula"]


def run_cli(*argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birdsed", *map(str, argv)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def pred(tmp_path_factory) -> Path:
    """A tiny predict folder: 3 recordings of 12 s, an untrained model of 3 classes, every row a detection."""
    root = tmp_path_factory.mktemp("review")
    model = tiny_model(root / "model", CLASSES)
    for i, f in enumerate([700, 2500, 5000]):
        write_audio(root / "audio" / f"rec{i}.wav", seconds=12, rate=16000, freq_hz=f)
    res = run_cli("predict", "--model", model, root / "audio", "--out", root / "pred", "--threshold", "0")
    assert res.returncode == 0, res.stderr
    return root / "pred"


# --- the verdict store ---------------------------------------------------------------------------------------------


def test_verdicts_are_kept_replaced_per_reviewer_and_undone(tmp_path):
    with VerdictStore(tmp_path / "v.sqlite") as store:
        store.put([Verdict("a.wav", 0, 5, "amecro", "yes"), Verdict("a.wav", 5, 10, "amecro", "no", reviewer="x")])
        store.put([Verdict("a.wav", 0, 5, "amecro", "unsure")])  # the same clip, the same reviewer: replaced
        store.put([Verdict("a.wav", 0, 5, "amecro", "no", reviewer="y")])  # another reviewer: kept beside
        table = store.table()
        assert list(table.columns[: len(VERDICT_COLUMNS)]) == list(VERDICT_COLUMNS)
        assert sorted(table["verdict"]) == ["no", "no", "unsure"]
        assert all(table["time"].str.endswith("+00:00"))
        assert store.remove("a.wav", 0, 5, "amecro", "y") and not store.remove("a.wav", 0, 5, "amecro", "y")
        assert len(store.table()) == 2
    with VerdictStore(tmp_path / "v.sqlite") as store:  # reopened: nothing lost
        assert len(store.table()) == 2
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "bad, message",
    [
        (Verdict("a.wav", 0, 5, "amecro", "maybe"), "must be one of"),
        (Verdict("a.wav", 5, 5, "amecro", "yes"), "not a clip"),
        (Verdict("a.wav", 0, 5, "amecro", "yes", score=1.5), "must be in [0, 1]"),
    ],
)
def test_a_bad_verdict_is_refused_naming_it(tmp_path, bad, message):
    with VerdictStore(tmp_path / "v.sqlite") as store, pytest.raises(ReviewError, match=message.replace("[", r"\[")):
        store.put([Verdict("a.wav", 0, 5, "amecro", "yes"), bad])
    with VerdictStore(tmp_path / "v.sqlite") as store:
        assert store.table().empty  # all or nothing


WRITER = """
import sys
from birdsed.review.verdicts import Verdict, VerdictStore
store = VerdictStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.put([Verdict("a.wav", 5.0 * i, 5.0 * i + 5, "amecro", "yes", reviewer=sys.argv[2])])
"""


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "review" / "verdicts.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who, "150"]) for who in ("tab1", "tab2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with VerdictStore(path) as store:
        table = store.table()
    assert len(table) == 300 and table.groupby("reviewer").size().to_dict() == {"tab1": 150, "tab2": 150}


def test_a_verdict_csv_is_read_checked_and_unknown_files_and_labels_are_listed(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "file,start_s,end_s,label,verdict,other_label\n"
        "a.wav,0,5,amecro,YES,\n"
        "a.wav,5,10,amecro,no,woothr\n"
        "gone.wav,0,5,amecro,yes,\n"
        "a.wav,0,5,dodo,no,\n"
        "a.wav,0,5,woothr,no,dodo\n"
    )
    table = read_verdict_table(path)
    assert list(table["verdict"][:2]) == ["yes", "no"] and table["score"].isna().all()
    good, bad = check_known(table, {"a.wav"}, CLASSES)
    assert len(good) == 2
    assert list(bad["reason"]) == [
        "file not in the predictions",
        "label not a class of the model",
        "other_label not a class of the model",
    ]
    # with the recordings' lengths: a verdict starting past its recording's end (a clip of nothing, exported)
    good, bad = check_known(table.iloc[:2], {"a.wav"}, CLASSES, {"a.wav": 5.0})
    assert len(good) == 1 and list(bad["reason"]) == ["starts at or past the recording's end (5 s)"]
    assert len(check_known(table.iloc[:2], {"a.wav"}, CLASSES, {"a.wav": 7.87})[0]) == 2  # 5-10 s: ends past it
    path.write_text("file,start_s,end_s,label,verdict\na.wav,zero,5,amecro,yes\n")
    with pytest.raises(ReviewError, match=r"row 2: start_s 'zero' is not a number"):
        read_verdict_table(path)
    path.write_text("file,start,end,label\n")
    with pytest.raises(ReviewError, match=r"missing column\(s\) \['start_s', 'end_s', 'verdict'\]"):
        read_verdict_table(path)


def test_imported_files_are_matched_once_and_a_name_of_several_recordings_is_listed_as_such():
    """An AudioMoth name repeats across site folders: listed as matching several (was: "file not in the
    predictions", after one full index of the predictions per imported name: minutes for a large archive)."""
    from types import SimpleNamespace

    from birdsed.review.verdicts import predicted_files

    preds = SimpleNamespace(files={"/a/20240501_050000.WAV", "/b/20240501_050000.WAV", "/a/x.wav"})
    table = pd.DataFrame(
        {"file": ["x.wav", "20240501_050000.WAV", "/a/x.wav"], "start_s": 0.0, "end_s": 5.0, "label": "amecro"}
    )
    table = table.assign(verdict="yes", other_label="")
    table["file"], several = predicted_files(table["file"], preds)
    assert list(table["file"]) == ["/a/x.wav", "20240501_050000.WAV", "/a/x.wav"]
    good, bad = check_known(table, preds.files, CLASSES, None, several)
    assert len(good) == 2 and bad["reason"].iloc[0].startswith("file matches several recordings of the predictions")


def test_review_import_and_export_round_trip_and_list_what_was_not_added(pred, tmp_path):
    rec0 = str(pred.parent / "audio" / "rec0.wav")
    src = tmp_path / "raven.csv"
    src.write_text(
        f"file,start_s,end_s,label,verdict\n{rec0},0,5,amecro,yes\n{rec0},5,10,woothr,no\n"
        f"/elsewhere/x.wav,0,5,amecro,yes\n{rec0},0,5,dodo,no\n"
        "rec0.wav,5,10,amecro,yes\n/Volumes/card/rec0.wav,0,5,woothr,no\n"  # a name alone, Raven's Begin Path
    )
    pred_copy = tmp_path / "pred"
    subprocess.run(["cp", "-r", str(pred), str(pred_copy)], check=True)
    res = run_cli("review", pred_copy, "--import", src)
    assert res.returncode == 1, res.stderr
    assert "2 verdict(s) not added" in res.stderr and "/elsewhere/x.wav 0 s amecro: file not in the predictions" in (
        res.stderr
    )
    skipped = pd.read_csv(pred_copy / "review" / "import_skipped.csv")
    assert list(skipped["label"]) == ["amecro", "dodo"]
    res = run_cli("review", pred_copy, "--export", tmp_path / "out.csv")
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == [*VERDICT_COLUMNS, "score"]
    assert len(out) == 4 and out["score"].between(0, 1).all()  # scores filled in from the predictions
    assert set(out["file"]) == {rec0}  # as the predictions name it
    assert len(load_verdicts(pred_copy)) == 4


def test_a_folder_without_scores_is_refused(tmp_path):
    res = run_cli("review", tmp_path, "--no-browser")
    assert res.returncode == 2 and "no scores.parquet" in res.stderr and "Traceback" not in res.stderr


def test_a_damaged_scores_table_or_verdict_store_is_refused_naming_the_file(pred, tmp_path):
    copy = tmp_path / "pred"
    subprocess.run(["cp", "-r", str(pred), str(copy)], check=True)
    run = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**run, "classes": [*run["classes"], "dodo"]}))
    res = run_cli("review", copy, "--no-browser")
    assert res.returncode == 2 and "not a scores table of run.json's classes: no column(s) ['dodo']" in res.stderr
    (copy / "run.json").write_text(json.dumps(run))
    (copy / "scores.parquet").write_bytes(b"PAR1 not parquet")
    res = run_cli("review", copy, "--no-browser")
    assert res.returncode == 2 and "scores.parquet: not a readable scores table" in res.stderr
    store = copy / "review" / "verdicts.sqlite"
    store.parent.mkdir(exist_ok=True)
    store.write_bytes(b"not a database" * 100)
    for more in (["--export", tmp_path / "v.csv"], ["--export-labels", tmp_path / "data"]):
        res = run_cli("review", copy, *more)
        assert res.returncode == 2 and f"{store}: not a readable verdict store" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and not (tmp_path / "v.csv").exists() and not (tmp_path / "data").exists()


# --- queues --------------------------------------------------------------------------------------------------------


def clip_table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "file": [f"/d/{'a' if i % 2 else 'b'}/r{i % 7}.wav" for i in range(n)],
            "start_s": 5.0 * (np.arange(n) // 7),
            "end_s": 5.0 * (np.arange(n) // 7) + 5,
            "label": np.where(np.arange(n) % 3 == 0, "amecro", "woothr"),
            "score": rng.beta(0.5, 2.0, n),
        }
    )


def test_top_queue_is_by_score_filtered_and_without_what_was_verified():
    clips = clip_table()
    q = select(clips, QueueSpec(species="woothr", sample="top", n=10))
    assert (q["label"] == "woothr").all() and q["score"].is_monotonic_decreasing and len(q) == 10
    first = (q["file"][0], q["start_s"][0], q["label"][0])
    q2 = select(clips, QueueSpec(species="woothr", sample="top", n=10), done={first})
    assert (q2["file"][0], q2["start_s"][0]) == (q["file"][1], q["start_s"][1])
    assert select(clips, QueueSpec(folder="/d/a", n=500))["file"].str.startswith("/d/a/").all()
    assert set(select(clips, QueueSpec(recording="/d/b/r0.wav", n=500))["file"]) == {"/d/b/r0.wav"}
    band = select(clips, QueueSpec(band=(0.2, 0.5), n=500))["score"]
    assert band.between(0.2, 0.5).all() and len(band) == int(clips["score"].between(0.2, 0.5).sum())


def test_stratified_queue_draws_equally_from_each_score_band_and_random_is_seeded():
    clips = clip_table(2000).assign(score=np.random.default_rng(0).uniform(0, 1, 2000) ** 3)  # mostly low
    q = select(clips, QueueSpec(sample="stratified", n=100, seed=3))
    counts = np.bincount(band_of(q["score"].to_numpy()), minlength=10)
    assert counts.min() == counts.max() == 10  # the top scores would fill the queue from the highest band
    assert np.bincount(band_of(select(clips, QueueSpec(n=100))["score"].to_numpy()), minlength=10)[:5].sum() == 0
    r1, r2 = (select(clips, QueueSpec(sample="random", n=20, seed=s)) for s in (1, 1))
    assert r1.equals(r2) and not r1.equals(select(clips, QueueSpec(sample="random", n=20, seed=2)))
    with pytest.raises(ReviewError, match="sampling 'best'"):
        QueueSpec(sample="best")


def test_candidates_are_bounded_and_give_the_queue_the_whole_table_gives(pred):
    from birdsed.review.queue import Predictions

    preds = Predictions.open(pred)
    every = preds.clips()
    done = {tuple(k) for k in every[["file", "start_s", "label"]].head(4).itertuples(index=False)}
    for spec in (QueueSpec(n=5), QueueSpec(n=5, species="woothr", band=(0.3, 1.0)), QueueSpec(n=3, folder="/nowhere")):
        small = preds.candidates(spec, done)
        assert len(small) <= len(preds.classes) * (spec.n + 4)
        assert select(small, spec, done).equals(select(every, spec, done))
    strat = preds.candidates(QueueSpec(n=1, sample="stratified"))
    assert strat.groupby(["label", band_of(strat["score"].to_numpy())]).size().max() == 1
    # over every species, a species that never scores 0.1 is not drawn (its score-0 clips filled the lowest band)
    preds.scores[:, preds.class_index("woothr")] = 0.05
    strat = preds.candidates(QueueSpec(n=5, sample="stratified"))
    assert "woothr" not in set(strat["label"]) and len(strat)
    assert len(preds.candidates(QueueSpec(n=5, sample="stratified", species="woothr"))) == 5  # asked for by name


def test_progress_per_species():
    v = pd.DataFrame({"label": ["a", "a", "a", "b"], "verdict": ["yes", "no", "unsure", "unsure"]})
    p = progress(v, ["b", "a"]).set_index("label")
    assert list(p.index) == ["b", "a"]
    assert p.loc["a", "verified"] == 3 and p.loc["a", "yes_share"] == 0.5 and np.isnan(p.loc["b", "yes_share"])


# --- the web app on a real server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(pred, tmp_path):
    """The review app of a copy of `pred` served by uvicorn in a thread; yields (base url, the copy)."""
    uvicorn = pytest.importorskip("uvicorn", reason="the review extra (starlette, uvicorn) is not installed")

    from birdsed.review.app import build_app

    copy = tmp_path / "pred"
    subprocess.run(["cp", "-r", str(pred), str(copy)], check=True)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(copy), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:  # a port taken meanwhile: uvicorn's thread ends, the test fails instead of hanging
        assert thread.is_alive() and time.time() < deadline, f"the review server did not start on port {port}"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", copy
    srv.should_exit = True
    thread.join(10)


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, object]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_serves_only_the_recordings_of_the_predictions(server, tmp_path):
    base, copy = server
    secret = tmp_path / "secret.wav"
    write_audio(secret, seconds=12)
    for file in (str(secret), "/etc/passwd", str(copy.parent / "audio" / ".." / "audio" / "rec0.wav")):
        q = urllib.parse.urlencode({"file": file, "start_s": 0, "end_s": 5})
        for route in ("audio", "spectrogram"):
            status, body, _ = get(f"{base}/api/{route}?{q}")
            assert status == 403 and b"not a recording of" in body
    status, body = post(
        f"{base}/api/verdict", {"file": str(secret), "start_s": 0, "end_s": 5, "label": "amecro", "verdict": "yes"}
    )
    assert status == 403 and not load_verdicts(copy / "review" / "verdicts.sqlite").shape[0]


def test_other_sites_cannot_write_verdicts_or_reach_the_server_by_another_name(server):
    """Any web page open in the browser could POST text/plain here (no preflight) and add or undo verdicts, which
    calibrate and --export-labels then read; a page elsewhere could reach the server through DNS rebinding (any
    Host header was answered). Found by a hostile try as a BirdNET user."""
    base, copy = server
    card = json.loads(get(f"{base}/api/queue?species=woothr&n=1")[1])["cards"][0]
    body = json.dumps({**{k: card[k] for k in ("file", "start_s", "end_s", "label")}, "verdict": "no"}).encode()
    for headers, code in (
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
    ):
        for route in ("verdict", "undo"):
            req = urllib.request.Request(f"{base}/api/{route}", body, headers)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == code, (headers, route)
    assert not load_verdicts(copy / "review" / "verdicts.sqlite").shape[0]
    status, _, _ = get(f"{base}/api/state", {"Host": "evil.example"})
    assert status == 400
    assert get(f"{base}/api/state", {"Host": base.split("//")[1].replace("127.0.0.1", "localhost")})[0] == 200
    origin = {"Content-Type": "application/json", "Origin": base}
    req = urllib.request.Request(f"{base}/api/verdict", body, origin)
    with urllib.request.urlopen(req, timeout=30) as r:  # the page itself
        assert r.status == 200


def test_a_card_is_addressed_by_its_recording_row_and_species_as_the_report_links_it(server):
    from birdsed.review.links import card_url

    base, _ = server
    rec = json.loads(get(f"{base}/api/queue?species=amecro&n=1")[1])["cards"][0]["file"]
    url = card_url("woothr", rec, 5.0, base + "/")
    status, page, _ = get(url)
    assert status == 200 and b"openLinked" in page  # the page opens the card its own address names
    status, body, _ = get(url.replace("/?", "/api/card?"))
    card = json.loads(body)["card"]
    assert status == 200 and (card["file"], card["start_s"], card["end_s"], card["label"]) == (rec, 5.0, 10.0, "woothr")
    assert card["common"] == "Wood Thrush" and card["score"] >= 0 and card["problem"] == ""
    for bad, code in ((card_url("woothr", rec, 7.0, base + "/"), 404), (card_url("nope", rec, 5.0, base + "/"), 404)):
        status, body, _ = get(bad.replace("/?", "/api/card?"))
        assert status == code and b"no row of" in body
    status, _, _ = get(card_url("woothr", "/etc/passwd", 5.0, base + "/").replace("/?", "/api/card?"))
    assert status == 403
    # the recording filter takes the name a card shows (was: only the full path, else silently no clip)
    for name in (Path(rec).name, Path(rec).stem, rec):
        cards = json.loads(get(f"{base}/api/queue?recording={urllib.parse.quote(name)}&n=100")[1])["cards"]
        assert cards and {c["file"] for c in cards} == {rec}, name
    status, body, _ = get(f"{base}/api/queue?recording=nothing.wav")
    assert status == 400 and b"'nothing.wav' is not one of the predictions' recordings" in body


def test_a_card_plays_seeks_and_its_verdicts_are_committed_at_once(server):
    base, copy = server
    status, body, _ = get(f"{base}/api/queue?species=woothr&n=3")
    card = json.loads(body)["cards"][0]
    assert status == 200 and card["common"] == "Wood Thrush" and card["problem"] == ""
    q = urllib.parse.urlencode({"file": card["file"], "start_s": card["start_s"], "end_s": card["end_s"]})
    status, wav, headers = get(f"{base}/api/audio?{q}")
    assert status == 200 and wav[:4] == b"RIFF" and headers["Accept-Ranges"] == "bytes"
    status, part, headers = get(f"{base}/api/audio?{q}", {"Range": "bytes=100-199"})
    assert status == 206 and part == wav[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(wav)}"
    status, png, _ = get(f"{base}/api/spectrogram?{q}")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    clip = {k: card[k] for k in ("file", "start_s", "end_s", "label")}
    assert post(f"{base}/api/verdict", {**clip, "verdict": "no", "other_label": "amecro"})[0] == 200
    table = load_verdicts(copy)  # on disk as soon as the answer came
    assert list(table[["verdict", "other_label"]].iloc[0]) == ["no", "amecro"] and table["score"][0] == card["score"]
    status, body, _ = get(f"{base}/api/queue?species=woothr&n=3")
    assert card["file"] not in {(c["file"], c["start_s"]) for c in json.loads(body)["cards"]}
    assert post(f"{base}/api/verdict", {**clip, "verdict": "yes", "other_label": "dodo"})[0] == 400
    assert post(f"{base}/api/undo", clip) == (200, {"removed": True})
    assert load_verdicts(copy).empty


@pytest.fixture
def moved(pred, tmp_path) -> Path:
    """A copy of `pred` whose scores name one recording that is not there (moved after predict)."""
    copy = tmp_path / "moved"
    subprocess.run(["cp", "-r", str(pred), str(copy)], check=True)
    scores = pd.read_parquet(copy / "scores.parquet")
    scores["file"] = scores["file"].str.replace("rec1.wav", "rec1-moved.wav")
    scores.to_parquet(copy / "scores.parquet")
    return copy


def test_a_moved_recording_is_said_on_its_card_and_the_queue_goes_on(moved):
    from birdsed.review.app import build_app

    review = build_app(moved).state.review
    said = {Path(f).name: review.problem(f) for f in review.preds.files}
    assert said["rec0.wav"] == said["rec2.wav"] == "" and said["rec1-moved.wav"].endswith(
        "rec1-moved.wav: file not found"
    )


def test_a_port_in_use_is_one_clear_error(pred):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_cli("review", pred, "--no-browser", "--port", port, timeout=120)
    assert res.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("sig, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_stop_the_server_with_every_verbs_exit_status(pred, sig, status):
    """Was: Ctrl-C exited 0 (uvicorn hands the signal back to asyncio's handler, which let it go when the server
    had already stopped); the README says 130 for every verb stopped by Ctrl-C."""
    import signal

    proc, base = serve_review(pred)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    said = " ".join(err.decode().split())
    assert proc.returncode == status and f"stopped by {sig}. Every verdict given is saved." in said, said


def test_kill_9_of_the_server_loses_no_verdict_and_a_restart_goes_on(pred, tmp_path):
    import signal

    copy = tmp_path / "pred"
    subprocess.run(["cp", "-r", str(pred), str(copy)], check=True)

    proc, base = serve_review(copy)
    cards = json.loads(get(f"{base}/api/queue?n=5")[1])["cards"]
    for card, verdict in zip(cards, ["yes", "no", "unsure", "yes", "no"]):
        clip = {k: card[k] for k in ("file", "start_s", "end_s", "label")}
        assert post(f"{base}/api/verdict", {**clip, "verdict": verdict})[0] == 200
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc, base = serve_review(copy)
    try:
        state = json.loads(get(f"{base}/api/state")[1])
        assert len(state["verdicts"]) == 5
        left = json.loads(get(f"{base}/api/queue?n=100")[1])["cards"]
        assert len(left) == 27 - 5 and not {(c["file"], c["start_s"], c["label"]) for c in left} & {
            (c["file"], c["start_s"], c["label"]) for c in cards
        }
    finally:
        proc.terminate()
        proc.wait(30)


def test_served_on_every_address_the_page_still_answers_only_this_machines_names():
    """--host 0.0.0.0 answered any Host ("*"): a page elsewhere could read and write verdicts through DNS
    rebinding."""
    import socket

    from birdsed.review.app import allowed_hosts

    hosts = allowed_hosts("0.0.0.0")
    assert "*" not in hosts and "evil.example" not in hosts
    assert {"127.0.0.1", "localhost", socket.gethostname()} <= set(hosts)
    assert allowed_hosts("192.168.1.5")[-1] == "192.168.1.5" and "[fe80::1]" in allowed_hosts("fe80::1")
