"""Verdicts on detections: what a person said of a clip (yes, no, unsure, or another species), kept in SQLite.

The store is `PRED/review/verdicts.sqlite` in WAL mode: each verdict is committed as it is given, so a killed server
loses nothing, and two writers (two browser tabs, two servers) are serialised by SQLite's lock (a busy timeout, not an
error). One verdict per (file, start_s, end_s, label, reviewer): a later verdict on the same clip by the same reviewer
replaces the earlier one.

The documented table (design.md, "Verdicts"), read and written as CSV so that verification done elsewhere (Raven, a
spreadsheet) counts the same:

    file, start_s, end_s, label, verdict (yes|no|unsure), other_label, reviewer, time

`score` (the score the reviewer saw) follows as an optional column: calibrate needs it, and review fills it from the
predictions when a CSV without it is imported.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from birdsed.errors import ReviewError

VERDICT_COLUMNS = ("file", "start_s", "end_s", "label", "verdict", "other_label", "reviewer", "time")
OPTIONAL_COLUMNS = ("score",)
VERDICTS = ("yes", "no", "unsure")
STORE_DIR = "review"
STORE_NAME = "verdicts.sqlite"
BUSY_TIMEOUT_MS = 30_000  # a second writer waits this long for the first's transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    file TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    label TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('yes', 'no', 'unsure')),
    other_label TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL DEFAULT '',
    time TEXT NOT NULL,
    score REAL,
    PRIMARY KEY (file, start_s, end_s, label, reviewer)
)
"""


@dataclass(frozen=True)
class Verdict:
    """One person's verdict on one clip (a detection's 5 s row and label)."""

    file: str
    start_s: float
    end_s: float
    label: str
    verdict: str
    other_label: str = ""
    reviewer: str = ""
    time: str = ""
    score: float | None = None

    def checked(self) -> Verdict:
        """This verdict with its time set (now, UTC) if empty; a ReviewError naming the bad value otherwise."""
        if self.verdict not in VERDICTS:
            raise ReviewError(
                f"verdict {self.verdict!r} for {self.file} {self.start_s:g} s {self.label}: "
                f"must be one of {list(VERDICTS)}"
            )
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s) and 0 <= self.start_s < self.end_s):
            raise ReviewError(f"verdict for {self.file}: start_s {self.start_s} / end_s {self.end_s} is not a clip")
        if self.score is not None and not (math.isfinite(self.score) and 0 <= self.score <= 1):
            raise ReviewError(
                f"verdict for {self.file} {self.start_s:g} s {self.label}: score {self.score} must be in [0, 1]"
            )
        if not self.file or not self.label:
            raise ReviewError(f"verdict {self!r}: file and label must not be empty")
        when = self.time or datetime.now(timezone.utc).isoformat(timespec="seconds")
        return Verdict(
            self.file,
            float(self.start_s),
            float(self.end_s),
            self.label,
            self.verdict,
            self.other_label or "",
            self.reviewer or "",
            when,
            self.score,
        )


def store_path(pred: str | Path) -> Path:
    return Path(pred) / STORE_DIR / STORE_NAME


def _wal(db: sqlite3.Connection, tries: int = 50) -> None:
    """Switch to WAL; SQLite answers "database is locked" at once, without its busy timeout, while another process
    creates the same new store, so the switch is tried again for up to 5 s."""
    for i in range(tries):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or i == tries - 1:
                raise
            time.sleep(0.1)


