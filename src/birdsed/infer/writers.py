"""Output writers: predict's combined outputs, one class per format, registered by name (whisper's ResultWriter and
get_writer); and the tables they write.

    WRITERS[name]   scores (scores.parquet), recordings (recordings.csv: each recording's place, start and length),
                    csv (detections.csv), raven (raven/), raven-all (raven.selections.txt), audacity (audacity/),
                    cornell and birdclef (submission.csv: row_id,birds for a Kaggle test.csv; BirdCLEF 2023-2025's
                    probabilities)
    Writer          start(target) -> add(block) for each Decided block of whole recordings, in order -> close()

A new format is one Writer subclass here, registered with @writer("name"); outputs.write_combined feeds the chosen
ones and knows none of them. Every file is written to a temporary name and renamed, so a reader never sees half a file:
a writer's files are committed by close() and discarded when the run fails (the writer used as a context manager).

The CSV tables meant for spreadsheets (detections.csv, errors.csv) never hold a formula: a text cell starting with
= + - @, a tab, a carriage return or a quote ' is written with one more ' in front (`=HYPERLINK("x").wav` is written
`'=HYPERLINK("x").wav`, which a spreadsheet shows as text); `evaluate.report.read_detections` and the truth reader
of event tables take it off again (`rows.plain_cell`).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TextIO

import numpy as np
import pandas as pd
import soundfile as sf

from birdsed.data.store import recording_key
from birdsed.decisions import labels_of
from birdsed.errors import ConfigError
from birdsed.fsutil import atomic_path, remove_stale_temps
from birdsed.infer.decide import decide
from birdsed.model.names import ClassNames, class_names
from birdsed.places import RecordingPlace
from birdsed.rows import (
    DETECTION_COLUMNS,
    DETECTION_NAME_COLUMNS,
    DETECTION_PLACE_COLUMNS,
    RECORDING_COLUMNS,
    SCORE_META_COLUMNS,
    spreadsheet_cell,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell made safe by spreadsheet_cell (a copy; numbers untouched)."""
    # text columns: object, or pandas 3's string dtype (inferred for every column of str)
    text = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
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


NO_PLACE = RecordingPlace()


