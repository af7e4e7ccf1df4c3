"""Score transforms: the one step between the rows' scores (the model's window scores pooled into 5 s rows, as the
parts hold them) and the decision. predict's options list them (PredictOptions.transforms, none by default); the
combined outputs apply them, in order, to each block of whole recordings before it is decided
(outputs.decided_blocks), so that a whole run and a merge of shards transform alike, and the parts keep the raw
scores (a re-run with other transforms scores nothing again).

    @score_transform("name")
    @dataclass(frozen=True)
    class MyTransform(ScoreTransform):
        strength: float = 1.0                                   # its settings: fields, saved in a shard's record

        def apply(self, scores, classes, contexts):              # -> the scores, transformed (a new frame)
            ...

`scores` is a block's rows of every output kind (scores.parquet's columns: file, start_s, end_s, output, then one
column per class); `contexts` says what is known of each recording of the block (writers.RecordingContext: its file,
duration and more). A transform changes only the class columns, and keeps the rows and their order. The decided block
keeps the raw scores beside the transformed ones (writers.Decided.raw).

A transform runs before the decision (the default: the decision is made on what it gives, and scores.parquet holds
that) or, with `after_decision = True`, after it, on the decided rows only (the decided output kind, smoothed): the
decision stays on the scores before it, and what the writers show (detections' scores) is what it gives. `kept`
names the rows scores.parquet keeps besides, `record` what run.json's decision record says of it. The two predict
options that are transforms:

  prior.OccurrencePrior   --prior: BirdNET's occurrence at each recording's place and week (before the decision;
                          keeps the model's own scores as rows of output "<kind>_raw")
  CalibratedScores        --calibrated: the model's calibration (after the decision: detections as without it, their
                          scores the probabilities; keeps those as rows of output "calibrated")

With both, the prior comes first, and the calibration is of the scores decided on: the prior's (the scores a review
of that run showed, which `calibrate` fitted).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from birdsed.decisions import ScoreCalibration
from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer.writers import RecordingContext
from birdsed.rows import CALIBRATED_OUTPUT


class ScoreTransform(abc.ABC):
    """One transform of the rows' scores (module docstring); a frozen dataclass whose fields are its settings."""

    name: ClassVar[str]
    after_decision: ClassVar[bool] = False  # True: applied to the decided rows, after the decision (module docstring)

    @abc.abstractmethod
    def apply(self, scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext]) -> pd.DataFrame:
        """The rows with their class columns transformed: same rows, same order, a new frame."""

    def to_dict(self) -> dict[str, Any]:
        """Its name and settings, as a shard's record saves it (from_dict rebuilds it for the merge)."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ScoreTransform:
        """The transform of the settings to_dict saved (its name left out)."""
        return cls(**settings)

    def kept(self, before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame | None:
        """The rows scores.parquet keeps besides the scores decided on, given this transform's input and output
        (None: none)."""
        return None

    def record(self) -> dict[str, Any]:
        """What run.json's decision record says of it (keys of that record; none by default)."""
        return {}


SCORE_TRANSFORMS: dict[str, type[ScoreTransform]] = {}


def score_transform(name: str) -> Callable[[type[ScoreTransform]], type[ScoreTransform]]:
    """Register a ScoreTransform class under `name`."""

    def register(cls: type[ScoreTransform]) -> type[ScoreTransform]:
        cls.name = name
        SCORE_TRANSFORMS[name] = cls
        return cls

    return register


def from_dict(d: dict[str, Any]) -> ScoreTransform:
    """The transform a record saved (ScoreTransform.to_dict)."""
    settings = dict(d)
    name = settings.pop("name", None)
    if name not in SCORE_TRANSFORMS:
        raise ConfigError(f"unknown score transform {name!r}; valid: {sorted(SCORE_TRANSFORMS)}")
    return SCORE_TRANSFORMS[name].from_settings(settings)


def apply_transforms(
    scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext], transforms: tuple[ScoreTransform, ...]
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """`scores` through each transform in order (the one place they are applied), and the rows they keep besides
    (ScoreTransform.kept), in their order."""
    kept = []
    for t in transforms:
        out = t.apply(scores, classes, contexts)
        if len(out) != len(scores) or list(out.columns) != list(scores.columns):
            raise BirdsedError(f"score transform {t.name!r} changed the rows or the columns; it may change scores only")
        more = t.kept(scores, out)
        if more is not None:
            kept.append(more)
        scores = out
    return scores, kept


@score_transform("calibrated")
@dataclass(frozen=True)
class CalibratedScores(ScoreTransform):
    """`predict --calibrated`: the decided rows' scores -> the probability that a detection is right (the model's
    calibration, decisions.ScoreCalibration). After the decision, which stays at the stored thresholds on the scores
    before it; scores.parquet keeps those scores and gains the probabilities as rows of output CALIBRATED_OUTPUT."""

    calibration: ScoreCalibration
    after_decision = True

    def apply(self, scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext]) -> pd.DataFrame:
        out = scores.copy()
        out[classes] = self.calibration.probabilities(scores[classes].to_numpy(np.float32), classes)
        return out

    def kept(self, before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
        return after.assign(output=CALIBRATED_OUTPUT)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "calibration": self.calibration.to_dict()}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CalibratedScores:
        return cls(ScoreCalibration.from_dict(settings["calibration"]))
