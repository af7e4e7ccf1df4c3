"""Training items: class balancing (the reference solution's 80/60 rule), targets, and the validation split.

An item is a time range of one recording; each epoch a random crop is taken inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from birdsed.config import DataConfig
from birdsed.data.manifest import Manifest

NO_LABEL = "<none>"  # the balancing group of clips with no label (negatives)


@dataclass(frozen=True)
class Item:
    recording_id: str
    start_s: float
    end_s: float


def group_of(primary: list[str]) -> str:
    """A recording's balancing class: its first primary label."""
    return primary[0] if primary else NO_LABEL


def split_counts(durations_s: np.ndarray, target: int, crop_s: float) -> np.ndarray:
    """How many items to cut from each recording so a class reaches `target` items.

    Pieces go one at a time to the recording with the longest piece, while a piece stays
    at least one crop long; returns counts >= 1 per recording (sum <= target when
    recordings are too short to split further).
    """
    counts = np.ones(len(durations_s), dtype=int)
    while counts.sum() < target:
        piece = durations_s / counts
        can = durations_s / (counts + 1) >= crop_s
        if not can.any():
            break
        i = int(np.argmax(np.where(can, piece, -1)))
        counts[i] += 1
    return counts


def build_items(manifest: Manifest, cfg: DataConfig, seed: int) -> list[Item]:
    """Balanced training items: groups above balance_max keep their shortest recordings,
    groups below balance_min split long recordings into distinct time ranges."""
    t = manifest.table
    groups = pd.Series([group_of(p) for p in t["primary_labels"]])
    items: list[Item] = []
    for g in sorted(groups.unique()):
        rows = t[groups.to_numpy() == g]
        ids, durs = rows["recording_id"].to_numpy(), rows["duration_s"].to_numpy(dtype=float)
        if cfg.balance and len(rows) > cfg.balance_max:
            keep = np.argsort(durs, kind="stable")[: cfg.balance_max]  # drop the longest
            ids, durs = ids[keep], durs[keep]
        counts = split_counts(durs, cfg.balance_min, cfg.crop_s) if cfg.balance else np.ones(len(ids), dtype=int)
        for rid, d, k in zip(ids, durs, counts):
            edges = np.linspace(0.0, d, k + 1)
            items += [Item(rid, float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def targets(manifest: Manifest, classes: list[str], cfg: DataConfig) -> dict[str, np.ndarray]:
    """Target vector per recording: primary labels 1; secondary labels `secondary_weight`
    when the recording is shorter than `secondary_max_s`, else 0."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for rid, prim, sec, dur in zip(
        manifest.table["recording_id"],
        manifest.table["primary_labels"],
        manifest.table["secondary_labels"],
        manifest.table["duration_s"],
    ):
        y = np.zeros(len(classes), dtype=np.float32)
        if cfg.secondary_weight > 0 and np.isfinite(dur) and dur < cfg.secondary_max_s:
            for c in sec:
                if c in index:
                    y[index[c]] = cfg.secondary_weight
        for c in prim:
            if c in index:
                y[index[c]] = 1.0
        out[rid] = y
    return out


def stratified_split(manifest: Manifest, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, val) masks by recording, stratified by balancing class; a class with
    one recording stays in training."""
    rng = np.random.default_rng(seed)
    groups = np.array([group_of(p) for p in manifest.table["primary_labels"]])
    val = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        n_val = int(round(fraction * len(idx)))
        if len(idx) >= 2 and fraction > 0:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val[rng.permutation(idx)[:n_val]] = True
    return ~val, val


def iterative_stratified_folds(labels: list[list[str]], n_folds: int, seed: int) -> np.ndarray:
    """Fold index per example for multi-label data (Sechidis et al. 2011, iterative stratification).

    Labels are dealt out rarest first: each example carrying the rarest remaining label goes to
    the fold that most lacks that label (ties: most lacking examples overall, then at random).
    Examples with no label are dealt round-robin to the folds with most room. Seeded.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    fold = np.full(n, -1, dtype=int)
    want_total = np.full(n_folds, n / n_folds)
    classes = sorted({c for ls in labels for c in ls})
    want = {c: np.full(n_folds, sum(c in ls for ls in labels) / n_folds) for c in classes}
    remaining = set(range(n))
    while True:
        counts = {c: sum(1 for i in remaining if c in labels[i]) for c in classes}
        live = [c for c in classes if counts[c] > 0]
        if not live:
            break
        rarest = min(live, key=lambda c: (counts[c], c))
        for i in rng.permutation(sorted(i for i in remaining if rarest in labels[i])):
            need = want[rarest]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                best = best[want_total[best] == want_total[best].max()]
            f = int(rng.choice(best))
            fold[i] = f
            remaining.discard(int(i))
            want_total[f] -= 1
            for c in labels[i]:
                want[c][f] -= 1
    for i in rng.permutation(sorted(remaining)):
        f = int(rng.choice(np.flatnonzero(want_total == want_total.max())))
        fold[i] = f
        want_total[f] -= 1
    return fold
