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
(augment.mixup_p / mixup_alpha / mixup_union), AdamW with warm-up and cosine decay, BCE on the clipwise output;
with train.ema, an exponential moving average of the weights is what validation scores and the model keeps.

With model.freeze_backbone false and train.backbone_cache (`CachedTail`), the cache holds instead the activation
of BirdNET's frozen layers (those before train.backbone_train_from) at a cut of the torch port's graph
(BirdNETTorch.cut_before), and the layers after the cut train under the head, at train.lr x train.backbone_lr_scale,
on train.device: fine-tuning BirdNET's last blocks in minutes on a CPU. Everything else is as above (crops of the
cached sequences, views, mixup of the activations, pseudo-labels). SpecAugment needs BirdNET's spectrogram, before
the cut (fine-tuning from audio, finetune.py, applies it there); with augment.specaug_cut its masks zero stripes of
the cached activation's (freq, time) grid instead, their sizes scaled from the spectrogram's bins and frames to the
grid's (`CachedTail.augment`). The model it writes is the fine-tuned kind ("birdnet_finetuned"), which runs from
audio.

With train.head_warmup_epochs N (HeadFirst; fine-tuning from audio too), the first N epochs train the head alone at
train.head_warmup_lr, BirdNET's layers frozen, then train.epochs epochs train both on the usual schedule.

