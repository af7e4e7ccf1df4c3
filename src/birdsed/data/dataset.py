"""Torch datasets over the prepared store: random crops for training, fixed windows for validation.

Loader workers only slice memory maps; every augmentation runs later on the device.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from birdsed.data.sampling import Item
from birdsed.data.store import AudioStore


def fit_length(x: np.ndarray, n: int, policy: str, offset: int = 0) -> np.ndarray:
    """Make `x` exactly n samples: cut, or for shorter clips loop ("loop") or zero-pad ("pad") from `offset`."""
    if len(x) >= n:
        return x[:n]
    if policy == "loop" and len(x) > 0:
        reps = int(np.ceil(n / len(x))) + 1
        return np.tile(x, reps)[offset % len(x) :][:n]
    out = np.zeros(n, dtype=np.float32)
    start = min(offset, n - len(x))
    out[start : start + len(x)] = x
    return out


class EpochSampler(Sampler):
    """A seeded shuffle per epoch that yields (index, epoch) keys: the order and, through CropDataset, every crop
    are functions of (seed, epoch, index) alone, so a run resumed from an epoch's checkpoint draws what the
    uninterrupted run drew, whichever loader worker serves the item.

    `epoch` is the training epoch, set by its owner before each epoch (train/run.py: the trainer's current
    epoch) and never by a pass: Lightning may draw a pass more than once per epoch (a loader with workers draws
    its first pass when Lightning sets the loader up, a run with max_steps draws it again), and its own
    set_epoch is one ahead of its current epoch in a resumed run with max_steps; a pass or a set_epoch that moved
    the epoch gave a resumed run the crops of another epoch. There is no set_epoch, so Lightning leaves it alone.
    A run resumed after epoch e starts its sampler at e + 1."""

    def __init__(self, n: int, seed: int, epoch: int = 0):
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch = self.epoch
        for i in np.random.default_rng([self.seed, epoch]).permutation(self.n):
            yield int(i), epoch


class CropDataset(Dataset):
    """(wave (n_samples,), target (K,), loss weight ()) for a random crop inside each item's time range. A key
    (index, epoch) (EpochSampler) draws the crop from a generator seeded by (seed, epoch, index); a plain index
    from the worker's own generator.

    With a pool of pseudo-labelled windows (pseudo.PseudoPool): `n_pseudo` further items per epoch are windows of
    the pool (soft targets, weight `pseudo_weight`; each epoch takes the next n_pseudo of a seeded order, so all of
    them come round), and with probability `mix_p` a labelled crop gets a pool window added as its background
    (0 to -6 dB), its targets the max of both (augment.pseudo_mix_p)."""

    def __init__(
        self,
        store: AudioStore,
        items: list[Item],
        targets: dict[str, np.ndarray],
        crop_s: float,
        short_policy: str = "loop",
        seed: int = 0,
        pool=None,
        n_pseudo: int = 0,
        pseudo_weight: float = 1.0,
        mix_p: float = 0.0,
    ):
        self.store_root = store.root
        self._store: AudioStore | None = store
        self.items, self.targets = items, targets
        self.crop_s, self.short_policy = crop_s, short_policy
        self.n = int(round(crop_s * store.sample_rate_hz))
        self._rng: np.random.Generator | None = None
        self._pid = -1
        self.seed = seed
        self.pool, self.pseudo_weight, self.mix_p = pool, pseudo_weight, mix_p
        self.n_pseudo = n_pseudo if pool is not None and len(pool) else 0
        self._pool_order = np.random.default_rng([seed, 7]).permutation(len(pool)) if self.n_pseudo else None

    def __len__(self) -> int:
        return len(self.items) + self.n_pseudo

    def _state(self) -> tuple[AudioStore, np.random.Generator]:
        # worker processes get their own generator, seeded from torch's per-worker seed
        # (seed_everything makes it reproducible)
        if self._rng is None or self._pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % 2**63)
            self._pid = os.getpid()
            if self._store is None:
                self._store = AudioStore(self.store_root)
        return self._store, self._rng

    def __getstate__(self):
        return {**self.__dict__, "_store": None, "_rng": None}

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        store, rng = self._state()
        if isinstance(key, tuple):
            i, epoch = key
            rng = np.random.default_rng([self.seed, epoch, i])
        else:
            i, epoch = key, 0
        if i >= len(self.items):  # a pseudo-labelled window
            k = int(self._pool_order[(epoch * self.n_pseudo + i - len(self.items)) % len(self.pool)])
            x, y = self.pool.window(k, self.n)
            return torch.from_numpy(x), torch.from_numpy(y), torch.tensor(self.pseudo_weight, dtype=torch.float32)
        it = self.items[i]
        span = it.end_s - it.start_s
        start = it.start_s + (rng.uniform(0, span - self.crop_s) if span > self.crop_s else 0.0)
        x = store.read(it.recording_id, start, min(self.crop_s, it.end_s - start))
        x = fit_length(x, self.n, self.short_policy, offset=int(rng.integers(0, max(1, self.n - len(x) + 1))))
        y = self.targets[it.recording_id]
        if self.pool is not None and len(self.pool) and self.mix_p > 0 and rng.random() < self.mix_p:
            bg, soft = self.pool.window(int(rng.integers(len(self.pool))), self.n)
            x = x + bg * np.float32(10 ** (rng.uniform(-6.0, 0.0) / 20))
            y = np.maximum(y, soft)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y)), torch.tensor(1.0)


class WindowDataset(Dataset):
    """Deterministic validation windows: up to `max_windows` crops of crop_s per recording.

    Returns (wave, target, recording index) so scores can be max-pooled per recording.
    """

    def __init__(
        self,
        store: AudioStore,
        recording_ids: list[str],
        targets: dict[str, np.ndarray],
        crop_s: float,
        max_windows: int,
        short_policy: str = "loop",
    ):
        self.store_root, self._store = store.root, store
        self.targets, self.crop_s, self.short_policy = targets, crop_s, short_policy
        self.n = int(round(crop_s * store.sample_rate_hz))
        self.recording_ids = recording_ids
        self.windows: list[tuple[int, float]] = []
        for r, rid in enumerate(recording_ids):
            dur = store.duration_s(rid)
            n_win = max(1, min(max_windows, int(np.ceil(dur / crop_s - 1e-6))))
            starts = np.linspace(0, max(0.0, dur - crop_s), n_win)
            self.windows += [(r, float(s)) for s in starts]

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self._store is None:
            self._store = AudioStore(self.store_root)
        r, start = self.windows[i]
        rid = self.recording_ids[r]
        x = fit_length(self._store.read(rid, start, self.crop_s), self.n, self.short_policy)
        return torch.from_numpy(x), torch.from_numpy(self.targets[rid]), r
