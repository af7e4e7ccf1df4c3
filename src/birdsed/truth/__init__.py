"""Truth as people keep it, read into one form for evaluate, tune and report.

Annotation formats (formats.py: Raven, Audacity, a plain CSV, birdsed's detections.csv) give events: a table of
file, start_s, end_s, label, low_hz, high_hz (events.py); Kaggle's truth (birdsed.kaggle.truth: Cornell 2020 with its
test.csv, BirdCLEF 2021's soundscape labels) comes as labelled 5 s rows. grid.py lines either up with the 5 s
rows a prediction scored.

    truth = load_truth("annotations/")            # a table, or a folder of tables (recursive)
    truth = load_truth("test_labels.csv", test_csv="test.csv")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdsed.config import TRUTH_FORMATS
from birdsed.errors import TruthError
from birdsed.kaggle import truth as kaggle
from birdsed.truth.events import EVENT_COLUMNS
from birdsed.truth.formats import FORMATS, is_blank, recording_of

TABLE_SUFFIXES = (".txt", ".csv", ".tsv")


@dataclass
class Truth:
    source: str
    fmt: str
    events: pd.DataFrame | None = None  # annotation formats: EVENT_COLUMNS
    covered: list[str] = field(default_factory=list)  # the recordings the annotations cover (as they name them)
    rows: pd.DataFrame | None = None  # row formats: kaggle.ROW_COLUMNS
    not_listed: list[str] = field(default_factory=list)  # row ids with no audio to map them to

    @property
    def is_rows(self) -> bool:
        return self.rows is not None


def sniff(path: Path) -> str:
    """The format of one table, by its content (not its name)."""
    if kaggle.is_birdclef2021(path):
        return "birdclef2021"
    if kaggle.is_row_truth(path):
        return "cornell2020"
    for name, reader in FORMATS.items():
        if reader.sniff(path):
            return name
    raise TruthError(
        f"{path}: not a truth table birdsed knows: a Raven selection table (tab-separated, with "
        f"'Begin Time (s)'), an Audacity label file (start<TAB>end<TAB>label), a CSV of file,start_s,end_s,"
        f"label, or Kaggle's row_id,birds"
    )


def tables_in(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise TruthError(f"{path}: no annotation tables ({', '.join(TABLE_SUFFIXES)}) in this folder")
        return found
    if not path.is_file():
        raise TruthError(f"{path}: truth not found")
    return [path]


def load_truth(
    path: str | Path,
    fmt: str = "auto",
    label_column: str | None = None,
    test_csv: str | Path | None = None,
    audio_dir: str | Path | None = None,
) -> Truth:
    """Read a truth table (or a folder of annotation tables, one format). Kaggle Cornell truth needs its test.csv
    (default: test.csv beside the truth)."""
    path = Path(path)
    if fmt not in TRUTH_FORMATS:
        raise TruthError(f"truth format {fmt!r}: valid: {list(TRUTH_FORMATS)}")
    tables = tables_in(path)
    blank = [t for t in tables if is_blank(t)]  # label files of recordings with no calls: they cover their recording
    tables = [t for t in tables if t not in blank]
    formats = {t: (fmt if fmt != "auto" else sniff(t)) for t in tables}
    if len(set(formats.values())) > 1:
        raise TruthError(
            f"{path}: tables of several formats ({sorted(set(formats.values()))}); give one format per folder"
        )
    found = next(iter(formats.values()), fmt if fmt != "auto" else "audacity")
    if found in ("cornell2020", "birdclef2021"):
        if len(tables) != 1:
            raise TruthError(f"{path}: one {found} table at a time, found {len(tables)}")
        if found == "birdclef2021":
            rows, not_listed = kaggle.birdclef2021_rows(tables[0], Path(audio_dir) if audio_dir else None)
        else:
            test = Path(test_csv) if test_csv else tables[0].parent / "test.csv"
            if not test.is_file():
                raise TruthError(
                    f"{test}: test.csv not found; pass --test-csv to map {tables[0].name}'s row_ids to files"
                )
            rows, not_listed = kaggle.cornell_rows(tables[0], test, Path(audio_dir) if audio_dir else None)
        return Truth(str(path), found, rows=rows, not_listed=not_listed)
    if blank and found not in ("raven", "audacity"):
        raise TruthError(f"{blank[0]}: an empty file among {found} tables; remove it (or give each its header)")
    parts, covered = [], [recording_of(t) for t in blank]
    for t in tables:
        events, files = FORMATS[found].read(t, label_column)
        parts.append(events)
        covered += files
    events = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)
    return Truth(str(path), found, events=events, covered=sorted(set(covered)))
