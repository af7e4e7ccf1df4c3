"""Decisions: which classes are present in a row, from one output kind's scores and thresholds (the Thresholds
themselves, and NOCALL, live in birdsed/decisions.py, below model/ and infer/)."""

from __future__ import annotations

import numpy as np

from birdsed.config import SMOOTHINGS
from birdsed.decisions import NOCALL, Thresholds, labels_of
from birdsed.errors import ConfigError

__all__ = ["NOCALL", "Thresholds", "decide", "labels_of", "smooth_rows"]


def smooth_rows(scores: np.ndarray, mode: str | None) -> np.ndarray:
    """Combine each row's scores with its neighbours' (3rd place): "sum" adds them, "max" takes the max.

    [shape=(n_rows, K)] -> same shape. Rows are consecutive rows of one recording.
    """
    if not mode or len(scores) < 2:
        return scores
    prev = np.vstack([scores[:1] * 0, scores[:-1]])
    nxt = np.vstack([scores[1:], scores[:1] * 0])
    if mode == "sum":
        return scores + prev + nxt
    if mode == "max":
        return np.maximum(scores, np.maximum(prev, nxt))
    raise ConfigError(f"unknown neighbour smoothing {mode!r}; valid: {list(SMOOTHINGS)}")


def decide(scores: np.ndarray, thresholds: np.ndarray, max_birds: int | None = None) -> np.ndarray:
    """Boolean presence [shape=(n_rows, K)] from scores [shape=(n_rows, K)] and thresholds [shape=(K,)].

    With `max_birds`, only the highest-scoring classes that pass are kept in each row.
    """
    present = scores >= thresholds[None, :]
    if max_birds is not None and max_birds > 0 and present.sum(axis=1).max(initial=0) > max_birds:
        rank = np.argsort(np.argsort(-np.where(present, scores, -np.inf), axis=1), axis=1)
        present &= rank < max_birds
    return present
