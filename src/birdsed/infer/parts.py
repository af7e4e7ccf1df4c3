"""A predict folder's parts (OUT/parts/<key>.<size>-<mtime_ns>.parquet, one per finished recording), read for the
combined outputs: in
blocks of whole recordings, so that the work per recording is not paid once a recording (2,000 two-second
recordings took 17 s one by one, pandas' fixed cost per call), and memory holds one block, never the archive.

    parts -> blocks(...)  Block: recordings and one table of their rows, up to ROW_GROUP_ROWS rows and
                           DECIDE_CELLS score cells (or one recording, when it alone is larger); parts read a few
                           ahead on threads
    RowGroups              scores.parquet, row group by row group: whole recordings, about ROW_GROUP_ROWS rows each

A part remembers what it scored by its name: the recording's key (data.store.recording_key) and the size and
modification time (ns) the recording had when it was listed, before it was read. A recording that changed since (still
being written then, or replaced) has another name: it is scored again, and its old part removed (`part_paths`,
`superseded`). Size and mtime, not a hash: a hash reads every recording of an archive at every re-run.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from birdsed.data.store import recording_key
from birdsed.errors import BirdsedError

ROW_GROUP_ROWS = 32_768  # rows per row group of scores.parquet (a recording is never split; a long one may exceed it)
DECIDE_CELLS = 1 << 22  # score cells decided at once (about 16 MB of float32): a wide model's blocks hold fewer rows
COMBINE_EVERY = 256  # tables read, combined into one
READ_AHEAD = 8  # parts read ahead of the one being gathered (pyarrow reads without the GIL)


def stamp(path: str) -> str:
    """The recording as it is now: "<size>-<mtime_ns>" ("0-0" when it can't be read: its error is reported)."""
    try:
        st = os.stat(path)
    except OSError:
        return "0-0"
    return f"{st.st_size}-{st.st_mtime_ns}"


def part_paths(parts: Path, files: list[str]) -> dict[str, Path]:
    """Each recording's part as it is now (module docstring): listed before anything is read."""
    return {f: parts / f"{recording_key(f)}.{stamp(f)}.parquet" for f in files}


def recorded_parts(parts: Path, files: list[str], names: dict[str, str]) -> dict[str, Path]:
    """Each recording's part by the name a run recorded for it (`names`, a shard's record), or by the name parts had
    before they were stamped (<key>.parquet)."""
    return {f: parts / names.get(f, f"{recording_key(f)}.parquet") for f in files}


def part_files(parts: Path) -> list[str]:
    """The names of the finished parts in `parts` ([] when there is none): predict's own names, never a hidden
    temporary."""
    if not parts.is_dir():
        return []
    return [n for n in os.listdir(parts) if n.endswith(".parquet") and not n.startswith(".")]


def superseded(parts: Path, part_of: dict[str, Path]) -> dict[str, list[Path]]:
    """The parts of the recordings of `part_of` that scored an earlier version of them (another size or mtime, or
    the name of before the stamp), by recording; only names predict itself gives its parts."""
    by_key: dict[str, list[str]] = {}
    for name in part_files(parts):
        base = name[: -len(".parquet")]
        m = _STAMPED.fullmatch(base)
        for key in {base, m[1]} if m else {base}:  # <key>.<size>-<mtime_ns>, or <key> (before the stamp)
            by_key.setdefault(key, []).append(name)
    old: dict[str, list[Path]] = {}
    for f, path in part_of.items():
        names = [n for n in by_key.get(recording_key(f), []) if n != path.name]
        if names:
            old[f] = [parts / n for n in names]
    return old


_STAMPED = re.compile(r"(.+)\.([0-9]+-[0-9]+)")


def read_part(path: Path, recording: str) -> pa.Table:
    """One finished recording's rows; a part that is not what predict wrote is a clear error naming it."""
    try:
        return pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise BirdsedError(
            f"{path}: the scores of {recording} are unreadable ({type(e).__name__}); delete that file and "
            "run the same command again to predict it afresh"
        ) from e


def _read_in_order(parts: list[tuple[str, Path]]) -> Iterator[tuple[str, pa.Table]]:
    """The parts' tables in order, READ_AHEAD of them being read at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[str, Future]] = deque()
        for f, path in parts:
            pending.append((f, pool.submit(read_part, path, f)))
            if len(pending) > READ_AHEAD:
                g, fut = pending.popleft()
                yield g, fut.result()
        while pending:
            g, fut = pending.popleft()
            yield g, fut.result()


@dataclass
class Block:
    """Whole recordings, in order: their names, their rows in `table` (in that order), and the table."""

    files: list[str]
    n_rows: list[int]
    table: pa.Table


def blocks(parts: list[tuple[str, Path]], n_columns: int) -> Iterator[Block]:
    """Whole recordings in their order, gathered up to ROW_GROUP_ROWS rows and DECIDE_CELLS cells of `n_columns`
    columns (a recording larger than that is a block alone). The tables read are combined every COMBINE_EVERY: ten
    thousand tiny tables held for one block took 550 MB (their read buffers), one table of their rows a few."""
    limit = max(1, min(ROW_GROUP_ROWS, DECIDE_CELLS // max(1, n_columns)))
    files: list[str] = []
    n_rows: list[int] = []
    tables: list[pa.Table] = []
    for f, table in _read_in_order(parts):
        if files and sum(n_rows) + table.num_rows > limit:
            yield Block(files, n_rows, concat(tables))
            files, n_rows, tables = [], [], []
        files.append(f)
        n_rows.append(table.num_rows)
        tables.append(table)
        if len(tables) >= COMBINE_EVERY:
            tables = [concat(tables)]
    if files:
        yield Block(files, n_rows, concat(tables))


def concat(tables: list[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """One table of `tables` in `schema` (default: the first one's)."""
    schema = schema or tables[0].schema
    return pa.concat_tables([t if t.schema == schema else t.cast(schema) for t in tables]).combine_chunks()


class RowGroups:
    """scores.parquet written row group by row group: blocks are gathered until ROW_GROUP_ROWS, then written, so that
    memory holds one row group (not one per recording: 20,000 row groups' metadata alone took 0.8 GB)."""

    def __init__(self, stack: contextlib.ExitStack, path: Path):
        self.stack, self.path, self.writer, self.buffer, self.rows = stack, path, None, [], 0

    @property
    def schema(self) -> pa.Schema | None:
        return self.writer.schema if self.writer is not None else (self.buffer[0].schema if self.buffer else None)

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.rows += table.num_rows
        if self.rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        table = concat(self.buffer, self.schema)
        if self.writer is None:
            self.writer = self.stack.enter_context(pq.ParquetWriter(self.path, table.schema))
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.buffer, self.rows = [], 0

    def close(self) -> bool:
        """Write what is gathered; False when nothing was ever written."""
        self._flush()
        return self.writer is not None
