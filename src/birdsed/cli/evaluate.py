"""Verbs that score against truth: evaluate, tune, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import count, number
from birdsed.config import OUTPUT_KINDS
from birdsed.config.choices import REPORT_MAX_MINUTES, REPORT_MIN_PAGE_S
from birdsed.review.links import REVIEW_PORT
from birdsed.rows import ROW_S


def _add_truth_options(p: argparse.ArgumentParser) -> None:
    from birdsed.config import DEFAULT_MIN_OVERLAP_S, TRUTH_FORMATS

    p.add_argument(
        "--truth-format", default="auto", choices=TRUTH_FORMATS, help="the truth's format (default: by content)"
    )
    p.add_argument(
        "--label-column", help="the annotation tables' label column (Raven default: Species, Annotation, ...)"
    )
    p.add_argument(
        "--min-overlap-s",
        type=number(0, ROW_S, lo_open=True),
        default=DEFAULT_MIN_OVERLAP_S,
        help="a 5 s row is positive for a label its annotated calls cover this long",
    )


def _truth_kw(a: argparse.Namespace) -> dict:
    return {"min_overlap_s": a.min_overlap_s, "fmt": a.truth_format, "label_column": a.label_column}


TRUTH_HELP = (
    "the truth: Raven selection tables, Audacity labels or a CSV of file,start_s,end_s,label (a table or a "
    "folder of them), birdsed's detections.csv, Kaggle row_id,birds (with test.csv), BirdCLEF 2021 labels"
)


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truth", type=Path, required=True, help=TRUTH_HELP)
    _add_truth_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="a submission.csv (row_id,birds)")
    src.add_argument("--scores", type=Path, help="a scores.parquet from predict")
    p.add_argument("--test-csv", type=Path, help="maps row_ids to files and times (default: test.csv beside --truth)")
    p.add_argument("--audio-dir", type=Path)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when any prediction row, truth row or class is not used, or the truth has no positive",
    )


@verb(
    "evaluate",
    "score predictions: row-wise micro F1, P/R/F1, per class, AP, threshold sweeps",
    "birdsed evaluate --scores preds/scores.parquet --truth data/synth/test_labels.csv",
    _add_evaluate,
)
def cmd_evaluate(a: argparse.Namespace) -> int:

    from birdsed.cli.result_tables import print_score_report, print_submission_report
    from birdsed.evaluate.score import scores_report_from_files
    from birdsed.evaluate.submission import evaluate_submission

    if a.pred:
        rep = evaluate_submission(a.pred, a.truth, a.strict)
        if a.json:
            print(json.dumps(rep.to_dict(), indent=1))
        else:
            print_submission_report(rep)
        return 0
    report = scores_report_from_files(
        a.scores, a.truth, test_csv=a.test_csv, audio_dir=a.audio_dir, strict=a.strict, **_truth_kw(a)
    )
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print_score_report(report)
    return 0


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="the model directory to store thresholds in")
    p.add_argument("--scores", type=Path, help="scores.parquet of predict on validation recordings")
    p.add_argument("--truth", type=Path, help=TRUTH_HELP + ", for --scores")
    _add_truth_options(p)
    p.add_argument("--test-csv", type=Path, help="maps row_ids to files (default: test.csv beside --truth)")
    p.add_argument("--data", type=Path, help="or: a labelled data set; each recording is one row (whole-file labels)")
    p.add_argument(
        "--shrink",
        type=number(0, 1e6),
        default=10.0,
        help="pull per-class thresholds toward the global one (0: none)",
    )
    p.add_argument("--no-per-class", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print, do not write model.json")
    p.add_argument(
        "--strict", action="store_true", help="refuse when scores and truth do not share every row and class"
    )


@verb(
    "tune",
    "choose thresholds (global and per class) on validation data; store them in the model",
    "birdsed tune --model runs/small/model --scores preds/scores.parquet --truth data/synth/test_labels.csv",
    _add_tune,
)
def cmd_tune(a: argparse.Namespace) -> int:
    from birdsed.cli.result_tables import print_tune_result
    from birdsed.evaluate.tune import tune_model

    result = tune_model(
        a.model,
        scores_path=a.scores,
        truth_csv=a.truth,
        test_csv=a.test_csv,
        data=a.data,
        shrink=a.shrink,
        per_class=not a.no_per_class,
        dry_run=a.dry_run,
        strict=a.strict,
        **_truth_kw(a),
    )
    print_tune_result(result)
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="a predict output folder")
    p.add_argument("--out", type=Path, help="HTML file (default: PRED/report.html)")
    p.add_argument("--truth", type=Path, help=TRUTH_HELP + ": drawn under the detections, and the evaluation added")
    _add_truth_options(p)
    p.add_argument("--test-csv", type=Path, help="maps truth row_ids to files (default: test.csv beside --truth)")
    p.add_argument("--run", type=Path, help="a training run folder: adds its loss and metric curves")
    p.add_argument("--output", choices=OUTPUT_KINDS, help="score curves to draw (default: the output decided on)")
    p.add_argument("--max-recordings", type=count(0, 100_000), default=20, help="recordings drawn")
    p.add_argument("--page-s", type=number(REPORT_MIN_PAGE_S, 3600), default=60.0, help="seconds of audio per panel")
    p.add_argument(
        "--max-minutes",
        type=number(0, REPORT_MAX_MINUTES, lo_open=True),
        default=REPORT_MAX_MINUTES,
        help=f"minutes drawn per recording (default {REPORT_MAX_MINUTES:g}: whole recordings up to that)",
    )
    p.add_argument(
        "--review-port",
        type=count(1, 65535),
        default=REVIEW_PORT,
        help=f"port of `birdsed review PRED` that detections link to (default {REVIEW_PORT})",
    )


@verb(
    "report",
    "an HTML page of what was found: spectrograms with detections, score timelines, evaluation",
    "birdsed report preds --truth data/synth/test_labels.csv --run runs/small",
    _add_report,
)
def cmd_report(a: argparse.Namespace) -> int:

    from birdsed.evaluate.report import build_report

    out = build_report(
        a.pred,
        out=a.out,
        truth=a.truth,
        test_csv=a.test_csv,
        run_dir=a.run,
        output=a.output,
        max_recordings=a.max_recordings,
        page_s=a.page_s,
        max_minutes=a.max_minutes,
        review_port=a.review_port,
        **_truth_kw(a),
    )
    console.print(f"report written to {out}")
    console.print(f"its detections link to the review page: birdsed review {a.pred} --port {a.review_port}")
    return 0
