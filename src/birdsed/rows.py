"""The 5 s row every decision, submission and truth is counted in: row r of a recording is [5 r, 5 r + 5), the
last one possibly partial (a recording of 12 s has rows [0, 5), [5, 10), [10, 12)); a tail of a tenth of a row or
less (MIN_LAST_ROW) is the last row's: a recorder's few extra samples (NIPS4B's clips are 5.0039 s, a field
recorder's minute 60.02 s) make no row of their own, which repeated the row before as a second detection, card
and training clip. The last row runs to the recording's end."""

from __future__ import annotations

import math
import unicodedata

import numpy as np
import pandas as pd

from birdsed.config.choices import DEFAULT_MIN_OVERLAP_S

ROW_S = 5.0
MIN_LAST_ROW = 0.1  # of a row: a tail this long or shorter is the last row's, not a row (0.5 s of a 5 s row)


def n_rows(duration_s: float, row_s: float = ROW_S) -> int:
    """Rows of a recording: [0, 5), [5, 10), ... the last one possibly partial (longer than MIN_LAST_ROW of a row);
    at least one."""
    return max(1, math.ceil(duration_s / row_s - MIN_LAST_ROW))


# scores.parquet: these columns, then one per class (rows of every output kind, told apart by `output`)
SCORE_META_COLUMNS = ("file", "start_s", "end_s", "output")
# with a score transform (predict --prior), the rows of each output kind hold the transformed scores (what the
# decisions used) and the model's own scores follow as rows of output "<kind>_raw"; readers that select an output
# kind by name (evaluate, summary, review) never see them unless they ask
RAW_SUFFIX = "_raw"


# with predict --calibrated, the decided kind's rows also follow as rows of this output, their scores the model's
# calibrated probabilities (decisions.ScoreCalibration); readers that select an output kind by name never see them
CALIBRATED_OUTPUT = "calibrated"


def raw_output(kind: str) -> str:
    """The `output` of the rows that keep output `kind`'s scores before a score transform ("segmentwise_raw")."""
    return kind + RAW_SUFFIX


# detections.csv: one row per (row, present class)
DETECTION_COLUMNS = ("file", "start_s", "end_s", "label", "score")
# ... then each label's names (model/names.py; "" where unknown) and each row's place and date-time (places.py: ISO
# 8601 with the offset; "" where unknown)
DETECTION_NAME_COLUMNS = ("code", "common", "scientific")
DETECTION_PLACE_COLUMNS = ("site", "lat", "lon", "time")
# recordings.csv: each recording's place and start (places.py) and its length
RECORDING_COLUMNS = ("file", "site", "lat", "lon", "timezone", "start", "duration_s")


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def row_labels(events: pd.DataFrame, rows: int, min_overlap_s: float = DEFAULT_MIN_OVERLAP_S) -> list[set[str]]:
    """The labels of each of a file's `rows` 5 s rows, from its events (truth/events.py's docstring); the last row
    runs on to the recording's end (a short tail is its own: MIN_LAST_ROW); events past the recording's end are the
    caller's to report (truth.events.past_end)."""
    spans: list[dict[str, list[tuple[float, float]]]] = [{} for _ in range(rows)]
    for a, b, lab in zip(events["start_s"], events["end_s"], events["label"]):
        for r in range(min(int(a // ROW_S), rows - 1), min(rows, int(b // ROW_S) + 1)):
            lo, hi = max(a, r * ROW_S), (min(b, (r + 1) * ROW_S) if r < rows - 1 else b)
            if hi > lo:
                spans[r].setdefault(lab, []).append((lo, hi))
    return [{lab for lab, s in row.items() if _union_length(s) >= min_overlap_s - 1e-9} for row in spans]


# class names that would collide with scores.parquet's own columns (a class is a column there)
RESERVED_NAMES = frozenset(SCORE_META_COLUMNS)


def class_name_problem(classes: list[str]) -> str | None:
    """What is wrong with a list of class names, or None: an empty (or blank) name, a name holding a control
    character (a tab or a line break splits a row of the Raven and Audacity tables), a name listed twice, or one of
    RESERVED_NAMES (a class named `file` would overwrite scores.parquet's file column, and every predict dies)."""
    blank = [c for c in classes if not str(c).strip()]
    if blank:
        return f"an empty class name ({blank[0]!r})"
    control = [c for c in classes if any(unicodedata.category(ch) == "Cc" for ch in str(c))]
    if control:
        return (
            f"class name(s) {control[:5]} hold a tab, line break or other control character, which splits a row "
            "of the Raven and Audacity tables; rename them"
        )
    reserved = sorted({c for c in classes if c in RESERVED_NAMES})
    if reserved:
        return f"class name(s) {reserved} are reserved for output columns ({sorted(RESERVED_NAMES)}); rename them"
    seen: set[str] = set()
    twice = sorted({c for c in classes if c in seen or seen.add(c)})
    if twice:
        return f"class name(s) {twice} listed twice"
    return None


# detections.csv and errors.csv (infer/writers.py) never hold a spreadsheet formula: a text cell starting with one of
# these is written with one "'" in front, and read back without it
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_cell(value: object) -> object:
    """A text cell a spreadsheet shows as text (infer/writers.py); anything else as it is."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def plain_cell(value: object) -> object:
    """A cell as it was before spreadsheet_cell (a text cell "'" + one of FORMULA_START loses the "'")."""
    return value[1:] if isinstance(value, str) and value[:1] == "'" and value[1:2] in FORMULA_START else value
