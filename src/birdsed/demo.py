"""`birdsed demo`: the whole job on the embedded default, end to end on synthetic data.

synth -> train (configs/small.yaml) -> predict the soundscapes -> evaluate -> report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from birdsed.config import apply_overrides, load_config
from birdsed.evaluate import evaluate_submission, scores_report_from_files
from birdsed.predict import run_predict
from birdsed.synth import SynthConfig, synthesize
from birdsed.train import train

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out: Path
    row_f1: float
    output: str
    score_report: dict
    seconds: float


def run_demo(out: str | Path = "birdsed-demo", synth: SynthConfig = SynthConfig(), overrides: list[str] | None = None,
             quiet: bool = False, pooling: str = "segment") -> DemoResult:
    out = Path(out)
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "test_labels.csv").is_file():
        log.info("1/4 synthesising a data set into %s", data)
        synthesize(data, synth, quiet=quiet)
    cfg = apply_overrides(load_config("small"), overrides or [])
    log.info("2/4 training %s on it (configs/small.yaml) into %s", cfg.model.backbone, out / "run")
    model_dir = train(data, cfg, out / "run", quiet=quiet)
    log.info("3/4 predicting the soundscapes into %s", out / "predict")
    pred = out / "predict"
    if pred.exists():
        import shutil

        shutil.rmtree(pred)  # a new model: earlier predictions are stale
    # segment pooling: rows take the head's time segments inside them, so a call does not leak into the
    # neighbouring rows through the half-overlapping windows (see docs/BENCHMARKS.md for both poolings)
    run_predict(model_dir, [], pred, test_csv=data / "test.csv", formats=("csv", "kaggle", "raven", "audacity"),
                quiet=quiet, pooling=pooling)
    log.info("4/4 evaluating against %s", data / "test_labels.csv")
    rep = evaluate_submission(pred / "submission.csv", data / "test_labels.csv")
    scores = scores_report_from_files(pred / "scores.parquet", data / "test_labels.csv")
    output = pd.read_json(model_dir / "model.json", typ="series").get("default_output", "segmentwise")
    from birdsed.report import build_report

    report = build_report(pred, truth=data / "test_labels.csv", test_csv=data / "test.csv", run_dir=out / "run")
    log.info("report written to %s", report)
    return DemoResult(out, rep.row_f1, output, scores, time.perf_counter() - t0)
