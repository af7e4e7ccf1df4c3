"""Decisions, below both model/ and infer/: the thresholds a model stores (model.json's "thresholds") and the
word of a row with no class present. infer/decide.py applies them to scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from birdsed.config.choices import OUTPUT_KINDS, REFERENCE_THRESHOLDS
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
        in [0, 1], every kind one of OUTPUT_KINDS (a ConfigError naming the value otherwise); None (no thresholds
        written) is the reference thresholds, any other value that is not that mapping (0, [], a key of another name)
        an error."""
        d = {} if d is None else d
        if (
            not isinstance(d, dict)
            or not set(d) <= {"global", "per_class"}
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


def labels_of(present: np.ndarray, classes: list[str]) -> list[str]:
    """One `birds` string per row: space-separated classes, or "nocall"."""
    names = np.asarray(classes)
    return [" ".join(names[row]) or NOCALL for row in present]
