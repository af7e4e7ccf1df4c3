"""birdsed learn (search/learn.py, classifier.py, propose.py): rounds on an in-memory DB and on a DB `embed` wrote,
the selections bounded and block-invariant, the review page's queue, the whole loop with BirdNET (embed, verdicts,
learn, predict with the learnt model), and bad input (verdicts on windows not in the DB, a learn folder of another
DB's embeddings, verdicts with nothing to learn from)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_audio

from birdsed.review.queue import Predictions, QueueSpec, select
from birdsed.review.verdicts import Verdict, VerdictStore, store_path
from birdsed.search.classifier import TrainingSet, fit, score
from birdsed.search.learn import ArrayDB, Embedder, LearnSpec, learn_round
from birdsed.search.propose import Candidates, k_center

DIM = 16


def fake_db(n_files: int = 20, per_file: int = 20, seed: int = 0) -> tuple[ArrayDB, np.ndarray]:
    """n_files recordings of per_file 3 s windows; each window of class 0, 1 or 2 (a cluster of the embedding
    space). Returns the DB and each window's class."""
    rng = np.random.default_rng(seed)
    n = n_files * per_file
    cls = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, DIM)) * 3
    x = (centers[cls] + rng.normal(size=(n, DIM))).astype(np.float32)
    starts = np.tile(np.arange(per_file) * 3.0, n_files)
    files = np.repeat([f"rec{i:02d}.wav" for i in range(n_files)], per_file)
    windows = pd.DataFrame({"file": files, "start_s": starts, "end_s": starts + 3.0})
    return ArrayDB(windows, x, Embedder("fake", "0" * 64, 3.0, 3.0, DIM)), cls


def verdicts_on(db: ArrayDB, truth: np.ndarray, ids, label: str = "a", of: int = 0, time: str = "") -> pd.DataFrame:
    """A verdict table: each window of ids, yes when its class is `of`."""
    w = db.windows.iloc[list(ids)]
    return pd.DataFrame(
        {
            "file": w["file"].to_numpy(),
            "start_s": w["start_s"].to_numpy(),
            "end_s": w["end_s"].to_numpy(),
            "label": label,
            "verdict": ["yes" if truth[i] == of else "no" for i in ids],
            "other_label": "",
            "reviewer": "",
            "time": time,
        }
    )


def test_a_round_scores_every_window_and_proposes_unreviewed_clips(tmp_path):
    db, truth = fake_db()
    seed_ids = [int(np.flatnonzero(truth == 0)[0]), int(np.flatnonzero(truth == 1)[0])]
    r = learn_round(db, [verdicts_on(db, truth, seed_ids)], tmp_path / "m", LearnSpec(n=8, background=100))
    assert r.round == 1 and r.classes == ["a"] and not r.up_to_date
    assert r.counts.to_dict("records") == [{"label": "a", "yes": 1, "no": 1, "windows": 2}]
    scores = pd.read_parquet(tmp_path / "m" / "scores.parquet")
    assert len(scores) == len(db.windows) and set(scores["output"]) == {"clipwise"}
    # the classifier separates class 0 from the rest with one yes and one no (and background negatives)
    from birdsed.evaluate.metrics import average_precision

    assert average_precision(scores[["a"]].to_numpy(), (truth == 0)[:, None])[0] > 0.9
    assert len(r.queue) == 8 and list(r.queue.columns) == ["file", "start_s", "end_s", "label", "score"]
    reviewed = set(zip(db.windows["file"].iloc[seed_ids], db.windows["start_s"].iloc[seed_ids]))
    assert not reviewed & set(zip(r.queue["file"], r.queue["start_s"]))
    assert r.model_dir is None and "BirdNET V2.4" in r.notes[0]  # a fake embedder: no model predict could run
    state = json.loads((tmp_path / "m" / "learn.json").read_text())
    assert state["rounds"][0]["round"] == 1 and state["spec"]["n"] == 8
    assert (tmp_path / "m" / "rounds" / "001" / "queue.csv").is_file()
    # the folder opens in the review page: its queue first, in order
    preds = Predictions.open(tmp_path / "m")
    spec = QueueSpec(sample="queue", n=50)
    queued = select(preds.candidates(spec), spec)
    assert list(zip(queued["file"], queued["start_s"])) == list(zip(r.queue["file"], r.queue["start_s"]))


