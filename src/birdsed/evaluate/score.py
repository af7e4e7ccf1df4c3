"""Scoring predictions against truth: submissions (row_id,birds) and score tables (scores.parquet)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import DEFAULT_MIN_OVERLAP_S, DEFAULT_OUTPUT, OUTPUT_KINDS, REFERENCE_THRESHOLDS
from birdsed.errors import BirdsedError
from birdsed.evaluate.metrics import (
    average_precision,
    per_class_prf,
    row_f1,
    sets_to_matrix,
    threshold_sweep,
)
from birdsed.evaluate.submission import Unused, check_overlap
from birdsed.kaggle.birdclef import macro_roc_auc, padded_cmap
from birdsed.model.meta import model_digest, read_model_meta
from birdsed.rows import ROW_S, SCORE_META_COLUMNS
from birdsed.truth import Truth, load_truth
from birdsed.truth.events import match_events
from birdsed.truth.grid import truth_rows


def read_scores(path: str | Path) -> pd.DataFrame:
    """A scores.parquet of predict (a file or a data-set folder); anything else is a clear error naming it."""
    path = Path(path)
    if not path.exists():
        raise BirdsedError(f"{path}: scores not found (predict writes OUT/scores.parquet)")
    try:
        scores = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise BirdsedError(
            f"{path}: not a Parquet scores table from predict ({type(e).__name__}: {str(e)[:120]})"
        ) from e
    lacking = [c for c in SCORE_META_COLUMNS if c not in scores.columns]
    if lacking:
        raise BirdsedError(f"{path}: not a scores table of predict: no column(s) {lacking}")
    return scores


@dataclass
class AlignedScores:
    """Scores of every truth row, per output [shape=(n_rows, K)], and the truth [same shape]."""

    row_ids: list[str]
    classes: list[str]
    scores: dict[str, np.ndarray]
    true: np.ndarray
    missing_rows: list[str]
    unused: Unused = field(default_factory=Unused)
    rows: pd.DataFrame | None = None  # file, start_s of each row (start_s NaN: the whole file)
    events: pd.DataFrame | None = None  # annotated events, named as the prediction names files (None: row truth)


def align_scores(
    scores: pd.DataFrame,
    truth: Truth,
    strict: bool = False,
    names: tuple[str, str] = ("the scores", "the truth"),
    min_overlap_s: float = DEFAULT_MIN_OVERLAP_S,
    audio_dir: str | Path | None = None,
) -> AlignedScores:
    """Line up scores.parquet rows with the truth's rows (truth.grid: annotated events become labelled 5 s rows of
    the predicted files; Kaggle rows map through test.csv).

    Whole-file rows take the max over the file. Truth labels the model does not know get a score column of zeros
    (they can only be missed). What was not used is counted in `unused`; with `strict` any of it is an error;
    no truth row scored at all is always one.
    """
    model_classes = [c for c in scores.columns if c not in SCORE_META_COLUMNS]
    first = scores[scores["output"] == OUTPUT_KINDS[0]]
    tr = truth_rows(truth, first, min_overlap_s, audio_dir)
    rows = tr.rows
    truth_classes = set().union(*rows["labels"]) if len(rows) else set()
    classes = model_classes + sorted(truth_classes - set(model_classes))
    files, starts = rows["file"].to_numpy(), rows["start_s"].to_numpy(float)
    used_rows: set[tuple[str, float]] = set()
    used_files: set[str] = set()
    out: dict[str, np.ndarray] = {}
    not_scored: set[str] = set()
    for output in OUTPUT_KINDS:
        part = scores[scores["output"] == output]
        values = part[model_classes].to_numpy(np.float32)
        by_row = {(f, float(s)): i for i, (f, s) in enumerate(zip(part["file"], part["start_s"]))}
        by_file = {f: values[idx].max(axis=0) for f, idx in part.groupby("file", sort=False).indices.items()}
        m = np.zeros((len(rows), len(classes)), dtype=np.float32)
        for i, (r, path, start) in enumerate(zip(rows["row_id"], files, starts)):
            if np.isnan(start):
                v = by_file.get(path)
                used_files.add(path)
            else:
                j = by_row.get((path, float(start)))
                v = values[j] if j is not None else None
                used_rows.add((path, float(start)))
            if v is None:
                not_scored.add(r)
            else:
                m[i, : len(model_classes)] = v
        out[output] = m
    check_overlap(len(rows) + len(truth.not_listed), len(rows) - len(not_scored), names[1], names[0])
    unscored = [
        f"{f}@{s:g}"
        for f, s in zip(first["file"], first["start_s"])
        if f not in used_files and (f, float(s)) not in used_rows
    ]
    missing = truth.not_listed + [r for r in rows["row_id"] if r in not_scored]
    unused = Unused(
        unscored,
        missing,
        sorted(truth_classes - set(model_classes)),
        [],
        not truth_classes,
        tr.past_end,
        tr.not_predicted,
    )
    unused.check(strict)
    true = sets_to_matrix(list(rows["labels"]), classes)
    return AlignedScores(
        list(rows["row_id"]), classes, out, true, missing, unused, rows[["file", "start_s"]], tr.events
    )


def row_detections(al: AlignedScores, output: str, threshold: float) -> pd.DataFrame:
    """The rows of output `output` at or above threshold, one per (row, class): file, start_s, end_s, label."""
    r, k = np.nonzero(al.scores[output] >= threshold)
    start = al.rows["start_s"].to_numpy(float)[r]
    return pd.DataFrame(
        {
            "file": al.rows["file"].to_numpy()[r],
            "start_s": start,
            "end_s": start + ROW_S,
            "label": np.asarray(al.classes)[k],
        }
    )


@dataclass
class UsedDecision:
    """The decision behind predict's detections, as far as the scores' folder tells: the output kind, the global
    threshold and the per-class ones that differ from it, and where they come from (`source`, said beside them)."""

    output: str = DEFAULT_OUTPUT
    threshold: float = REFERENCE_THRESHOLDS[DEFAULT_OUTPUT]
    per_class: dict[str, float] = field(default_factory=dict)
    source: str = "model unknown (no run.json beside the scores): the reference threshold"
    model: str | None = None

    def vector(self, classes: list[str]) -> np.ndarray:
        """[shape=(K,)] the threshold of each class."""
        return np.array([self.per_class.get(c, self.threshold) for c in classes], np.float32)


def used_decision(scores_path: str | Path) -> UsedDecision:
    """What decided the detections of the predict folder holding `scores_path`: its run.json's decision record
    (predict writes it), else the thresholds stored in the model run.json names (model/meta.py; an older run.json),
    else "model unknown" and the reference threshold of the default output."""
    path = Path(scores_path)
    run_path = (path if path.is_dir() else path.parent) / "run.json"
    try:
        run = json.loads(run_path.read_text())
        model = str(run["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return UsedDecision()
    record = run.get("decision")
    if isinstance(record, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
            return UsedDecision(
                record["output"],
                float(record["threshold"]),
                {str(c): float(t) for c, t in record.get("per_class_thresholds", {}).items()},
                f"{run_path}'s decision record (thresholds from {record.get('thresholds_from', '?')})",
                model,
            )
    model_dir = Path(model)
    meta = read_model_meta(model_dir) if (model_dir / "model.json").is_file() else None
    if meta is None or model_digest(model_dir, meta) != run.get("model_sha256"):
        return UsedDecision(source=f"model unknown ({model_dir} is not there or changed): the reference threshold")
    kind, thresholds = meta.default_output, meta.thresholds
    per_class = {c: t for c, t in thresholds.per_class.get(kind, {}).items() if t != thresholds.global_[kind]}
    return UsedDecision(kind, thresholds.global_[kind], per_class, f"{model_dir}'s stored thresholds", model)


def shown_outputs(al: AlignedScores, decided: str) -> list[str]:
    """The output kinds worth showing: all three, or only the decided one when their scores are equal (a model with
    one score per window, such as BirdNET, fills the three with the same values)."""
    first = al.scores[OUTPUT_KINDS[0]]
    if all(np.array_equal(first, al.scores[k]) for k in OUTPUT_KINDS[1:]):
        return [decided]
    return list(OUTPUT_KINDS)


def score_report(al: AlignedScores, used: UsedDecision | None = None) -> dict:
    """For each output shown (shown_outputs): F1 against threshold (a sweep), macro/micro AP, and the reference
    solution's table; the decision predict used (`used`, default "model unknown") and the per-class precision, recall
    and F1 at its thresholds."""
    used = used or UsedDecision()
    thr = used.vector(al.classes)
    per_class = per_class_prf(al.scores[used.output] >= thr[None, :], al.true, al.classes)
    per_class["threshold"] = thr
    kinds = shown_outputs(al, used.output)
    report = {
        "n_rows": len(al.row_ids),
        "missing_rows": al.missing_rows,
        "unused": asdict(al.unused),
        "unused_lines": al.unused.lines(),
        "decision": asdict(used),
        "one_score_per_window": len(kinds) == 1,
        "per_class": per_class.to_dict("records"),
        "outputs": {},
    }
    for output in kinds:
        s = al.scores[output]
        sweep = threshold_sweep(s, al.true)
        best = sweep.loc[sweep["row_f1"].idxmax()]
        macro, micro = average_precision(s, al.true)
        ref_thr = REFERENCE_THRESHOLDS[output]
        report["outputs"][output] = {
            "reference_threshold": ref_thr,
            "reference_row_f1": row_f1(s >= ref_thr, al.true),
            **(
                {"used_threshold": used.threshold, "used_row_f1": row_f1(s >= thr[None, :], al.true)}
                if output == used.output
                else {}
            ),
            "best_threshold": float(best["threshold"]),
            "best_row_f1": float(best["row_f1"]),
            "macro_ap": macro,
            "micro_ap": micro,
            "sweep": sweep.to_dict("records"),
            # the BirdCLEF metrics (kaggle.birdclef): 2023's, 2024-2025's
            "padded_cmap": padded_cmap(al.true, s),
            "roc_auc": macro_roc_auc(al.true, s),
        }
        if al.events is not None:  # annotated calls: which were found, at the best threshold
            match = match_events(al.events, row_detections(al, output, float(best["threshold"])))
            report["outputs"][output].update(
                event_recall=match.recall,
                event_precision=match.precision,
                n_events=match.n_events,
                n_detections=match.n_detections,
            )
    return report


def align_files(
    scores_path: str | Path,
    truth: str | Path,
    test_csv: str | Path | None = None,
    audio_dir: str | Path | None = None,
    strict: bool = False,
    min_overlap_s: float = DEFAULT_MIN_OVERLAP_S,
    fmt: str = "auto",
    label_column: str | None = None,
) -> AlignedScores:
    """A scores.parquet and any truth (truth.load_truth: annotation tables or a folder of them, Kaggle row truth
    with its test.csv), lined up."""
    t = load_truth(truth, fmt, label_column, test_csv, audio_dir)
    return align_scores(read_scores(scores_path), t, strict, (str(scores_path), str(truth)), min_overlap_s, audio_dir)


def scores_report_from_files(
    scores_path: str | Path,
    truth: str | Path,
    test_csv: str | Path | None = None,
    audio_dir: str | Path | None = None,
    strict: bool = False,
    **truth_kw,
) -> dict:
    return score_report(
        align_files(scores_path, truth, test_csv, audio_dir, strict, **truth_kw), used_decision(scores_path)
    )


def score_table(report: dict) -> pd.DataFrame:
    """Each output at its threshold (the decided one at the threshold predict used, per-class ones included; the
    others at the reference solution's), its best threshold, and AP."""
    return pd.DataFrame(
        [
            {
                "output": k,
                "threshold": o.get("used_threshold", o["reference_threshold"]),
                "row F1": o.get("used_row_f1", o["reference_row_f1"]),
                "best threshold": o["best_threshold"],
                "best row F1": o["best_row_f1"],
                "macro AP": o["macro_ap"],
                "micro AP": o["micro_ap"],
                "padded cmAP": o["padded_cmap"],
                "ROC-AUC": o["roc_auc"],
            }
            for k, o in report["outputs"].items()
        ]
    )


def event_table(report: dict) -> pd.DataFrame:
    """Event-level recall and precision of each output at its best row-F1 threshold (annotated truth only)."""
    return pd.DataFrame(
        [
            {
                "output": k,
                "threshold": o["best_threshold"],
                "event recall": o["event_recall"],
                "event precision": o["event_precision"],
                "events": o["n_events"],
                "detected rows": o["n_detections"],
            }
            for k, o in report["outputs"].items()
        ]
    )
