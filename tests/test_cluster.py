"""predict --cluster on dask.distributed (cluster.py): the outputs of one process, and a worker killed mid-run
loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest
from conftest import tiny_model

from birdsed.errors import ConfigError
from birdsed.infer.predict import run_predict

distributed = pytest.importorskip("distributed", reason="the cluster extra: pip install 'birdsed[cluster]'")


@pytest.fixture(autouse=True)
def _environment_restored():
    """A LocalCluster a test starts itself sets OMP_NUM_THREADS=1 (and more) in this process: put it back, or every
    later test's subprocesses would run torch on one thread (and differ in their last bits from in-process runs)."""
    env = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(env)


@pytest.fixture
def setup(synth_data, tmp_path):
    from birdsed.data.manifest import read_dataset

    m = tiny_model(tmp_path / "m", read_dataset(synth_data).classes)
    audio = sorted((synth_data / "test_audio").iterdir())
    (tmp_path / "in").mkdir()
    inputs = []
    for k in range(8):
        dst = tmp_path / "in" / f"r{k}.mp3"
        dst.write_bytes(audio[k % len(audio)].read_bytes())
        inputs.append(str(dst))
    (tmp_path / "in" / "broken.mp3").write_bytes(b"not audio at all" * 10)
    return m, inputs + [str(tmp_path / "in" / "broken.mp3")]


def sorted_scores(path):
    return pd.read_parquet(path).sort_values(["file", "output", "start_s"]).reset_index(drop=True)


def test_a_local_cluster_gives_the_outputs_of_one_process(setup, tmp_path):
    m, inputs = setup
    one = run_predict(m, inputs, tmp_path / "one", quiet=True, workers=0)
    two = run_predict(m, inputs, tmp_path / "two", quiet=True, cluster="local:2")
    pd.testing.assert_frame_equal(
        sorted_scores(tmp_path / "one" / "scores.parquet"),
        sorted_scores(tmp_path / "two" / "scores.parquet"),
        atol=1e-5,
        rtol=0,
    )
    assert [e[0] for e in two.errors] == [e[0] for e in one.errors] == [inputs[-1]]  # reported once, not retried
    assert abs(two.audio_s - one.audio_s) < 1e-6
    env = dict(os.environ)
    again = run_predict(m, inputs, tmp_path / "two", quiet=True, cluster="local:1")  # resumes: nothing left to run
    assert dict(os.environ) == env  # dask's OMP_NUM_THREADS=1 for its workers does not stay in this process
    assert again.n_done_before == len(inputs) - 1 and again.audio_s == 0


def test_a_worker_killed_mid_run_loses_only_its_recording(setup, tmp_path):
    m, inputs = setup
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killed = []

        def kill_one_worker_after_the_first_part():
            parts = tmp_path / "out" / "parts"
            deadline = time.time() + 120
            while time.time() < deadline and not (parts.is_dir() and any(parts.glob("*.parquet"))):
                time.sleep(0.05)
            with distributed.Client(cluster.scheduler_address) as c:
                pids = list(c.run(os.getpid).values())
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        t = threading.Thread(target=kill_one_worker_after_the_first_part)
        t.start()
        s = run_predict(m, inputs, tmp_path / "out", quiet=True, cluster=cluster.scheduler_address)
        t.join()
    assert killed
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert scores["file"].nunique() == len(inputs) - 1 and [e[0] for e in s.errors] == [inputs[-1]]
    assert not list((tmp_path / "out" / "parts").glob(".*.tmp*"))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("local:x", "local:N"),
        ("local:0", "at least 1"),
        ("nowhere", "expected local:N"),
        ("missing.yaml", "file not found"),
    ],
)
def test_bad_cluster_specs_are_refused(setup, tmp_path, spec, match):
    m, inputs = setup
    with pytest.raises(ConfigError, match=match):
        run_predict(m, inputs[:1], tmp_path / "o", quiet=True, cluster=spec)


def test_a_model_the_workers_cannot_load_is_a_clear_error_and_the_client_never_imports_torch(setup, tmp_path):
    """With --cluster this process reads model.json only: the workers load the network and report what fails."""
    import json
    import subprocess
    import sys

    m, inputs = setup
    code = (
        "import sys; from birdsed.infer.predict import run_predict; "
        f"run_predict({str(m)!r}, {inputs[:2]!r}, {str(tmp_path / 'ok')!r}, quiet=True, cluster='local:1'); "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'the client imported torch'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert pd.read_parquet(tmp_path / "ok" / "scores.parquet")["file"].nunique() == 2
    broken = tiny_model(tmp_path / "broken", json.loads((m / "model.json").read_text())["classes"])
    (broken / "weights.safetensors").write_bytes(b"\0" * 64)
    res = subprocess.run(
        [sys.executable, "-m", "birdsed", "predict", "--model", str(broken), *inputs[:2], "--out", str(tmp_path / "o"),
         "--cluster", "local:1", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2 and "weights.safetensors: not a readable safetensors file" in res.stderr, res.stderr


def test_a_local_cluster_serves_no_pages_and_starts_quietly(caplog):
    """Its scheduler served status, health and metrics pages on 127.0.0.1:8787 (the dashboard off, those not), and
    about 35 lines of Dask's INFO log came with every run."""
    import logging
    import urllib.error
    import urllib.request

    from birdsed.infer.cluster import connect

    with caplog.at_level(logging.INFO):
        client, cluster = connect("local:1")
    try:
        port = client.scheduler_info()["services"].get("dashboard", 8787)
        for path in ("/health", "/info/main/workers.html", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert e.value.code == 404, path
    finally:
        client.close()
        cluster.close()
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
