"""Data-set readers: every supported layout becomes one Manifest table.

Manifest columns (the source's other columns are kept after these):
  recording_id      unique, stable id (the audio path relative to the data-set root)
  path              absolute audio path
  primary_labels    list[str], may be empty (a negative clip)
  secondary_labels  list[str]
  duration_s        float, NaN when unknown
  rating            float, NaN when unknown
"""

from __future__ import annotations

import ast
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import DATA_FORMATS
from birdsed.errors import ManifestError
from birdsed.fsutil import undecodable_name
from birdsed.rows import class_name_problem

log = logging.getLogger(__name__)

CORE_COLUMNS = ["recording_id", "path", "primary_labels", "secondary_labels", "duration_s", "rating"]
FORMATS = DATA_FORMATS
_SCI_NAME = re.compile(r"^(?P<common>.*?)\s*\((?P<sci>[^()]*)\)\s*$")


@dataclass
class Manifest:
    """A labelled set of recordings. `missing` lists listed audio files that do not exist."""

    table: pd.DataFrame
    root: Path
    source: str
    missing: list[str] = field(default_factory=list)
    unmapped_secondary: dict[str, int] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)  # listed files that resolve outside the audio folder: refused
    # (recording_id, why) of listed files whose path is not valid UTF-8 (no store table can hold it): skipped
    bad_names: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def classes(self) -> list[str]:
        """Sorted union of every primary and secondary label."""
        labels: set[str] = set()
        for col in ("primary_labels", "secondary_labels"):
            for ls in self.table[col]:
                labels.update(ls)
        return sorted(labels)

    def subset(self, mask: np.ndarray | pd.Series) -> Manifest:
        return Manifest(self.table[np.asarray(mask)].reset_index(drop=True), self.root, self.source)


def repeated_columns(path: Path) -> list[str]:
    """The column names a CSV's header holds more than once (pandas would rename the second `labels` to `labels.1`,
    and the table's reader would silently use only the first)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # the reader that follows says what is wrong with the file
    names = [h.strip() for h in header]
    return sorted({n for n in names if names.count(n) > 1})


def read_csv_checked(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as strings; a malformed file, a missing or repeated column raises ManifestError naming file, line,
    column."""
    if not path.is_file():
        raise ManifestError(f"{path}: file not found")
    repeated = repeated_columns(path)
    if repeated:
        raise ManifestError(f"{path}: column(s) {repeated} appear more than once in the header; keep one of each")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], on_bad_lines="error")
    except pd.errors.ParserError as e:
        raise ManifestError(f"{path}: malformed CSV ({e})") from e
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ManifestError(f"{path}: not a readable CSV ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _float_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    values = np.full(len(df), np.nan)
    for i, v in enumerate(df[col]):
        if v.strip() == "":
            continue
        try:
            values[i] = float(v)
        except ValueError as e:
            raise ManifestError(f"{path}: line {i + 2}, column '{col}': not a number: {v!r}") from e
    return values


def _literal_list(value: str, path: Path, line: int, col: str) -> list[str]:
    value = value.strip()
    if value in ("", "[]"):
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise ManifestError(f"{path}: line {line}, column '{col}': not a Python list literal: {value[:80]!r}") from e
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(x, str) for x in parsed):
        raise ManifestError(f"{path}: line {line}, column '{col}': expected a list of strings, got {value[:80]!r}")
    return [x.strip() for x in parsed if x.strip()]


OUTSIDE = "outside the data set's audio folder: refused, never opened (data.allow_outside_paths=true allows it)"


SPECIES_FILE = "species.csv"  # beside a data set's table: its classes' further names (birdnet_labels.dataset_aliases)
BAD_NAME = "_bad_name"  # a reader's column, taken off by _finish: the path is not valid UTF-8 (shown escaped)


def audio_paths(folder: Path, names: pd.Series) -> tuple[list[str], list[bool]]:
    """The resolved paths of `names` in `folder`, and whether each is not valid UTF-8 (a folder named with other
    bytes): such a path is given as fsutil.undecodable_name shows it (no table can hold it), and _finish drops it."""
    paths = [str((folder / n).resolve()) for n in names]
    shown = [undecodable_name(p) for p in paths]
    return [s or p for p, s in zip(paths, shown)], [s is not None for s in shown]