def test_the_next_round_reads_the_review_store_and_keeps_the_options(tmp_path):
    db, truth = fake_db()
    seed_ids = [int(np.flatnonzero(truth == 0)[0]), int(np.flatnonzero(truth == 2)[0])]
    seed = tmp_path / "seed.csv"
    verdicts_on(db, truth, seed_ids, time="2026-01-01T00:00:00").to_csv(seed, index=False)
    out = tmp_path / "m"
    first = learn_round(db, [seed], out, LearnSpec(n=5, select="top", background=50))
    # the reviewer answers the queue on the review page (OUT/review/verdicts.sqlite)
    ids = [int(np.flatnonzero((db.windows["file"] == f) & (db.windows["start_s"] == s))[0])
           for f, s in zip(first.queue["file"], first.queue["start_s"])]  # fmt: skip
    with VerdictStore(store_path(out)) as store:
        store.put(Verdict(**{**r, "score": None}) for r in verdicts_on(db, truth, ids).to_dict("records"))
    second = learn_round(db, [], out)  # no new table: the seed is remembered, the store read
    assert second.round == 2 and int(second.counts["windows"].iloc[0]) == 2 + 5
    assert json.loads((out / "learn.json").read_text())["spec"]["select"] == "top"
    assert not set(zip(second.queue["file"], second.queue["start_s"])) & set(
        zip(first.queue["file"], first.queue["start_s"])
    )
    again = learn_round(db, [], out)
    assert again.up_to_date and again.round == 2


def test_a_later_verdict_on_a_window_wins_and_other_label_is_a_positive(tmp_path):
    from birdsed.search.learn import labelled_windows

    db, truth = fake_db(n_files=2, per_file=4)
    v = verdicts_on(db, truth, [0, 0, 1], time="")
    v["verdict"] = ["yes", "no", "no"]
    v["time"] = ["2026-01-02", "2026-01-01", "2026-01-01"]  # the yes on window 0 is the later
    v.loc[2, "other_label"] = "b"
    labelled, unmatched = labelled_windows(db.windows, v, 0.5)
    got = sorted(map(tuple, labelled[["window", "label", "target"]].to_numpy().tolist()))
    assert got == [(0, "a", 1), (1, "a", 0), (1, "b", 1)] and unmatched.empty


def test_a_five_second_verdict_matches_the_windows_it_overlaps_by_half(tmp_path):
    from birdsed.search.learn import match_windows

    windows = pd.DataFrame({"file": ["r.wav"] * 4, "start_s": [0.0, 3.0, 6.0, 9.0], "end_s": [3.0, 6.0, 9.0, 12.0]})
    clips = pd.DataFrame({"file": ["r.wav", "r.wav", "x.wav"], "start_s": [2.5, 11.8, 0.0], "end_s": [7.5, 14.0, 5.0]})
    matched, reasons = match_windows(windows, clips, 0.5)
    assert list(matched["window"]) == [1, 2]
    assert list(reasons) == ["", "no DB window of the file overlaps 11.8-14 s by 50%", "file not in the DB"]


@pytest.mark.parametrize("how", ["top", "uncertain", "random"])
def test_the_selection_is_the_same_whatever_the_blocks(how):
    rng = np.random.default_rng(1)
    ids, probs = np.arange(1000), rng.random((1000, 3)).astype(np.float32)
    seen = rng.random((1000, 3)) < 0.1
    whole = Candidates(3, 7, how, seed=3)
    whole.add(ids, probs, seen)
    parts = Candidates(3, 7, how, seed=3)
    for i in range(0, 1000, 64):
        parts.add(ids[i : i + 64], probs[i : i + 64], seen[i : i + 64])
        assert all(len(x) <= 7 for x in parts.ids)  # bounded by the number asked for, never the archive
    for k in range(3):
        assert list(whole.of(k)[0]) == list(parts.of(k)[0])
        assert not seen[whole.of(k)[0], k].any()
    if how == "top":
        assert list(whole.of(0)[0]) == list(np.argsort(-probs[~seen[:, 0], 0])[:0]) or np.allclose(
            np.sort(whole.of(0)[1])[::-1], np.sort(probs[~seen[:, 0], 0])[::-1][:7]
        )