def described(det: pd.DataFrame, names: ClassNames, places: dict[str, RecordingPlace]) -> pd.DataFrame:
    """Detections (or events) with their label's names (code, common, scientific: model/names.py) and their row's
    place and date-time (site, lat, lon, time: places.py, ISO 8601 with the offset), "" where unknown."""
    species = [names.of(lab) for lab in det["label"]]
    where = [places.get(f, NO_PLACE) for f in det["file"]]
    return det.assign(
        code=[s.code for s in species],
        common=[s.common for s in species],
        scientific=[s.scientific for s in species],
        site=[p.site for p in where],
        lat=pd.array([p.lat for p in where], dtype="Float64"),
        lon=pd.array([p.lon for p in where], dtype="Float64"),
        time=[p.iso_at(t) for p, t in zip(where, det["start_s"])],
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


# the band a Raven selection spans: birds' calls, up to the recording's Nyquist frequency when that is lower
RAVEN_LOW_HZ, RAVEN_HIGH_HZ = 50.0, 14000.0


def raven_table(
    events: pd.DataFrame,
    recording: str,
    low_hz: float = RAVEN_LOW_HZ,
    high_hz: float = RAVEN_HIGH_HZ,
    names: ClassNames | None = None,
    place: RecordingPlace = NO_PLACE,
) -> pd.DataFrame:
    """A Raven Pro selection table (tab-separated) for one recording's events. It names its sound: `Begin Path` (the
    recording's absolute path), `Begin File` (its name) and `File Offset (s)` (the time within it), so that Raven
    pairs table and sound whatever the table is called (two `a.wav` of two folders), and the truth reader
    (truth.formats.Raven) reads the recording from the table, not from the table's name. `Species` shows the class,
    or the name `names.shown` chooses (predict --names); the species' code, common and scientific names, the site
    and the date-time of each selection's start (ISO 8601 with the offset) follow, "" where unknown."""
    path = os.path.abspath(recording)
    names = names or ClassNames({})
    species = [names.of(lab) for lab in events["label"]]
    return pd.DataFrame(
        {
            "Selection": np.arange(1, len(events) + 1),
            "View": "Spectrogram 1",
            "Channel": 1,
            "Begin Time (s)": events["start_s"].to_numpy(),
            "End Time (s)": events["end_s"].to_numpy(),
            "Low Freq (Hz)": low_hz,
            "High Freq (Hz)": high_hz,
            "Begin Path": path,
            "File Offset (s)": events["start_s"].to_numpy(),
            "Begin File": os.path.basename(path),
            "Species": [names.show(lab) for lab in events["label"]],
            "Score": events["score"].to_numpy(),
            "Species Code": [s.code for s in species],
            "Common Name": [s.common for s in species],
            "Scientific Name": [s.scientific for s in species],
            "Site": place.site,
            "Begin Date Time": [place.iso_at(t) for t in events["start_s"]],
        }
    )


def write_audacity(events: pd.DataFrame, path: Path, names: ClassNames | None = None) -> Path:
    """Audacity label track: start<TAB>end<TAB>label (score) per line, no header; the label shown as `names` chooses
    (predict --names; default the class)."""
    names = names or ClassNames({})
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for s, e, lab, sc in zip(events["start_s"], events["end_s"], events["label"], events["score"]):
                f.write(f"{s:.3f}\t{e:.3f}\t{names.show(lab)} ({sc:.2f})\n")
    return path


def raven_high_hz(recording: str | os.PathLike) -> float:
    """A Raven selection's top: RAVEN_HIGH_HZ, or the recording's Nyquist frequency where lower (a selection above it
    is outside the spectrogram Raven draws). The header of the recording is read once; a recording that can no longer
    be read (moved away before `merge`) keeps RAVEN_HIGH_HZ."""
    try:
        rate_hz = sf.info(os.fspath(recording)).samplerate
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
        log.info("%s: sample rate not read (%s): Raven's High Freq stays %g Hz", recording, e, RAVEN_HIGH_HZ)
        return RAVEN_HIGH_HZ
    return min(RAVEN_HIGH_HZ, rate_hz / 2)


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


@dataclass(frozen=True)
class RecordingContext:
    """What the writers and the score transforms (transforms.py) know of one recording besides its rows: its file,
    its duration (its last row's end), and its place and start (places.py: site, lat, lon, time zone, start; empty
    where unknown). More of a recording goes here, as a field, filled in outputs.recording_contexts."""

    file: str
    duration_s: float
    place: RecordingPlace = NO_PLACE


@dataclass
class Target:
    """What every writer is started with: the output folder, the model's classes, every recording to be added (in
    order), the decision and Kaggle inputs some formats need, the classes' names and the recordings' places (each
    recording's place reaches the writers and the transforms in its RecordingContext too)."""

    out: Path
    classes: list[str]
    files: list[str]
    max_birds: int | None = None
    test_csv: str | None = None
    audio_dir: str | None = None
    sample_submission: str | None = None
    names: ClassNames | None = None  # the classes' species names and which one tables show (default: by class name)
    places: dict[str, RecordingPlace] = field(default_factory=dict)  # each recording's place and start (places.py)

    def __post_init__(self) -> None:
        self.names = self.names or class_names(self.classes)

    def place(self, recording: str) -> RecordingPlace:
        return self.places.get(recording, NO_PLACE)


@dataclass
class Decided:
    """A block of whole recordings, scored and decided (outputs.decided_blocks)."""

    files: list[str]  # the recordings, in order
    scores: pa.Table  # their rows of every output kind, as decided (after the score transforms): scores.parquet's
    rows: pd.DataFrame  # their rows of the decided output kind, smoothed [n_rows]
    present: np.ndarray  # [shape=(n_rows, K)] bool: the decision
    recording: np.ndarray  # [shape=(n_rows,)] each row's recording: its place in `files`
    thresholds: np.ndarray  # [shape=(K,)] of the decided output kind
    classes: list[str]
    contexts: list[RecordingContext] = field(default_factory=list)  # one per recording of `files`, in order
    raw: pa.Table | None = None  # `scores` before the score transforms (None: there were none, they are `scores`)

    @cached_property
    def detections(self) -> pd.DataFrame:
        """detections.csv's lines of the block (not yet spreadsheet-safe), row by row."""
        return detections(self.rows, self.present, self.classes)

    @cached_property
    def events(self) -> list[pd.DataFrame]:
        """Each recording's events (merge_runs of its detections), in the order of `files`."""
        det = self.detections
        r = np.nonzero(self.present)[0]  # each detection's row, in the order of `det`
        at = pd.Index(np.arange(len(r))).groupby(self.recording[r])
        return [merge_runs(det.iloc[at[j]] if j in at else det.iloc[:0]) for j in range(len(self.files))]


class Writer(abc.ABC):
    """One output format: start(target), add(block) for each block of whole recordings in order, close() (the files
    committed whole). Used as a context manager: an error before close() discards what was half written."""

    name: ClassVar[str]
    FILE: ClassVar[str | None] = None  # the one file in OUT the format writes, if it writes one

    def __init__(self) -> None:
        self._files = contextlib.ExitStack()  # the atomic_path temporaries (and their open handles) of this writer

    @classmethod
    def sweep(cls, target: Target) -> None:
        """Remove the temporaries of this format's files that a killed run left (the caller holds the lock of the
        combined outputs)."""
        if cls.FILE:
            remove_stale_temps(target.out, [cls.FILE])

    @classmethod
    def found(cls, out: Path) -> list[Path]:
        """What of this format an earlier run left in `out` (its file, or its folder)."""
        return [out / cls.FILE] if cls.FILE and (out / cls.FILE).is_file() else []

    def start(self, target: Target) -> None:
        self.target = target

    @abc.abstractmethod
    def add(self, block: Decided) -> None:
        """Write one block of whole recordings (in order)."""

    def finish(self) -> None:
        """Write what close() commits (nothing by default)."""

    def close(self) -> None:
        """Finish and commit the files (renamed from their temporaries; removed instead when finishing fails)."""
        with self._files:
            self.finish()

    def _temporary(self, path: Path) -> Path:
        """A temporary for `path`, renamed to it by close()."""
        return self._files.enter_context(atomic_path(path))

    def _open_text(self, path: Path) -> TextIO:
        return self._files.enter_context(open(self._temporary(path), "w", newline=""))

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self._files.__exit__(*exc)


WRITERS: dict[str, type[Writer]] = {}


def writer(name: str) -> Callable[[type[Writer]], type[Writer]]:
    """Register a Writer class under `name`."""

    def register(cls: type[Writer]) -> type[Writer]:
        cls.name = name
        WRITERS[name] = cls
        return cls

    return register


def get_writer(name: str) -> Writer:
    if name not in WRITERS:
        raise ConfigError(f"unknown output writer {name!r}; valid: {sorted(WRITERS)}")
    return WRITERS[name]()


@writer("scores")
class ScoresWriter(Writer):
    """scores.parquet: every output kind's rows, row group by row group (parts.RowGroups)."""

    FILE = "scores.parquet"

    def start(self, target: Target) -> None:
        from birdsed.infer.parts import RowGroups

        super().start(target)
        self.path = self._temporary(target.out / self.FILE)
        self.groups = RowGroups(self._files, self.path)

    def add(self, block: Decided) -> None:
        self.groups.add(block.scores)

    def finish(self) -> None:
        if not self.groups.close():  # nothing finished: the table with its columns and no row
            pd.DataFrame(columns=[*SCORE_META_COLUMNS, *self.target.classes]).to_parquet(self.path, index=False)


class _AppendedCsv(Writer):
    """A CSV table in `out` appended block by block, its header before the first lines (alone when none came)."""

    SEP: ClassVar[str] = ","

    def start(self, target: Target) -> None:
        super().start(target)
        self.file, self.first = self._open_text(target.out / self.FILE), True

    def add(self, block: Decided) -> None:
        self.lines(block).to_csv(self.file, sep=self.SEP, header=self.first, index=False)
        self.first = False

    @abc.abstractmethod
    def lines(self, block: Decided) -> pd.DataFrame:
        """The block's lines of the table."""

    @abc.abstractmethod
    def header(self) -> list[str]:
        """The table's columns (written alone when no block has a line)."""

    def finish(self) -> None:
        if self.first:
            pd.DataFrame(columns=self.header()).to_csv(self.file, sep=self.SEP, index=False)


@writer("csv")
class DetectionsWriter(_AppendedCsv):
    """detections.csv: file,start_s,end_s,label,score for what passes the decision (spreadsheet-safe)."""

    FILE = "detections.csv"

    def lines(self, block: Decided) -> pd.DataFrame:
        return spreadsheet_safe(described(block.detections, self.target.names, self.target.places))

    def header(self) -> list[str]:
        return [*DETECTION_COLUMNS, *DETECTION_NAME_COLUMNS, *DETECTION_PLACE_COLUMNS]


@writer("recordings")
class RecordingsWriter(_AppendedCsv):
    """recordings.csv: each recording's site, lat, lon, time zone and start (places.py; "" where unknown) and its
    length in seconds (spreadsheet-safe): what `summary --by site|day|hour` reads."""

    FILE = "recordings.csv"

    def lines(self, block: Decided) -> pd.DataFrame:
        where = [c.place for c in block.contexts]
        table = pd.DataFrame(
            {
                "file": block.files,
                "site": [p.site for p in where],
                "lat": pd.array([p.lat for p in where], dtype="Float64"),
                "lon": pd.array([p.lon for p in where], dtype="Float64"),
                "timezone": [p.timezone for p in where],
                "start": [p.iso_at(0) for p in where],
                "duration_s": [c.duration_s for c in block.contexts],
            }
        )
        return spreadsheet_safe(table)

    def header(self) -> list[str]:
        return list(RECORDING_COLUMNS)


@writer("birdclef")
class ProbabilitySubmission(_AppendedCsv):
    """submission.csv of BirdCLEF 2023-2025: row_id, then the sample submission's class columns (kaggle.birdclef)."""

    FILE = "submission.csv"

    def start(self, target: Target) -> None:
        from birdsed.kaggle.birdclef import sample_columns

        self.columns = sample_columns(target.sample_submission)
        self.unknown: list[str] = []
        super().start(target)

    def lines(self, block: Decided) -> pd.DataFrame:
        from birdsed.kaggle.birdclef import probability_submission

        sub, self.unknown = probability_submission(block.rows, self.target.classes, self.columns)
        return sub

    def header(self) -> list[str]:
        return ["row_id", *self.columns]

    def close(self) -> None:
        super().close()
        if self.unknown:
            log.warning(
                "%d class(es) of the sample submission the model does not know score 0, e.g. %s",
                len(self.unknown),
                self.unknown[:5],
            )


@writer("cornell")
class RowSubmission(Writer):
    """submission.csv of Kaggle Cornell 2020 / BirdCLEF 2021: row_id,birds for every row of test.csv, in its order
    (kaggle.cornell): each row's birds by recording and start, a whole-file row's (site 3) decided over the file's
    rows' maxima. test.csv is held whole, as the submission is written from it at close."""

    FILE = "submission.csv"

    def start(self, target: Target) -> None:
        from birdsed.kaggle.cornell import read_kaggle_test

        super().start(target)
        self.test = read_kaggle_test(target.test_csv, target.audio_dir)
        self.row_birds: dict[tuple[str, float], str] = {}
        self.file_birds: dict[str, str] = {}

    def add(self, block: Decided) -> None:
        rows, classes = block.rows, self.target.classes
        names_of_rows = [block.files[j] for j in block.recording]
        self.row_birds.update(zip(zip(names_of_rows, rows["start_s"].astype(float)), labels_of(block.present, classes)))
        per_file = pd.DataFrame(rows[classes].to_numpy()).groupby(block.recording).max()
        whole = labels_of(decide(per_file.to_numpy(), block.thresholds, self.target.max_birds), classes)
        self.file_birds.update((block.files[j], b) for j, b in zip(per_file.index, whole))

    def finish(self) -> None:
        from birdsed.kaggle.cornell import submission

        write_table(submission(self.test, self.row_birds, self.file_birds), self.target.out / self.FILE)


class _LabelFiles(Writer):
    """One file per recording in OUT/<folder>/, named by label_file_names (written even when it has no event)."""

    FOLDER: ClassVar[str]
    SUFFIX: ClassVar[str]

    @classmethod
    def found(cls, out: Path) -> list[Path]:
        return [out / cls.FOLDER] if (out / cls.FOLDER).is_dir() else []

    @classmethod
    def sweep(cls, target: Target) -> None:
        names = label_file_names(target.files).values()
        remove_stale_temps(target.out / cls.FOLDER, [f"{name}{cls.SUFFIX}" for name in names])

    def start(self, target: Target) -> None:
        super().start(target)
        self.names = label_file_names(target.files)

    def add(self, block: Decided) -> None:
        for f, events in zip(block.files, block.events):
            self.write(events, self.target.out / self.FOLDER / f"{self.names[f]}{self.SUFFIX}", f)

    @abc.abstractmethod
    def write(self, events: pd.DataFrame, path: Path, recording: str) -> None:
        """One recording's table of events at `path`."""


@writer("raven")
class RavenWriter(_LabelFiles):
    """raven/<name>.Table.1.selections.txt: a Raven Pro selection table per recording naming its sound (raven_table)."""

    FOLDER, SUFFIX = "raven", ".Table.1.selections.txt"

    def write(self, events: pd.DataFrame, path: Path, recording: str) -> None:
        table = raven_table(
            events,
            recording,
            high_hz=raven_high_hz(recording),
            names=self.target.names,
            place=self.target.place(recording),
        )
        write_table(table, path, sep="\t")


@writer("raven-all")
class CombinedRavenWriter(_AppendedCsv):
    """raven.selections.txt: one Raven Pro selection table of every recording (BirdNET-Analyzer's combined table).
    Raven opens the sounds of its `Begin Path` one after the other: `Begin Time (s)` counts from the start of the
    first recording, `File Offset (s)` is the time within the recording the row names."""

    FILE, SEP = "raven.selections.txt", "\t"

    def start(self, target: Target) -> None:
        super().start(target)
        self.offset_s, self.selections = 0.0, 0  # the recordings written so far: their length, their selections

    def lines(self, block: Decided) -> pd.DataFrame:
        tables = []
        for j, (f, events) in enumerate(zip(block.files, block.events)):
            table = raven_table(
                events, f, high_hz=raven_high_hz(f), names=self.target.names, place=self.target.place(f)
            )
            table["Begin Time (s)"] += self.offset_s
            table["End Time (s)"] += self.offset_s
            table["Selection"] += self.selections
            tables.append(table)
            self.selections += len(table)
            self.offset_s += float(block.rows["end_s"].to_numpy()[block.recording == j].max(initial=0.0))
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=self.header())

    def header(self) -> list[str]:
        return list(raven_table(pd.DataFrame(columns=["start_s", "end_s", "label", "score"]), "").columns)


@writer("audacity")
class AudacityWriter(_LabelFiles):
    """audacity/<name>.txt: an Audacity label track per recording."""

    FOLDER, SUFFIX = "audacity", ".txt"

    def write(self, events: pd.DataFrame, path: Path, recording: str) -> None:
        write_audacity(events, path, self.target.names)


# The files the writers put in OUT itself (scores.parquet, detections.csv, submission.csv): predict's own names there.
COMBINED = tuple(sorted({cls.FILE for cls in WRITERS.values() if cls.FILE}))
