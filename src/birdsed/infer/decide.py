"""Decisions: which classes are present in a row, from one output kind's scores and thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from birdsed.config import OUTPUT_KINDS, REFERENCE_THRESHOLDS, SMOOTHINGS
from birdsed.errors import ConfigError

NOCALL = "nocall"


@dataclass
class Thresholds:
    """A global threshold per output kind, and optional per-class ones that override it."""

    global_: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_THRESHOLDS))
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def vector(self, kind: str, classes: list[str]) -> np.ndarray:
        """(K,) thresholds of `kind` for `classes`."""
        if kind not in OUTPUT_KINDS:
            raise ConfigError(f"unknown output kind {kind!r}; valid: {list(OUTPUT_KINDS)}")
        own = self.per_class.get(kind, {})
        return np.array([own.get(c, self.global_[kind]) for c in classes], dtype=np.float32)

    def to_dict(self) -> dict:
        return {"global": dict(self.global_), "per_class": {k: dict(v) for k, v in self.per_class.items()}}

    @classmethod
    def from_dict(cls, d: dict | None) -> Thresholds:
        """From model.json's "thresholds" ({"global": {kind: t}, "per_class": {kind: {class: t}}}); every t a number
        in [0, 1], every kind one of OUTPUT_KINDS (a ConfigError naming the value otherwise)."""
        d = d or {}
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("global", {}), dict)
            or not isinstance(d.get("per_class", {}), dict)
        ):
            raise ConfigError(f"thresholds must be a mapping of 'global' and 'per_class', got {d!r:.200}")
        per_class = {}
        for kind, values in d.get("per_class", {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"thresholds per_class[{kind!r}] must map classes to thresholds")
            per_class[_kind(kind)] = {str(c): _threshold(f"per_class[{kind!r}][{c!r}]", t) for c, t in values.items()}
        global_ = {_kind(k): _threshold(f"global[{k!r}]", t) for k, t in d.get("global", {}).items()}
        return cls({**REFERENCE_THRESHOLDS, **global_}, per_class)


def _kind(kind: str) -> str:
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"thresholds: unknown output kind {kind!r}; valid: {list(OUTPUT_KINDS)}")
    return kind


def _threshold(where: str, t: object) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
        raise ConfigError(f"thresholds {where} = {t!r}: must be a number in [0, 1]")
    return float(t)


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


def labels_of(present: np.ndarray, classes: list[str]) -> list[str]:
    """One `birds` string per row: space-separated classes, or "nocall"."""
    names = np.asarray(classes)
    return [" ".join(names[row]) or NOCALL for row in present]
