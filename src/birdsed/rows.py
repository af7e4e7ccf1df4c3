"""The 5 s row every decision, submission and truth is counted in: row r of a recording is [5 r, 5 r + 5), the
last one possibly partial (a recording of 12 s has rows [0, 5), [5, 10), [10, 12))."""

from __future__ import annotations

import math

ROW_S = 5.0


def n_rows(duration_s: float, row_s: float = ROW_S) -> int:
    """Rows of a recording: [0, 5), [5, 10), ... the last one possibly partial; at least one."""
    return max(1, math.ceil(duration_s / row_s - 1e-9))


# scores.parquet: these columns, then one per class (rows of every output kind, told apart by `output`)
SCORE_META_COLUMNS = ("file", "start_s", "end_s", "output")
# detections.csv: one row per (row, present class)
DETECTION_COLUMNS = ("file", "start_s", "end_s", "label", "score")
