"""An embedding DB: every window of every recording of an archive as one vector (f16), with its file, start and end,
in segments with an approximate-nearest-neighbour index each (index.py). `birdsed embed` writes it, `search` and
`learn` read it through `open_db`.

DB/
  db.json                       the model (its folder, sha256, kind), the embedding space, dim, window_s, hop_s,
                                sample_rate_hz, dtype: every embed into this DB must match it (else refused, named)
  parts/<key>.<size>-<mtime_ns>.npz   a recording embedded and not yet in a segment (emb (n, D) f16, start_s (n,)):
                                what makes a killed `embed` resume (named as predict's parts, infer/parts.py)
  segments/<NNNNNN>/            committed whole (written in a temporary folder, then renamed): never half-written
    segment.json                first_id, n (windows), dim, n_recordings
    vectors.f16                 (n, D) float16, C order, read memory-mapped
    windows.parquet             id, file, start_s, end_s (id = first_id + row)
    recordings.parquet          file, stamp (<size>-<mtime_ns>), first_id, n_windows: what a re-run skips
    index.usearch               the segment's index, keys = ids (rebuilt, said, when missing or of another size)
  errors.csv                    recordings that failed, with the reason (of the last embed)

Ids run 0 .. n - 1 across segments in order. Adding recordings adds a segment (each at most SEGMENT_WINDOWS windows,
so that building one index holds at most that many vectors); nothing committed is rewritten.

    db = open_db("archive.db")
    db.n, db.dim, db.info.window_s               # 1_234_567 windows of 1024-d, 3 s
    db.windows()                                 # DataFrame id, file, start_s, end_s (all; or columns=[...])
    db.windows_of([5, 17])                       # the rows of those ids
    db.vectors([5, 17, 42])                      # (3, D) float32
    for ids, x in db.blocks(65_536): ...         # every window, in id order, a block at a time: bounded memory
    ids, sims = db.nearest(query, k=100)         # (q, k) ids and cosine similarities, best first
    db.window_id("rec.wav", 12.0)                # the id of the window of rec.wav starting nearest 12 s
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from birdsed import __version__
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import write_text_atomic
from birdsed.search.index import build_index, open_index, search_index

log = logging.getLogger(__name__)

FORMAT = 1
DB_JSON = "db.json"
PARTS = "parts"
SEGMENTS = "segments"
VECTORS = "vectors.f16"
WINDOWS = "windows.parquet"
RECORDINGS = "recordings.parquet"
INDEX = "index.usearch"
SEGMENT_JSON = "segment.json"
SEGMENT_WINDOWS = 250_000  # windows a segment holds at most: 0.5 GB of 1,024-d f16 vectors while its index is built
BLOCK = 65_536  # vectors read or indexed at a time


class DBError(BirdsedError):
    """An embedding DB is missing, of another model than asked, or damaged."""


@dataclass(frozen=True)
class DBInfo:
    """db.json: what every window of the DB was embedded with."""

    model: str  # the model folder
    model_sha256: str
    kind: str
    space: str  # the embedding space: two models with the same space give comparable vectors
    dim: int
    window_s: float
    hop_s: float
    sample_rate_hz: int
    dtype: str = "float16"
    metric: str = "cos"
    format: int = FORMAT
    birdsed_version: str = __version__

    def same_space(self, other: DBInfo) -> list[str]:
        """The settings that differ from `other`'s (what makes two embeddings incomparable); [] when none."""
        keys = ("space", "dim", "window_s", "hop_s", "sample_rate_hz", "dtype")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]

    @classmethod
    def read(cls, path: Path) -> DBInfo:
        try:
            d = json.loads(path.read_text())
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise DBError(f"{path}: not an embedding DB's db.json ({type(e).__name__}: {e})") from e

    def write(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2))