def test_k_center_spreads_the_choice():
    x = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.98, 0.05], [-1, 0]], np.float32)
    assert list(k_center(x, 3)) == [0, 4, 2]


@pytest.mark.parametrize("classifier", ["linear", "head"])
def test_both_classifiers_learn_each_class_from_its_own_verdicts(classifier):
    db, truth = fake_db(seed=2)
    x = db.data
    y = np.stack([truth == 0, truth == 1], axis=1).astype(np.float32)
    w = np.zeros_like(y)
    w[:100, 0] = 1  # class 0 has verdicts on the first 100 windows, class 1 on the next 100
    w[100:200, 1] = 1
    head = fit(TrainingSet(x, y, w), classifier)
    p = score(head, x[200:])
    for k in range(2):
        pos, neg = p[y[200:, k] > 0, k], p[y[200:, k] == 0, k]
        assert pos.mean() > 0.7 > 0.3 > neg.mean()


def test_a_linear_head_is_a_model_directory_of_its_own_kind(tmp_path):
    import torch

    from birdsed.model.linearhead import LinearHead, save_linear_dir
    from birdsed.model.modeldir import load_model_dir

    head = LinearHead(2)
    with torch.no_grad():
        head.weight.normal_()
    save_linear_dir(["a", "b"], head, tmp_path / "m", hop_s=1.5)
    model, _, meta = load_model_dir(tmp_path / "m")
    assert meta["kind"] == "birdnet_linear" and model.hop_s == 1.5 and model.window_s == 3.0 and model.n_sub == 1
    emb = torch.randn(4, 1, 1024)
    out = model.head(emb)
    assert out["clipwise"].shape == (4, 2) and out["segmentwise"].shape == out["norm_att"].shape == (4, 2, 1)
    assert torch.allclose(out["clipwise"], torch.sigmoid(emb[:, 0] @ head.weight.T + head.bias))


# ---- the CLI on a DB `birdsed embed` wrote


@pytest.fixture(scope="module")
def sed_db(model_dir, tmp_path_factory):
    """A DB of three tones embedded by the tiny SED model (5 s windows every 2.5 s): (audio folder, DB)."""
    pytest.importorskip("usearch", reason="the embedding DB needs usearch: pip install 'birdsed[search]'")
    from birdsed.search.embed import run_embed

    root = tmp_path_factory.mktemp("sed_db")
    for i in range(3):
        write_audio(root / "a" / f"r{i}.wav", seconds=10.0, rate=22050, freq_hz=400 + 900 * i)
    run_embed(model_dir, [str(root / "a")], root / "db", workers=0, quiet=True)
    return root / "a", root / "db"


def write_verdicts(path, rows) -> None:
    cols = ["file", "start_s", "end_s", "label", "verdict"]
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)


