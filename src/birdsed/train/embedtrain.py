"""Training the attention head on frozen BirdNET embeddings (model.backbone: birdnet): embed once, train in minutes.

Every training recording is read from the prepared 32 kHz store (BirdNET's spectrogram stops at 15 kHz, below
the store's Nyquist, so nothing BirdNET uses is lost), resampled to 48 kHz, fitted to one window when shorter
(data.short_policy, as predict fits it), and embedded as 3 s sub-windows every model.embed_hop_s. The
(n_sub, 1024) sequence is cached per recording (data.embedding_cache, default RUN/embeddings): the key holds the
BirdNET file's sha256, the hop, the window, the policy and the store entry's source stamp, so a change of any of
them computes afresh, and re-runs (other folds, seeds, head settings) reuse the rest.

With data.embedding_views = V > 1, V - 1 augmented copies of every recording (augmented_view: speed and pitch,
gain, noise; seeded, so cached like the plain one) are embedded too, and each batch draws its crops from one view.
An epoch draws one crop of T' consecutive embeddings (a window_s crop) from each balanced item (sampling.build_items:
class balancing as for the CNNs), with secondary labels as targets, mixup on the embedding sequences
(augment.mixup_p / mixup_alpha / mixup_union), AdamW with warm-up and cosine decay, BCE on the clipwise output.

Pseudo-labels (data.pseudo, pseudo.py): every pseudo-labelled recording is embedded once too (its own store,
RUN/pseudo_store; the same cache), and each epoch adds data.pseudo_items x the labelled items of its 5 s windows
(the next ones of a seeded order), each the window's own sub-windows with its soft labels as targets, weighted
data.pseudo_weight in the loss. (augment.pseudo_mix_p mixes audio and is the CNNs' alone.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import soxr
import torch

from birdsed.model.birdnet import (
    EMBED_DIM,
    MODEL_FILE,
    N_SAMPLES,
    SAMPLE_RATE_HZ,
    SHA256,
    classifier_rows,
    dataset_aliases,
    shared_runtime,
)
from birdsed.config import Config, save_config
from birdsed.errors import ModelError
from birdsed.model.embedhead import EmbeddingHead, EmbeddingHeadModel, n_subwindows
from birdsed.fsutil import atomic_path
from birdsed.evaluate.metrics import average_precision
from birdsed.train.loss import bce
from birdsed.progress import progress_bar
from birdsed.data.sampling import Item, build_items, targets
from birdsed.data.store import AudioStore, recording_key

log = logging.getLogger(__name__)
AUGMENT_VERSION = 1  # part of an augmented view's cache key: bump when augmented_view changes


def fit_to_window(x: np.ndarray, n: int, policy: str) -> np.ndarray:
    """A recording shorter than n samples looped ("loop") or zero-padded ("pad") to n; longer ones as they are."""
    if len(x) >= n:
        return x
    if policy == "loop" and len(x):
        return np.tile(x, -(-n // len(x)))[:n]
    return np.pad(x, (0, n - len(x)))


def augmented_view(x: np.ndarray, rid: str, view: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """View 0: x itself; view v > 0: x played 8 % faster or slower at most (pitch and tempo together, by resampling),
    its gain changed by up to 6 dB and, half the time, white noise added at 10-30 dB SNR; seeded by (rid, v), so a
    view is the same every time it is computed."""
    if view == 0:
        return x
    rng = np.random.default_rng([view, int(hashlib.sha1(rid.encode()).hexdigest()[:8], 16)])
    speed = rng.uniform(0.92, 1.08)
    y = soxr.resample(x, sample_rate_hz, int(round(sample_rate_hz / speed))).astype(np.float32)
    y *= np.float32(10 ** (rng.uniform(-6, 6) / 20))
    if rng.random() < 0.5:
        rms = float(np.sqrt(np.mean(y**2))) + 1e-8
        y += (rng.standard_normal(len(y)) * rms * 10 ** (-rng.uniform(10, 30) / 20)).astype(np.float32)
    return y


def subwindow_starts(n_samples: int, hop: int) -> np.ndarray:
    """Starts of the 3 s sub-windows wholly inside a recording of n_samples (>= one window), every hop."""
    return np.arange(0, n_samples - N_SAMPLES + 1, hop, dtype=np.int64)


class EmbeddingCache:
    """(n_sub, 1024) float16 BirdNET embeddings per recording of a store, computed once, kept as .npy files."""

    def __init__(self, folder: Path, window_s: float, embed_hop_s: float, short_policy: str):
        self.folder, self.window_s, self.embed_hop_s, self.short_policy = (
            Path(folder),
            window_s,
            embed_hop_s,
            short_policy,
        )

    def key(self, store: AudioStore, rid: str, view: int = 0) -> str:
        row = store.index.loc[rid]
        stamp = {
            "birdnet": SHA256[MODEL_FILE],
            "window_s": self.window_s,
            "hop_s": self.embed_hop_s,
            "policy": self.short_policy,
            "rid": rid,
            "n_samples": int(row["n_samples"]),
            "size": int(row.get("source_size", 0)),
            "mtime": int(row.get("source_mtime_ns", 0)),
        }
        if view:
            stamp["view"] = [view, AUGMENT_VERSION]
        return hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:20]

    def path(self, store: AudioStore, rid: str, view: int = 0) -> Path:
        return self.folder / f"{recording_key(rid)}-{self.key(store, rid, view)}.npy"

    def compute(self, store: AudioStore, rid: str, view: int = 0) -> np.ndarray:
        x = soxr.resample(store.read(rid), store.sample_rate_hz, SAMPLE_RATE_HZ).astype(np.float32)
        x = augmented_view(x, rid, view)
        x = fit_to_window(x, int(round(self.window_s * SAMPLE_RATE_HZ)), self.short_policy)
        starts = subwindow_starts(len(x), int(round(self.embed_hop_s * SAMPLE_RATE_HZ)))
        subs = np.stack([x[s : s + N_SAMPLES] for s in starts])
        return shared_runtime(True).embed(subs).astype(np.float16)

    @staticmethod
    def load(path: Path) -> np.ndarray | None:
        """A cached (n_sub, 1024) array, or None (absent, or not what this cache writes: it is computed afresh;
        nothing is unpickled)."""
        if not path.is_file():
            return None
        try:
            e = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            log.warning("%s: unreadable cached embedding (%s); computing it again", path, err)
            return None
        if e.ndim != 2 or e.shape[1] != EMBED_DIM or not len(e):
            log.warning("%s: cached embedding of shape %s; computing it again", path, e.shape)
            return None
        return e

    def get_all(self, store: AudioStore, rids: list[str], view: int = 0, quiet: bool = False) -> dict[str, np.ndarray]:
        self.folder.mkdir(parents=True, exist_ok=True)
        out = {}
        with progress_bar(len(rids), f"embed (view {view})" if view else "embed", disable=quiet) as advance:
            for rid in rids:
                p = self.path(store, rid, view)
                cached = self.load(p)
                if cached is not None:
                    out[rid] = cached
                else:
                    out[rid] = self.compute(store, rid, view)
                    with atomic_path(p) as tmp, open(tmp, "wb") as f:
                        np.save(f, out[rid], allow_pickle=False)
                advance(1)
        return out


def crop_batch(
    items: list[Item], emb: dict[str, np.ndarray], n_sub: int, hop_s: float, rng: np.random.Generator
) -> torch.Tensor:
    """(B, n_sub, 1024): for each item, n_sub consecutive embeddings starting at a random sub-window in its
    time range."""
    out = np.empty((len(items), n_sub, EMBED_DIM), np.float32)
    for b, it in enumerate(items):
        e = emb[it.recording_id]
        last = len(e) - n_sub  # the last start with n_sub embeddings after it
        lo = min(last, int(it.start_s / hop_s))
        hi = max(lo, min(last, int(math.floor(it.end_s / hop_s)) - n_sub + 1))
        s = int(rng.integers(lo, hi + 1))
        out[b] = e[s : s + n_sub]
    return torch.from_numpy(out)


def mixup(
    x: torch.Tensor, y: torch.Tensor, p: float, alpha: float, union: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """With probability p per batch: x mixed with a shuffled copy by lam ~ Beta(alpha, alpha); targets mixed by lam,
    or their union (max) with `union`."""
    if p <= 0 or len(x) < 2 or torch.rand((), generator=gen) >= p:
        return x, y
    lam = float(np.random.default_rng(int(torch.randint(1 << 30, (), generator=gen))).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen)
    x = lam * x + (1 - lam) * x[perm]
    y = torch.maximum(y, y[perm]) if union else lam * y + (1 - lam) * y[perm]
    return x, y


class PseudoEmbeddings:
    """The pseudo-labelled windows of data.pseudo as embedding-head items: the windows (Item, exact: a crop of one
    start), their recordings' embeddings, their soft labels (N, K), and the epoch's draw of them."""

    def __init__(self, cfg: Config, classes: list[str], run: Path, cache: EmbeddingCache, n_sub: int, quiet: bool):
        from birdsed.train.pseudo import load_pool

        hop = cfg.model.embed_hop_s
        pool = load_pool(list(cfg.data.pseudo), classes, run / "pseudo_store", cfg.train.workers or None)
        store = AudioStore(pool.store_root)
        self.emb = cache.get_all(store, sorted({rid for rid, _, _ in pool.rows}), quiet=quiet)
        # end_s = start_s + (n_sub - 1) * hop: crop_batch's range then holds one start, the window's own
        self.items = [Item(rid, start, start + (n_sub - 1) * hop) for rid, start, _ in pool.rows]
        self.targets = pool.targets
        self.order = np.random.default_rng([cfg.train.seed, 7]).permutation(len(self.items))
        log.info("%d pseudo-labelled windows from %d table(s)", len(self.items), len(cfg.data.pseudo))

    def epoch(self, epoch: int, n: int) -> np.ndarray:
        """The indices of the n windows epoch `epoch` trains on: the next n of the seeded order, cycling."""
        return self.order[(epoch * n + np.arange(n)) % len(self.order)] if len(self.order) else np.zeros(0, int)


def birdnet_prior(head: EmbeddingHead, classes: list[str], aliases: dict[str, list[str]]) -> None:
    """Give the head BirdNET's classifier rows of the classes that map to a BirdNET label (model.birdnet_prior);
    when none maps, the head learns without a prior (said in the log)."""
    try:
        cmap, w, b = classifier_rows(classes, aliases)
    except ModelError as e:
        log.warning(
            "BirdNET prior: %s; the head learns without it (a species.csv beside labels.csv with "
            "scientific_name or ebird_code columns maps a data set's own names)",
            e,
        )
        return
    head.set_prior(torch.from_numpy(w), torch.from_numpy(b), torch.tensor([i >= 0 for i in cmap.indices]))
    log.info(
        "BirdNET prior: %d of %d classes map to BirdNET labels%s",
        len(classes) - len(cmap.unmapped),
        len(classes),
        f"; unmapped: {', '.join(cmap.unmapped[:10])}{' ...' if len(cmap.unmapped) > 10 else ''}"
        if cmap.unmapped
        else "",
    )


def train_embedding_head(
    td, cfg: Config, run: Path, quiet: bool = False, aliases: dict[str, list[str]] | None = None
) -> EmbeddingHeadModel:
    """Train the head on td (train.TrainData) into run/; returns the model (the best epoch by validation macro AP
    when there is a validation split, else the last). Writes run/metrics.csv. aliases: further names per class
    for model.birdnet_prior's class mapping (a data set's species.csv)."""
    t, d = cfg.train, cfg.data
    window_s, hop = d.crop_s, cfg.model.embed_hop_s
    n_sub = n_subwindows(window_s, hop)
    cache = EmbeddingCache(
        Path(d.embedding_cache) if d.embedding_cache else run / "embeddings", window_s, hop, d.short_policy
    )
    train_ids, val_ids = list(td.train.table["recording_id"]), list(td.val.table["recording_id"])
    views = [cache.get_all(td.store, train_ids, v, quiet) for v in range(d.embedding_views)]
    emb = views[0]
    val_emb = cache.get_all(td.val_store, val_ids, quiet=quiet) if val_ids else {}
    tgt = targets(td.train, td.classes, d)
    tgt.update(targets(td.val, td.classes, d))
    items = build_items(td.train, d, t.seed)
    pseudo = PseudoEmbeddings(cfg, td.classes, run, cache, n_sub, quiet) if d.pseudo else None
    n_pseudo = int(round(d.pseudo_items * len(items))) if pseudo is not None and len(pseudo.items) else 0
    torch.manual_seed(t.seed)
    head = EmbeddingHead(len(td.classes), cfg.model.dropout, prior=cfg.model.birdnet_prior)
    if cfg.model.birdnet_prior:
        birdnet_prior(head, td.classes, aliases or {})
    stacked = torch.from_numpy(np.concatenate([emb[r] for r in train_ids]).astype(np.float32))
    head.mean.copy_(stacked.mean(0))
    head.std.copy_(stacked.std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(items) / t.batch_size))
    total = steps_per_epoch * t.epochs
    from birdsed.train.task import lr_factor

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, int(t.warmup_frac * total)))
    rng, gen = np.random.default_rng(t.seed), torch.Generator().manual_seed(t.seed)
    val_x = (
        torch.stack([crop_batch([Item(r, 0.0, window_s)], val_emb, n_sub, hop, rng)[0] for r in val_ids])
        if val_ids
        else None
    )
    val_y = np.stack([tgt[r] for r in val_ids]) >= 0.5 if val_ids else None
    best, best_state, rows = -1.0, None, []
    for epoch in range(t.epochs):
        head.train()
        order = rng.permutation(
            len(items) + n_pseudo
        )  # j >= len(items): the epoch's pseudo-labelled window j - len(items)
        drawn = pseudo.epoch(epoch, n_pseudo) if n_pseudo else None
        losses = []
        for i in range(0, len(order), t.batch_size):
            js = order[i : i + t.batch_size]
            batch = [items[j] for j in js if j < len(items)]
            ks = [int(drawn[j - len(items)]) for j in js if j >= len(items)]
            xs, ys = [], []
            if batch:
                xs.append(crop_batch(batch, views[int(rng.integers(len(views)))], n_sub, hop, rng))
                ys.append(torch.from_numpy(np.stack([tgt[it.recording_id] for it in batch])))
            if ks:
                xs.append(crop_batch([pseudo.items[k] for k in ks], pseudo.emb, n_sub, hop, rng))
                ys.append(torch.from_numpy(pseudo.targets[ks]))
            x, y = torch.cat(xs), torch.cat(ys)
            w = torch.cat([torch.ones(len(batch)), torch.full((len(ks),), d.pseudo_weight)]) if ks else None
            x, y = mixup(x, y, cfg.augment.mixup_p, cfg.augment.mixup_alpha, cfg.augment.mixup_union, gen)
            loss = bce(head(x)["clipwise"], y, w)
            opt.zero_grad()
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(head.parameters(), t.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if val_x is not None:
            head.eval()
            with torch.no_grad():
                p = head(val_x)["clipwise"].numpy()
            row["val_macro_ap"], row["val_micro_ap"] = average_precision(p, val_y)
            if row["val_macro_ap"] > best:
                best, best_state = row["val_macro_ap"], {k: v.clone() for k, v in head.state_dict().items()}
        rows.append(row)
        log.debug("epoch %d: %s", epoch, row)
    if best_state is not None:
        head.load_state_dict(best_state)
    with atomic_path(run / "metrics.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info(
        "BirdNET-embedding head: %d items, %d epochs, last loss %.4f%s",
        len(items),
        t.epochs,
        rows[-1]["train_loss"],
        f", best validation macro AP {best:.4f}" if best_state is not None else "",
    )
    return EmbeddingHeadModel(td.classes, head.eval(), window_s, hop, short_policy=d.short_policy)


def train_birdnet(data: Path, cfg: Config, run: Path, val_data: Path | None = None, quiet: bool = False) -> Path:
    """`train` for model.backbone=birdnet: prepare (or open) the store, train the head, write run/model."""
    from birdsed.model.modeldir import save_head_dir
    from birdsed.train.data import load_train_data

    run.mkdir(parents=True, exist_ok=True)
    td = load_train_data(data, run, cfg, val_data)
    save_config(cfg, run / "config.yaml")
    model = train_embedding_head(td, cfg, run, quiet, dataset_aliases(data) if data.is_dir() else {})
    return save_head_dir(model, run / "model", extra={"train": {"data": str(data), "epochs": cfg.train.epochs}})