Pseudo-labels (data.pseudo, pseudo.py): every pseudo-labelled recording is embedded once too (its own store,
RUN/pseudo_store; the same cache), and each epoch adds data.pseudo_items x the labelled items of its 5 s windows
(the next ones of a seeded order), each the window's own sub-windows with its soft labels as targets, weighted
data.pseudo_weight in the loss. (augment.pseudo_mix_p mixes audio and is the CNNs' alone.)

Resume (`train --resume`): RUN/checkpoints/last.pt after every epoch (tensors and plain data, read with weights_only)
holds the learner's weights (Learner.saved), the optimiser, the schedule, train.ema's average, the best epoch's
weights so far and the classes; each epoch draws from generators seeded by (train.seed, epoch), the global one (the
head's dropout) too, so a resumed run ends with the uninterrupted run's weights. The cache is reused (one deleted in
between is made again, to the same values).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch

from birdsed.config import AugmentConfig, Config
from birdsed.data.sampling import Item, build_items, targets
from birdsed.device import pick_device
from birdsed.errors import ConfigError, ModelError
from birdsed.evaluate.metrics import average_precision
from birdsed.fsutil import atomic_path
from birdsed.model.birdnet import EMBED_DIM, classifier_rows
from birdsed.model.birdnet_labels import aliases_entry, dataset_aliases
from birdsed.model.embedhead import EmbeddingHead, EmbeddingHeadModel, n_subwindows, save_head_dir
from birdsed.model.modeldir import check_fits
from birdsed.train.augment import specaugment_nhwc
from birdsed.train.checkpoint import (
    EPOCH_CHECKPOINT,
    epoch_seed,
    epoch_state,
    read_epoch_checkpoint,
    resume_optimiser,
    write_epoch_checkpoint,
    write_run_config,
)
from birdsed.train.embedcache import EmbeddingCache, Embeddings, Features, PseudoEmbeddings, Trunk
from birdsed.train.loss import bce

if TYPE_CHECKING:
    from birdsed.model.birdnet_finetune import FineTunedHeadModel, FineTunedNet
    from birdsed.model.detector import Detector

log = logging.getLogger(__name__)


def crop_batch(
    items: list[Item], emb: dict[str, np.ndarray], n_sub: int, hop_s: float, rng: np.random.Generator
) -> torch.Tensor:
    """(B, n_sub, *shape): for each item, n_sub consecutive cached values (embeddings (1024,), or a Trunk's
    activations) starting at a random sub-window in its time range."""
    shape = next(iter(emb.values())).shape[1:] if emb else (EMBED_DIM,)
    out = np.empty((len(items), n_sub, *shape), np.float32)
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


EVAL_BATCH = 64  # items per forward pass when scoring the validation split
STATS_BATCH = 256  # sub-windows per forward pass when taking the head's input statistics


class Learner(Protocol):
    """What trains on cached features: the features it reads (`features`), the head in it, the module that maps
    (B, n_sub, *features.shape) to the head's outputs (`module`, on `device`), its parameter groups; then the
    Detector it makes and how that is saved."""

    features: Features
    device: torch.device

    @property
    def head(self) -> EmbeddingHead: ...

    @property
    def module(self) -> torch.nn.Module: ...

    def statistics(self, cached: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def param_groups(self, cfg: Config) -> list[dict]: ...

    def saved(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A copy of the weights of `module` (the learner's module, or its train.ema average) that a checkpoint
        keeps and `load` puts back."""

    def load(self, module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
        """Put `saved`'s weights back into `module`; weights of another shape are a ModelError naming `source`."""

    def augment(self, x: torch.Tensor, c: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
        """A training batch (B, n_sub, *features.shape) as the learner augments it (after mixup)."""

    def detector(self, classes: list[str], window_s: float, hop: float, policy: str) -> Detector: ...

    def save(self, model: Detector, out: Path, extra: dict[str, Any]) -> Path: ...


@dataclass
class FrozenHead:
    """The head alone on BirdNET's cached embeddings (the birdnet preset), trained on the CPU."""

    head: EmbeddingHead
    features: Features
    device: torch.device = torch.device("cpu")

    @property
    def module(self) -> torch.nn.Module:
        return self.head

    def statistics(self, cached: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std (1024,) of the training recordings' embeddings [each (n_sub, 1024)]."""
        stacked = torch.from_numpy(np.concatenate(cached).astype(np.float32))
        return stacked.mean(0), stacked.std(0)

    def param_groups(self, cfg: Config) -> list[dict]:
        return [{"params": list(self.head.parameters()), "lr": cfg.train.lr}]

    def saved(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def load(self, module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
        check_fits(module.state_dict(), state, source, "this head")
        module.load_state_dict(state)

    def augment(self, x: torch.Tensor, c: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
        """Embeddings have no time-frequency grid to mask: x as it is."""
        return x

    def detector(self, classes: list[str], window_s: float, hop: float, policy: str) -> EmbeddingHeadModel:
        return EmbeddingHeadModel(classes, self.head.eval(), window_s, hop, short_policy=policy)

    def save(self, model: EmbeddingHeadModel, out: Path, extra: dict[str, Any]) -> Path:
        return save_head_dir(model, out, extra=extra)


@dataclass
class CachedTail:
    """BirdNET's layers after a cut (train.backbone_train_from) and the head, on cached activations at the cut."""

    net: FineTunedNet  # with its cut set: it reads (B, n_sub, *shape) activations
    features: Features
    device: torch.device
    train_from: float
    spectrogram: tuple[int, int]  # the port's spectrogram (mel bins, frames) that the cut's (H, W) grid comes from

    @classmethod
    def build(cls, head: EmbeddingHead, cfg: Config, device: torch.device) -> CachedTail:
        from birdsed.model.birdnet_finetune import FineTunedNet
        from birdsed.model.birdnet_torch import load_birdnet_torch

        backbone = load_birdnet_torch()
        cut = backbone.cut_before(cfg.train.backbone_train_from)
        net = FineTunedNet(backbone, head, cfg.train.backbone_train_from, cut=cut).to(device)
        log.info(
            "BirdNET's layers before %s stay frozen and are cached; %d of its weights train after them",
            backbone.net.graph.names[cut],
            sum(p.numel() for p in backbone.parameters() if p.requires_grad),
        )
        if cfg.augment.specaug_p > 0 and not cfg.augment.specaug_cut:
            log.info(
                "SpecAugment needs BirdNET's spectrogram, before the cut: not applied with train.backbone_cache "
                "(augment.specaug_cut=true masks the cached activation's grid instead)"
            )
        spec = backbone.spectrogram_shape()
        return cls(net, Trunk(backbone, cut), device, cfg.train.backbone_train_from, (spec[0], spec[1]))

    @property
    def head(self) -> EmbeddingHead:
        return self.net.head

    @property
    def module(self) -> torch.nn.Module:
        return self.net

    def statistics(self, cached: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std (1024,) of the starting port's embeddings of the training recordings' cached
        activations, embedded a batch at a time (the activations are never all in float32 at once)."""
        out = []
        with torch.no_grad():
            for a in cached:
                for i in range(0, len(a), STATS_BATCH):
                    x = torch.from_numpy(a[i : i + STATS_BATCH].astype(np.float32)).to(self.device)
                    out.append(self.net.backbone.embed_from(x, self.net.cut).float().cpu())
        stacked = torch.cat(out)
        return stacked.mean(0), stacked.std(0)

    def param_groups(self, cfg: Config) -> list[dict]:
        from birdsed.train.finetune import param_groups

        return param_groups(self.net, cfg)

    def saved(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The head's state and the port's trained weights (FineTunedNet.saved_state), copied."""
        return {k: v.detach().clone() for k, v in module.saved_state().items()}

    def load(self, module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
        module.load_saved_state(state, source)

    def augment(self, x: torch.Tensor, c: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
        """With augment.specaug_cut: SpecAugment (augment.specaugment_nhwc) on each sub-window's activation, an NHWC
        (H freq, W time, C) grid of (B, n_sub, H, W, C) x, with time_mask_frames and freq_mask_bins scaled by W /
        frames and H / bins of the spectrogram (a mask of one cell at least; BirdNET's 511 frames are 16 columns at
        its last stage), the same stripes on every channel; drawn from `gen`."""
        if not c.specaug_cut or c.specaug_p <= 0:
            return x
        if x.dim() != 5:
            raise ConfigError(f"augment.specaug_cut: the activation at the cut, {tuple(x.shape[2:])}, is no NHWC grid")
        B, n_sub, H, W, C = x.shape
        bins, frames = self.spectrogram
        masks = replace(
            c,
            time_mask_frames=at_scale(c.time_mask_frames, W / frames),
            freq_mask_bins=at_scale(c.freq_mask_bins, H / bins),
        )
        return specaugment_nhwc(x.reshape(B * n_sub, H, W, C), masks, gen).reshape(x.shape)

    def detector(self, classes: list[str], window_s: float, hop: float, policy: str) -> FineTunedHeadModel:
        """The fine-tuned model, on the CPU, running from audio (its own net over the same port and head)."""
        from birdsed.model.birdnet_finetune import FineTunedHeadModel, FineTunedNet

        net = FineTunedNet(self.net.backbone, self.net.head, self.train_from).cpu()
        return FineTunedHeadModel(classes, net, window_s=window_s, embed_hop_s=hop, short_policy=policy).eval()

    def save(self, model: FineTunedHeadModel, out: Path, extra: dict[str, Any]) -> Path:
        from birdsed.model.birdnet_finetune import save_finetuned_dir

        return save_finetuned_dir(model, out, extra=extra)


def what_ran(metrics: Path, best_by: str | None = None) -> dict[str, int]:
    """model.json's record of a run, from its metrics.csv (a row per epoch, `step` the steps after it): the epochs and
    steps that ran (train.max_steps can stop a run before train.epochs) and the epoch whose weights were kept, the
    first best by `best_by` where that column has a value, else the last."""
    if not metrics.is_file():
        return {"epochs": 0, "steps": 0, "kept_epoch": -1}
    m = pd.read_csv(metrics)
    best = m[best_by] if best_by and best_by in m else None
    kept = m["epoch"][best.idxmax()] if best is not None and best.notna().any() else m["epoch"].iloc[-1]
    return {"epochs": len(m), "steps": int(m["step"].iloc[-1]), "kept_epoch": int(kept)}


def at_scale(size: int, ratio: float) -> int:
    """A mask size (bins or frames of the spectrogram) on a grid `ratio` times as fine: one cell at least, 0 stays 0."""
    return max(1, round(size * ratio)) if size > 0 else 0


def weight_average(module: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of `module`'s weights and buffers (train.ema), updated after each step; a copy
    of the module (on its device) that validation scores and training keeps in place of the last step's weights."""
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"train.ema_decay = {decay}: must be between 0 and 1")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def resume_average(
    ema: torch.optim.swa_utils.AveragedModel,
    ckpt: dict,
    path: Path,
    load: Callable[[torch.nn.Module, dict[str, torch.Tensor]], None],
) -> None:
    """Continue train.ema's average from an epoch checkpoint (its "ema": the average's weights, put back by `load`,
    and how many steps it holds); one written without it starts the average afresh (said)."""
    held = ckpt.get("ema")
    if not isinstance(held, dict) or "net" not in held:
        log.warning("%s holds no train.ema average (written without it): the average starts at this epoch", path)
        return
    load(ema.module, held["net"])
    ema.n_averaged.fill_(int(held["n"]))


def ema_horizon_warning(decay: float, total: int) -> str | None:
    """What to tell the user when an average of decay `decay` spans more than a third of a run of `total` steps (its
    kept weights would stay near the first steps'), with a decay that spans a tenth; None when it fits."""
    if 1 / (1 - decay) <= total / 3:
        return None
    tenth = 1 - 10 / total  # below `decay` whenever this is said
    hint = f"lower it (e.g. {tenth:.4g})" if tenth >= 0.5 else "the run is too short to average over: train.ema=false"
    return (
        f"train.ema_decay {decay:g} averages over about {round(1 / (1 - decay))} steps, and this run takes {total}: "
        f"the kept weights stay near the first steps'; {hint}"
    )


@dataclass(frozen=True)
class HeadFirst:
    """train.head_warmup_epochs when BirdNET's layers train (LP-FT: "unfreeze after some epochs"): the run's first
    `epochs` epochs train the head alone at `lr`, constant, BirdNET's layers frozen (no gradient, no optimiser
    state); then train.epochs epochs train both, on the usual schedule from its first step (the scheduler steps in
    those epochs only, so train.max_steps counts them alone). BirdNET's weights are the optimiser's second parameter
    group (param_groups)."""

    epochs: int
    lr: float

    def warming(self, epoch: int) -> bool:
        return epoch < self.epochs

    def enter(self, epoch: int, opt: torch.optim.Optimizer, sched, total: int, warmup: int) -> None:
        """Set up `epoch`: in the warm-up the head's rate and BirdNET's layers frozen; after it their gradients back
        and every group's rate at the schedule's current step."""
        from birdsed.train.task import lr_factor

        warming = self.warming(epoch)
        if self.epochs:
            for p in opt.param_groups[1]["params"]:
                p.requires_grad_(not warming)
        if warming:
            opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = self.lr, 0.0
            return
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * lr_factor(sched.last_epoch, total, warmup)


def head_first(cfg: Config) -> HeadFirst:
    """The warm-up of a config (0 epochs where BirdNET's layers do not train, or it asks none)."""
    t = cfg.train
    trains_birdnet = cfg.model.backbone == "birdnet" and not cfg.model.freeze_backbone
    return HeadFirst(t.head_warmup_epochs if trains_birdnet else 0, t.head_warmup_lr)


def learner_for(cfg: Config, n_classes: int, device: torch.device) -> Learner:
    """FrozenHead, or CachedTail with train.backbone_cache; the head's weights drawn from train.seed."""
    torch.manual_seed(cfg.train.seed)
    head = EmbeddingHead(n_classes, cfg.model.dropout, prior=cfg.model.birdnet_prior)
    if cfg.train.backbone_cache:
        return CachedTail.build(head, cfg, device)
    return FrozenHead(head, Embeddings())


def train_embedding_head(
    td,
    cfg: Config,
    run: Path,
    quiet: bool = False,
    aliases: dict[str, list[str]] | None = None,
    resume: bool = False,
) -> tuple[Detector, Learner]:
    """Train the head on td (train.TrainData) into run/ (with train.backbone_cache, BirdNET's layers after the
    cut with it); returns the model (the best epoch by validation macro AP when there is a validation split, else
    the last) and its learner. Writes run/metrics.csv and, after every epoch, run/checkpoints/last.pt (the weights,
    optimiser, schedule, the average and the best epoch's weights so far); `resume` continues from it. Each epoch
    draws from generators seeded by (train.seed, epoch), so a resumed run ends with the uninterrupted run's
    weights. aliases: further names per class for model.birdnet_prior's class mapping (a data set's species.csv)."""
    t, d = cfg.train, cfg.data
    window_s, hop = d.crop_s, cfg.model.embed_hop_s
    n_sub = n_subwindows(window_s, hop)
    if t.precision not in ("auto", "32", "32-true"):
        log.warning("train.precision %s: training on cached features runs in fp32 (the cache is float16)", t.precision)
    ckpt_path = run / EPOCH_CHECKPOINT  # with resume, there (train.run.check_resume)
    # other data (classes, a validation split or none): refused before embedding
    identity = td.identity()  # what the checkpoints keep of the data
    ckpt = read_epoch_checkpoint(ckpt_path, identity) if resume else None
    device = pick_device("cuda" if t.device == "gpu" else t.device)
    learner = learner_for(cfg, len(td.classes), device)
    head, dev = learner.head, learner.device
    cache = EmbeddingCache(
        Path(d.embedding_cache) if d.embedding_cache else run / "embeddings",
        window_s,
        hop,
        d.short_policy,
        device,
        learner.features,
    )
    train_ids, val_ids = list(td.train.table["recording_id"]), list(td.val.table["recording_id"])
    views = [cache.get_all(td.store, train_ids, v, quiet) for v in range(d.embedding_views)]
    emb = views[0]
    val_emb = cache.get_all(td.val_store, val_ids, quiet=quiet) if val_ids else {}
    tgt = targets(td.train, td.classes, d)
    tgt.update(targets(td.val, td.classes, d))
    items = build_items(td.train, d, t.seed)
    pseudo = PseudoEmbeddings(cfg, td.classes, run, cache, n_sub, quiet, td.val.table["path"]) if d.pseudo else None
    n_pseudo = int(round(d.pseudo_items * len(items))) if pseudo is not None and len(pseudo.items) else 0
    module = learner.module
    if ckpt is None:
        if cfg.model.birdnet_prior:
            birdnet_prior(head, td.classes, aliases or {})
        mean, std = learner.statistics([emb[r] for r in train_ids])
        head.mean.copy_(mean)
        head.std.copy_(std.clamp_min(1e-3))
    else:
        learner.load(module, ckpt["net"], ckpt_path)
    opt = torch.optim.AdamW(learner.param_groups(cfg), weight_decay=t.weight_decay)
    trained = [p for g in opt.param_groups for p in g["params"]]
    ema = weight_average(module, t.ema_decay) if t.ema else None  # a copy of the weights as they start (or resume)
    evaluated = ema.module if ema is not None else module  # what validation scores and training keeps
    from birdsed.train.task import lr_factor, total_steps

    total = total_steps(len(items) + n_pseudo, t.batch_size, t.epochs, t.max_steps)
    if ema is not None and (said := ema_horizon_warning(t.ema_decay, total)):
        log.warning("%s", said)

    warmup = int(t.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    first_head = head_first(cfg)
    val_rng = np.random.default_rng([t.seed, 0, 2])
    val_x = (
        torch.stack([crop_batch([Item(r, 0.0, window_s)], val_emb, n_sub, hop, val_rng)[0] for r in val_ids])
        if val_ids
        else None
    )
    val_y = np.stack([tgt[r] for r in val_ids]) >= 0.5 if val_ids else None
    best, best_state, rows, step, first = -1.0, None, [], 0, 0
    if ckpt is not None:
        first, step, rows = resume_optimiser(ckpt, opt, sched, ckpt_path)
        if ema is not None:
            resume_average(ema, ckpt, ckpt_path, lambda m, state: learner.load(m, state, ckpt_path))
        if isinstance(ckpt.get("best"), dict):
            best, best_state = float(ckpt["best"]["score"]), ckpt["best"]["net"]
    for epoch in range(first, first_head.epochs + t.epochs):
        if sched.last_epoch >= total:  # train.max_steps reached
            break
        first_head.enter(epoch, opt, sched, total, warmup)  # the rates of this run's schedule (resumed: at its step)
        warming = first_head.warming(epoch)
        rng, gen = np.random.default_rng([t.seed, epoch]), torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        torch.manual_seed(epoch_seed(t.seed, epoch))  # the head's dropout draws from the global generator
        module.train()
        order = rng.permutation(len(items) + n_pseudo)  # j >= len(items): the epoch's pseudo-labelled window
        drawn = pseudo.epoch(epoch, n_pseudo) if n_pseudo else None
        losses = []
        for i in range(0, len(order), t.batch_size):
            if sched.last_epoch >= total:
                break
            step += 1
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
            x = learner.augment(x, cfg.augment, gen)
            loss = bce(module(x.to(dev))["clipwise"].float().cpu(), y, w)
            opt.zero_grad()
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(trained, t.grad_clip)
            opt.step()
            if not warming:
                sched.step()
            if ema is not None:
                ema.update_parameters(module)
            losses.append(loss.item())
        row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses))}
        if first_head.epochs:
            row["head_only"] = warming
        if val_x is not None:
            evaluated.eval()
            with torch.no_grad():
                p = torch.cat(
                    [
                        evaluated(val_x[i : i + EVAL_BATCH].to(dev))["clipwise"].float().cpu()
                        for i in range(0, len(val_x), EVAL_BATCH)
                    ]
                )
            row["val_macro_ap"], row["val_micro_ap"] = average_precision(p.numpy(), val_y)
            if row["val_macro_ap"] > best:
                best, best_state = row["val_macro_ap"], learner.saved(evaluated)
        rows.append(row)
        log.debug("epoch %d: %s", epoch, row)
        state = epoch_state(epoch, step, rows, identity, opt, sched, learner.saved, module, ema)
        if best_state is not None:
            state["best"] = {"score": best, "net": best_state}
        write_epoch_checkpoint(ckpt_path, state)
        with atomic_path(run / "metrics.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    if best_state is not None:
        learner.load(module, best_state, ckpt_path)
    elif ema is not None:
        module.load_state_dict(ema.module.state_dict())
    log.info(
        "BirdNET-embedding head%s: %d items, %d epochs (%d steps), last loss %.4f%s",
        " and BirdNET's layers after the cut" if cfg.train.backbone_cache else "",
        len(items),
        len(rows),
        step,
        rows[-1]["train_loss"] if rows else float("nan"),
        f", best validation macro AP {best:.4f}" if best_state is not None else "",
    )
    return learner.detector(td.classes, window_s, hop, d.short_policy), learner


def train_birdnet(
    data: Path, cfg: Config, run: Path, val_data: Path | None = None, resume: bool = False, quiet: bool = False
) -> Path:
    """`train` for model.backbone=birdnet on cached features (the frozen head; with train.backbone_cache, BirdNET's
    last layers too): prepare (or open) the store, train (`resume`: from run/checkpoints/last.pt), write
    run/model."""
    from birdsed.train.data import load_train_data

    if cfg.train.backbone_cache:  # a depth that cannot be cut is refused before the data are prepared
        from birdsed.model.birdnet_torch import load_birdnet_torch

        load_birdnet_torch().cut_before(cfg.train.backbone_train_from)
    run.mkdir(parents=True, exist_ok=True)
    td = load_train_data(data, run, cfg, val_data)
    write_run_config(run, cfg, resume)
    model, learner = train_embedding_head(
        td, cfg, run, quiet, dataset_aliases(data) if data.is_dir() else {}, resume=resume
    )
    t = cfg.train
    trained = {"data": str(data), **what_ran(run / "metrics.csv", "val_macro_ap")}
    if t.backbone_cache:
        trained.update(
            backbone_lr_scale=t.backbone_lr_scale, backbone_train_from=t.backbone_train_from, backbone_cache=True
        )
    return learner.save(model, run / "model", {"train": trained, **aliases_entry(data)})
