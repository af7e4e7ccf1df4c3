"""Output writers: scores.parquet, detections.csv, Raven selection tables, Audacity labels (the submissions: kaggle/).

Every file is written to a temporary name and renamed, so a reader never sees half a file.

The CSV tables meant for spreadsheets (detections.csv, errors.csv) never hold a formula: a text cell starting with
= + - @, a tab, a carriage return or a quote ' is written with one more ' in front (`=HYPERLINK("x").wav` is written
`'=HYPERLINK("x").wav`, which a spreadsheet shows as text); `evaluate.report.read_detections` and the truth reader
of event tables take it off again (`rows.plain_cell`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.fsutil import atomic_path
from birdsed.rows import spreadsheet_cell


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell made safe by spreadsheet_cell (a copy; numbers untouched)."""
    text = [c for c in df.columns if df[c].dtype == object]
    if not text:
        return df
    return df.assign(**{c: df[c].map(spreadsheet_cell) for c in text})


def write_errors(errors: list[tuple[str, str]], path: Path) -> Path:
    """errors.csv: file, reason (spreadsheet-safe)."""
    return write_table(spreadsheet_safe(pd.DataFrame(errors, columns=["file", "reason"])), path)


def write_table(df: pd.DataFrame, path: Path, sep: str = ",") -> Path:
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep=sep)
    return path


def detections(scores: pd.DataFrame, present: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One line per (row, class) that passes: file, start_s, end_s, label, score.

    `scores` holds the rows of one output kind; present [shape=(n_rows, K)].
    """
    r, k = np.nonzero(present)
    values = scores[classes].to_numpy()
    return pd.DataFrame(
        {
            "file": scores["file"].to_numpy()[r],
            "start_s": scores["start_s"].to_numpy()[r],
            "end_s": scores["end_s"].to_numpy()[r],
            "label": np.asarray(classes)[k],
            "score": values[r, k].round(4),
        }
    )


def merge_runs(det: pd.DataFrame) -> pd.DataFrame:
    """Join detections of one label in touching rows of one file into one event (score = max)."""
    if det.empty:
        return det
    det = det.sort_values(["file", "label", "start_s"]).reset_index(drop=True)
    new_event = (
        (det["file"] != det["file"].shift())
        | (det["label"] != det["label"].shift())
        | (det["start_s"] > det["end_s"].shift() + 1e-6)
    )
    event = new_event.cumsum()
    merged = det.groupby(event).agg(
        file=("file", "first"),
        start_s=("start_s", "min"),
        end_s=("end_s", "max"),
        label=("label", "first"),
        score=("score", "max"),
    )
    return merged.sort_values(["file", "start_s", "label"]).reset_index(drop=True)


def raven_table(events: pd.DataFrame, low_hz: float = 50.0, high_hz: float = 14000.0) -> pd.DataFrame:
    """A Raven Pro selection table (tab-separated) for one recording's events."""
    return pd.DataFrame(
        {
            "Selection": np.arange(1, len(events) + 1),
            "View": "Spectrogram 1",
            "Channel": 1,
            "Begin Time (s)": events["start_s"].to_numpy(),
            "End Time (s)": events["end_s"].to_numpy(),
            "Low Freq (Hz)": low_hz,
            "High Freq (Hz)": high_hz,
            "Species": events["label"].to_numpy(),
            "Score": events["score"].to_numpy(),
        }
    )


def write_audacity(events: pd.DataFrame, path: Path) -> Path:
    """Audacity label track: start<TAB>end<TAB>label per line, no header."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for s, e, lab, sc in zip(events["start_s"], events["end_s"], events["label"], events["score"]):
                f.write(f"{s:.3f}\t{e:.3f}\t{lab} ({sc:.2f})\n")
    return path
