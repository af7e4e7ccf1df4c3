"""Truth that Kaggle keeps per row rather than per call: the rows come labelled, there are no events.

- cornell2020  `row_id,birds` (test_labels.csv, or a submission) with the competition's test.csv mapping each row
               to its audio_id and `seconds` (the row is the 5 s ending there; empty: the whole file, site 3).
               Cornell Birdcall Identification (2020), Kaggle, "Data" page.
- birdclef2021 train_soundscape_labels.csv: `row_id,site,audio_id,seconds,birds`, the row the 5 s ending at
               `seconds` of the soundscape train_soundscapes/<audio_id>_<site>_<date>.ogg. BirdCLEF 2021, Kaggle,
               "Data" page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.data.manifest import read_csv_checked
from birdsed.errors import TruthError
from birdsed.kaggle.cornell import read_kaggle_test, read_truth
from birdsed.rows import ROW_S

ROW_COLUMNS = ["row_id", "file", "start_s", "labels"]  # start_s NaN: the whole file


def _labels(birds: str) -> set[str]:
    return {b for b in birds.split() if b != "nocall"}


def header_of(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [h.strip() for h in f.readline().strip().split(",")]
    except (OSError, UnicodeDecodeError):
        return []


def is_birdclef2021(path: Path) -> bool:
    return {"row_id", "audio_id", "seconds", "birds", "site"} <= set(header_of(path))


def is_row_truth(path: Path) -> bool:
    return {"row_id", "birds"} <= set(header_of(path))


def cornell_rows(truth_csv: Path, test_csv: Path, audio_dir: Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(rows, the truth's row ids that test.csv does not list)."""
    truth = read_truth(truth_csv)
    test = read_kaggle_test(test_csv, audio_dir).set_index("row_id")
    listed = [r for r in truth if r in test.index]
    if truth and not listed:
        raise TruthError(f"no row_id of {truth_csv} is listed in {test_csv}")
    rows = pd.DataFrame(
        {
            "row_id": listed,
            "file": [test.at[r, "path"] for r in listed],
            "start_s": [float(test.at[r, "seconds"]) - ROW_S for r in listed],
            "labels": [truth[r] for r in listed],
        },
        columns=ROW_COLUMNS,
    )
    return rows, [r for r in truth if r not in test.index]


def birdclef2021_rows(csv: Path, audio_dir: Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(rows, the row ids whose soundscape is not in audio_dir (default: train_soundscapes beside the table))."""
    df = read_csv_checked(csv, ["row_id", "site", "audio_id", "seconds", "birds"])
    folder = Path(audio_dir) if audio_dir else csv.parent / "train_soundscapes"
    found = {}
    for aid, site in df[["audio_id", "site"]].drop_duplicates().itertuples(index=False):
        hits = sorted(folder.glob(f"{aid}_{site}_*")) if folder.is_dir() else []
        found[(aid, site)] = str(hits[0]) if hits else ""
    sec = pd.to_numeric(df["seconds"], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(sec) | (sec <= 0) | (sec % ROW_S != 0))
    if len(bad):
        i = int(bad[0])
        raise TruthError(
            f"{csv}: line {i + 2}: seconds {df['seconds'].iloc[i]!r} is not a positive multiple of {ROW_S:g}"
        )
    files = [found[(a, s)] for a, s in zip(df["audio_id"], df["site"])]
    ok = [bool(f) for f in files]
    rows = pd.DataFrame(
        {
            "row_id": df["row_id"][ok],
            "file": np.asarray(files)[ok],
            "start_s": (sec - ROW_S)[ok],
            "labels": [_labels(b) for b, k in zip(df["birds"], ok) if k],
        },
        columns=ROW_COLUMNS,
    )
    return rows.reset_index(drop=True), list(df["row_id"][[not k for k in ok]])
