"""Fine-tuning BirdNET V2.4 under birdsed's head (model.backbone: birdnet, model.freeze_backbone: false).

The frozen path (embedtrain.py) trains the head on cached embeddings; this one trains the head and the torch port of
BirdNET (birdnet_torch.py) together, from audio. Each balanced item (sampling.build_items, as for the CNNs and the
frozen head) gives a crop of data.crop_s at a random start inside its time range, read from the 32 kHz store,
resampled to 48 kHz and fitted to the window as predict fits it (data.short_policy); the crop is cut into 3 s
sub-windows every model.embed_hop_s, exactly as predict cuts a window (embedhead.py). Targets hold secondary labels
(sampling.targets); mixup mixes the crops' audio and their targets (augment.mixup_p / mixup_alpha / mixup_union);
SpecAugment masks stripes of BirdNET's own spectrogram (the front end's output, 96 mel bins x 511 frames x 2
channels, through the port's front-end hook; augment.specaug_p and the mask sizes, in those bins and frames).

Learning rates: AdamW with warm-up and cosine decay, the head at train.lr, BirdNET's weights (those the embedding
depends on; its front end and classifier stay fixed) at train.lr x train.backbone_lr_scale (default 0.03): the
pretrained features move slowly while the new head learns; with train.backbone_train_from (0-1) only the port's
layers from that depth of its graph on train (0.5: the second half; BirdNETTorch.parameter_depths). train.precision
as for the CNNs: auto is bf16 autocast on CUDA (the loss in float32), float32 on the CPU. The head's input
standardisation is taken from the starting port's embeddings of a batch of training crops; with model.birdnet_prior
the head starts from BirdNET's own classifier rows, as in the frozen path.

Resume (`train --resume`): RUN/checkpoints/last.pt after every epoch (tensors and plain data only, read with
weights_only) holds the head, the port's trained weights, the optimiser and scheduler; each epoch draws from
generators seeded by (train.seed, epoch), and the global one (the head's dropout) is seeded by them too, so a resumed
run continues where the killed one stopped and ends with the uninterrupted run's weights. The model is the
last epoch's (a validation split's macro AP is logged in metrics.csv per epoch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import soxr
import torch

from birdsed.config import Config
from birdsed.data.sampling import Item, build_items, targets
from birdsed.data.store import AudioStore
from birdsed.device import lightning_precision, pick_device
from birdsed.evaluate.metrics import average_precision
from birdsed.fsutil import atomic_path
from birdsed.model.birdnet import SAMPLE_RATE_HZ
from birdsed.model.birdnet_finetune import FineTunedHeadModel, FineTunedNet
from birdsed.model.birdnet_labels import aliases_entry, dataset_aliases
from birdsed.model.birdnet_torch import load_birdnet_torch
from birdsed.model.embedhead import EmbeddingHead
from birdsed.train import checkpoint
from birdsed.train.augment import specaugment_nhwc
from birdsed.train.embedcache import fit_to_window
from birdsed.train.embedtrain import (
    birdnet_prior,
    ema_horizon_warning,
    head_first,
    mixup,
    resume_average,
    weight_average,
    what_ran,
)
from birdsed.train.loss import bce
from birdsed.train.task import lr_factor, total_steps

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel

log = logging.getLogger(__name__)

CHECKPOINT = checkpoint.EPOCH_CHECKPOINT


def crop_audio(store: AudioStore, it: Item, window_s: float, policy: str, rng: np.random.Generator) -> np.ndarray:
    """A window_s crop of an item's recording at 48 kHz, starting at random inside the item's time range (the
    whole recording fitted by `policy` when shorter): (window_s * 48000,) float32."""
    n = int(round(window_s * SAMPLE_RATE_HZ))
    last = max(it.start_s, min(it.end_s, store.duration_s(it.recording_id)) - window_s)
    start = float(rng.uniform(it.start_s, last)) if last > it.start_s else it.start_s
    x = store.read(it.recording_id, start, window_s + 0.05)  # a little over: resampling may lose a sample
    x = soxr.resample(x, store.sample_rate_hz, SAMPLE_RATE_HZ).astype(np.float32)
    return fit_to_window(x, n, policy)[:n] if len(x) else np.zeros(n, np.float32)


@dataclass
class Batches:
    """What an epoch draws from: the store, the items, their targets, the window and sub-window cutting."""

    store: AudioStore
    items: list[Item]
    targets: dict[str, np.ndarray]
    model: FineTunedHeadModel
    policy: str

    def batch(self, items: list[Item], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_sub, 144000) sub-windows of random crops of `items`, (B, K) targets."""
        w = np.stack([crop_audio(self.store, it, self.model.window_s, self.policy, rng) for it in items])
        y = np.stack([self.targets[it.recording_id] for it in items])
        return torch.from_numpy(w), torch.from_numpy(y)


