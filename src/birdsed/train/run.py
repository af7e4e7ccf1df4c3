"""Training on Lightning: the seed's recipe as a LightningModule plus a `train()` that builds the run folder.

RUN/
  config.yaml          the resolved config
  store/               the prepared store (when DATA was not one already)
  checkpoints/         best.ckpt (by train.select_metric) and last.ckpt (every epoch's end, for --resume)
  metrics.csv          one row per logged step / epoch (a resumed run appends to the epochs it kept)
  model/               weights.safetensors + model.json (the best epoch)
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.utils.data import DataLoader

from birdsed.train.augment import Augmenter, augmented_mel
from birdsed.config import SEED_THRESHOLDS, Config, config_from_dict, save_config
from birdsed.data.dataset import CropDataset, EpochSampler, WindowDataset
from birdsed.fsutil import atomic_path
from birdsed.errors import ConfigError, ModelError, StoreError
from birdsed.data.manifest import Manifest, read_dataset
from birdsed.evaluate.metrics import average_precision, row_f1
from birdsed.model.sed import SEDModel, batchnorm_layers, bce, window_scores
from birdsed.model.modeldir import save_model_dir
from birdsed.train.head_warmup import warm_up_head
from birdsed.data.sampling import build_items, stratified_split, targets
from birdsed.data.store import AudioStore, is_store, prepare

log = logging.getLogger(__name__)


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
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        now = time.perf_counter()
        if self._tick is not None:
            dt = now - self._tick[0]
            self.log("clips_s", n / max(dt, 1e-9), prog_bar=True, on_step=True, on_epoch=False)
        self._tick = (now, n)
        return loss

    def on_train_epoch_start(self):
        self._tick = None
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the global RNG drives augmentation, mixup and dropout: a resumed run continues its stream
        checkpoint["birdsed_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
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


def recording_metrics(scores: dict[str, np.ndarray], y: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    """Validation metrics per recording (max over its windows): row-wise F1 of each output
    at the seed's thresholds, and macro AP of clipwise."""
    recs, inverse = np.unique(rec, return_inverse=True)
    true = np.zeros((len(recs), y.shape[1]), dtype=bool)
    true[inverse] = y > 0
    out = {}
    for kind, s in scores.items():
        pooled = np.full((len(recs), s.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(pooled, inverse, s)
        out[f"val_f1_{kind}"] = row_f1(pooled >= SEED_THRESHOLDS[kind], true)
        if kind == "clipwise":
            out["val_map"], out["val_micro_ap"] = average_precision(pooled, true)
    return out


@dataclass
class TrainData:
    store: AudioStore
    train: Manifest
    val: Manifest
    val_store: AudioStore
    classes: list[str]


def _open_or_prepare(data: Path, dest: Path, workers: int | None, allow_outside: bool = False) -> AudioStore:
    if is_store(data):
        return AudioStore(data)
    result = prepare(read_dataset(data, allow_outside=allow_outside), dest, workers=workers)
    log.info(result.summary())
    store = AudioStore(dest)
    report = store.report()
    if len(report):
        log.warning("%d recording(s) could not be decoded and are left out; see %s", len(report), dest / "report.csv")
    return store


def load_train_data(data: Path, run: Path, cfg: Config, val_data: Path | None = None) -> TrainData:
    cfg.check()
    store = _open_or_prepare(Path(data), run / "store", cfg.train.workers or None, cfg.data.allow_outside_paths)
    manifest = store.manifest()
    if len(manifest) == 0:
        raise StoreError(f"{data}: no usable recordings")
    if val_data is not None:
        val_store = _open_or_prepare(
            Path(val_data), run / "val_store", cfg.train.workers or None, cfg.data.allow_outside_paths
        )
        train_m, val_m = manifest, val_store.manifest()
    else:
        tr, va = stratified_split(manifest, cfg.data.val_fraction, cfg.data.val_split_seed(cfg.train.seed))
        train_m, val_m, val_store = manifest.subset(tr), manifest.subset(va), store
    if cfg.data.subsample < 1.0:
        bag, _ = stratified_split(train_m, 1.0 - cfg.data.subsample, cfg.train.seed)
        log.info(
            "training on %d of %d recordings (data.subsample=%g, seed %d)",
            bag.sum(),
            len(train_m),
            cfg.data.subsample,
            cfg.train.seed,
        )
        train_m = train_m.subset(bag)
    classes = sorted(set(manifest.classes) | set(val_m.classes))
    return TrainData(store, train_m, val_m, val_store, classes)


def _accelerator(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
        return "gpu"
    if device == "cpu":
        return "cpu"
    raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda")


def lightning_precision(precision: str, accel: str) -> str:
    """train.precision for Lightning: auto is bf16-mixed on a GPU, 32-true on the CPU; anything else as given."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if accel == "gpu" else "32-true"


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint, unpickled with weights_only=True: a file planted in the run folder can never run
    code; anything but tensors and plain data, a truncated or a foreign file is refused with a ModelError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad or unsafe files
        raise ModelError(f"{path}: not a readable checkpoint of tensors ({str(e)[:200]}); nothing was changed") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelError(f"{path}: not a Lightning checkpoint (no state_dict); nothing was changed")
    return ckpt


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict of a Lightning checkpoint (read_checkpoint)."""
    return read_checkpoint(path)["state_dict"]


def _read_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv's rows ([] if it is not there)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict]) -> list[str]:
    """metrics.csv written whole, atomically, with the union of the rows' columns (returned)."""
    keys = sorted({k for r in rows for k in r})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return keys


class _AtomicWriter(ExperimentWriter):
    """Lightning's CSV writer, but every save rewrites metrics.csv whole through a temporary file (a kill mid-write
    leaves the previous file, never a cut one), and an existing file is kept (resuming) or started afresh."""

    def __init__(self, log_dir: str, keep: bool):
        self._keep = keep
        super().__init__(log_dir=log_dir)
        self._rows = _read_rows(Path(self.metrics_file_path))  # read once; later saves add to these

    def _check_log_dir_exists(self) -> None:
        if not self._keep and os.path.isfile(self.metrics_file_path):
            os.unlink(self.metrics_file_path)

    def save(self) -> None:
        if not self.metrics:
            return
        self._rows += self.metrics
        self.metrics_keys, self.metrics = _write_rows(Path(self.metrics_file_path), self._rows), []


def csv_logger(run: Path, resume_epoch: int | None) -> CSVLogger:
    """The run's metrics.csv logger (written atomically); resuming after epoch `resume_epoch`, the rows of later
    epochs (the one a kill interrupted) are dropped and the resumed run appends."""
    logger = CSVLogger(run, name="", version="")
    metrics = run / "metrics.csv"
    if resume_epoch is not None and metrics.is_file():
        _write_rows(
            metrics, [r for r in _read_rows(metrics) if r.get("epoch", "") == "" or float(r["epoch"]) <= resume_epoch]
        )
    Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
    logger._experiment = _AtomicWriter(logger.log_dir, keep=resume_epoch is not None)  # the property builds Lightning's
    return logger


def train(
    data: str | Path,
    cfg: Config,
    out: str | Path,
    resume: bool = False,
    val_data: str | Path | None = None,
    quiet: bool = False,
    extra_callbacks: list | None = None,
) -> Path:
    """Train on `data` (a data-set folder or a prepared store) into the run folder `out`; returns out/model.
    model.backbone=birdnet trains the head on frozen BirdNET embeddings instead (embedtrain.py)."""
    cfg.check()
    run = Path(out)
    if cfg.model.backbone == "birdnet":
        from birdsed.train.embedtrain import train_birdnet

        return train_birdnet(Path(data), cfg, run, Path(val_data) if val_data else None, quiet)
    run.mkdir(parents=True, exist_ok=True)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ckpt_dir = run / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no checkpoint at {last}")
    resume_epoch = (
        int(read_checkpoint(last).get("epoch", 0)) if resume else None
    )  # a bad file: refused, nothing touched
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    td = load_train_data(Path(data), run, cfg, Path(val_data) if val_data else None)
    save_config(cfg, run / "config.yaml")
    t = cfg.train
    items = build_items(td.train, cfg.data, t.seed)
    tgt = targets(td.train, td.classes, cfg.data)
    tgt.update(targets(td.val, td.classes, cfg.data))
    pool = None
    if cfg.data.pseudo:
        from birdsed.train.pseudo import load_pool

        pool = load_pool(list(cfg.data.pseudo), td.classes, run / "pseudo_store", t.workers or None)
        log.info("%d pseudo-labelled windows from %d table(s)", len(pool), len(cfg.data.pseudo))
    train_ds = CropDataset(
        td.store,
        items,
        tgt,
        cfg.data.crop_s,
        cfg.data.short_policy,
        seed=t.seed,
        pool=pool,
        n_pseudo=int(round(cfg.data.pseudo_items * len(items))),
        pseudo_weight=cfg.data.pseudo_weight,
        mix_p=cfg.augment.pseudo_mix_p,
    )
    val_ds = WindowDataset(
        td.val_store,
        list(td.val.table["recording_id"]),
        tgt,
        cfg.data.crop_s,
        cfg.data.val_windows,
        cfg.data.short_policy,
    )
    accel = _accelerator(t.device)
    loader_kw = dict(num_workers=t.workers, pin_memory=accel == "gpu", persistent_workers=t.workers > 0)
    # loaders draw from their own generators, never the global one (a resumed run's RNG stream stays the same)
    train_dl = DataLoader(
        train_ds,
        batch_size=t.batch_size,
        sampler=EpochSampler(len(train_ds), t.seed),
        drop_last=len(train_ds) > t.batch_size,
        generator=torch.Generator().manual_seed(t.seed),
        **loader_kw,
    )
    val_dl = (
        DataLoader(
            val_ds, batch_size=t.batch_size, shuffle=False, generator=torch.Generator().manual_seed(t.seed), **loader_kw
        )
        if len(val_ds)
        else None
    )
    log.info(
        "training on %d items from %d recordings, %d classes; validating on %d recordings (%d windows)",
        len(items),
        len(td.train),
        len(td.classes),
        len(td.val),
        len(val_ds),
    )
    if val_dl is None:
        log.info(
            "no validation recordings (data.val_fraction=%g): the last epoch is kept, thresholds stay at their "
            "defaults until `birdsed tune`",
            cfg.data.val_fraction,
        )
    task = SEDTask(cfg.to_dict(), td.classes)
    if t.head_warmup_epochs > 0 and not resume:
        probe_ds = WindowDataset(
            td.store, list(td.train.table["recording_id"]), tgt, cfg.data.crop_s, 1, cfg.data.short_policy
        )
        warm_dev = "cuda" if accel == "gpu" else "cpu"
        task.aug.to(warm_dev).train()
        warm_up_head(
            task.model,
            probe_ds,
            t.head_warmup_epochs,
            lr=t.head_warmup_lr,
            weight_decay=t.weight_decay,
            batch_size=t.batch_size,
            seed=t.seed,
            recalibrate_bn=not t.freeze_bn,
            device=warm_dev,
            views=t.head_warmup_views,
            augment=lambda wave, y: augmented_mel(task.aug, task.model.frontend, wave, y, cfg.augment)[:2],
        )
    if accel == "gpu":
        task.model.use_channels_last()
    precision = lightning_precision(t.precision, accel)
    monitor = t.select_metric if val_dl is not None else None
    # best.ckpt by the metric, then last.ckpt at every epoch's end (a kill loses at most the epoch in progress); in
    # this order, so that last.ckpt holds the best-model tracking of the epoch it closes
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max", enable_version_counter=False
    )
    callbacks = [best_cb] if monitor else []
    callbacks.append(
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    )
    if t.ema:
        callbacks.append(EMAWeightAveraging(decay=t.ema_decay))
    if not quiet:
        callbacks.append(RichProgressBar(leave=True))
    callbacks += extra_callbacks or []
    trainer = L.Trainer(
        accelerator=accel,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision,
        max_epochs=t.epochs,
        max_steps=t.max_steps,
        gradient_clip_val=t.grad_clip or None,
        callbacks=callbacks,
        logger=csv_logger(run, resume_epoch),
        default_root_dir=run,
        log_every_n_steps=max(1, min(10, len(train_dl))),
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        limit_val_batches=t.limit_val_batches,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        for noise in (
            ".*does not have many workers.*",
            ".*number of training batches.*",
            ".*exists and is not empty.*",
            ".*LeafSpec.*",
            ".*Checkpoint directory.*exists and is not empty.*",
            ".*no `val_dataloader`.*",
        ):
            warnings.filterwarnings("ignore", noise)
        trainer.fit(task, train_dl, val_dl, ckpt_path=str(last) if resume else None, weights_only=True)
    if not trainer.is_global_zero:
        return run / "model"
    best = ckpt_dir / "best.ckpt"
    kept = {"epoch": trainer.current_epoch - 1, "global_step": trainer.global_step}  # the last epoch's weights
    if monitor and best.is_file():
        kept = read_checkpoint(best)
        task.load_state_dict(kept["state_dict"])
    extra = {
        "short_policy": cfg.data.short_policy,
        "train": {
            "data": str(data),
            "best_metric": t.select_metric,
            "best_score": float(best_cb.best_model_score) if monitor and best_cb.best_model_score is not None else None,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,  # what ran
            "kept_epoch": int(kept.get("epoch", -1)),
            "kept_steps": int(kept.get("global_step", 0)),
        },
    }  # what was kept
    model = task.model.to("cpu").to(memory_format=torch.contiguous_format)
    return save_model_dir(model, run / "model", extra=extra)
