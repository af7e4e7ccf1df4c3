"""Decisions, below both model/ and infer/: the thresholds a model stores (model.json's "thresholds"), the calibration
of its scores (model.json's "calibration", written by `calibrate`) and the word of a row with no class present.
infer/decide.py applies the thresholds to scores; `predict --calibrated` writes ScoreCalibration.probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from birdsed.config.choices import OUTPUT_KINDS, REFERENCE_THRESHOLDS
from birdsed.errors import ConfigError

NOCALL = "nocall"
EPS = 1e-4  # scores are clipped to [EPS, 1 - EPS] before their logit


def sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def logit(p: np.ndarray | float) -> np.ndarray | float:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ScoreCalibration:
    """P(a detection is right | score s) = sigmoid(a + b logit(s)) per class, for the scores of one output kind:
    each class's own (a, b) where `calibrate` fitted one, else the pooled curve over all species (the prior every
    species' fit is pulled towards: what a species with no verdicts is given)."""

    output: str
    pooled: tuple[float, float]
    per_class: dict[str, tuple[float, float]] = field(default_factory=dict)

    def coefficients(self, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) of each class [shape=(K,) each]."""
        ab = np.array([self.per_class.get(c, self.pooled) for c in classes], dtype=np.float64).reshape(-1, 2)
        return ab[:, 0], ab[:, 1]

    def probabilities(self, scores: np.ndarray, classes: list[str]) -> np.ndarray:
        """Calibrated probabilities of `scores` [shape=(N, K), K = len(classes)] -> float32 [shape=(N, K)]."""
        assert scores.ndim == 2 and scores.shape[1] == len(classes), (scores.shape, len(classes))
        a, b = self.coefficients(classes)
        return sigmoid(a + b * logit(scores.astype(np.float64))).astype(np.float32)

    def to_dict(self) -> dict:
        """As model.json's "calibration" keeps it (from_dict reads it back): what a shard's record saves."""
        return {
            "output": self.output,
            "pooled": _ab_dict(self.pooled),
            "per_class": {c: _ab_dict(v) for c, v in self.per_class.items()},
        }

    @classmethod
    def from_dict(cls, d: object) -> ScoreCalibration:
        """From model.json's "calibration" ({"output", "pooled": {"a", "b"}, "per_class": {class: {"a", "b", ...}}});
        a ConfigError naming the value that is not that."""
        try:
            pooled = _ab("pooled", d["pooled"])
            per_class = {str(c): _ab(f"per_class[{c!r}]", v) for c, v in d.get("per_class", {}).items()}
            output = _kind(d["output"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"calibration must map 'output', 'pooled' and 'per_class', got {d!r:.200} ({e})") from e
        return cls(output, pooled, per_class)


def _ab_dict(ab: tuple[float, float]) -> dict[str, float]:
    return {"a": ab[0], "b": ab[1]}


def _ab(where: str, v: object) -> tuple[float, float]:
    a, b = v["a"], v["b"]
    for name, x in (("a", a), ("b", b)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x):
            raise ConfigError(f"calibration {where}.{name} = {x!r}: must be a finite number")
    return float(a), float(b)


@dataclass
class Thresholds:
    """A global threshold per output kind, and optional per-class ones that override it."""

    global_: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_THRESHOLDS))
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: ScoreCalibration | None = None  # model.json's "calibration", when `calibrate` wrote one

    @classmethod
    def of_model(cls, meta: dict) -> Thresholds:
        """A model.json's "thresholds" (from_dict) with its "calibration" when it has one (ScoreCalibration)."""
        thresholds = cls.from_dict(meta.get("thresholds"))
        if meta.get("calibration") is not None:
            thresholds.calibration = ScoreCalibration.from_dict(meta["calibration"])
        return thresholds

    def vector(self, kind: str, classes: list[str]) -> np.ndarray:
        """(K,) thresholds of `kind` for `classes`."""
        if kind not in OUTPUT_KINDS:
            raise ConfigError(f"unknown output kind {kind!r}; valid: {list(OUTPUT_KINDS)}")
        own = self.per_class.get(kind, {})
        return np.array([own.get(c, self.global_[kind]) for c in classes], dtype=np.float32)

    def to_dict(self) -> dict:
        """model.json's "thresholds" (the calibration is its own key, written by `calibrate`)."""
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
