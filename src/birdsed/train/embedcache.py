"""BirdNET embeddings of the training recordings, computed once and cached on disk (per recording and augmented
view), and those of pseudo-labelled windows. What is cached per 3 s sub-window is a `Features`: BirdNET's 1,024-d
embedding (`Embeddings`, the frozen head's input), or the activation of BirdNET's frozen layers at a cut of its graph
(`Trunk`, train.backbone_cache: the layers after the cut then train under the head)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import soxr
import torch

from birdsed.config import Config
from birdsed.data.sampling import Item
from birdsed.data.store import AudioStore, recording_key
from birdsed.fsutil import atomic_path
from birdsed.model.birdnet import EMBED_DIM, N_SAMPLES, SAMPLE_RATE_HZ, shared_runtime
from birdsed.model.birdnet_labels import MODEL_FILE, SHA256
from birdsed.progress import progress_bar

if TYPE_CHECKING:
    from birdsed.model.birdnet_torch import BirdNETTorch

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


class Features(Protocol):
    """What the cache keeps per sub-window: `name` (part of the cache key, "" for the embedding), `shape` (of one
    sub-window's value) and `compute` ((n, 144000) float32 sub-windows -> (n, *shape) float16)."""

    name: str
    shape: tuple[int, ...]

    def compute(self, subs: np.ndarray, device: torch.device) -> np.ndarray: ...


class Embeddings:
    """BirdNET's (n, 1024) embeddings (birdnet.backend_for: LiteRT on the CPU, the torch port on CUDA), in fp32."""

    name, shape = "", (EMBED_DIM,)

    def compute(self, subs: np.ndarray, device: torch.device) -> np.ndarray:
        return shared_runtime(True, device).embed(subs).astype(np.float16)


class Trunk:
    """The activation of the torch port's frozen layers at the cut tensor `cut` (BirdNETTorch.cut_before), in fp32
    on the device the port is on, kept as float16 (the embedding computed from it differs by < 1e-3 from the uncut
    port's)."""

    BATCH = 32  # sub-windows per forward pass

    def __init__(self, backbone: BirdNETTorch, cut: int):
        self.backbone, self.cut = backbone, cut
        self.name = f"trunk:{backbone.net.graph.names[cut]}"
        self.shape = backbone.tensor_shapes()[cut][1:]

    def compute(self, subs: np.ndarray, device: torch.device) -> np.ndarray:
        on = next(self.backbone.parameters()).device  # the port's (shared with the layers that train), not moved
        out = []
        with torch.inference_mode():
            for i in range(0, len(subs), self.BATCH):
                x = torch.from_numpy(subs[i : i + self.BATCH]).to(on)
                out.append(self.backbone.run_to(x, self.cut).cpu().numpy().astype(np.float16))
        return np.concatenate(out)


def subwindow_starts(n_samples: int, hop: int) -> np.ndarray:
    """Starts of the 3 s sub-windows wholly inside a recording of n_samples (>= one window), every hop."""
    return np.arange(0, n_samples - N_SAMPLES + 1, hop, dtype=np.int64)


class EmbeddingCache:
    """(n_sub, *features.shape) float16 values per recording of a store (BirdNET's (n_sub, 1024) embeddings unless
    `features` says otherwise), computed once, kept as .npy files.

    BirdNET runs on `device` (birdnet.backend_for: torch on CUDA, LiteRT on the CPU), always in fp32. The key does
    not name the backend: both give the same embeddings at the cache's float16 precision on real recordings
    (tests/test_birdnet_torch.py), so a cache written on a GPU serves a CPU run and back."""

    def __init__(
        self,
        folder: Path,
        window_s: float,
        embed_hop_s: float,
        short_policy: str,
        device: torch.device | str = "cpu",
        features: Features | None = None,
    ):
        self.folder, self.window_s, self.embed_hop_s, self.short_policy = (
            Path(folder),
            window_s,
            embed_hop_s,
            short_policy,
        )
        self.device = torch.device(device)
        self.features: Features = features or Embeddings()

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
        if self.features.name:  # the embedding's keys stay as they were before other features existed
            stamp["features"] = self.features.name
        return hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:20]

    def path(self, store: AudioStore, rid: str, view: int = 0) -> Path:
        return self.folder / f"{recording_key(rid)}-{self.key(store, rid, view)}.npy"

    def compute(self, store: AudioStore, rid: str, view: int = 0) -> np.ndarray:
        x = soxr.resample(store.read(rid), store.sample_rate_hz, SAMPLE_RATE_HZ).astype(np.float32)
        x = augmented_view(x, rid, view)
        x = fit_to_window(x, int(round(self.window_s * SAMPLE_RATE_HZ)), self.short_policy)
        starts = subwindow_starts(len(x), int(round(self.embed_hop_s * SAMPLE_RATE_HZ)))
        subs = np.stack([x[s : s + N_SAMPLES] for s in starts])
        return self.features.compute(subs, self.device)

    def load(self, path: Path) -> np.ndarray | None:
        """A cached (n_sub, *features.shape) array, or None (absent, or not what this cache writes: it is computed
        afresh; nothing is unpickled)."""
        if not path.is_file():
            return None
        try:
            e = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            log.warning("%s: unreadable cached embedding (%s); computing it again", path, err)
            return None
        if e.shape[1:] != tuple(self.features.shape) or not len(e):
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


class PseudoEmbeddings:
    """The pseudo-labelled windows of data.pseudo as embedding-head items: the windows (Item, exact: a crop of one
    start), their recordings' embeddings, their soft labels (N, K), and the epoch's draw of them."""

    def __init__(
        self,
        cfg: Config,
        classes: list[str],
        run: Path,
        cache: EmbeddingCache,
        n_sub: int,
        quiet: bool,
        held_out: Iterable[str] = (),
    ):
        """held_out: the validation recordings' paths, whose windows are left out (pseudo.load_pool)."""
        from birdsed.train.pseudo import load_pool

        hop = cfg.model.embed_hop_s
        pool = load_pool(list(cfg.data.pseudo), classes, run / "pseudo_store", cfg.train.workers or None, held_out)
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
