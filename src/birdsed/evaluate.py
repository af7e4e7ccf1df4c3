"""Scoring predictions against truth: submissions (row_id,birds) and score tables (scores.parquet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import OUTPUT_KINDS, SEED_THRESHOLDS
from birdsed.errors import BirdsedError
from birdsed.manifest import read_kaggle_test, read_truth
from birdsed.metrics import average_precision, micro_prf, per_class_prf, row_f1, sets_to_matrix, threshold_sweep


@dataclass
class SubmissionReport:
    row_f1: float
    precision: float
    recall: float
    species_f1: float
    n_rows: int
    missing_rows: list[str]
    per_class: pd.DataFrame

    def to_dict(self) -> dict:
        return {"row_f1": self.row_f1, "precision": self.precision, "recall": self.recall, "species_f1": self.species_f1,
                "n_rows": self.n_rows, "missing_rows": self.missing_rows, "per_class": self.per_class.to_dict("records")}


def evaluate_sets(pred: dict[str, set[str]], truth: dict[str, set[str]]) -> SubmissionReport:
    """Score predicted label sets against true ones; truth rows missing from `pred` count as predicted nocall."""
    rows = list(truth)
    missing = [r for r in rows if r not in pred]
    classes = sorted(set().union(*truth.values(), *pred.values()))
    P = sets_to_matrix([pred.get(r, set()) for r in rows], classes)
    T = sets_to_matrix([truth[r] for r in rows], classes)
    p, r, f = micro_prf(P, T)
    return SubmissionReport(row_f1(P, T), p, r, f, len(rows), missing, per_class_prf(P, T, classes))


def evaluate_submission(pred_csv: str | Path, truth_csv: str | Path) -> SubmissionReport:
    return evaluate_sets(read_truth(pred_csv), read_truth(truth_csv))


@dataclass
class AlignedScores:
    """Scores of every truth row, per output kind [shape=(n_rows, K)], and the truth [same shape]."""

    row_ids: list[str]
    classes: list[str]
    scores: dict[str, np.ndarray]
    true: np.ndarray
    missing_rows: list[str]


def align_scores(scores: pd.DataFrame, truth: dict[str, set[str]], test_csv: str | Path,
                 audio_dir: str | Path | None = None) -> AlignedScores:
    """Line up scores.parquet rows with truth rows through test.csv (row_id -> audio file, seconds).

    Rows without `seconds` take the max over the whole file. Truth labels the model does not
    know get a score column of zeros (they can only be missed).
    """
    test = read_kaggle_test(test_csv, audio_dir).set_index("row_id")
    model_classes = [c for c in scores.columns if c not in ("file", "start_s", "end_s", "output")]
    classes = model_classes + sorted(set().union(*truth.values()) - set(model_classes))
    row_ids = [r for r in truth if r in test.index]
    missing = [r for r in truth if r not in test.index]
    if not row_ids:
        raise BirdsedError(f"no truth row_id is listed in {test_csv}")
    out: dict[str, np.ndarray] = {}
    not_scored: set[str] = set()
    for kind in OUTPUT_KINDS:
        part = scores[scores["output"] == kind]
        values = part[model_classes].to_numpy(np.float32)
        by_row = {(f, float(s)): i for i, (f, s) in enumerate(zip(part["file"], part["start_s"]))}
        by_file = {f: values[idx].max(axis=0) for f, idx in part.groupby("file", sort=False).indices.items()}
        m = np.zeros((len(row_ids), len(classes)), dtype=np.float32)
        for i, r in enumerate(row_ids):
            path, sec = test.at[r, "path"], test.at[r, "seconds"]
            if pd.isna(sec):
                v = by_file.get(path)
            else:
                j = by_row.get((path, float(sec) - 5.0))
                v = values[j] if j is not None else None
            if v is None:
                not_scored.add(r)
            else:
                m[i, : len(model_classes)] = v
        out[kind] = m
    true = sets_to_matrix([truth[r] for r in row_ids], classes)
    return AlignedScores(row_ids, classes, out, true, missing + sorted(not_scored))


def score_report(al: AlignedScores) -> dict:
    """For each output: F1 against threshold (a sweep), macro/micro AP, and the seed's table."""
    report = {"n_rows": len(al.row_ids), "missing_rows": al.missing_rows, "outputs": {}}
    for kind in OUTPUT_KINDS:
        s = al.scores[kind]
        sweep = threshold_sweep(s, al.true)
        best = sweep.loc[sweep["row_f1"].idxmax()]
        macro, micro = average_precision(s, al.true)
        seed_thr = SEED_THRESHOLDS[kind]
        report["outputs"][kind] = {
            "seed_threshold": seed_thr, "seed_row_f1": row_f1(s >= seed_thr, al.true),
            "best_threshold": float(best["threshold"]), "best_row_f1": float(best["row_f1"]),
            "macro_ap": macro, "micro_ap": micro, "sweep": sweep.to_dict("records"),
        }
    return report


def default_test_csv(truth_csv: str | Path, test_csv: str | Path | None) -> Path:
    path = Path(test_csv) if test_csv else Path(truth_csv).parent / "test.csv"
    if not path.is_file():
        raise BirdsedError(f"{path}: test.csv not found; pass --test-csv to map row_ids to files")
    return path


def scores_report_from_files(scores_path: str | Path, truth_csv: str | Path, test_csv: str | Path | None = None,
                             audio_dir: str | Path | None = None) -> dict:
    al = align_scores(pd.read_parquet(scores_path), read_truth(truth_csv), default_test_csv(truth_csv, test_csv), audio_dir)
    return score_report(al)
