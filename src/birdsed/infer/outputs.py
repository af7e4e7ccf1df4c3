"""predict's combined outputs, built by streaming over its parts: memory holds one recording's rows at a time,
never the archive's (issue #21).

OUT/parts/<key>.parquet (one per finished recording, what a re-run resumes from) ->
  scores.parquet     one Parquet file in row groups of about ROW_GROUP_ROWS rows, whole recordings each
                     (pd.read_parquet reads it whole; pyarrow's ParquetFile.iter_batches a piece at a time)
  detections.csv     appended recording by recording
  submission.csv     Kaggle Cornell / BirdCLEF 2021 (row_id,birds for every row of test.csv: the one table held
                     whole, as test.csv itself is) or BirdCLEF 2023-2025 (appended recording by recording)
  raven/, audacity/  one file per recording
Every combined file is written under a temporary name and renamed when whole.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdsed.config import OUTPUT_FORMATS, OUTPUT_KINDS
from birdsed.data.store import recording_key
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import atomic_path
from birdsed.infer.decide import Thresholds, decide, labels_of, smooth_rows
from birdsed.infer.writers import detections, merge_runs, raven_table, write_audacity, write_table
from birdsed.rows import DETECTION_COLUMNS, SCORE_META_COLUMNS

log = logging.getLogger(__name__)
FORMATS = OUTPUT_FORMATS


@dataclass
class DecisionOptions:
    output: str | None = None  # None: the model's default output kind
    threshold: float | None = None  # overrides the model's thresholds for `output`
    max_birds: int | None = None
    neighbour_smoothing: str | None = None  # "sum" or "max"


@dataclass
class OutputSpec:
    """What the combined outputs are (saved with each shard, so that `birdsed merge` builds the same ones)."""

    formats: tuple[str, ...] = ("csv",)
    decision: DecisionOptions = field(default_factory=DecisionOptions)
    test_csv: str | None = None
    audio_dir: str | None = None
    sample_submission: str | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "formats": list(self.formats)}

    @classmethod
    def from_dict(cls, d: dict) -> OutputSpec:
        return cls(
            tuple(d.get("formats", ("csv",))),
            DecisionOptions(**d.get("decision", {})),
            d.get("test_csv"),
            d.get("audio_dir"),
            d.get("sample_submission"),
        )


def decide_scores(
    scores: pd.DataFrame, classes: list[str], thresholds: Thresholds, opts: DecisionOptions, default_output: str
) -> tuple[pd.DataFrame, np.ndarray, str, np.ndarray]:
    """(rows of the chosen output, boolean presence per row and class, output kind, thresholds [shape=(K,)])."""
    kind = opts.output or default_output
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"unknown output {kind!r}; valid: {list(OUTPUT_KINDS)}")
    rows = scores[scores["output"] == kind].reset_index(drop=True)
    values = rows[classes].to_numpy(np.float32, copy=True)  # smoothed in place below
    if opts.neighbour_smoothing:
        for idx in rows.groupby("file", sort=False).indices.values():
            values[idx] = smooth_rows(values[idx], opts.neighbour_smoothing)
    thr = (
        thresholds.vector(kind, classes)
        if opts.threshold is None
        else np.full(len(classes), opts.threshold, np.float32)
    )
    present = decide(values, thr, opts.max_birds)
    rows = rows.copy()
    rows[classes] = values
    return rows, present, kind, thr


def read_part(path: Path, recording: str) -> pd.DataFrame:
    """One finished recording's rows; a part that is not what predict wrote is a clear error naming it."""
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise BirdsedError(
            f"{path}: the scores of {recording} are unreadable ({type(e).__name__}); delete that file and "
            "run the same command again to predict it afresh"
        ) from e


def label_file_names(files: list[str]) -> dict[str, str]:
    """Raven / Audacity files are named by the recording's stem; recordings sharing a stem get a unique key."""
    stem_counts = Counter(Path(f).stem for f in files)
    return {f: Path(f).stem if stem_counts[Path(f).stem] == 1 else recording_key(f) for f in files}


ROW_GROUP_ROWS = 32_768  # rows per row group of scores.parquet (a recording is never split; a long one may exceed it)