def test_verdicts_on_windows_not_in_the_db_are_listed(sed_db, tmp_path, capsys):
    audio, db = sed_db
    v = tmp_path / "v.csv"
    rows = [("r0.wav", 0.0, 5.0, "yes"), ("r1.wav", 0.0, 5.0, "no"), ("gone.wav", 0.0, 5.0, "yes"),
            ("r2.wav", 60.0, 65.0, "no")]  # fmt: skip
    write_verdicts(v, [(str(audio / f), s, e, "a", verdict) for f, s, e, verdict in rows])
    rc, out = run_cli(capsys, "learn", db, "--verdicts", v, "--out", tmp_path / "m", "--n", 2)
    assert rc == 1 and "2 verdict(s) match no DB window" in out and "round 1" in out
    listed = pd.read_csv(tmp_path / "m" / "unmatched.csv")
    assert list(listed["reason"]) == ["file not in the DB", "no DB window of the file overlaps 60-65 s by 50%"]
    assert "no model directory" in out  # an SED model's embeddings: predict runs learnt BirdNET-embedding models only
    assert len(pd.read_csv(tmp_path / "m" / "queue.csv")) == 2


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("r0.wav", 0.0, 5.0, "a", "unsure")], "none of 1 verdict(s) matches a window"),
        ([("gone.wav", 0.0, 5.0, "a", "yes")], "none of 1 verdict(s) matches a window"),
    ],
)
def test_verdicts_with_nothing_to_learn_from_are_refused(sed_db, tmp_path, capsys, rows, message):
    audio, db = sed_db
    write_verdicts(tmp_path / "v.csv", [(str(audio / f), *rest) for f, *rest in rows])
    rc, out = run_cli(capsys, "learn", db, "--verdicts", tmp_path / "v.csv", "--out", tmp_path / "m")
    assert rc == 2 and message in out and "Traceback" not in out
    assert not (tmp_path / "m" / "learn.json").exists()


def test_a_class_with_only_yes_and_no_background_is_refused_naming_it(sed_db, tmp_path, capsys):
    audio, db = sed_db
    write_verdicts(tmp_path / "v.csv", [(str(audio / "r0.wav"), 0.0, 5.0, "owl", "yes")])
    rc, out = run_cli(capsys, "learn", db, "--verdicts", tmp_path / "v.csv", "--out", tmp_path / "m",
                      "--background", 0)  # fmt: skip
    assert rc == 2 and "owl (no no)" in out


def test_a_learn_folder_of_another_dbs_embeddings_is_refused(sed_db, tmp_path, capsys):
    audio, db = sed_db
    out = tmp_path / "m"
    fake, truth = fake_db()
    learn_round(fake, [verdicts_on(fake, truth, [0, 1, 2, 3])], out, LearnSpec(n=2, background=10))
    write_verdicts(tmp_path / "v.csv", [(str(audio / "r0.wav"), 0.0, 5.0, "a", "yes")])
    rc, msg = run_cli(capsys, "learn", db, "--verdicts", tmp_path / "v.csv", "--out", out)
    assert rc == 2 and "learnt on a DB of fake embeddings" in msg and "use another --out" in msg


@pytest.mark.parametrize("argv, message", [(["--n", "0"], "--n: 0: must be >= 1"),
                                           (["--min-overlap", "0"], "--min-overlap: 0: must be > 0")])  # fmt: skip
def test_learn_options_out_of_range_are_refused(tmp_path, capsys, argv, message):
    from test_hostile_values import refused

    assert message in refused(capsys, ["learn", str(tmp_path / "db"), "--out", str(tmp_path / "m"), *argv])


def test_a_round_killed_while_it_swapped_models_is_redone_whole(tmp_path):
    db, truth = fake_db()
    out = tmp_path / "m"
    learn_round(db, [verdicts_on(db, truth, [0, 1, 2, 3])], out, LearnSpec(n=2, background=10))
    (out / "model.new").mkdir()  # what a kill between two renames leaves
    (out / "learn.json").unlink()  # ... before the state was written
    r = learn_round(db, [verdicts_on(db, truth, [0, 1, 2, 3])], out, LearnSpec(n=2, background=10))
    assert r.round == 1 and not (out / "model.new").exists()


# ---- the whole loop with BirdNET


