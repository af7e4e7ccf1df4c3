"""The truth table every annotation reader gives, and what is computed from it: 5 s rows and event matching.

An event table [one row per annotated call] has EVENT_COLUMNS: file (as the annotation names it: a path or a file
name), start_s, end_s, label, low_hz, high_hz (NaN when the format has no frequency bounds), and `where` (the source
file and line, for messages).

Rows: a file of n rows has rows [5 r, 5 r + 5) for r < n, the last one ending at the file's end; a row is positive for
a label when that label's events cover at least min_overlap_s of it (their union: a trill of 40 ms notes annotated
note by note counts by its notes together, and two boxes over the same call count once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from birdsed.errors import TruthError
from birdsed.rows import row_labels

__all__ = ["EVENT_COLUMNS", "row_labels"]  # row_labels lives in rows.py (data/synth uses it too)

EVENT_COLUMNS = ["file", "start_s", "end_s", "label", "low_hz", "high_hz", "where"]


def event_table(file, start_s, end_s, label, where, low_hz=None, high_hz=None) -> pd.DataFrame:
    """An event table from columns (sequences of one length), its times checked (check_times)."""
    n = len(start_s)
    df = pd.DataFrame(
        {
            "file": list(file),
            "start_s": _floats(start_s, where, "start"),
            "end_s": _floats(end_s, where, "end"),
            "label": [str(x).strip() for x in label],
            "low_hz": _floats(low_hz, where, "low frequency") if low_hz is not None else np.full(n, np.nan),
            "high_hz": _floats(high_hz, where, "high frequency") if high_hz is not None else np.full(n, np.nan),
            "where": list(where),
        }
    )
    check_times(df)
    return df


def _floats(values, where, what: str) -> np.ndarray:
    out = np.empty(len(values))
    for i, (v, w) in enumerate(zip(values, where)):
        try:
            out[i] = float(v) if not (isinstance(v, str) and not v.strip()) else np.nan
        except (TypeError, ValueError):
            raise TruthError(f"{w}: {what} {v!r} is not a number") from None
    return out


def check_times(events: pd.DataFrame) -> None:
    """Refuse, naming the file, line and value: a time that is missing, not finite or negative, an end before
    its start, an empty label, a low frequency above the high one."""
    for w, a, b, lab, lo, hi in zip(
        events["where"], events["start_s"], events["end_s"], events["label"], events["low_hz"], events["high_hz"]
    ):
        if not (np.isfinite(a) and np.isfinite(b)):
            raise TruthError(f"{w}: begin / end time {a!r} / {b!r} must be numbers")
        if a < 0:
            raise TruthError(f"{w}: begin time {a:g} s is negative")
        if b <= a:
            raise TruthError(f"{w}: end time {b:g} s is not after the begin time {a:g} s")
        if not lab or lab.lower() == "nan":
            raise TruthError(f"{w}: empty label")
        if np.isfinite(lo) and np.isfinite(hi) and lo > hi:
            raise TruthError(f"{w}: low frequency {lo:g} Hz above the high one {hi:g} Hz")


def past_end(events: pd.DataFrame, duration_s: float, tolerance_s: float = 0.5) -> pd.Series:
    """Events that begin after the recording's end (more than tolerance_s: annotators drag a little past it)."""
    return events["start_s"] > duration_s + tolerance_s


@dataclass
class EventMatch:
    """Event-level scores: a detection matches an event of its label in its file when their times overlap."""

    recall: float  # events matched by at least one detection
    precision: float  # detections matching at least one event
    n_events: int
    n_detections: int
    per_label: pd.DataFrame = field(default_factory=pd.DataFrame)  # label, events, found, detections, correct

    def to_dict(self) -> dict:
        return {
            "event_recall": self.recall,
            "event_precision": self.precision,
            "n_events": self.n_events,
            "n_detections": self.n_detections,
            "per_label": self.per_label.to_dict("records"),
        }


def match_events(truth: pd.DataFrame, det: pd.DataFrame) -> EventMatch:
    """truth: an event table; det: file, start_s, end_s, label (detections.csv, or rows that passed); both with
    `file` already in one naming (evaluate maps them)."""
    found = np.zeros(len(truth), bool)
    correct = np.zeros(len(det), bool)
    t_groups = truth.groupby(["file", "label"], sort=False).indices
    for (f, lab), d_idx in det.groupby(["file", "label"], sort=False).indices.items():
        t_idx = t_groups.get((f, lab))
        if t_idx is None:
            continue
        ta, tb = truth["start_s"].to_numpy()[t_idx], truth["end_s"].to_numpy()[t_idx]
        da, db = det["start_s"].to_numpy()[d_idx], det["end_s"].to_numpy()[d_idx]
        hit = (da[:, None] < tb[None, :]) & (ta[None, :] < db[:, None])  # (n_det, n_events)
        correct[d_idx] = hit.any(axis=1)
        found[t_idx] |= hit.any(axis=0)
    labels = sorted(set(truth["label"]) | set(det["label"]))
    per = pd.DataFrame(
        {
            "label": labels,
            "events": [int((truth["label"] == x).sum()) for x in labels],
            "found": [int(found[(truth["label"] == x).to_numpy()].sum()) for x in labels],
            "detections": [int((det["label"] == x).sum()) for x in labels],
            "correct": [int(correct[(det["label"] == x).to_numpy()].sum()) for x in labels],
        }
    )
    return EventMatch(
        float(found.mean()) if len(found) else 0.0,
        float(correct.mean()) if len(correct) else 0.0,
        len(truth),
        len(det),
        per,
    )
