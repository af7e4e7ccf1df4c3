"""BirdNET's place-and-season prior on predict's scores (`predict --prior soft|filter`): a score transform.

A model's classes are mapped to BirdNET V2.4's labels (`model_labels`: a BirdNET model's own mapping, an ensemble's
BirdNET members', else each class by eBird code, scientific or common name, or by the names model.json keeps for it
from the data set it trained on); BirdNET's metadata model (model/birdnet_range.py) gives each label's
occurrence at a place and week, computed once per (lat, lon, week) and cached. For each recording:

  soft    logit(score) + weight * log(max(occurrence, 1e-3)): an unlikely species is down-weighted (at most
          weight * 6.9 logits), never dropped; weight 0 changes nothing
  filter  BirdNET-Analyzer's species filter: a class whose occurrence is under min_occurrence (0.03) scores 0
  off     the scores as the model gave them

Classes that map to no BirdNET label keep their scores (named in a warning when the prior is set up); a model none of
whose classes maps is refused. `OccurrencePrior(options)` is the transform, one registered score transform
(infer/transforms.py, "prior"; predict puts it first): called with one recording's scores [shape=(n_rows, K)] and its
Place, it gives the adjusted scores; applied to a block of whole recordings' scores.parquet rows (apply), each
recording's at its own place, and it keeps the model's own scores as rows of output "<kind>_raw" (rows.raw_output),
so scores.parquet holds both while the decisions use the adjusted ones.

Where and when a recording is: its own place and start time from places.py (a row of the sites table or `--site
LAT,LON`; the start from its name or the table), turned into BirdNET's place and week by `recording_place` (the week
of its start date; `--week`, default all year, when its date is unknown). `PriorOptions.places_for` does that for
every recording (of a block: from their RecordingContext's place) and refuses the prior, naming them, for recordings
without a place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from birdsed.config.choices import DEFAULT_MIN_OCCURRENCE, DEFAULT_PRIOR_WEIGHT, MAX_PRIOR_WEIGHT, PRIORS
from birdsed.errors import ConfigError
from birdsed.infer.transforms import ScoreTransform, score_transform
from birdsed.infer.writers import RecordingContext
from birdsed.model.birdnet_range import ALL_YEAR, WEEKS, Place, filter_scores, label_occurrence, soft_prior, week_of
from birdsed.places import RecordingPlace
from birdsed.rows import RAW_SUFFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorOptions:
    """What `predict --prior` asks: the mode, its weight (soft) or cut-off (filter), BirdNET's week for recordings
    whose date is unknown (--week; -1: all year), and (once set up for a model: `for_model`) BirdNET's label of each
    class ("" for none). The recordings' places are places.py's (--site, --sites), not the prior's."""

    mode: str = "off"
    weight: float = DEFAULT_PRIOR_WEIGHT
    min_occurrence: float = DEFAULT_MIN_OCCURRENCE
    week: int = ALL_YEAR
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in PRIORS:
            raise ConfigError(f"prior {self.mode!r}: must be one of {list(PRIORS)}")
        if not (np.isfinite(self.weight) and 0 <= self.weight <= MAX_PRIOR_WEIGHT):
            raise ConfigError(f"prior weight {self.weight!r}: must be from 0 to {MAX_PRIOR_WEIGHT:g}")
        if not (np.isfinite(self.min_occurrence) and 0 <= self.min_occurrence <= 1):
            raise ConfigError(f"minimum occurrence {self.min_occurrence!r}: must be from 0 to 1")
        if not (self.week == ALL_YEAR or 1 <= self.week <= WEEKS):
            raise ConfigError(f"week {self.week!r}: must be 1 to {WEEKS} (BirdNET's weeks) or {ALL_YEAR} (all year)")
        if self.mode == "off" and self.week != ALL_YEAR:
            raise ConfigError(
                "--week is the prior's week for recordings whose date is unknown: give --prior soft or filter"
            )

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def for_model(
        self,
        classes: list[str],
        meta: Any,
        model_dir: str | Path | None = None,
        places: Mapping[str, RecordingPlace] | None = None,
    ) -> PriorOptions:
        """These options with BirdNET's label of each of the model's classes; the classes that map to none are named
        in a warning (they keep their scores), a model none of whose classes maps is refused. With the recordings'
        `places` (places.py), those without a place are refused (places_for) and the metadata model runs once for
        one of them, so that a missing extra stops the run before anything is scored."""
        labels = model_labels(classes, meta, model_dir)
        unmapped = [c for c, lab in zip(classes, labels) if not lab]
        if len(unmapped) == len(classes):
            shown = ", ".join(classes[:8]) + (" ..." if len(classes) > 8 else "")
            raise ConfigError(
                f"--prior {self.mode}: none of the model's {len(classes)} classes ({shown}) is a BirdNET label, an "
                "eBird code, or a scientific or common name BirdNET knows: the prior has nothing to weigh"
            )
        if unmapped:
            log.warning(
                "--prior %s: %d of %d class(es) map to no BirdNET label and keep their scores (no prior): %s",
                self.mode,
                len(unmapped),
                len(classes),
                ", ".join(unmapped[:20]) + (" ..." if len(unmapped) > 20 else ""),
            )
        resolved = replace(self, labels=tuple(labels))
        where = resolved.places_for(places or {})
        if where:
            OccurrencePrior(resolved).occurrence(next(iter(where.values())))
        return resolved

    def places_for(self, places: Mapping[str, RecordingPlace]) -> dict[str, Place]:
        """Each recording's place and week for the prior (recording_place: the week of its start date, else
        self.week); a ConfigError naming the recordings that have no place (no row of the sites table matches
        them): the prior would leave their scores as the model gave them, unlike the others'."""
        out: dict[str, Place] = {}
        nowhere: list[str] = []
        for f, p in places.items():
            place = recording_place(p.lat, p.lon, p.start, self.week)
            if place is None:
                nowhere.append(f)
            else:
                out[f] = place
        if nowhere:
            shown = ", ".join(PurePath(f).name for f in nowhere[:3]) + (", ..." if len(nowhere) > 3 else "")
            raise ConfigError(
                f"--prior {self.mode}: {len(nowhere)} recording(s) have no place ({shown}): add rows for them to the "
                "--sites table, or give --site LAT,LON for every recording"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PriorOptions | None:
        if not d:
            return None
        return cls(d["mode"], d["weight"], d["min_occurrence"], d.get("week", ALL_YEAR), tuple(d.get("labels", ())))

    def record(self) -> dict[str, Any]:
        """What run.json's decision record says of the prior."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.on:
            out["week_without_date"] = self.week  # the places: each recording's own (options.places)
            out |= {"weight": self.weight} if self.mode == "soft" else {"min_occurrence": self.min_occurrence}
            out["classes_without_prior"] = sum(1 for lab in self.labels if not lab)
        return out


def model_labels(classes: list[str], meta: Any, model_dir: str | Path | None = None) -> list[str]:
    """BirdNET's label of each class ("" for none): a BirdNET model's own mapping (model.json's birdnet.indices; in
    an ensemble, its BirdNET members' mappings, the first member that maps a class naming it), else the class's name,
    or one of the further names model.json keeps for it (`aliases`: a data set's species.csv, stored by train),
    looked up among BirdNET's labels and their eBird codes, scientific and common names (the SED models, the
    embedding heads)."""
    from birdsed.model.birdnet_labels import ebird_codes, model_aliases, name_index, read_labels
    from birdsed.model.names import norm_name

    labels = read_labels()
    aliases = model_aliases(meta)
    own = dict(zip(classes, _birdnet_indices(meta) or []))
    if model_dir is not None and _kind(meta) == "ensemble":
        from birdsed.model.meta import read_model_meta

        for member in meta["ensemble"]:  # the member folders, checked when model.json was read
            m = read_model_meta(Path(model_dir) / member).raw
            for c, i in zip(m["classes"], _birdnet_indices(m) or []):
                if i >= 0 and own.get(c, -1) < 0:
                    own[c] = i
    index = name_index(labels, ebird_codes())
    for c in classes:
        if own.get(c, -1) < 0:
            own[c] = next((index[norm_name(n)] for n in [c, *aliases.get(c, [])] if norm_name(n) in index), -1)
    return [labels[own[c]] if own[c] >= 0 else "" for c in classes]


def _kind(meta: Any) -> str | None:
    return meta.get("kind") if isinstance(meta, dict) else getattr(meta, "kind", None)


def _birdnet_indices(meta: Any) -> list[int] | None:
    """A BirdNET model's label index per class (-1: none), from model.json as read (a dict) or typed (kinds.py's
    BirdNETMeta); None for any other kind."""
    if _kind(meta) != "birdnet":
        return None
    if isinstance(meta, dict):
        return (meta.get("birdnet") or {}).get("indices")
    return list(meta.birdnet.indices)


def recording_place(lat: float | None, lon: float | None, start: date | None, week: int = ALL_YEAR) -> Place | None:
    """The prior's place and week of one recording: its BirdNET week from its start date when known, else `week`
    (--week; default all year); None when its place is unknown. `start` is the recording's local date (places.py's
    aware start time: its date where it was recorded)."""
    if lat is None or lon is None:
        return None
    return Place(float(lat), float(lon), week_of(start.month, start.day) if start is not None else week)


@score_transform("prior")
@dataclass(frozen=True)
class OccurrencePrior(ScoreTransform):
    """The transform (transforms.ScoreTransform, before the decision): a block's rows, each recording's at its own
    place and week (its RecordingContext's place: recording_place), under the prior; called with one recording's
    scores [shape=(n_rows, K)] and its Place, that recording's. scores.parquet keeps the model's own scores as rows
    of output "<kind>_raw" (rows.raw_output)."""

    options: PriorOptions
    _by_place: dict[Place, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    def occurrence(self, place: Place) -> np.ndarray:
        """Each class's occurrence at `place` [shape=(K,)], NaN for a class without a BirdNET label; cached."""
        if place not in self._by_place:
            from birdsed.model.birdnet_labels import read_labels

            position = {lab: i for i, lab in enumerate(read_labels())}
            per_label = label_occurrence(place)  # (6522,)
            self._by_place[place] = np.array(
                [per_label[position[lab]] if lab else np.nan for lab in self.options.labels], np.float32
            )
        return self._by_place[place]

    def __call__(self, scores: np.ndarray, place: Place | None) -> np.ndarray:
        if not self.options.on or place is None:
            return scores
        occ = self.occurrence(place)  # (K,)
        assert scores.ndim == 2 and scores.shape[1] == len(occ), (scores.shape, len(occ))
        if self.options.mode == "filter":
            return filter_scores(scores, occ, self.options.min_occurrence)
        return soft_prior(scores, occ, self.options.weight)

    def apply(self, scores: pd.DataFrame, classes: list[str], contexts: list[RecordingContext]) -> pd.DataFrame:
        """Each recording's rows at its place and week; a recording without a place refused (places_for)."""
        where = self.options.places_for({c.file: c.place for c in contexts})
        values = scores[classes].to_numpy(np.float32, copy=True)  # (N, K)
        for file, rows in scores.groupby("file", sort=False, observed=True).indices.items():
            values[rows] = self(values[rows], where.get(file))
        out = scores.copy()
        out[classes] = values
        return out

    def kept(self, before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
        """The model's own scores, as rows of output "<kind>_raw"."""
        return before.assign(output=before["output"].astype(str) + RAW_SUFFIX)

    def record(self) -> dict[str, Any]:
        return {"prior": self.options.record()}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options.to_dict()}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> OccurrencePrior:
        return cls(PriorOptions.from_dict(settings))
