"""predict's combined outputs, built by streaming over its parts: memory holds one recording's rows at a time,
never the archive's (issue #21).

OUT/parts/<key>.parquet (one per finished recording, what a re-run resumes from) ->
  recordings.csv     each recording's site, lat, lon, time zone, start (places.py) and length
  scores.parquet     one Parquet file in row groups of about ROW_GROUP_ROWS rows, whole recordings each
                     (pd.read_parquet reads it whole; pyarrow's ParquetFile.iter_batches a piece at a time)
  detections.csv     appended recording by recording
  submission.csv     Kaggle Cornell / BirdCLEF 2021 (row_id,birds for every row of test.csv: the one table held
                     whole, as test.csv itself is) or BirdCLEF 2023-2025 (appended recording by recording)
  raven/, audacity/  one file per recording
  raven.selections.txt  one Raven table of every recording, appended recording by recording
Each is one writer (writers.py: WRITERS, by name); OutputSpec.writers says which a run writes (scores.parquet always,
then what --format names), write_combined decides each block of whole recordings once and feeds it to every chosen
writer. Every combined file is written under a temporary name and renamed when whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from birdsed.config import OUTPUT_FORMATS, OUTPUT_KINDS
from birdsed.errors import ConfigError
from birdsed.fsutil import write_text_atomic
from birdsed.infer.decide import Thresholds, decide, smooth_rows
from birdsed.infer.parts import blocks, concat
from birdsed.infer.prior import OccurrencePrior, PriorOptions
from birdsed.infer.transforms import CalibratedScores, ScoreTransform, apply_transforms
from birdsed.infer.transforms import from_dict as transform_from_dict
from birdsed.infer.writers import WRITERS, Decided, RecordingContext, Target, get_writer, write_errors
from birdsed.model.kinds import ModelMeta
from birdsed.model.names import class_names
from birdsed.places import PlaceOptions, Places
from birdsed.rows import SCORE_META_COLUMNS

FORMATS = OUTPUT_FORMATS

log = logging.getLogger(__name__)


@dataclass
class DecisionOptions:
    output: str | None = None  # None: the model's default output kind
    threshold: float | None = None  # overrides the model's thresholds for `output`
    max_birds: int | None = None
    neighbour_smoothing: str | None = None  # "sum" or "max"
    calibrated: bool = False  # --calibrated: the model's calibration as a score transform (OutputSpec.calibrated)


@dataclass
class OutputSpec:
    """What the combined outputs are (saved with each shard, so that `birdsed merge` builds the same ones)."""

    formats: tuple[str, ...] = ("csv",)
    decision: DecisionOptions = field(default_factory=DecisionOptions)
    test_csv: str | None = None
    audio_dir: str | None = None
    sample_submission: str | None = None
    names: str | None = None  # what Raven's Species column and Audacity's labels show (None: the class)
    places: PlaceOptions = field(default_factory=PlaceOptions)
    transforms: tuple[ScoreTransform, ...] = ()  # applied in order, around the decision (transforms.py)

    def writers(self) -> list[str]:
        """The writers (writers.WRITERS) of what --format names: scores and recordings always, then csv
        (detections.csv), raven, audacity, and kaggle: the submission of the Kaggle input given (cornell for a
        test.csv, birdclef for a sample submission), implied by that input."""
        submission = "cornell" if self.test_csv else "birdclef" if self.sample_submission else None
        names = ["scores", "recordings", *(f for f in dict.fromkeys(self.formats) if f != "kaggle")]
        return [*names, submission] if submission else names

    def check(self) -> None:
        """Refuse a format that is not one, and kaggle without the input its submission is made for."""
        unknown = set(self.formats) - set(FORMATS)
        if unknown:
            raise ConfigError(f"unknown format(s) {sorted(unknown)}; valid: {list(FORMATS)}")
        if "kaggle" in self.formats and not (self.test_csv or self.sample_submission):
            raise ConfigError(
                "--format kaggle writes the submission of a Kaggle test set: give --test-csv, --sample-submission "
                "or --competition"
            )
        class_names([], shown=self.names)  # a name choice that is not one
        Places.from_options(self.places)  # a bad sites table, place, time pattern or time zone

    def to_dict(self) -> dict:
        d = {
            **asdict(self),
            "formats": list(self.formats),
            "places": self.places.to_dict(),
            "transforms": [t.to_dict() for t in self.transforms],
        }
        if not self.transforms:  # the records of runs with none are as they were before transforms existed
            del d["transforms"]
        return d

    def decision_record(self, classes: list[str], thresholds: Thresholds, default_output: str) -> dict:
        """The decision as made, for run.json: the options given (`options`, what summary reads back), the output
        kind used, the global threshold and the per-class ones that differ from it ("model": the model's stored
        ones, "--threshold": the option's), max-birds, smoothing, whether scores were calibrated, and what each score
        transform says of itself (ScoreTransform.record: the prior's settings)."""
        opts = self.decision
        kind = opts.output or default_output
        if opts.threshold is not None:
            source, global_thr, per_class = "--threshold", opts.threshold, {}
        else:
            own = thresholds.per_class.get(kind, {})
            source, global_thr = "model", thresholds.global_[kind]
            per_class = {c: own[c] for c in classes if c in own and own[c] != global_thr}
        record = {
            "options": asdict(opts),
            "output": kind,
            "thresholds_from": source,
            "threshold": global_thr,
            "per_class_thresholds": per_class,
            "max_birds": opts.max_birds,
            "neighbour_smoothing": opts.neighbour_smoothing,
            "calibrated": opts.calibrated,
            "prior": {"mode": "off"},
        }
        for t in self.transforms:
            record |= t.record()
        return record

    def calibrated(self, thresholds: Thresholds, default_output: str) -> tuple[CalibratedScores, ...]:
        """The score transform of the model's calibration when --calibrated asks for it (none otherwise); a
        ConfigError when the model has none, or has one of another output kind than the one decided on."""
        if not self.decision.calibrated:
            return ()
        cal, kind = thresholds.calibration, self.decision.output or default_output
        if cal is None:
            raise ConfigError(
                "--calibrated: the model has no calibration: run `birdsed calibrate --model M --verdicts PRED` first"
            )
        if cal.output != kind:
            raise ConfigError(
                f"--calibrated: the model's calibration is of {cal.output} scores, and {kind} scores are decided on "
                f"(give --output {cal.output}, or calibrate {kind} scores)"
            )
        return (CalibratedScores(cal),)

    @classmethod
    def from_dict(cls, d: dict) -> OutputSpec:
        prior = PriorOptions.from_dict(d.get("prior"))  # a record written before the prior was a transform
        earlier = (OccurrencePrior(prior),) if prior and prior.on else ()
        return cls(
            tuple(d.get("formats", ("csv",))),
            DecisionOptions(**d.get("decision", {})),
            d.get("test_csv"),
            d.get("audio_dir"),
            d.get("sample_submission"),
            d.get("names"),
            PlaceOptions.from_dict(d.get("places")),
            (*earlier, *(transform_from_dict(t) for t in d.get("transforms", []))),
        )


RUN_DECISION_KEY = "decision"  # run.json's record of the decision the combined outputs were made with


def record_decision(out: Path, record: dict) -> None:
    """Put the decision the combined outputs were made with (OutputSpec.decision_record) into OUT/run.json, replacing
    an earlier run's: run.json's other keys are the stamp a re-run must match, this one follows the latest outputs."""
    path = out / "run.json"
    run = json.loads(path.read_text())
    run[RUN_DECISION_KEY] = record
    write_text_atomic(path, json.dumps(run, indent=2))


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


def recording_contexts(
    files: list[str], n_rows: list[int], end_s: np.ndarray, target: Target
) -> list[RecordingContext]:
    """Each recording's context (writers.RecordingContext): its duration from its rows (consecutive, `n_rows` each:
    the last row's end), its place and start from the target's (places.py)."""
    ends = np.maximum.reduceat(end_s, np.cumsum([0, *n_rows[:-1]])) if len(end_s) else np.zeros(len(files))
    return [RecordingContext(f, float(e), target.place(f)) for f, e in zip(files, ends)]


def decided_blocks(
    parts: list[tuple[str, Path]], target: Target, thresholds: Thresholds, default_output: str, spec: OutputSpec
) -> Iterator[Decided]:
    """The parts' recordings in their order, in blocks of whole recordings (parts.blocks), each transformed and
    decided once for every writer; every block in the first one's schema. The score transforms (spec.transforms,
    none by default) run here only: those before the decision on every row (the block's scores are what they give,
    the decision is made on them), those after it (after_decision) on the decided rows (what the writers show; the
    decision stays); scores.parquet's rows are the scores decided on, then the rows each transform keeps (the
    prior's "<kind>_raw", the calibration's "calibrated")."""
    classes = target.classes
    schema = None
    before = tuple(t for t in spec.transforms if not t.after_decision)
    after = tuple(t for t in spec.transforms if t.after_decision)
    for block in blocks(parts, len(SCORE_META_COLUMNS) + len(classes)):
        table = concat([block.table], schema)
        schema = schema or table.schema
        contexts = recording_contexts(block.files, block.n_rows, table.column("end_s").to_numpy(), target)
        df = table.to_pandas()
        raw, kept = None, []
        if before:
            df, kept = apply_transforms(df, classes, contexts, before)
            raw, table = table, pa.Table.from_pandas(df, schema=schema, preserve_index=False)
        rows, present, kind, thr = decide_scores(df, classes, thresholds, spec.decision, default_output)
        per_row = np.repeat(np.arange(len(block.files)), block.n_rows)  # each row's recording: place in block
        recording = per_row[df["output"].to_numpy() == kind]  # the recording of each of `rows`
        if after:
            rows, shown = apply_transforms(rows, classes, contexts, after)
            kept += shown
        more = [pa.Table.from_pandas(k, schema=schema, preserve_index=False) for k in kept]
        scores = pa.concat_tables([table, *more]) if more else table
        yield Decided(block.files, scores, rows, present, recording, thr, classes, contexts, raw)


def write_combined(
    out: Path,
    parts: list[tuple[str, Path]],
    classes: list[str],
    thresholds: Thresholds,
    default_output: str,
    spec: OutputSpec,
    meta: dict | None = None,
) -> int:
    """Build the combined outputs `spec` names (OutputSpec.writers) in `out` from the (recording, part) pairs, in
    their order, streaming: each writer started, fed every decided block, closed (its files committed whole; all of
    them discarded when one fails before). `meta` (model.json as read) names the classes' species where their own
    names do not (model/names.class_names). Returns the number of detections (rows x classes present)."""
    files = [f for f, _ in parts]
    places = Places.from_options(spec.places).resolve(files).places  # predict said what they lack, before it ran
    target = Target(
        out,
        classes,
        files,
        spec.decision.max_birds,
        spec.test_csv,
        spec.audio_dir,
        spec.sample_submission,
        class_names(classes, meta, spec.names),
        places,
    )
    for cls in WRITERS.values():  # what a run killed while writing left (every format's: a re-run may name others)
        cls.sweep(target)
    asked = set(spec.writers())
    now = {p for name in asked for p in WRITERS[name].found(out)}  # (two formats may write one file: submission.csv)
    earlier = list(
        dict.fromkeys(p for name, cls in WRITERS.items() if name not in asked for p in cls.found(out) if p not in now)
    )
    if earlier:  # kept (a Raven table may hold someone's edits), and said: they follow the decision of an earlier run
        log.warning(
            "%s: from an earlier run, not written this time (its format was not asked for): it may disagree with "
            "this run's detections; remove it, or ask for its format again",
            ", ".join(str(p) for p in earlier),
        )
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(get_writer(name)) for name in spec.writers()]
        for w in writers:
            w.start(target)
        n_detections = 0
        for block in decided_blocks(parts, target, thresholds, default_output, spec):
            n_detections += int(block.present.sum())
            for w in writers:
                w.add(block)
        for w in reversed(writers):
            w.close()
    return n_detections


def combine(
    out: Path,
    parts: list[tuple[str, Path]],
    errors: list[tuple[str, str]],
    classes: list[str],
    meta: ModelMeta,
    spec: OutputSpec,
) -> int:
    """What a run of the whole input set, and a merge of shards, end with: errors.csv, the combined outputs of the
    (recording, part) pairs (write_combined, decided by the model's thresholds and default output), and run.json's
    record of the decision. Returns the number of detections."""
    write_errors(errors, out / "errors.csv")
    n_detections = write_combined(out, parts, classes, meta.thresholds, meta.default_output, spec, meta.raw)
    record_decision(out, spec.decision_record(classes, meta.thresholds, meta.default_output))
    return n_detections
