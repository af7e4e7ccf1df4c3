"""Metrics: the competition's row-wise micro F1, species-only micro P/R/F1, per-class P/R/F1, AP.

Rows are 5 s windows (or whole files); predictions and truth are boolean matrices
[shape=(n_rows, K)] over one class list. An empty row means the label `nocall`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from birdsed.config import REFERENCE_THRESHOLDS


def row_f1_per_row(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """F1 of each row's predicted set against its true set, `nocall` standing for an empty set."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    n_pred, n_true = pred.sum(1), true.sum(1)
    tp = (pred & true).sum(1) + ((n_pred == 0) & (n_true == 0))  # nocall predicted and true
    return 2 * tp / (np.maximum(n_pred, 1) + np.maximum(n_true, 1))


def row_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """The competition metric: mean over rows of the row's F1."""
    return float(row_f1_per_row(pred, true).mean()) if len(pred) else float("nan")


def micro_prf(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Species-only micro precision, recall, F1 (nocall is not a class here)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    tp, n_pred, n_true = (pred & true).sum(), pred.sum(), true.sum()
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return float(p), float(r), float(2 * p * r / (p + r)) if p + r else 0.0


def per_class_prf(pred: np.ndarray, true: np.ndarray, classes: list[str]) -> pd.DataFrame:
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    tp = (pred & true).sum(0)
    n_pred, n_true = pred.sum(0), true.sum(0)
    p = np.divide(tp, n_pred, out=np.zeros(len(classes)), where=n_pred > 0)
    r = np.divide(tp, n_true, out=np.zeros(len(classes)), where=n_true > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros(len(classes)), where=(p + r) > 0)
    return pd.DataFrame(
        {"class": classes, "precision": p, "recall": r, "f1": f, "support": n_true, "predicted": n_pred}
    )


def average_precision(scores: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(macro AP over classes with a positive, micro AP over all (row, class) pairs)."""
    true = np.asarray(true, bool)
    has = true.any(0)
    if not has.any():
        return float("nan"), float("nan")
    from sklearn.metrics import average_precision_score  # about 0.8 s to import: only where AP is computed

    macro = float(np.mean([average_precision_score(true[:, k], scores[:, k]) for k in np.flatnonzero(has)]))
    micro = float(average_precision_score(true.ravel(), scores.ravel()))
    return macro, micro


DEFAULT_SWEEP = np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.96, 0.05), [0.97, 0.99]]), 3)


def threshold_sweep(scores: np.ndarray, true: np.ndarray, thresholds: np.ndarray = DEFAULT_SWEEP) -> pd.DataFrame:
    """Row-wise F1 and species micro P/R/F1 at each global threshold."""
    rows = []
    for t in thresholds:
        pred = scores >= t
        p, r, f = micro_prf(pred, true)
        rows.append({"threshold": float(t), "row_f1": row_f1(pred, true), "precision": p, "recall": r, "species_f1": f})
    return pd.DataFrame(rows)


def sets_to_matrix(rows: list[set[str]], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(rows), len(classes)), dtype=bool)
    for i, s in enumerate(rows):
        for c in s:
            m[i, index[c]] = True
    return m


def recording_metrics(scores: dict[str, np.ndarray], y: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    """Validation metrics per recording (max over its windows): row-wise F1 of each output
    at the reference thresholds, and macro AP of clipwise."""
    recs, inverse = np.unique(rec, return_inverse=True)
    true = np.zeros((len(recs), y.shape[1]), dtype=bool)
    true[inverse] = y > 0
    out = {}
    for output, s in scores.items():
        pooled = np.full((len(recs), s.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(pooled, inverse, s)
        out[f"val_f1_{output}"] = row_f1(pooled >= REFERENCE_THRESHOLDS[output], true)
        if output == "clipwise":
            out["val_map"], out["val_micro_ap"] = average_precision(pooled, true)
    return out
