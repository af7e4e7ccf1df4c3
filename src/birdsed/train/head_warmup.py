"""Head warm-up before fine-tuning (LP-FT: "linear probe, then fine-tune").

On a small data set a randomly initialised head learns slowly while it drags the
pretrained backbone along, and its first, large gradients damage the pretrained features:
on NIPS4B (440 training clips, 87 classes) 30 epochs of plain fine-tuning reached
out-of-fold macro AP 0.32; with this warm-up, 10 epochs reached 0.50 (docs/BENCHMARKS.md).
So, before fine-tuning:

1. the front end's per-mel normalisation is set to the training clips' statistics, so
   the pretrained backbone sees standardised input from the first step;
2. the backbone (eval mode, weights frozen) maps one window per training recording to
   features, once;
3. the head trains on those cached features for `train.head_warmup_epochs` (cheap: no
   backbone work per step).

Fine-tuning then starts from a head that already separates the classes. The features
must be the ones fine-tuning will see: with `train.freeze_bn` the backbone keeps its
pretrained BatchNorm statistics in both stages; without it, fine-tuning normalises by
batch statistics, so the statistics are first recomputed on the training clips
(`recalibrate_bn`). On NIPS4B the pretrained statistics gave the better features, and
freezing them is the preset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from birdsed.data.dataset import WindowDataset
from birdsed.errors import ConfigError
from birdsed.model.sed import SEDModel, batchnorm_layers
from birdsed.train.loss import bce

log = logging.getLogger(__name__)
Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _recalibrate_batchnorm(backbone: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """Replace the backbone's BatchNorm running statistics (ImageNet's) by these images' (a cumulative average);
    the backbone is left in eval mode.

    Fine-tuning runs BatchNorm on batch statistics of spectrograms, far from ImageNet's;
    features cached with ImageNet's statistics would train a head for inputs it never sees again.
    """
    norms = batchnorm_layers(backbone)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    backbone.train()
    for x in images:
        backbone.forward_features(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    backbone.eval()


@torch.no_grad()
def frozen_features(
    model: SEDModel,
    ds: WindowDataset,
    batch_size: int,
    device: torch.device,
    recalibrate_bn: bool,
    views: int = 1,
    augment: Augment | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, C, F', T'), targets (N, K)) for every window of `ds`, after fitting the front end's statistics;
    with views > 1, N = views x windows: the plain windows, then views - 1 augmented passes over them."""
    fe = model.frontend
    waves, dbs, ys = [], [], []
    for wave, y, _ in DataLoader(ds, batch_size=batch_size, shuffle=False):
        waves.append(wave.to(device))
        dbs.append(fe.power_db(waves[-1]))  # (B, n_mels, T)
        ys.append(y.float().to(device))
    db = torch.cat(dbs)
    fe.norm.running_mean.copy_(db.mean(dim=(0, 2)))  # the plain windows' statistics, also for the augmented views
    fe.norm.running_var.copy_(db.var(dim=(0, 2)))
    model.eval()  # normalise by the statistics just set (training mode would use and update batch statistics)
    images = [fe.normalize(d) for d in db.split(batch_size)]
    targets = list(torch.cat(ys).split(batch_size))
    if views > 1 and augment is None:
        raise ValueError("head warm-up with several views needs an augment function")
    for _ in range(views - 1):
        for wave, y in zip(waves, ys):
            mel, y_aug = augment(wave, y)
            images.append(mel)
            targets.append(y_aug)
    images = [model.image(m) for m in images]
    if recalibrate_bn:
        _recalibrate_batchnorm(model.backbone, images)
    feats = [model.backbone.forward_features(x) for x in images]
    return torch.cat(feats), torch.cat(targets)


def warm_up_head(
    model: SEDModel,
    ds: WindowDataset,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
    recalibrate_bn: bool = True,
    device: str | torch.device = "cpu",
    views: int = 1,
    augment: Augment | None = None,
) -> float:
    """Set the front end's statistics and train `model.head` on frozen features of `ds`; returns the last loss.

    The model is left on `device` in training mode; only normalisation statistics (front
    end and backbone) and the head's weights change. views > 1 adds views - 1 augmented copies
    of every window to the cache: augment(wave (B, n), y (B, K)) -> (normalised log-mel, targets),
    the training recipe's augmentations, so the head does not memorise 440 fixed feature maps.
    """
    if views < 1:
        raise ConfigError(f"train.head_warmup_views must be at least 1, got {views}")
    device = torch.device(device)
    model.to(device)
    feats, y = frozen_features(model, ds, batch_size, device, recalibrate_bn, views, augment)
    loss = fit_head(model.head, feats, y, epochs, lr, weight_decay, batch_size, seed)
    model.train()
    log.info("head warm-up: %d windows, %d epochs, final loss %.4f", len(feats), epochs, loss)
    return loss


def fit_head(
    head: torch.nn.Module,
    feats: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Train a head on cached features (N, C, F', T') for targets (N, K): AdamW, BCE on the clipwise output,
    shuffled (seeded); returns the last batch's loss. The head is left in training mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        for idx in torch.randperm(len(feats), generator=gen).split(batch_size):
            loss = bce(head(feats[idx])["clipwise"], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss.detach())