def test_the_whole_loop_embed_search_verdicts_learn_predict(tmp_path, capsys):
    """embed (BirdNET), search by an example, verdicts on the results, learn, and predict new recordings with the
    learnt model: the tone it was taught scores above the other."""
    pytest.importorskip("ai_edge_litert", reason="BirdNET needs LiteRT: pip install 'birdsed[birdnet]'")
    pytest.importorskip("usearch", reason="the embedding DB needs usearch")
    from conftest import birdnet_meta

    model = tmp_path / "birdnet"
    model.mkdir()
    (model / "model.json").write_text(json.dumps(birdnet_meta(hop_s=3.0)))
    audio = tmp_path / "a"
    for i, f in enumerate((700, 3000, 700, 3000)):
        write_audio(audio / f"r{i}.wav", seconds=9.0, rate=48000, freq_hz=f)
    assert (
        run_cli(capsys, "embed", "--model", model, audio, "--out", tmp_path / "db", "--workers", 0, "--quiet")[0] == 0
    )
    rc, _ = run_cli(capsys, "search", tmp_path / "db", "--query-window", f"{audio / 'r0.wav'}:0", "--k", 6,
                    "--out", tmp_path / "found", "--label", "low")  # fmt: skip
    assert rc == 0
    found = pd.read_csv(tmp_path / "found" / "results.csv")
    rows = [(f, s, e, "low", "yes" if f.endswith(("r0.wav", "r2.wav")) else "no")
            for f, s, e in zip(found["file"], found["start_s"], found["end_s"])]  # fmt: skip
    rows.append((str(audio / "r1.wav"), 0.0, 3.0, "low", "no"))
    write_verdicts(tmp_path / "v.csv", rows)
    rc, out = run_cli(capsys, "learn", tmp_path / "db", "--verdicts", tmp_path / "v.csv", "--out", tmp_path / "m")
    assert rc == 0 and (tmp_path / "m" / "model" / "model.json").is_file(), out
    new = tmp_path / "new"
    write_audio(new / "low.wav", seconds=6.0, rate=32000, freq_hz=700)
    write_audio(new / "high.wav", seconds=6.0, rate=32000, freq_hz=3000)
    rc, _ = run_cli(capsys, "predict", "--model", tmp_path / "m" / "model", new, "--out", tmp_path / "p",
                    "--workers", 0)  # fmt: skip
    assert rc == 0
    s = pd.read_parquet(tmp_path / "p" / "scores.parquet")
    s = s[s["output"] == "clipwise"]
    low, high = (s[s["file"].str.endswith(n)]["low"].max() for n in ("low.wav", "high.wav"))
    assert low > 0.5 > high
    shutil.rmtree(tmp_path / "db")


def test_the_proposed_sampling_needs_a_queue(tmp_path):
    from birdsed.errors import ReviewError

    db, truth = fake_db()
    learn_round(db, [verdicts_on(db, truth, [0, 1, 2, 3])], tmp_path / "m", LearnSpec(n=2, background=10))
    (tmp_path / "m" / "queue.csv").unlink()
    with pytest.raises(ReviewError, match="no queue.csv"):
        Predictions.open(tmp_path / "m").candidates(QueueSpec(sample="queue"))


def write_db(folder, windows: pd.DataFrame, vectors: np.ndarray, space: str = "test space") -> None:
    """An embedding DB of one segment in the layout `embed` writes (search/db.py's docstring), without its index."""
    from birdsed.search.db import DB_JSON, RECORDINGS, SEGMENT_JSON, SEGMENTS, VECTORS, WINDOWS, DBInfo

    seg = folder / SEGMENTS / "000000"
    seg.mkdir(parents=True)
    DBInfo("m", "f" * 64, "sed", space, vectors.shape[1], 3.0, 3.0, 32000).write(folder / DB_JSON)
    (seg / VECTORS).write_bytes(np.ascontiguousarray(vectors, np.float16).tobytes())
    windows.assign(id=np.arange(len(windows)))[["id", "file", "start_s", "end_s"]].to_parquet(seg / WINDOWS)
    files = windows.groupby("file", sort=False).size()
    first = np.concatenate([[0], np.cumsum(files.to_numpy())[:-1]])
    pd.DataFrame({"file": files.index, "stamp": "1-1", "first_id": first, "n_windows": files.to_numpy()}).to_parquet(
        seg / RECORDINGS
    )
    (seg / SEGMENT_JSON).write_text(json.dumps({"first_id": 0, "n": len(windows), "dim": vectors.shape[1]}))


