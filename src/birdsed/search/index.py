"""The approximate-nearest-neighbour index of one DB segment's vectors (usearch's HNSW, cosine, vectors kept as f16),
built block by block from the segment's vectors, saved beside them, and searched memory-mapped (`view`), so that a
search holds no segment in memory. usearch was chosen over faiss on measurements (docs/BENCHMARKS.md, "Embedding
index"): recall@10 against exact search, build time, size on disk and query latency on BirdNET embeddings.

Keys are the DB's window ids. An index whose size is not its segment's (a killed build, a file from elsewhere) is
rebuilt, said in the log; one that does not load is rebuilt too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from birdsed.errors import BirdsedError
from birdsed.fsutil import atomic_path

log = logging.getLogger(__name__)

INSTALL = "pip install 'birdsed[search]'"
CONNECTIVITY = 16  # HNSW links per node (usearch's default)
EXPANSION_ADD = 128  # candidates kept while linking a new vector (usearch's default)
# candidates kept while searching: recall@10 0.980 against 0.938 at 128, 0.68 ms a query, in a full segment (250,000
# windows made from BirdNET embeddings; BENCHMARKS.md)
EXPANSION_SEARCH = 256


def _usearch():
    try:
        from usearch.index import Index
    except ImportError as e:
        raise BirdsedError(f"the embedding index needs usearch: {INSTALL}") from e
    return Index


def new_index(dim: int):
    """An empty cosine index of `dim`-d vectors, stored as f16."""
    Index = _usearch()
    return Index(
        ndim=dim,
        metric="cos",
        dtype="f16",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


def build_index(path: Path, dim: int, blocks: Iterator[tuple[np.ndarray, np.ndarray]], threads: int = 0) -> int:
    """Build the index of (ids (n,), vectors (n, dim)) blocks and write it to `path` (atomically); returns its size."""
    index = new_index(dim)
    for ids, vectors in blocks:
        assert vectors.shape == (len(ids), dim), vectors.shape  # (n, D)
        index.add(ids.astype(np.uint64), np.ascontiguousarray(vectors, dtype=np.float32), threads=threads)
    with atomic_path(path) as tmp:
        index.save(str(tmp))
    return len(index)


def open_index(path: Path, dim: int, n: int):
    """The index at `path`, memory-mapped; None when it is missing, unreadable or not of `n` vectors of `dim`."""
    if not path.is_file():
        return None
    index = new_index(dim)
    try:
        index.view(str(path))
    except (RuntimeError, ValueError, OSError) as e:
        log.warning("%s: unreadable index (%s): rebuilt", path, e)
        return None
    index.expansion_search = EXPANSION_SEARCH  # a search setting, not the file's
    if len(index) != n or index.ndim != dim:
        log.warning(
            "%s: an index of %d vectors of %d-d, its segment holds %d of %d-d: rebuilt",
            path,
            len(index),
            index.ndim,
            n,
            dim,
        )
        return None
    return index


def search_index(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (q, k'), cosine similarities (q, k')) of the k nearest windows of each query, k' = min(k, size)."""
    k = min(k, len(index))
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    keys = np.asarray(found.keys).reshape(len(queries), -1)[:, :k].astype(np.int64)
    sims = 1.0 - np.asarray(found.distances, np.float64).reshape(len(queries), -1)[:, :k]
    if keys.shape[1] < k:  # a single query's Matches hold only what was found
        pad = k - keys.shape[1]
        keys = np.pad(keys, ((0, 0), (0, pad)), constant_values=-1)
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
    # a graph search may find fewer than k: the rest is filler (one query gives Matches, several BatchMatches)
    counts = np.asarray(found.counts if hasattr(found, "counts") else [len(found.keys)]).reshape(-1)
    missing = np.arange(keys.shape[1])[None, :] >= counts[:, None]
    keys[missing], sims[missing] = -1, -np.inf
    return keys, sims
