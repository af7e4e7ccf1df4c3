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
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import pandas as pd

from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer.writers import RecordingContext


class ScoreTransform(abc.ABC):
    """One transform of the rows' scores (module docstring); a frozen dataclass whose fields are its settings."""

    name: ClassVar[str]

    @abc.abstractmethod
    def apply(self, scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext]) -> pd.DataFrame:
        """The rows with their class columns transformed: same rows, same order, a new frame."""

    def to_dict(self) -> dict[str, Any]:
        """Its name and settings, as a shard's record saves it (from_dict rebuilds it for the merge)."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


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
    return SCORE_TRANSFORMS[name](**settings)


def apply_transforms(
    scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext], transforms: tuple[ScoreTransform, ...]
) -> pd.DataFrame:
    """`scores` through each transform in order (the one place they are applied)."""
    for t in transforms:
        out = t.apply(scores, classes, contexts)
        if len(out) != len(scores) or list(out.columns) != list(scores.columns):
            raise BirdsedError(f"score transform {t.name!r} changed the rows or the columns; it may change scores only")
        scores = out
    return scores