def spec_hook(cfg: Config, gen: torch.Generator, net: FineTunedNet):
    """SpecAugment on the port's spectrogram (B, 96 mel bins, 511 frames, 2 channels), in training only."""

    def hook(s: torch.Tensor) -> torch.Tensor:
        return specaugment_nhwc(s, cfg.augment, gen) if net.training else s

    return hook


def head_statistics(net: FineTunedNet, data: Batches, device: torch.device, n: int, seed: int) -> None:
    """The head's input mean and std from the starting port's embeddings of n training crops (a batch, 8 at least)."""
    rng = np.random.default_rng([seed, 1])
    items = data.items[:n]
    emb = []
    net.eval()
    with torch.no_grad():
        for i in range(0, len(items), 8):
            w, _ = data.batch(items[i : i + 8], rng)
            emb.append(net.embed(data.model.sub_windows(w).to(device)).reshape(-1, net.head.mean.numel()).cpu())
    e = torch.cat(emb)
    net.head.mean.copy_(e.mean(0))
    net.head.std.copy_(e.std(0).clamp_min(1e-3) if len(e) > 1 else torch.ones_like(e[0]))


def param_groups(net: FineTunedNet, cfg: Config) -> list[dict]:
    """The head at train.lr, BirdNET's trained weights at train.lr x train.backbone_lr_scale."""
    t = cfg.train
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    return [
        {"params": list(net.head.parameters()), "lr": t.lr},
        {"params": backbone, "lr": t.lr * t.backbone_lr_scale},
    ]


def optimiser(net: FineTunedNet, cfg: Config) -> torch.optim.AdamW:
    """AdamW over param_groups."""
    return torch.optim.AdamW(param_groups(net, cfg), weight_decay=cfg.train.weight_decay)


def save_checkpoint(
    path: Path,
    epoch: int,
    step: int,
    net: FineTunedNet,
    opt,
    sched,
    rows: list[dict],
    data: dict[str, list[str]],
    ema: AveragedModel | None = None,
) -> None:
    """RUN/checkpoints/last.pt (checkpoint.write_epoch_checkpoint: atomic); with train.ema, the average's weights
    and how many steps it holds too; the classes and recordings (TrainData.identity), so that a resume with other
    data is refused by name."""
    state = checkpoint.epoch_state(epoch, step, rows, data, opt, sched, FineTunedNet.saved_state, net, ema)
    checkpoint.write_epoch_checkpoint(path, state)


def validation(net: FineTunedNet, model: FineTunedHeadModel, td, tgt, cfg: Config, device) -> dict[str, float]:
    """Macro and micro AP of the clipwise output on each validation recording's first window."""
    ids = list(td.val.table["recording_id"])
    if not ids:
        return {}
    val = Batches(td.val_store, [Item(r, 0.0, model.window_s) for r in ids], tgt, model, cfg.data.short_policy)
    rng = np.random.default_rng(0)
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), cfg.train.batch_size):
            w, _ = val.batch(val.items[i : i + cfg.train.batch_size], rng)
            out.append(net(model.sub_windows(w).to(device))["clipwise"].float().cpu().numpy())
    macro, micro = average_precision(np.concatenate(out), np.stack([tgt[r] for r in ids]) >= 0.5)
    return {"val_macro_ap": macro, "val_micro_ap": micro}