@dataclass
class Segment:
    """One committed segment: ids first_id .. first_id + n - 1."""

    path: Path
    first_id: int
    n: int
    dim: int
    n_recordings: int = 0
    _vectors: np.memmap | None = field(default=None, repr=False)

    @classmethod
    def read(cls, path: Path) -> Segment:
        try:
            d = json.loads((path / SEGMENT_JSON).read_text())
            seg = cls(path, int(d["first_id"]), int(d["n"]), int(d["dim"]), int(d.get("n_recordings", 0)))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise DBError(f"{path / SEGMENT_JSON}: unreadable segment record ({type(e).__name__}: {e})") from e
        size = (path / VECTORS).stat().st_size if (path / VECTORS).is_file() else -1
        if size != seg.n * seg.dim * 2:
            raise DBError(
                f"{path / VECTORS}: {size} bytes, its segment.json says {seg.n} windows of {seg.dim}-d f16 "
                f"({seg.n * seg.dim * 2} bytes): the segment is damaged; delete {path} and embed its recordings again"
            )
        return seg

    @property
    def vectors(self) -> np.memmap:
        """(n, D) float16, memory-mapped."""
        if self._vectors is None:
            self._vectors = np.memmap(self.path / VECTORS, np.float16, "r", shape=(self.n, self.dim))
        return self._vectors

    def blocks(self, size: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for a in range(0, self.n, size):
            b = min(self.n, a + size)
            yield np.arange(self.first_id + a, self.first_id + b), np.asarray(self.vectors[a:b], np.float32)

    def index(self):
        """This segment's index, memory-mapped; rebuilt (said) when missing or not of this segment's vectors."""
        path = self.path / INDEX
        index = open_index(path, self.dim, self.n)
        if index is None:
            log.warning("%s: building the index of %d windows", path, self.n)
            build_index(path, self.dim, self.blocks())
            index = open_index(path, self.dim, self.n)
            if index is None:
                raise DBError(f"{path}: the index just built does not load")
        return index


class EmbeddingDB:
    """An embedding DB, read-only (module docstring). Vectors are returned as float32."""

    def __init__(self, path: Path, info: DBInfo, segments: list[Segment]):
        self.path, self.info, self.segments = path, info, segments
        self._starts = np.array([s.first_id for s in segments] + [self.n], dtype=np.int64)

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def n(self) -> int:
        """Windows in the DB."""
        return sum(s.n for s in self.segments)

    def windows(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The windows table: id, file, start_s, end_s (or `columns` of them), in id order."""
        cols = list(columns) if columns else ["id", "file", "start_s", "end_s"]
        tables = [pq.read_table(s.path / WINDOWS, columns=cols).to_pandas() for s in self.segments]
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype="int64" if c == "id" else "float64") for c in cols})
        return pd.concat(tables, ignore_index=True)

    def windows_of(self, ids: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """The rows of `ids` of the windows table, in the order given (read from the segments that hold them)."""
        ids = self._checked(ids)
        seg_of = np.searchsorted(self._starts, ids, side="right") - 1
        tables = [
            pq.read_table(
                self.segments[k].path / WINDOWS, filters=[("id", "in", ids[seg_of == k].tolist())]
            ).to_pandas()
            for k in np.unique(seg_of)
        ]
        if not tables:
            return self.windows().iloc[:0]
        return pd.concat(tables, ignore_index=True).set_index("id").loc[ids].reset_index()

    def recordings(self) -> pd.DataFrame:
        """file, stamp, first_id, n_windows of every recording in the DB."""
        tables = [pq.read_table(s.path / RECORDINGS).to_pandas() for s in self.segments]
        if not tables:
            return pd.DataFrame(columns=["file", "stamp", "first_id", "n_windows"])
        return pd.concat(tables, ignore_index=True)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The vectors of `ids` [shape=(len(ids), D)], float32, in the order given; an id out of range is a DBError."""
        ids = self._checked(ids)
        out = np.empty((len(ids), self.dim), np.float32)
        seg_of = np.searchsorted(self._starts, ids, side="right") - 1
        for k in np.unique(seg_of):
            sel = seg_of == k
            seg = self.segments[k]
            rows = ids[sel] - seg.first_id
            order = np.argsort(rows)  # sorted reads from the memory map
            out[np.flatnonzero(sel)[order]] = seg.vectors[rows[order]]
        return out

    def _checked(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """`ids` as int64 (n,); a DBError naming the first out of range."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n):
            bad = ids[(ids < 0) | (ids >= self.n)][0]
            raise DBError(f"{self.path}: no window of id {bad} (it holds ids 0 to {self.n - 1})")
        return ids

    def blocks(self, size: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every window in id order as (ids (n,), vectors (n, D) float32), at most `size` at a time."""
        for seg in self.segments:
            yield from seg.blocks(size)

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest windows of each query (cosine), over every segment's index: (ids (q, k'), similarities
        (q, k')), best first, k' = min(k, n)."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if queries.shape[1] != self.dim:
            raise DBError(f"a query of {queries.shape[1]}-d; {self.path} holds {self.dim}-d embeddings")
        if not self.segments:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0))
        found = [search_index(s.index(), queries, k) for s in self.segments]
        ids = np.concatenate([f[0] for f in found], axis=1)
        sims = np.concatenate([f[1] for f in found], axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")[:, : min(k, self.n)]
        ids, sims = np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)
        found = (ids >= 0).all(axis=0)  # columns some query's search left unfilled (fewer found than k) go
        return ids[:, found], sims[:, found]

    def exact_nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As nearest, by a scan of every vector (block by block): the reference for the index's recall."""
        q = _unit(np.atleast_2d(np.asarray(queries, np.float32)))
        best_ids = np.zeros((len(q), 0), np.int64)
        best = np.zeros((len(q), 0))
        for ids, x in self.blocks():
            sims = q @ _unit(x).T  # (q, n)
            best = np.concatenate([best, sims], axis=1)
            best_ids = np.concatenate([best_ids, np.broadcast_to(ids, sims.shape)], axis=1)
            top = np.argsort(-best, axis=1, kind="stable")[:, :k]
            best, best_ids = np.take_along_axis(best, top, 1), np.take_along_axis(best_ids, top, 1)
        return best_ids, best

    @cached_property
    def _windows_by_file(self) -> pd.DataFrame:
        return self.windows(["id", "file", "start_s"])

    def window_id(self, file: str, start_s: float) -> int:
        """The id of `file`'s window whose start is nearest `start_s` (file as the DB names it, or its absolute
        path); a DBError naming the file when the DB has none of it."""
        w = self._windows_by_file
        mine = w[w["file"] == file]
        if mine.empty:
            mine = w[w["file"] == str(Path(file).resolve())]
        if mine.empty:
            raise DBError(f"{file}: not a recording of {self.path} (it holds {w['file'].nunique()} recordings)")
        return int(mine["id"].iloc[int(np.argmin(np.abs(mine["start_s"].to_numpy() - start_s)))])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def segment_paths(db: Path) -> list[Path]:
    root = db / SEGMENTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def open_db(path: str | os.PathLike) -> EmbeddingDB:
    """The embedding DB at `path` (module docstring), read-only; a DBError naming what is missing or damaged."""
    path = Path(path)
    if not (path / DB_JSON).is_file():
        raise DBError(f"{path}: not an embedding DB (no {DB_JSON}; `birdsed embed --out {path}` makes one)")
    info = DBInfo.read(path / DB_JSON)
    segments = [Segment.read(p) for p in segment_paths(path)]
    expected = 0
    for s in segments:
        if s.first_id != expected or s.dim != info.dim:
            raise DBError(
                f"{s.path}: first id {s.first_id} of {s.dim}-d, expected {expected} of {info.dim}-d: "
                "the DB's segments do not follow one another"
            )
        expected += s.n
    return EmbeddingDB(path, info, segments)


def check_info(path: Path, info: DBInfo) -> None:
    """Write db.json for a new DB, or refuse (ConfigError naming both) an embed whose model gives other embeddings
    than those the DB holds."""
    old_path = path / DB_JSON
    if not old_path.is_file():
        path.mkdir(parents=True, exist_ok=True)
        info.write(old_path)
        return
    old = DBInfo.read(old_path)
    differ = old.same_space(info)
    if differ:
        said = "; ".join(f"{k}: {getattr(old, k)!r} in the DB, {getattr(info, k)!r} now" for k in differ)
        raise ConfigError(
            f"{path} holds embeddings of another model or setting ({old.model}); this embed gives other ones ({said}): "
            "use another --out"
        )
