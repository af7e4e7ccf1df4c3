"""Threshold tuning on validation data: a global threshold per output, then per-class
thresholds (coordinate ascent on row-wise F1) shrunk toward the global one for rare classes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdsed.config import OUTPUT_KINDS
from birdsed.data.manifest import read_dataset
from birdsed.decisions import Thresholds
from birdsed.errors import BirdsedError, ConfigError
from birdsed.evaluate.metrics import DEFAULT_SWEEP, row_f1, sets_to_matrix
from birdsed.model.meta import read_model_meta, update_thresholds
from birdsed.model.modeldir import load_model_dir

log = logging.getLogger(__name__)
GRID = np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.96, 0.025), [0.97, 0.98, 0.99]]), 4)


@dataclass
class TuneResult:
    thresholds: Thresholds
    best_output: str
    before: dict[str, float]  # row F1 per output at the thresholds it started from
    global_only: dict[str, float]  # ... at the tuned global threshold
    after: dict[str, float]  # ... with per-class thresholds


def _row_f1_batch(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """Mean row-wise F1 for stacked candidates: arrays [shape=(G, R)] -> (G,)."""
    both_empty = (n_pred == 0) & (n_true == 0)
    f1 = 2 * (tp + both_empty) / (np.maximum(n_pred, 1) + np.maximum(n_true, 1))
    return f1.mean(axis=1)


def per_class_thresholds(
    scores: np.ndarray,
    true: np.ndarray,
    global_thr: float,
    shrink: float = 10.0,
    passes: int = 2,
    grid: np.ndarray = GRID,
) -> np.ndarray:
    """(K,) thresholds maximising row-wise F1 one class at a time, shrunk toward `global_thr`:
    thr = (n_pos * best + shrink * global) / (n_pos + shrink)."""
    true = true.astype(bool)
    K = scores.shape[1]
    thr = np.full(K, global_thr, dtype=np.float64)
    pred = scores >= thr
    n_true = true.sum(1)[None, :]
    for _ in range(passes):
        for c in range(K):
            n_pos = int(true[:, c].sum())
            if n_pos == 0 and not pred[:, c].any():
                continue
            others = np.delete(np.arange(K), c)
            tp_o = (pred[:, others] & true[:, others]).sum(1)
            np_o = pred[:, others].sum(1)
            pc = scores[None, :, c] >= grid[:, None]  # (G, R)
            f1 = _row_f1_batch(tp_o[None] + (pc & true[None, :, c]), np_o[None] + pc, n_true)
            ties = grid[f1 >= f1.max() - 1e-12]
            best = float(ties[np.argmin(np.abs(ties - global_thr))])
            thr[c] = (n_pos * best + shrink * global_thr) / (n_pos + shrink)
            pred[:, c] = scores[:, c] >= thr[c]
    return thr


def tune(
    scores: dict[str, np.ndarray],
    true: np.ndarray,
    classes: list[str],
    start: Thresholds | None = None,
    shrink: float = 10.0,
    per_class: bool = True,
) -> TuneResult:
    """Tune thresholds of every output on (n_rows, K) scores; pick the output with the best F1."""
    start = start or Thresholds()
    true = true.astype(bool)
    result = Thresholds(dict(start.global_), {})
    before, global_only, after = {}, {}, {}
    for output in OUTPUT_KINDS:
        s = scores[output]
        before[output] = row_f1(s >= start.vector(output, classes)[None, :], true)
        f1s = [row_f1(s >= t, true) for t in DEFAULT_SWEEP]
        g = float(DEFAULT_SWEEP[int(np.argmax(f1s))])
        result.global_[output] = g
        global_only[output] = max(f1s)
        after[output] = global_only[output]
        if per_class:
            thr = per_class_thresholds(s, true, g, shrink)
            f1 = row_f1(s >= thr[None, :], true)
            if f1 > global_only[output]:  # keep per-class thresholds only where they help on this data
                result.per_class[output] = {c: round(float(t), 4) for c, t in zip(classes, thr) if abs(t - g) > 1e-9}
                after[output] = f1
    best = max(OUTPUT_KINDS, key=lambda k: after[k])
    return TuneResult(result, best, before, global_only, after)


def file_level_scores(model_dir: Path, data: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Run the model over a labelled data set; each recording is one row (max over its 5 s rows)."""
    from birdsed.infer.grid import FileResult
    from birdsed.infer.loop import predict_files

    model, _, _ = load_model_dir(model_dir)
    m = read_dataset(data)
    paths = list(m.table["path"])
    rows = {p: i for i, p in enumerate(paths)}
    scores = {k: np.zeros((len(paths), len(model.classes)), np.float32) for k in OUTPUT_KINDS}
    ok = np.zeros(len(paths), bool)
    for res in predict_files(model, paths, quiet=False):
        if isinstance(res, FileResult):
            for k in OUTPUT_KINDS:
                scores[k][rows[res.path]] = res.rows[k].max(axis=0)
            ok[rows[res.path]] = True
    labels = [set(p) | set(s) for p, s in zip(m.table["primary_labels"], m.table["secondary_labels"])]
    true = sets_to_matrix([{c for c in lab if c in model.classes} for lab in labels], model.classes)
    return {k: v[ok] for k, v in scores.items()}, true[ok], model.classes


def tune_model(
    model_dir: str | Path,
    scores_path=None,
    truth_csv=None,
    test_csv=None,
    data=None,
    shrink: float = 10.0,
    per_class: bool = True,
    dry_run: bool = False,
    strict: bool = False,
    **truth_kw,
) -> TuneResult:
    """Tune on scores + truth (any truth: evaluate.align_files, truth_kw its options), or on a labelled data set,
    and store the thresholds in model.json. What the scores and truth did not share is logged (`strict`: an error)."""
    from birdsed.evaluate.score import align_files

    if not (math.isfinite(shrink) and shrink >= 0):
        raise ConfigError(f"tune shrink (--shrink) must be a finite number >= 0, got {shrink}")
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    classes = meta.classes
    if scores_path and truth_csv:
        al = align_files(scores_path, truth_csv, test_csv, strict=strict, **truth_kw)
        for line in al.unused.lines():
            log.warning("tune: %s", line)
        scores = {k: v[:, : len(classes)] for k, v in al.scores.items()}
        true = al.true[:, : len(classes)]
    elif data:
        scores, true, classes = file_level_scores(model_dir, Path(data))
    else:
        raise BirdsedError("tune needs --scores and --truth, or --data")
    result = tune(scores, true, classes, meta.thresholds, shrink, per_class)
    if not dry_run:
        update_thresholds(model_dir, result.thresholds, result.best_output)
    return result