@pytest.mark.slow
def test_kill_9_of_learn_then_the_same_command(tmp_path, capsys):
    """kill -9 while a round scores 300,000 windows: the same command does round 1 whole, as a run never killed."""
    from test_hostile import kill_when, no_temp_files

    db, truth = fake_db(n_files=3000, per_file=100)
    write_db(tmp_path / "db", db.windows, db.data)
    v = tmp_path / "v.csv"
    verdicts_on(db, truth, range(40)).to_csv(v, index=False)
    argv = ["learn", tmp_path / "db", "--verdicts", v, "--n", 5]
    killed = tmp_path / "killed"
    kill_when([*argv, "--out", killed], lambda: killed.is_dir() and any(killed.glob(".scores.parquet.*")), poll_s=0.005)
    if (killed / "learn.json").exists():  # the temporary lives ~0.2 s: a slow poll can miss it
        pytest.skip("the round finished before it could be killed")
    assert run_cli(capsys, *argv, "--out", killed)[0] == 0
    assert run_cli(capsys, *argv, "--out", tmp_path / "whole")[0] == 0
    a, b = (json.loads((tmp_path / d / "learn.json").read_text()) for d in ("killed", "whole"))
    assert [r["round"] for r in a["rounds"]] == [r["round"] for r in b["rounds"]] == [1]
    assert pd.read_csv(killed / "queue.csv").equals(pd.read_csv(tmp_path / "whole" / "queue.csv"))
    assert len(pd.read_parquet(killed / "scores.parquet")) == len(db.windows)
    assert no_temp_files(killed) and not (killed / ".lock").exists()


def test_the_review_page_opens_a_learn_folder_with_its_queue_first(tmp_path):
    pytest.importorskip("starlette", reason="the review page needs the review extra")
    from conftest import serve_review
    from test_review import get, post

    db, truth = fake_db()
    verdicts_on(db, truth, [0, 1, 2, 3]).to_csv(tmp_path / "seed.csv", index=False)
    r = learn_round(db, [tmp_path / "seed.csv"], tmp_path / "m", LearnSpec(n=3, background=20))
    proc, url = serve_review(tmp_path / "m")
    try:
        status, body, _ = get(f"{url}/api/state")
        assert status == 200 and json.loads(body)["queue"] is True
        status, body, _ = get(f"{url}/api/queue?sample=queue&n=100")
        cards = json.loads(body)["cards"]
        assert [(c["file"], c["start_s"]) for c in cards] == list(zip(r.queue["file"], r.queue["start_s"]))
        first = cards[0]
        verdict = {k: first[k] for k in ("file", "start_s", "end_s", "label")}
        assert post(f"{url}/api/verdict", {**verdict, "verdict": "yes", "reviewer": ""})[0] == 200
        cards = json.loads(get(f"{url}/api/queue?sample=queue&n=100")[1])["cards"]
        assert len(cards) == len(r.queue) - 1  # the answered clip leaves the queue; its verdict is in M's store
    finally:
        proc.terminate()
        proc.wait()
    again = learn_round(db, [], tmp_path / "m")
    assert again.round == 2 and int(again.counts["windows"].iloc[0]) == 5


def test_a_verdict_naming_the_recording_by_another_path_matches_it(tmp_path, monkeypatch):
    from birdsed.search.learn import match_windows

    monkeypatch.chdir(tmp_path)
    windows = pd.DataFrame({"file": [str(tmp_path / "a" / "r.wav")], "start_s": [0.0], "end_s": [3.0]})
    clips = pd.DataFrame({"file": ["a/r.wav", "a/../a/r.wav"], "start_s": [0.0, 1.0], "end_s": [3.0, 2.0]})
    matched, reasons = match_windows(windows, clips, 0.5)
    assert list(matched["window"]) == [0, 0] and list(reasons) == ["", ""]
