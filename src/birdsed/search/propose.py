"""Which windows to review next, per class, chosen while the archive's scores stream by (memory bounded by the
number asked for, never by the archive):

  uncertain  (default) the windows whose score is nearest 0.5, spread out: a pool of POOL_FACTOR x n nearest the
             boundary, from which n are taken by greedy k-center on the embeddings (each next one the farthest, in
             cosine distance, from those already taken), so a round does not ask ten times about one call
  top        the highest scores (what a recogniser would report: checks its precision)
  random     a seeded uniform draw (an unbiased sample: estimates prevalence)

Windows that already have a verdict for the class are never proposed again for it.

    best = Candidates(n_classes, cap=POOL_FACTOR * n, how="uncertain", seed=0)
    for ids, probs, seen in blocks: best.add(ids, probs, seen)   # seen (n, K): a verdict exists
    ids, probs = best.of(k)                                      # class k's pool, best first
    chosen = k_center(vectors_of(ids), n)                         # positions into ids
"""

from __future__ import annotations

import numpy as np

from birdsed.errors import LearnError

SELECTIONS = ("uncertain", "top", "random")
POOL_FACTOR = 5  # uncertain: candidates kept per proposed window, for the diversity step to choose among


class Candidates:
    """Per class, the `cap` windows that rank best for a selection, kept across blocks (bounded memory)."""

    def __init__(self, n_classes: int, cap: int, how: str, seed: int = 0):
        if how not in SELECTIONS:
            raise LearnError(f"selection {how!r}: valid: {list(SELECTIONS)}")
        self.cap, self.how, self.seed = cap, how, seed
        self.ids = [np.zeros(0, np.int64) for _ in range(n_classes)]
        self.probs = [np.zeros(0, np.float32) for _ in range(n_classes)]
        self.keys = [np.zeros(0, np.float64) for _ in range(n_classes)]

    def rank_keys(self, ids: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """(n, K) keys, smaller is better: -score (top), distance from 0.5 (uncertain), a seeded draw (random)."""
        if self.how == "top":
            return -probs.astype(np.float64)
        if self.how == "uncertain":
            return np.abs(probs.astype(np.float64) - 0.5)
        # the same draw for a window whatever the block it comes in: a hash of (seed, window id, class)
        k = np.arange(probs.shape[1], dtype=np.uint64)
        salt = np.uint64((self.seed & 0xFFFFF) << 40)
        return uniform_hash((ids.astype(np.uint64)[:, None] * np.uint64(1_000_003) + k) ^ salt)

    def add(self, ids: np.ndarray, probs: np.ndarray, seen: np.ndarray) -> None:
        """Offer a block: ids (n,), probs (n, K), seen (n, K) True where the window has a verdict for the class."""
        keys = self.rank_keys(ids, probs)
        for k in range(probs.shape[1]):
            fresh = ~seen[:, k]
            ids_k = np.concatenate([self.ids[k], ids[fresh]])
            probs_k = np.concatenate([self.probs[k], probs[fresh, k]])
            keys_k = np.concatenate([self.keys[k], keys[fresh, k]])
            if len(keys_k) > self.cap:
                keep = np.argpartition(keys_k, self.cap - 1)[: self.cap]
                ids_k, probs_k, keys_k = ids_k[keep], probs_k[keep], keys_k[keep]
            self.ids[k], self.probs[k], self.keys[k] = ids_k, probs_k, keys_k

    def of(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Class k's kept window ids and scores, best first (ties by id)."""
        order = np.lexsort((self.ids[k], self.keys[k]))
        return self.ids[k][order], self.probs[k][order]


def uniform_hash(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 values -> uniform floats in [0, 1), elementwise (a seeded draw that needs no state)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def k_center(vectors: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-center: positions of n rows of vectors (n_pool, D), the first row first, each next the one farthest
    (cosine distance) from those taken. [shape=(min(n, n_pool),)]"""
    if not len(vectors):
        return np.zeros(0, np.int64)
    v = vectors.astype(np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    taken = [0]
    dist = 1.0 - v @ v[0]
    dist[0] = -np.inf
    for _ in range(min(n, len(v)) - 1):
        j = int(np.argmax(dist))
        taken.append(j)
        dist = np.minimum(dist, 1.0 - v @ v[j])
        dist[taken] = -np.inf
    return np.array(taken, np.int64)