def is_inside(path: str | Path, folder: Path) -> bool:
    """Whether `path` (links followed, `..` resolved) lies inside `folder`."""
    return Path(path).resolve().is_relative_to(folder.resolve())


def clean_id(name: str) -> str:
    """One id per file however a table spells its path: `./a.mp3`, `a.mp3` and `x/../a.mp3` are all `a.mp3`."""
    return Path(os.path.normpath(name.strip())).as_posix()


def _finish(
    df: pd.DataFrame,
    root: Path,
    source: str,
    extra_cols: list[str],
    audio_root: Path | None = None,
    allow_outside: bool = False,
) -> Manifest:
    """Drop (and list) rows whose file resolves outside `audio_root` (unless allow_outside), whose path is not valid
    UTF-8, or that does not exist; a file listed twice is an error."""
    bad = df.pop(BAD_NAME).to_numpy(bool)
    bad_names = [
        (rid, f"its path {p} is not valid UTF-8 (shown with \\xNN escapes): rename it")
        for rid, p in zip(df.loc[bad, "recording_id"], df.loc[bad, "path"])
    ]
    if bad_names:
        log.warning(
            "%d listed audio file(s) have a path that is not valid UTF-8, e.g. %s", len(bad_names), bad_names[0][1]
        )
        df = df[~bad].reset_index(drop=True)
    outside: list[str] = []
    if audio_root is not None and not allow_outside:
        inside = np.array([is_inside(p, audio_root) for p in df["path"]], dtype=bool)
        outside = df.loc[~inside, "recording_id"].tolist()
        if outside:
            log.warning("%d listed audio file(s) of %s lie %s, e.g. %s", len(outside), root, OUTSIDE, outside[:3])
        df = df[inside].reset_index(drop=True)
    exists = np.array([Path(p).is_file() for p in df["path"]], dtype=bool)
    missing = df.loc[~exists, "recording_id"].tolist()
    if missing:
        log.warning("%d listed audio file(s) do not exist under %s, e.g. %s", len(missing), root, missing[:3])
    df = df[exists].reset_index(drop=True)
    if df["recording_id"].duplicated().any():
        dup = df.loc[df["recording_id"].duplicated(), "recording_id"].iloc[0]
        raise ManifestError(f"{root}: recording listed twice: {dup}")
    cols = CORE_COLUMNS + [c for c in extra_cols if c not in CORE_COLUMNS]
    manifest = Manifest(df[cols], root, source, missing, outside=outside, bad_names=bad_names)
    problem = class_name_problem(manifest.classes)
    if problem:
        raise ManifestError(f"{root}: {problem}")
    return manifest


def read_cornell(root: Path, allow_outside: bool = False) -> Manifest:
    """Kaggle Cornell layout: train.csv + train_audio/<ebird_code>/<filename>."""
    csv_path = root / "train.csv"
    df = read_csv_checked(csv_path, ["ebird_code", "filename"])
    name_to_code: dict[str, str] = {}
    for _, r in df.iterrows():
        for col in ("species", "sci_name", "primary_label"):
            if col in df.columns and r[col].strip():
                name_to_code[r[col].strip().lower()] = r["ebird_code"]
    unmapped: dict[str, int] = {}
    secondary: list[list[str]] = []
    for i, v in enumerate(df.get("secondary_labels", pd.Series([""] * len(df)))):
        codes = []
        for name in _literal_list(v, csv_path, i + 2, "secondary_labels"):
            m = _SCI_NAME.match(name)
            keys = [name.lower()] + ([m["sci"].lower(), m["common"].lower()] if m else [])
            code = next((name_to_code[k] for k in keys if k in name_to_code), None)
            if code is None:
                unmapped[name] = unmapped.get(name, 0) + 1
            elif code not in codes:
                codes.append(code)
        secondary.append(codes)
    if unmapped:
        log.warning(
            "%s: %d secondary label(s) (%d distinct names) map to no ebird code and were dropped, e.g. %s",
            csv_path,
            sum(unmapped.values()),
            len(unmapped),
            list(unmapped)[:3],
        )
    out = df.copy()
    out["recording_id"] = [clean_id(f"{c}/{f}") for c, f in zip(df["ebird_code"], df["filename"])]
    out["path"], out[BAD_NAME] = audio_paths(root / "train_audio", out["recording_id"])
    out["primary_labels"] = [[c] for c in df["ebird_code"]]
    out["secondary_labels"] = [[c for c in s if c != p] for s, p in zip(secondary, df["ebird_code"])]
    out["duration_s"] = _float_column(df, "duration", csv_path)
    out["rating"] = _float_column(df, "rating", csv_path)
    m = _finish(out, root, "cornell", list(df.columns), root / "train_audio", allow_outside)
    m.unmapped_secondary = unmapped
    return m


