"""`birdsed summary PRED`: per species (and per recording, site, day or hour of day), the 5 s rows it was detected
in, the minutes present, the first and last detection, the highest score and the detections per hour of recording.

Streamed over PRED/scores.parquet one row group at a time (a row group holds whole recordings), so memory holds one
row group and the running totals (groups x classes), never the archive. A row has a species where predict's decision
says so: the same output kind, thresholds, neighbour smoothing and max-birds (infer/outputs.decide_scores), with the
model's thresholds read from model.json without torch, and the options from run.json (older sharded runs: their
shard records).

--by site, day and hour read each recording's site and start from PRED/recordings.csv (predict writes it: places.py,
from --sites / --site and the names' times); a row's date-time is its recording's start plus its offset, in the
recording's time zone, so a day and an hour are the recorders' local ones. A scores table that carries its own `site`
and `time` columns (a naive date-time per row) is read as it is. A grouping none of them can give is refused, saying
what is missing; rows whose recording has no site or no time fall in the group "unknown".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer.decide import Thresholds
from birdsed.infer.outputs import RUN_DECISION_KEY, DecisionOptions, decide_scores
from birdsed.model.meta import model_digest, read_model_meta
from birdsed.model.names import class_names
from birdsed.places import zone
from birdsed.rows import SCORE_META_COLUMNS, plain_cell

GROUPINGS = ("all", "recording", "site", "day", "hour")
SITE_COLUMN = "site"  # a row's site (from a sites table, when predict knows it)
TIME_COLUMN = "time"  # a row's start as a date-time (from the recording's name or a sites table)
RECORDINGS_FILE = "recordings.csv"  # predict's table of each recording's site and start (infer/writers.py)
UNKNOWN = "unknown"  # the group of rows whose recording has no site, or no time
NEEDS = {"site": SITE_COLUMN, "day": TIME_COLUMN, "hour": TIME_COLUMN}
GROUP_COLUMN = {"recording": "file", "site": "site", "day": "day", "hour": "hour"}
SUMMARY_FORMATS = (".csv", ".parquet")
SUMMARY_COLUMNS = (
    "class",
    "code",
    "common",
    "scientific",
    "rows",
    "minutes",
    "first_file",
    "first_s",
    "last_file",
    "last_s",
    "max_score",
    "per_hour",
    "hours_recorded",
)
TIME_COLUMNS = ("first_time", "last_time")


@dataclass
class Decision:
    """How predict decided presence: the class columns, the options, the model's thresholds and default output."""

    classes: list[str]
    options: DecisionOptions
    thresholds: Thresholds
    default_output: str
    source: str  # where the thresholds come from, to say so
    meta: dict = field(default_factory=dict)  # model.json, when the model is there (the classes' species names)