class _RowGroups:
    """scores.parquet written row group by row group: parts are gathered until ROW_GROUP_ROWS, then written, so that
    memory holds one row group (not one per recording: 20,000 row groups' metadata alone took 0.8 GB), and the gathered
    parts are combined every 256, so that short recordings do not cost a table each."""

    def __init__(self, stack: contextlib.ExitStack, path: Path):
        self.stack, self.path, self.writer, self.buffer, self.rows = stack, path, None, [], 0

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.rows += table.num_rows
        if self.rows >= ROW_GROUP_ROWS:
            self._flush()
        elif len(self.buffer) >= 256:  # short recordings: thousands of tiny tables cost far more than their rows
            self.buffer = [self._combined()]

    def _combined(self) -> pa.Table:
        schema = self.buffer[0].schema if self.writer is None else self.writer.schema
        return pa.concat_tables([t if t.schema == schema else t.cast(schema) for t in self.buffer]).combine_chunks()

    def _flush(self) -> None:
        if not self.buffer:
            return
        table = self._combined()
        if self.writer is None:
            self.writer = self.stack.enter_context(pq.ParquetWriter(self.path, table.schema))
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.buffer, self.rows = [], 0

    def close(self) -> bool:
        """Write what is gathered; False when nothing was ever written."""
        self._flush()
        return self.writer is not None


def write_combined(
    out: Path,
    parts: list[tuple[str, Path]],
    classes: list[str],
    thresholds: Thresholds,
    default_output: str,
    spec: OutputSpec,
) -> None:
    """Build every combined output of `out` from the (recording, part) pairs, in their order, streaming."""
    from birdsed.kaggle.birdclef import probability_submission, sample_columns
    from birdsed.kaggle.cornell import read_kaggle_test, submission

    test = read_kaggle_test(spec.test_csv, spec.audio_dir) if spec.test_csv else None
    columns = sample_columns(spec.sample_submission) if spec.sample_submission else None
    names = label_file_names([f for f, _ in parts])
    labels = [fmt for fmt in ("raven", "audacity") if fmt in spec.formats]
    row_birds: dict[tuple[str, float], str] = {}
    file_birds: dict[str, str] = {}
    unknown: list[str] = []
    with contextlib.ExitStack() as stack:
        scores_tmp = stack.enter_context(atomic_path(out / "scores.parquet"))
        det_out = stack.enter_context(open(stack.enter_context(atomic_path(out / "detections.csv")), "w", newline=""))
        sub_out = (
            stack.enter_context(open(stack.enter_context(atomic_path(out / "submission.csv")), "w", newline=""))
            if columns is not None
            else None
        )
        scores = _RowGroups(stack, scores_tmp)
        first = True
        for f, part in parts:
            df = read_part(part, f)
            scores.add(pa.Table.from_pandas(df, preserve_index=False))
            rows, present, _, thr = decide_scores(df, classes, thresholds, spec.decision, default_output)
            det = detections(rows, present, classes)
            det.to_csv(det_out, header=first, index=False)
            if sub_out is not None:
                sub, unknown = probability_submission(rows, classes, columns)
                sub.to_csv(sub_out, header=first, index=False)
            if test is not None:
                birds = labels_of(present, classes)
                row_birds.update({(f, float(s)): b for s, b in zip(rows["start_s"], birds)})
                whole = decide(rows[classes].to_numpy().max(axis=0, keepdims=True), thr, spec.decision.max_birds)
                file_birds[f] = labels_of(whole, classes)[0]
            events = merge_runs(det) if labels else None
            for fmt in labels:
                if fmt == "raven":
                    write_table(raven_table(events), out / "raven" / f"{names[f]}.Table.1.selections.txt", sep="\t")
                else:
                    write_audacity(events, out / "audacity" / f"{names[f]}.txt")
            first = False
        if not scores.close():  # nothing finished: the tables with their columns and no row
            pd.DataFrame(columns=[*SCORE_META_COLUMNS, *classes]).to_parquet(scores_tmp, index=False)
            pd.DataFrame(columns=list(DETECTION_COLUMNS)).to_csv(det_out, index=False)
            if sub_out is not None:
                pd.DataFrame(columns=["row_id", *columns]).to_csv(sub_out, index=False)
    if unknown:
        log.warning(
            "%d class(es) of the sample submission the model does not know score 0, e.g. %s", len(unknown), unknown[:5]
        )
    if test is not None:
        write_table(submission(test, row_birds, file_birds), out / "submission.csv")
