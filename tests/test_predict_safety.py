"""predict's --out knows what made it: a changed model is refused, a second run into it waits for none (refused)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import birdnet_meta, needs_birdnet, run_cli, write_audio

from birdsed.config import FrontendConfig, ModelConfig
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import run_lock
from birdsed.infer.decide import Thresholds
from birdsed.infer.predict import run_predict
from birdsed.model.meta import model_digest, update_thresholds
from birdsed.model.modeldir import save_model_dir
from birdsed.model.sed import SEDModel


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    m = SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="mobilenetv3_small_100"), ["x", "y"]).eval()
    return save_model_dir(m, tmp_path / "m")


def test_weights_changed_in_place_at_equal_size_are_refused(model_dir, tmp_path):
    audio = write_audio(tmp_path / "in" / "a.wav", seconds=6.0)
    run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0)
    before = model_digest(model_dir)
    update_thresholds(model_dir, Thresholds({"segmentwise": 0.3}))  # deciding differently: the scores still hold
    assert model_digest(model_dir) == before
    run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0)
    w = model_dir / "weights.safetensors"
    size = w.stat().st_size
    with open(w, "r+b") as f:  # some weights' bytes changed in place
        f.seek(-64, os.SEEK_END)
        f.write(bytes(64))
    assert w.stat().st_size == size and model_digest(model_dir) != before
    with pytest.raises(ConfigError, match="model_sha256"):
        run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0)
    assert not (tmp_path / "out" / ".lock").exists()


def test_a_second_run_into_one_folder_is_refused_while_the_first_holds_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(holder.pid))
        with pytest.raises(BirdsedError, match=f"in use by another birdsed run \\(pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path) as lock:  # the holder is gone (killed): its lock is broken and taken
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not lock.exists()
    (tmp_path / ".lock").write_text("another-host 1")  # held on another machine of a shared file system: never broken
    with pytest.raises(BirdsedError, match="host another-host, pid 1"):
        with run_lock(tmp_path):
            pass
    assert (tmp_path / ".lock").read_text() == "another-host 1"


def test_the_stamp_names_what_changed(model_dir, tmp_path):
    audio = write_audio(tmp_path / "in" / "a.wav", seconds=6.0)
    run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0)
    stamp = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(stamp["model_sha256"]) == 64
    with pytest.raises(ConfigError, match="hop_s"):
        run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0, hop_s=1.0)


def listing(folder) -> dict[str, bytes] | None:
    """Every file under `folder` with its bytes (None: no folder): what a refused run must leave as it was."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_predict_refused_for_its_device_leaves_out_as_it_was(model_dir, tmp_path, capsys, monkeypatch):
    """--device cuda where torch sees none is refused before OUT is made, or before a folder given holds anything
    of this run; the command without it then runs into the same OUT."""
    audio = write_audio(tmp_path / "in" / "a.wav", seconds=6.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        before = listing(out)
        rc, text = run_cli(capsys, "predict", "--model", model_dir, audio, "--out", out, "--device", "cuda", "--quiet")
        assert rc == 2 and "torch sees no CUDA device" in text
        assert listing(out) == before
        rc, text = run_cli(capsys, "predict", "--model", model_dir, audio, "--out", out, "--workers", 0, "--quiet")
        assert rc == 0 and (out / "scores.parquet").is_file(), text


@needs_birdnet
def test_a_predict_refused_for_its_window_leaves_out_as_it_was(tmp_path, capsys):
    """BirdNET's 3 s window: --window-s 5 is refused before OUT is made (it wrote OUT/run.json, which then refused the
    command the error asked for); the command without it runs into the same OUT."""
    (tmp_path / "bn").mkdir()
    (tmp_path / "bn" / "model.json").write_text(json.dumps(birdnet_meta()))
    audio, out = write_audio(tmp_path / "in" / "a.wav", seconds=0.5), tmp_path / "out"
    rc, text = run_cli(capsys, "predict", "--model", tmp_path / "bn", audio, "--out", out, "--window-s", 5, "--quiet")
    assert rc == 2 and "leave --window-s unset" in text and not out.exists()
    rc, text = run_cli(capsys, "predict", "--model", tmp_path / "bn", audio, "--out", out, "--workers", 0, "--quiet")
    assert rc == 0 and json.loads((out / "run.json").read_text())["window_s"] == 3.0, text