def decision_of(pred: Path, output: str | None = None, threshold: float | None = None) -> Decision:
    """The decision predict made for PRED (run.json's model, its thresholds; a sharded run's options), with
    `output` / `threshold` overriding them as predict's options do."""
    run_path = pred / "run.json"
    try:
        run = json.loads(run_path.read_text())
        classes = list(run["classes"])
        model_dir = Path(run["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BirdsedError(f"{run_path}: not a predict folder's run.json ({e})") from e
    options = _recorded_options(pred)
    if output is not None:
        options.output = output
    if threshold is not None:
        options.threshold = threshold
    if not (model_dir / "model.json").is_file() or model_digest(model_dir) != run.get("model_sha256"):
        if options.threshold is None:
            raise BirdsedError(
                f"{model_dir}: the model predict ran ({run_path}) is not there or changed, and its thresholds decide "
                "presence: give --threshold"
            )
        return Decision(classes, options, Thresholds(), options.output or "clipwise", f"--threshold {threshold}")
    meta = read_model_meta(model_dir)
    source = f"--threshold {options.threshold}" if options.threshold is not None else f"{model_dir}'s thresholds"
    return Decision(classes, options, meta.thresholds, meta.default_output, source, meta.raw)


def _recorded_options(pred: Path) -> DecisionOptions:
    """The decision options predict used: run.json's record (predict and merge write it), else a sharded run's
    shard records (older runs), else the defaults (a run.json from before the record, with no shards)."""
    try:
        return DecisionOptions(**json.loads((pred / "run.json").read_text())[RUN_DECISION_KEY]["options"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for record in sorted((pred / "shards").glob("*-of-*.json")):
        try:
            return DecisionOptions(**json.loads(record.read_text())["spec"]["decision"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return DecisionOptions()


@dataclass
class Totals:
    """Running totals of one group, per class [shape=(K,)]."""

    n_classes: int
    rows: np.ndarray = field(init=False)  # rows with the class
    seconds: np.ndarray = field(init=False)  # seconds of those rows
    max_score: np.ndarray = field(init=False)
    first: list = field(init=False)  # per class: (sort key, file, start_s, time) of the first detection, or None
    last: list = field(init=False)
    recorded_s: float = 0.0  # seconds of recording in the group

    def __post_init__(self) -> None:
        k = self.n_classes
        self.rows = np.zeros(k, np.int64)
        self.seconds = np.zeros(k, np.float64)
        self.max_score = np.full(k, -np.inf, np.float32)
        self.first = [None] * k
        self.last = [None] * k

    def add(self, present: np.ndarray, values: np.ndarray, rows: pd.DataFrame, order: np.ndarray) -> None:
        """Rows of this group: presence and scores [shape=(n, K)], their table, and a sort key [shape=(n,)]
        (the row's time, or its place in the stream)."""
        dur = (rows["end_s"].to_numpy(np.float64) - rows["start_s"].to_numpy(np.float64)).clip(min=0)  # (n,)
        self.recorded_s += float(dur.sum())
        self.rows += present.sum(0)
        self.seconds += (present * dur[:, None]).sum(0)
        self.max_score = np.maximum(self.max_score, values.max(0))
        keyed = np.where(present, order[:, None], np.inf)  # (n, K)
        lo, hi = keyed.argmin(0), np.where(present, order[:, None], -np.inf).argmax(0)
        for k in np.nonzero(present.any(0))[0]:
            a, b = _when(rows, order, lo[k]), _when(rows, order, hi[k])
            if self.first[k] is None or a[0] < self.first[k][0]:
                self.first[k] = a
            if self.last[k] is None or b[0] > self.last[k][0]:
                self.last[k] = b


def _when(rows: pd.DataFrame, order: np.ndarray, i: int) -> tuple:
    time = rows[TIME_COLUMN].iloc[i] if TIME_COLUMN in rows else None
    return (float(order[i]), rows["file"].iloc[i], float(rows["start_s"].iloc[i]), time or None)


@dataclass
class Recordings:
    """PRED/recordings.csv: each recording's site and start (an aware Timestamp in its time zone, or None)."""

    site: dict[str, str]
    start: dict[str, pd.Timestamp | None]

    @classmethod
    def read(cls, pred: Path) -> Recordings:
        """The table predict wrote ({} when it wrote none: a run from before it); a damaged one names itself."""
        path = pred / RECORDINGS_FILE
        if not path.is_file():
            return cls({}, {})
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            for column in ("file", "site", "timezone", "start"):  # text cells as predict had them (a "+02:00" zone)
                table[column] = table[column].map(plain_cell)
            files = list(table["file"])
            starts = [_start(s, tz) for s, tz in zip(table["start"], table["timezone"])]
            return cls(dict(zip(files, table["site"])), dict(zip(files, starts)))
        except (ValueError, KeyError, UnicodeDecodeError, ConfigError) as e:
            raise BirdsedError(f"{path}: not predict's table of recordings ({e}); predict again") from e

    def has(self, column: str) -> bool:
        values = self.site.values() if column == SITE_COLUMN else self.start.values()
        return any(bool(v) if column == SITE_COLUMN else v is not None for v in values)

    def add_to(self, rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """`rows` with the `columns` (SITE_COLUMN, TIME_COLUMN) the scores lack: each row's site, and its date-time
        (ISO 8601 with its offset, "" when unknown) with its local clock time (_local) and UTC (_utc_ns)."""
        out = rows.copy()
        if SITE_COLUMN in columns:
            out[SITE_COLUMN] = [self.site.get(f, "") for f in rows["file"]]
        if TIME_COLUMN in columns:
            n = len(rows)
            local = np.full(n, np.datetime64("NaT"), "datetime64[ns]")
            utc = np.full(n, np.nan)
            iso = np.full(n, "", object)
            offsets = rows["start_s"].to_numpy(np.float64)
            for f, idx in rows.groupby("file", sort=False).indices.items():
                start = self.start.get(f)
                if start is None:
                    continue
                t = start + pd.to_timedelta(offsets[idx], unit="s")  # absolute: right across summer time
                local[idx] = t.tz_localize(None).to_numpy("datetime64[ns]")
                utc[idx] = t.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)
                iso[idx] = [x.isoformat() for x in t]
            out[TIME_COLUMN], out["_local"], out["_utc_ns"] = iso, local, utc
        return out


def _start(text: str, tz: str) -> pd.Timestamp | None:
    return pd.Timestamp(text).tz_convert(zone(tz or "UTC")) if text else None


def check_grouping(by: str, columns: list[str], where: Path, recordings: Recordings | None = None) -> None:
    """A grouping the scores (or predict's recordings.csv) can give, or a ConfigError saying what is missing."""
    if by not in GROUPINGS:
        raise ConfigError(f"--by {by!r}: valid: {list(GROUPINGS)}")
    need = NEEDS.get(by)
    if need and need not in columns and not (recordings and recordings.has(need)):
        what = "site" if need == SITE_COLUMN else "start time"
        how = (
            "predict --sites SITES.csv (or a site column)"
            if need == SITE_COLUMN
            else "names with YYYYMMDD_HHMMSS, predict --time-pattern, or a start column in --sites"
        )
        raise ConfigError(
            f"--by {by} needs each recording's {what}: neither {where} (a {need!r} column) nor "
            f"{where.parent / RECORDINGS_FILE} has one; predict again with {how}, or use --by recording or all"
        )


def _row_groups(path: Path, kind: str, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The rows of output kind `kind`, one row group at a time."""
    try:
        f = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise BirdsedError(f"{path}: not a readable Parquet file ({e})") from e
    for i in range(f.num_row_groups):
        try:
            table = f.read_row_group(i, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise BirdsedError(f"{path}: row group {i} unreadable ({e}); predict again into a new --out") from e
        yield table.filter(pc.equal(table["output"], kind)).to_pandas()


def group_keys(rows: pd.DataFrame, by: str) -> pd.Series:
    """Each row's group under `by` (UNKNOWN for a row without a site or a time)."""
    if by == "all":
        return pd.Series("", index=rows.index)
    if by in ("recording", "site"):
        keys = rows[GROUP_COLUMN[by]].astype(str)
        return keys.where(keys != "", UNKNOWN)
    time = pd.Series(_local_times(rows), index=rows.index)
    keys = time.dt.strftime("%Y-%m-%d") if by == "day" else time.dt.hour.astype("Int64").astype(str).str.zfill(2)
    return keys.where(time.notna(), UNKNOWN)


def _local_times(rows: pd.DataFrame) -> np.ndarray:
    """Each row's local clock time [shape=(n,)] (NaT when unknown): recordings.csv's, or the scores' own column."""
    if "_local" in rows:
        return rows["_local"].to_numpy("datetime64[ns]")
    return pd.to_datetime(rows[TIME_COLUMN]).to_numpy("datetime64[ns]")


def _order(rows: pd.DataFrame, seen: int, timed: bool) -> np.ndarray:
    """Each row's sort key for first / last: its time (UTC) when every recording has one, else its place in the
    stream."""
    if not timed:
        return np.arange(seen, seen + len(rows), dtype=np.float64)
    if "_utc_ns" in rows:
        return rows["_utc_ns"].to_numpy(np.float64)
    return pd.to_datetime(rows[TIME_COLUMN]).to_numpy("datetime64[ns]").astype(np.int64).astype(np.float64)


def summarize(
    pred: str | Path, by: str = "all", output: str | None = None, threshold: float | None = None
) -> tuple[pd.DataFrame, Decision]:
    """The summary table of a predict folder (one row per group and species detected), and the decision used."""
    pred = Path(pred)
    path = pred / "scores.parquet"
    if not path.is_file():
        raise BirdsedError(f"{path} not found: summary reads a predict --out folder's scores")
    decision = decision_of(pred, output, threshold)
    try:
        names_in = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise BirdsedError(f"{path}: not a readable Parquet file ({e})") from e
    recordings = Recordings.read(pred)
    check_grouping(by, names_in, path, recordings)
    classes = decision.classes
    missing = [c for c in [*SCORE_META_COLUMNS, *classes] if c not in names_in]
    if missing:
        raise BirdsedError(f"{path}: columns {missing[:5]} missing (run.json's classes); predict again")
    extra = [c for c in (SITE_COLUMN, TIME_COLUMN) if c in names_in]
    added = [c for c in (SITE_COLUMN, TIME_COLUMN) if c not in names_in and recordings.has(c)]
    timed = TIME_COLUMN in extra or (TIME_COLUMN in added and all(v is not None for v in recordings.start.values()))
    kind = decision.options.output or decision.default_output
    totals: dict[str, Totals] = {}
    seen = 0
    for rows in _row_groups(path, kind, [*SCORE_META_COLUMNS, *extra, *classes]):
        if rows.empty:
            continue
        rows, present, _, _ = decide_scores(rows, classes, decision.thresholds, decision.options, kind)
        rows = recordings.add_to(rows, added) if added else rows
        values = rows[classes].to_numpy(np.float32)
        order = _order(rows, seen, timed)
        seen += len(rows)
        keys = group_keys(rows, by)
        for key, idx in keys.groupby(keys, sort=False).indices.items():
            t = totals.setdefault(key, Totals(len(classes)))
            t.add(present[idx], values[idx], rows.iloc[idx], order[idx])
    return _table(totals, classes, by, TIME_COLUMN in [*extra, *added], decision.meta), decision


def _table(totals: dict[str, Totals], classes: list[str], by: str, with_time: bool, meta: dict) -> pd.DataFrame:
    """One row per group and species detected: each group's columns built as arrays."""
    names = class_names(classes, meta)
    described = [names.of(c) for c in classes]
    parts = []
    for key, t in totals.items():
        ks = np.nonzero(t.rows)[0]
        hours = t.recorded_s / 3600
        first, last = [t.first[k] for k in ks], [t.last[k] for k in ks]
        part = {
            "class": [classes[k] for k in ks],
            "code": [described[k].code for k in ks],
            "common": [described[k].common for k in ks],
            "scientific": [described[k].scientific for k in ks],
            "rows": t.rows[ks],
            "minutes": (t.seconds[ks] / 60).round(2),
            "first_file": [w[1] for w in first],
            "first_s": [w[2] for w in first],
            "last_file": [w[1] for w in last],
            "last_s": [w[2] for w in last],
            "max_score": t.max_score[ks].astype(np.float64).round(4),
            "per_hour": (t.rows[ks] / hours).round(3) if hours > 0 else np.full(len(ks), np.nan),
            "hours_recorded": round(hours, 3),
        }
        if with_time:
            part |= {"first_time": [w[3] for w in first], "last_time": [w[3] for w in last]}
        parts.append(pd.DataFrame({GROUP_COLUMN[by]: key, **part} if by != "all" else part))
    columns = [*([GROUP_COLUMN[by]] if by != "all" else []), *SUMMARY_COLUMNS, *(TIME_COLUMNS if with_time else ())]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    keys = [GROUP_COLUMN[by]] if by != "all" else []  # groups in order, each group's most detected species first
    return table.sort_values([*keys, "rows"], ascending=[True] * len(keys) + [False], kind="stable").reset_index(
        drop=True
    )[columns]


def write_summary(table: pd.DataFrame, path: str | Path) -> None:
    """The table as CSV or Parquet (by the name's suffix), written atomically."""
    from birdsed.fsutil import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUMMARY_FORMATS:
        raise ConfigError(f"--out {path}: the summary is written as {' or '.join(SUMMARY_FORMATS)}")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
