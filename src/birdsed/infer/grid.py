"""The time grid of inference: window starts, which 5 s rows each window (or head segment) falls in, per-row
maxima as windows stream in, and one recording's rows as scores.parquet rows. No torch: numpy and pandas only."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from birdsed.config import OUTPUT_KINDS
from birdsed.rows import ROW_S, SCORE_META_COLUMNS, n_rows


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of windows covering a recording: 0, hop, 2 hop, ... until one reaches the end.

    A recording shorter than a window gets one window; the last window may run past the
    end (it is zero-padded).
    """
    n_windows = 1 + max(0, math.ceil((n_samples - window) / hop))
    return np.arange(n_windows, dtype=np.int64) * hop


def window_row_pairs(starts_s: np.ndarray, window_s: float, row_s: float = ROW_S) -> tuple[np.ndarray, np.ndarray]:
    """(window index, row index) for every row each window overlaps: window [s, s + w) overlaps
    row [r * row_s, (r + 1) * row_s) when they share a positive stretch of time."""
    first = np.floor(starts_s / row_s + 1e-9).astype(np.int64)
    last = np.ceil((starts_s + window_s) / row_s - 1e-9).astype(np.int64) - 1  # inclusive
    span = int((last - first).max(initial=0)) + 1
    w = np.repeat(np.arange(len(starts_s)), span)
    r = (first[:, None] + np.arange(span)[None, :]).ravel()
    ok = r <= np.repeat(last, span)
    return w[ok], r[ok]


def segment_rows(starts_s: np.ndarray, window_s: float, n_segments: int, row_s: float = ROW_S) -> np.ndarray:
    """Row index of every segment of every window [shape=(W, n_segments)], by the segment's centre time."""
    centres = starts_s[:, None] + (np.arange(n_segments)[None, :] + 0.5) * (window_s / n_segments)
    return np.floor(centres / row_s).astype(np.int64)


def rows_from_windows(
    starts_s: np.ndarray, window_s: float, scores: np.ndarray, duration_s: float, row_s: float = ROW_S
) -> np.ndarray:
    """Per-row scores [shape=(n_rows, K)]: for each row, the max over the windows overlapping it.

    starts_s [shape=(W,)], scores [shape=(W, K)].
    """
    acc = RowAccumulator(scores.shape[1], row_s)
    acc.add_windows(starts_s, window_s, scores)
    return acc.result(duration_s)


class RowAccumulator:
    """Running per-row maxima of one output kind of one recording, fed window batches as they come.

    Memory grows with the number of rows (K floats per 5 s), never with the audio.
    """

    def __init__(self, n_classes: int, row_s: float = ROW_S):
        self.row_s = row_s
        self.rows = np.full((64, n_classes), -np.inf, dtype=np.float32)

    def _grow(self, max_row: int) -> None:
        if max_row >= len(self.rows):
            extra = np.full(
                (max(max_row + 1, 2 * len(self.rows)) - len(self.rows), self.rows.shape[1]), -np.inf, np.float32
            )
            self.rows = np.vstack([self.rows, extra])

    def add_windows(self, starts_s: np.ndarray, window_s: float, scores: np.ndarray) -> None:
        """Window pooling: scores [shape=(W, K)] go to every row each window overlaps."""
        w, r = window_row_pairs(starts_s, window_s, self.row_s)
        self._grow(int(r.max(initial=0)))
        np.maximum.at(self.rows, r, scores[w])

    def add_segments(self, starts_s: np.ndarray, window_s: float, seg: np.ndarray) -> None:
        """Segment pooling: seg [shape=(W, K, T')]; each segment goes to the row holding its centre."""
        r = segment_rows(starts_s, window_s, seg.shape[2], self.row_s)  # (W, T')
        self._grow(int(r.max(initial=0)))
        np.maximum.at(self.rows, r.ravel(), seg.transpose(0, 2, 1).reshape(-1, seg.shape[1]))

    def result(self, duration_s: float) -> np.ndarray:
        """The rows of a recording of `duration_s` [shape=(n_rows, K)]; what fell past the last row (a tail too
        short to be a row: rows.MIN_LAST_ROW) is the last row's."""
        n = n_rows(duration_s, self.row_s)
        out = self.rows[:n].copy()
        if len(self.rows) > n:
            out[n - 1] = self.rows[n - 1 :].max(axis=0)
        return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


@dataclass
class FileResult:
    path: str
    duration_s: float
    rows: dict[str, np.ndarray]  # kind -> (n_rows, K)


def rows_table(result: FileResult, classes: list[str], row_s: float = ROW_S) -> pd.DataFrame:
    """The scores.parquet rows of one file: file, start_s, end_s, output, one column per class."""
    frames = []
    for kind in OUTPUT_KINDS:
        scores = result.rows[kind]
        starts = np.arange(len(scores)) * row_s
        ends = np.minimum(starts + row_s, result.duration_s)
        if len(ends):
            ends[-1] = max(ends[-1], result.duration_s)  # the last row runs to the end (a short tail is its own)
        meta = {"file": result.path, "start_s": starts, "end_s": ends}
        meta["output"] = kind
        df = pd.DataFrame(scores, columns=classes)
        for i, col in enumerate(SCORE_META_COLUMNS):
            df.insert(i, col, meta[col])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