def fine_tune(
    td, cfg: Config, run: Path, resume: bool = False, quiet: bool = False, aliases: dict | None = None
) -> FineTunedHeadModel:
    """Train the head and BirdNET's port together on td (train.TrainData) into run/; returns the model of the last
    epoch (with train.ema, the average of its weights over the steps, which validation scores too). Writes
    run/metrics.csv and run/checkpoints/last.pt (for `resume`)."""
    t, d = cfg.train, cfg.data
    device = pick_device("cuda" if t.device == "gpu" else t.device)
    ckpt_path = run / CHECKPOINT  # with resume, there (train.run.check_resume)
    identity = td.identity()  # what the checkpoints keep of the data: other data is refused before BirdNET loads
    ckpt = checkpoint.read_epoch_checkpoint(ckpt_path, identity) if resume else None
    torch.manual_seed(t.seed)
    head = EmbeddingHead(len(td.classes), cfg.model.dropout, prior=cfg.model.birdnet_prior)
    net = FineTunedNet(load_birdnet_torch(), head, train_from=t.backbone_train_from)
    model = FineTunedHeadModel(
        td.classes, net, window_s=d.crop_s, embed_hop_s=cfg.model.embed_hop_s, short_policy=d.short_policy
    )
    tgt = targets(td.train, td.classes, d)
    tgt.update(targets(td.val, td.classes, d))
    data = Batches(td.store, build_items(td.train, d, t.seed), tgt, model, d.short_policy)
    net.to(device)
    total = total_steps(len(data.items), t.batch_size, t.epochs, t.max_steps)
    opt = optimiser(net, cfg)
    bf16 = lightning_precision(t.precision, "gpu" if device.type == "cuda" else "cpu").startswith("bf16")
    warmup = int(t.warmup_frac * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
    first_head = head_first(cfg)
    first, step, rows = 0, 0, []
    if t.ema and (said := ema_horizon_warning(t.ema_decay, total)):
        log.warning("%s", said)
    if ckpt is not None:
        net.load_saved_state(ckpt["net"], ckpt_path)
        first, step, rows = checkpoint.resume_optimiser(ckpt, opt, sched, ckpt_path)
    else:
        if cfg.model.birdnet_prior:
            birdnet_prior(head, td.classes, aliases or {})
        head_statistics(net, data, device, max(t.batch_size, 8), t.seed)
    ema = weight_average(net, t.ema_decay) if t.ema else None  # a copy of the weights as they start (or resume)
    if ema is not None and resume:
        resume_average(ema, ckpt, ckpt_path, lambda m, state: m.load_saved_state(state, ckpt_path))
    evaluated = ema.module if ema is not None else net
    for epoch in range(first, first_head.epochs + t.epochs):
        if sched.last_epoch >= total:  # train.max_steps reached
            break
        first_head.enter(epoch, opt, sched, total, warmup)  # the rates of this run's schedule (resumed: at its step)
        warming = first_head.warming(epoch)
        rng, gen = np.random.default_rng([t.seed, epoch]), torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        torch.manual_seed(checkpoint.epoch_seed(t.seed, epoch))  # the head's dropout draws from the global generator
        net.backbone.net.frontend_hook = spec_hook(cfg, gen, net)
        net.train()
        losses = []
        order = rng.permutation(len(data.items))
        for i in range(0, len(order), t.batch_size):
            if sched.last_epoch >= total:
                break
            w, y = data.batch([data.items[j] for j in order[i : i + t.batch_size]], rng)
            w, y = mixup(w, y, cfg.augment.mixup_p, cfg.augment.mixup_alpha, cfg.augment.mixup_union, gen)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                out = net(model.sub_windows(w).to(device))["clipwise"]
            loss = bce(out.float(), y.to(device))
            opt.zero_grad()
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], t.grad_clip)
            opt.step()
            if not warming:
                sched.step()
            if ema is not None:
                ema.update_parameters(net)
            losses.append(loss.item())
            step += 1
        net.backbone.net.frontend_hook = None
        scored = validation(evaluated, model, td, tgt, cfg, device)
        row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)), **scored}
        if first_head.epochs:
            row["head_only"] = warming
        rows.append(row)
        log.debug("epoch %d: %s", epoch, row)
        save_checkpoint(ckpt_path, epoch, step, net, opt, sched, rows, identity, ema)
        with atomic_path(run / "metrics.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info(
        "BirdNET fine-tuned under the head: %d items, %d epochs (%d steps), backbone lr x %g%s",
        len(data.items),
        len(rows),
        step,
        t.backbone_lr_scale,
        f", last loss {rows[-1]['train_loss']:.4f}" if rows else "",
    )
    if ema is not None:
        net.load_state_dict(ema.module.state_dict())
    net.cpu()
    return model.eval()


def train_finetuned(
    data: Path, cfg: Config, run: Path, val_data: Path | None = None, resume: bool = False, quiet: bool = False
) -> Path:
    """`train` for model.backbone=birdnet with model.freeze_backbone false: prepare (or open) the store, fine-tune,
    write run/model."""
    from birdsed.model.birdnet_finetune import save_finetuned_dir
    from birdsed.train.data import load_train_data

    run.mkdir(parents=True, exist_ok=True)
    td = load_train_data(data, run, cfg, val_data)
    checkpoint.write_run_config(run, cfg, resume)
    model = fine_tune(td, cfg, run, resume, quiet, dataset_aliases(data) if data.is_dir() else {})
    extra = {
        "train": {
            "data": str(data),
            **what_ran(run / "metrics.csv"),
            "backbone_lr_scale": cfg.train.backbone_lr_scale,
            "backbone_train_from": cfg.train.backbone_train_from,
        },
        **aliases_entry(data),
    }
    return save_finetuned_dir(model, run / "model", extra=extra)