class VerdictStore:
    """The verdicts of one predict folder, in SQLite (WAL): every call is one committed transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            _wal(self._db)
            self._db.execute("PRAGMA synchronous=FULL")  # a verdict acknowledged to the page survives a power cut
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise ReviewError(f"{self.path}: not a readable verdict store ({e})") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VerdictStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put(self, verdicts: Iterable[Verdict]) -> int:
        """Add (or replace) verdicts in one transaction; returns how many."""
        rows = [
            (v.file, v.start_s, v.end_s, v.label, v.verdict, v.other_label, v.reviewer, v.time, v.score)
            for v in (x.checked() for x in verdicts)
        ]
        with self._db:  # one transaction: all or nothing
            self._db.executemany(f"INSERT OR REPLACE INTO verdicts VALUES ({', '.join('?' * 9)})", rows)
        return len(rows)

    def remove(self, file: str, start_s: float, end_s: float, label: str, reviewer: str = "") -> bool:
        """Take back one verdict (undo); True if there was one."""
        with self._db:
            cur = self._db.execute(
                "DELETE FROM verdicts WHERE file=? AND start_s=? AND end_s=? AND label=? AND reviewer=?",
                (file, float(start_s), float(end_s), label, reviewer),
            )
        return cur.rowcount > 0

    def table(self) -> pd.DataFrame:
        """Every verdict: the documented columns, then score."""
        cols = [*VERDICT_COLUMNS, *OPTIONAL_COLUMNS]
        rows = self._db.execute(
            f"SELECT {', '.join(cols)} FROM verdicts ORDER BY time, file, start_s, label"
        ).fetchall()
        return pd.DataFrame(rows, columns=cols)

    def keys(self) -> set[tuple[str, float, str]]:
        """(file, start_s, label) of every clip with a verdict (by anyone)."""
        return {(f, float(s), lab) for f, s, lab in self._db.execute("SELECT file, start_s, label FROM verdicts")}


def read_verdict_table(path: str | Path) -> pd.DataFrame:
    """A verdict CSV (the documented columns; other_label, reviewer, time and score may be missing) -> a checked
    table; a ReviewError naming the file, the row and the value for anything malformed."""
    path = Path(path)
    try:
        df = pd.read_csv(
            path,
            dtype={"file": str, "label": str, "verdict": str, "other_label": str, "reviewer": str, "time": str},
            keep_default_na=False,
        )
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ReviewError(f"{path}: not a readable CSV ({e})") from e
    missing = [c for c in ("file", "start_s", "end_s", "label", "verdict") if c not in df.columns]
    if missing:
        raise ReviewError(f"{path}: missing column(s) {missing}; a verdict table has {list(VERDICT_COLUMNS)}")
    for c in ("other_label", "reviewer", "time"):
        if c not in df.columns:
            df[c] = ""
    df["verdict"] = df["verdict"].str.strip().str.lower()
    for c in ("start_s", "end_s", *(["score"] if "score" in df.columns else [])):
        values = pd.to_numeric(df[c].replace("", None), errors="coerce")
        bad = values.isna() & (df[c].astype(str) != "") if c == "score" else values.isna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise ReviewError(f"{path}: row {i + 2}: {c} {df[c].iloc[i]!r} is not a number")
        df[c] = values
    if "score" not in df.columns:
        df["score"] = float("nan")
    for i, r in enumerate(df.itertuples(index=False)):
        try:
            _verdict_of(r._asdict()).checked()
        except ReviewError as e:
            raise ReviewError(f"{path}: row {i + 2}: {e}") from None
    return df[[*VERDICT_COLUMNS, *OPTIONAL_COLUMNS]]


def _verdict_of(r: dict) -> Verdict:
    score = r.get("score")
    score = None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)
    return Verdict(
        str(r["file"]),
        float(r["start_s"]),
        float(r["end_s"]),
        str(r["label"]),
        str(r["verdict"]),
        str(r.get("other_label") or ""),
        str(r.get("reviewer") or ""),
        str(r.get("time") or ""),
        score,
    )


def verdicts_of(table: pd.DataFrame) -> list[Verdict]:
    return [_verdict_of(r) for r in table.to_dict("records")]


def write_verdict_table(table: pd.DataFrame, path: str | Path) -> None:
    """The verdicts as CSV (atomically): the documented columns, then score."""
    from birdsed.fsutil import atomic_path

    with atomic_path(path) as tmp:
        table[[*VERDICT_COLUMNS, *OPTIONAL_COLUMNS]].to_csv(tmp, index=False)


def load_verdicts(source: str | Path) -> pd.DataFrame:
    """Verdicts from a CSV, a verdicts.sqlite, or a predict folder (its review/verdicts.sqlite)."""
    source = Path(source)
    if source.is_dir():
        source = store_path(source)
        if not source.is_file():
            raise ReviewError(f"{source.parent.parent}: no verdicts yet ({source} not found): run `birdsed review`")
    if not source.is_file():
        raise ReviewError(f"{source}: no such verdict table (a CSV, a verdicts.sqlite or a predict folder)")
    if source.suffix.lower() in (".sqlite", ".db"):
        with VerdictStore(source) as store:
            return store.table()
    return read_verdict_table(source)


def predicted_files(files: pd.Series, preds) -> tuple[pd.Series, dict[str, list[str]]]:
    """Each verdict's file as the predictions name it (the path as predict saw it, or the one recording of that
    resolved path, file name or stem: truth.grid.match_names; a path from Raven's Begin Path, a name alone), and
    the files several recordings answer to (name -> them), kept as written for check_known to list."""
    from birdsed.truth.grid import match_names

    known = preds.files
    unknown = [str(n) for n in files.unique() if n not in known]
    several: dict[str, list[str]] = {}
    found = match_names(unknown, sorted(known), several) if unknown else {}
    return files.map(lambda f: found.get(f, f)), several


def check_known(
    table: pd.DataFrame,
    files: set[str],
    classes: list[str],
    ends_s: dict[str, float] | None = None,
    several: dict[str, list[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split verdicts into those about a file and label the predictions know, and the others with a `reason` column
    ("file not in the predictions", "label not a class of the model", "other_label not a class of the model", and
    with `ends_s`, each recording's length, "starts at or past the recording's end (2.87 s)": a clip of nothing)."""
    known = set(classes)
    reason = pd.Series("", index=table.index, dtype=object)
    if ends_s:
        end = table["file"].map(ends_s).astype(float)
        past = end.notna() & (pd.to_numeric(table["start_s"], errors="coerce") >= end)
        reason[past] = [f"starts at or past the recording's end ({e:g} s)" for e in end[past]]
    reason[~table["label"].isin(known)] = "label not a class of the model"
    other = table["other_label"].astype(str)
    reason[(other != "") & ~other.isin(known)] = "other_label not a class of the model"
    reason[~table["file"].isin(files)] = "file not in the predictions"
    for name, hits in (several or {}).items():  # a name alone that recordings of several folders have
        reason[table["file"] == name] = f"file matches several recordings of the predictions ({', '.join(hits[:2])})"
    bad = reason != ""
    return table[~bad].reset_index(drop=True), table[bad].assign(reason=reason[bad]).reset_index(drop=True)