def read_birdclef(root: Path, allow_outside: bool = False) -> Manifest:
    """BirdCLEF layout: train_metadata.csv (primary_label, secondary_labels, filename), audio in train_audio/."""
    csv_path = root / "train_metadata.csv"
    df = read_csv_checked(csv_path, ["primary_label", "filename"])
    audio_root = root / "train_audio" if (root / "train_audio").is_dir() else root
    out = df.copy()
    out["recording_id"] = [clean_id(f) for f in df["filename"]]
    out["path"], out[BAD_NAME] = audio_paths(audio_root, df["filename"])
    out["primary_labels"] = [[p.strip()] for p in df["primary_label"]]
    sec = df.get("secondary_labels", pd.Series([""] * len(df)))
    out["secondary_labels"] = [_literal_list(v, csv_path, i + 2, "secondary_labels") for i, v in enumerate(sec)]
    out["duration_s"] = _float_column(df, "duration", csv_path)
    out["rating"] = _float_column(df, "rating", csv_path)
    return _finish(out, root, "birdclef", list(df.columns), audio_root, allow_outside)


def read_labels_csv(root: Path, allow_outside: bool = False) -> Manifest:
    """labels.csv layout: filename,labels[,secondary_labels] (space-separated), audio in audio/."""
    csv_path = root / "labels.csv"
    df = read_csv_checked(csv_path, ["filename", "labels"])
    audio_root = root / "audio" if (root / "audio").is_dir() else root
    out = df.copy()
    out["recording_id"] = [clean_id(f) for f in df["filename"]]
    out["path"], out[BAD_NAME] = audio_paths(audio_root, df["filename"])
    out["primary_labels"] = [v.split() for v in df["labels"]]
    sec = df["secondary_labels"] if "secondary_labels" in df.columns else pd.Series([""] * len(df))
    out["secondary_labels"] = [v.split() for v in sec]
    joined = sorted({lab for ls in (*out["primary_labels"], *out["secondary_labels"]) for lab in ls if "," in lab})
    if joined:  # "a,b" is one class of that name: said, since a list written with commas is the likely cause
        log.warning(
            "%s: %d label(s) hold a comma, e.g. %r: each is one class as written (labels are separated by spaces)",
            csv_path,
            len(joined),
            joined[0],
        )
    out["duration_s"] = _float_column(df, "duration", csv_path)
    out["rating"] = _float_column(df, "rating", csv_path)
    return _finish(out, root, "labels", list(df.columns), audio_root, allow_outside)


_READERS = {"cornell": read_cornell, "birdclef": read_birdclef, "labels": read_labels_csv}
_MARKERS = {"cornell": "train.csv", "birdclef": "train_metadata.csv", "labels": "labels.csv"}


def detect_format(root: Path) -> str:
    """The data-set layout of a folder, from the files present."""
    found = [fmt for fmt, marker in _MARKERS.items() if (root / marker).is_file()]
    if not found:
        raise ManifestError(f"{root}: no known data-set layout (expected one of {sorted(_MARKERS.values())})")
    return found[0]


def read_dataset(root: str | Path, format: str = "auto", allow_outside: bool = False) -> Manifest:
    """Read any supported data-set folder into a Manifest. A listed file that resolves outside the data set's
    audio folder (`..`, an absolute path, a link leaving it) is refused and listed in `outside`, unless
    allow_outside (data.allow_outside_paths)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: data-set folder not found")
    if format not in FORMATS:
        raise ManifestError(f"unknown data-set format {format!r}; valid: {list(FORMATS)}")
    fmt = detect_format(root) if format == "auto" else format
    return _READERS[fmt](root, allow_outside)
