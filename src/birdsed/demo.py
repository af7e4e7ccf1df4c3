"""`birdsed demo`: the whole job on the embedded default, end to end on synthetic data.

synth (training clips, validation soundscapes, test soundscapes) -> train (config/presets/small.yaml)
-> tune thresholds on the validation soundscapes -> predict the test soundscapes -> evaluate -> report.
The test soundscapes are never used to choose anything.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from birdsed.config import apply_overrides, load_config
from birdsed.data.synth import SynthConfig, synthesize
from birdsed.evaluate.report import build_report
from birdsed.evaluate.score import scores_report_from_files
from birdsed.evaluate.submission import evaluate_submission
from birdsed.evaluate.tune import TuneResult, tune_model
from birdsed.infer.predict import run_predict
from birdsed.model.meta import read_model_meta
from birdsed.train.run import train

log = logging.getLogger(__name__)
DEMO_SYNTH = SynthConfig(species=6, clips_per_species=20, soundscapes=4, soundscape_s=120.0)


@dataclass
class DemoResult:
    out: Path
    row_f1: float
    output: str
    score_report: dict
    tuned: TuneResult
    seconds: float


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)  # predictions of an earlier model are stale
    return folder


def run_demo(
    out: str | Path = "birdsed-demo",
    synth: SynthConfig = DEMO_SYNTH,
    overrides: list[str] | None = None,
    quiet: bool = False,
    pooling: str = "segment",
) -> DemoResult:
    out = Path(out)
    t0 = time.perf_counter()
    data, val = out / "data", out / "val"
    if not (data / "test_labels.csv").is_file():
        log.info("1/6 synthesising training clips and test soundscapes into %s", data)
        synthesize(data, synth, quiet=quiet)
    if not (val / "test_labels.csv").is_file():
        log.info("2/6 synthesising validation soundscapes (same species, other recordings) into %s", val)
        synthesize(
            val,
            dataclasses.replace(synth, clips_per_species=0, soundscapes=3, soundscape_seed=synth.seed + 1000),
            quiet=quiet,
        )
    cfg = apply_overrides(load_config("small"), overrides or [])
    log.info("3/6 training %s (config/presets/small.yaml) into %s", cfg.model.backbone, out / "run")
    model_dir = train(data, cfg, out / "run", quiet=quiet)
    # segment pooling: a row takes the attention head's time segments inside it, so a call does not leak into
    # the neighbouring rows through the half-overlapping windows (docs/BENCHMARKS.md compares both poolings)
    log.info("4/6 tuning thresholds on the validation soundscapes")
    run_predict(model_dir, [], _fresh(out / "predict_val"), test_csv=val / "test.csv", quiet=quiet, pooling=pooling)
    tuned = tune_model(model_dir, out / "predict_val" / "scores.parquet", val / "test_labels.csv")
    log.info("5/6 predicting the test soundscapes into %s", out / "predict")
    pred = _fresh(out / "predict")
    run_predict(
        model_dir,
        [],
        pred,
        test_csv=data / "test.csv",
        formats=("csv", "kaggle", "raven", "audacity"),
        quiet=quiet,
        pooling=pooling,
    )
    log.info("6/6 evaluating against %s", data / "test_labels.csv")
    rep = evaluate_submission(pred / "submission.csv", data / "test_labels.csv")
    scores = scores_report_from_files(pred / "scores.parquet", data / "test_labels.csv")
    # the report scores the same soundscapes against their calls as an ecologist keeps them (Raven tables, a box
    # per note, with frequency bounds), beside the row F1 above against Kaggle's row labels
    raven = data / "test_raven"
    report = build_report(
        pred,
        truth=raven if raven.is_dir() else data / "test_labels.csv",
        test_csv=data / "test.csv",
        run_dir=out / "run",
    )
    log.info("report written to %s", report)
    output = read_model_meta(model_dir).default_output
    return DemoResult(out, rep.row_f1, output, scores, tuned, time.perf_counter() - t0)
