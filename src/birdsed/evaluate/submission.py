"""Scoring a submission (row_id,birds) against row truth, and what any score did not use (Unused)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from birdsed.errors import BirdsedError
from birdsed.evaluate.metrics import (
    micro_prf,
    per_class_prf,
    row_f1,
    sets_to_matrix,
)
from birdsed.kaggle.cornell import read_truth


@dataclass
class Unused:
    """What a score did not use, or could not: each list is counted, printed and in --json; `strict` refuses any."""

    pred_rows_without_truth: list[str] = field(default_factory=list)  # predicted or scored rows no truth row names
    truth_rows_without_pred: list[str] = field(default_factory=list)  # truth rows with no prediction (scored nocall)
    truth_classes_unknown: list[str] = field(default_factory=list)  # truth labels the prediction / model never names
    pred_classes_unknown: list[str] = field(default_factory=list)  # predicted labels no truth row has
    truth_has_no_positive: bool = False  # every truth row is nocall: F1 and AP say little
    events_past_end: list[str] = field(default_factory=list)  # annotated events after their recording's end (not used)
    recordings_not_predicted: list[str] = field(default_factory=list)  # annotated recordings with no prediction

    def lines(self) -> list[str]:
        """One sentence per kind of thing not used (empty when everything was)."""
        out = []
        for items, what in (
            (self.pred_rows_without_truth, "prediction row(s) with no truth row (not scored)"),
            (self.truth_rows_without_pred, "truth row(s) with no prediction (scored as nocall)"),
            (self.truth_classes_unknown, "truth class(es) the prediction never names (can only be missed)"),
            (self.pred_classes_unknown, "predicted class(es) no truth row has"),
            (self.events_past_end, "annotated event(s) beginning after their recording's end (not used)"),
            (self.recordings_not_predicted, "annotated recording(s) with no prediction (every event there missed)"),
        ):
            if items:
                out.append(f"{len(items)} {what}, e.g. {items[:3]}")
        if self.truth_has_no_positive:
            out.append("the truth has no positive at all (every row nocall)")
        return out

    def check(self, strict: bool) -> None:
        if strict and self.lines():
            raise BirdsedError("--strict: " + "; ".join(self.lines()))


def check_overlap(n_truth: int, n_used: int, truth: str | Path, pred: str | Path) -> None:
    """An empty truth, or a prediction sharing no row with it, is an error, never a score."""
    if n_truth == 0:
        raise BirdsedError(f"{truth}: the truth has no rows")
    if n_used == 0:
        raise BirdsedError(
            f"{pred} and {truth} share no row: nothing to score (another test set, or another test.csv?)"
        )


@dataclass
class SubmissionReport:
    row_f1: float
    precision: float
    recall: float
    species_f1: float
    n_rows: int
    missing_rows: list[str]
    per_class: pd.DataFrame
    unused: Unused = field(default_factory=Unused)

    def to_dict(self) -> dict:
        return {
            "row_f1": self.row_f1,
            "precision": self.precision,
            "recall": self.recall,
            "species_f1": self.species_f1,
            "n_rows": self.n_rows,
            "missing_rows": self.missing_rows,
            "unused": asdict(self.unused),
            "per_class": self.per_class.to_dict("records"),
        }


def evaluate_sets(
    pred: dict[str, set[str]],
    truth: dict[str, set[str]],
    strict: bool = False,
    names: tuple[str, str] = ("the prediction", "the truth"),
) -> SubmissionReport:
    """Score predicted label sets against true ones; truth rows missing from `pred` count as predicted nocall.
    What was not used is counted in `unused`; with `strict` any of it is an error."""
    rows = list(truth)
    missing = [r for r in rows if r not in pred]
    check_overlap(len(rows), len(rows) - len(missing), names[1], names[0])
    truth_classes, pred_classes = set().union(*truth.values()), set().union(*(pred[r] for r in pred))
    unused = Unused(
        [r for r in pred if r not in truth],
        missing,
        sorted(truth_classes - pred_classes),
        sorted(pred_classes - truth_classes),
        not truth_classes,
    )
    unused.check(strict)
    classes = sorted(truth_classes | pred_classes)
    P = sets_to_matrix([pred.get(r, set()) for r in rows], classes)
    T = sets_to_matrix([truth[r] for r in rows], classes)
    p, r, f = micro_prf(P, T)
    return SubmissionReport(row_f1(P, T), p, r, f, len(rows), missing, per_class_prf(P, T, classes), unused)


def evaluate_submission(pred_csv: str | Path, truth_csv: str | Path, strict: bool = False) -> SubmissionReport:
    return evaluate_sets(read_truth(pred_csv), read_truth(truth_csv), strict, (str(pred_csv), str(truth_csv)))
