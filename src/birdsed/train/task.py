"""The reference recipe as a LightningModule: augmented log-mel batches, BCE on clipwise (and framewise), the
warm-up-then-cosine learning rate, and per-recording validation metrics."""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from birdsed.config import config_from_dict
from birdsed.evaluate.metrics import recording_metrics
from birdsed.model.detector import window_scores
from birdsed.model.sed import SEDModel, batchnorm_layers
from birdsed.train.augment import Augmenter, augmented_mel
from birdsed.train.checkpoint import DATA_KEY, close_epoch
from birdsed.train.loss import bce


def total_steps(items: int, batch_size: int, epochs: int, max_steps: int = -1) -> int:
    """The optimiser steps of a run over `items` a epoch (at least one a epoch), capped by max_steps when > 0."""
    total = max(1, math.ceil(items / batch_size)) * epochs
    return min(total, max_steps) if max_steps > 0 else total


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


class SEDTask(L.LightningModule):
    def __init__(self, config: dict, classes: list[str]):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = config_from_dict(config)
        self.classes = classes
        self.model = SEDModel(self.cfg.frontend, self.cfg.model, classes)
        self.aug = Augmenter(self.cfg.augment, self.cfg.frontend)
        self._val: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []
        self._tick: tuple[float, int] | None = None
        self._epoch_loss: tuple[torch.Tensor | float, int] = (0.0, 0)  # this epoch's sum of loss x batch size, items
        self.recordings: dict[str, list[str]] = {}  # the training and validation recordings' ids, for checkpoints

    def loss(self, wave: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """The recipe's training loss of a batch, wave (B, n_samples), y (B, K) (soft for pseudo-labelled items),
        loss weights w (B,) (data.pseudo_weight for pseudo-labelled items, else 1), augmentations included;
        returns (loss, batch size)."""
        mel, y, w = augmented_mel(self.aug, self.model.frontend, wave, y, self.cfg.augment, w)
        out = self.model.encode(mel)
        loss = bce(out["clipwise"], y, w)
        fw = self.cfg.train.framewise_loss_weight
        if fw > 0:
            loss = loss + fw * bce(out["framewise"].amax(dim=1), y, w)
        return loss, len(y)

    def freeze_batchnorm(self) -> None:
        """Normalise by the backbone's pretrained statistics; the affine weights still learn."""
        for m in batchnorm_layers(self.model.backbone):
            m.eval()

    def training_step(self, batch, batch_idx):
        loss, n = self.loss(*batch)
        self.log("train_loss_step", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        total, items = self._epoch_loss
        self._epoch_loss = (total + loss.detach() * n, items + n)
        now = time.perf_counter()
        if self._tick is not None:
            dt = now - self._tick[0]
            self.log("clips_s", n / max(dt, 1e-9), prog_bar=True, on_step=True, on_epoch=False)
        self._tick = (now, n)
        return loss

    def on_train_epoch_start(self):
        self._tick = None
        self._epoch_loss = (0.0, 0)
        if self.cfg.train.freeze_bn:  # Lightning keeps modules' modes across validation, so once per epoch is enough
            self.freeze_batchnorm()

    def validation_step(self, batch, batch_idx):
        wave, y, rec = batch
        out = self.model(wave)
        self.log("val_loss", bce(out["clipwise"], (y > 0).float()), prog_bar=True, batch_size=len(y), sync_dist=True)
        self._val.append(({k: v.float() for k, v in window_scores(out).items()}, y, rec))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        scores = {k: torch.cat([s[k] for s, _, _ in self._val]) for k in self._val[0][0]}
        y = torch.cat([t for _, t, _ in self._val])
        rec = torch.cat([r for _, _, r in self._val])
        self._val.clear()
        if self.trainer.world_size > 1:
            scores = {k: self.all_gather(v).flatten(0, 1) for k, v in scores.items()}
            y, rec = self.all_gather(y).flatten(0, 1), self.all_gather(rec).flatten(0, 1)
        metrics = recording_metrics({k: v.cpu().numpy() for k, v in scores.items()}, y.cpu().numpy(), rec.cpu().numpy())
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("val_f1_clipwise", "val_map"), rank_zero_only=True)

    def log_epoch_loss(self) -> None:
        """metrics.csv's row of the epoch's mean training loss (train_loss_epoch, weighted by batch size; rank
        zero's batches in a multi-process run), written once, before the epoch's first checkpoint: Lightning's own
        epoch row came after last.ckpt, and a kill between the two lost it from the resumed run's metrics.csv."""
        total, items = self._epoch_loss
        if not items or self.logger is None:
            return
        self._epoch_loss = (0.0, 0)
        self.logger.log_metrics(
            {"train_loss_epoch": float(total / items), "epoch": self.current_epoch}, self.global_step - 1
        )
        self.logger.save()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_loss()  # the module's hook runs before the checkpoint callbacks' (which write last.ckpt)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.log_epoch_loss()  # (a checkpoint before the epoch's end, as a val_check_interval below 1 would write)
        # the global RNG drives augmentation, mixup and dropout: a resumed run continues its stream
        checkpoint["birdsed_rng"] = {"torch": torch.get_rng_state()}
        if self.recordings:  # a resume with other recordings is refused (checkpoint.check_same_data)
            checkpoint[DATA_KEY] = self.recordings

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # before Lightning restores its loops from the same dict
        close_epoch(checkpoint)
        state = checkpoint.get("birdsed_rng", {}).get("torch")
        if isinstance(state, torch.Tensor):
            torch.set_rng_state(state)

    def configure_optimizers(self):
        t = self.cfg.train
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=t.lr
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(t.warmup_frac * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
