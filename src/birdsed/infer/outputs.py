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
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import OUTPUT_FORMATS, OUTPUT_KINDS
from birdsed.data.store import recording_key
from birdsed.errors import ConfigError
from birdsed.fsutil import atomic_path, remove_stale_temps
from birdsed.infer.decide import Thresholds, decide, labels_of, smooth_rows
from birdsed.infer.parts import RowGroups, batches, concat
from birdsed.infer.writers import (
    detections,
    merge_runs,
    raven_table,
    spreadsheet_safe,
    write_audacity,
    write_table,
)
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


# the longest stem a Raven / Audacity file is named by: the name plus ".Table.1.selections.txt" and the temporary
# name's additions (fsutil.atomic_path) must stay within the 255 bytes of a file name
MAX_LABEL_STEM_BYTES = 150


def label_file_names(files: list[str]) -> dict[str, str]:
    """Raven / Audacity files are named by the recording's stem; recordings sharing a stem, and stems too long for a
    file name (over MAX_LABEL_STEM_BYTES bytes), get their unique key (data.store.recording_key: at most 91
    characters, the name's end and a hash of the whole)."""
    stem_counts = Counter(Path(f).stem for f in files)

    def name(f: str) -> str:
        stem = Path(f).stem
        fits = len(os.fsencode(stem)) <= MAX_LABEL_STEM_BYTES
        return stem if stem_counts[stem] == 1 and fits else recording_key(f)

    return {f: name(f) for f in files}


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
    _remove_stale_outputs(out, labels, names.values())
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
        scores = RowGroups(stack, scores_tmp)
        first = True
        for batch in batches(parts, len(SCORE_META_COLUMNS) + len(classes)):
            table = concat([batch.table], scores.schema)
            scores.add(table)
            df = table.to_pandas()
            rows, present, kind, thr = decide_scores(df, classes, thresholds, spec.decision, default_output)
            per_row = np.repeat(np.arange(len(batch.files)), batch.n_rows)  # each row's recording: place in batch
            recording = per_row[df["output"].to_numpy() == kind]  # the recording of each of `rows`
            det = detections(rows, present, classes)
            spreadsheet_safe(det).to_csv(det_out, header=first, index=False)
            if sub_out is not None:
                sub, unknown = probability_submission(rows, classes, columns)
                sub.to_csv(sub_out, header=first, index=False)
            if test is not None:
                names_of_rows = [batch.files[j] for j in recording]
                row_birds.update(zip(zip(names_of_rows, rows["start_s"].astype(float)), labels_of(present, classes)))
                per_file = pd.DataFrame(rows[classes].to_numpy()).groupby(recording).max()
                whole = labels_of(decide(per_file.to_numpy(), thr, spec.decision.max_birds), classes)
                file_birds.update((batch.files[j], b) for j, b in zip(per_file.index, whole))
            if labels:
                r = np.nonzero(present)[0]  # each detection's row, in the order of `det`
                at = pd.Index(np.arange(len(r))).groupby(recording[r])
                for j, f in enumerate(batch.files):
                    _write_labels(out, labels, names[f], merge_runs(det.iloc[at[j]] if j in at else det.iloc[:0]))
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


COMBINED = ("scores.parquet", "detections.csv", "submission.csv")  # what write_combined writes in `out` itself


def _label_path(out: Path, fmt: str, name: str) -> Path:
    """Where one recording's Raven or Audacity file goes."""
    return out / "raven" / f"{name}.Table.1.selections.txt" if fmt == "raven" else out / "audacity" / f"{name}.txt"


def _remove_stale_outputs(out: Path, labels: list[str], names: Iterable[str]) -> None:
    """The temporaries of the combined outputs that a run killed while writing them left (every caller holds the
    lock of `out`'s combined outputs: predict's, or the merge's); only those of the files written here."""
    remove_stale_temps(out, COMBINED)
    names = list(names)
    for fmt in labels:
        remove_stale_temps(out / fmt, [_label_path(out, fmt, name).name for name in names])


def _write_labels(out: Path, labels: list[str], name: str, events: pd.DataFrame) -> None:
    """One recording's Raven and/or Audacity file (written even when it has no event)."""
    for fmt in labels:
        if fmt == "raven":
            write_table(raven_table(events), _label_path(out, fmt, name), sep="\t")
        else:
            write_audacity(events, _label_path(out, fmt, name))
