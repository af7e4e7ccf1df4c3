"""Training on Lightning: `train()` builds the run folder around the recipe's LightningModule (task.py).

RUN/
  config.yaml          the resolved config
  store/               the prepared store (when DATA was not one already)
  checkpoints/         best.ckpt (by train.select_metric) and last.ckpt (every epoch's end, for --resume);
                       BirdNET's trainers: last.pt (every epoch's end, for --resume)
  metrics.csv          one row per logged step / epoch (a resumed run appends to the epochs it kept)
  model/               weights.safetensors + model.json (the best epoch)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, RichProgressBar
from torch.utils.data import DataLoader

from birdsed.config import Config
from birdsed.data.dataset import CropDataset, EpochSampler, WindowDataset
from birdsed.data.sampling import build_items, targets
from birdsed.data.store import check_store, is_store
from birdsed.device import check_devices, die_with_parent, lightning_accelerator, lightning_precision
from birdsed.errors import BirdsedError, ConfigError
from birdsed.model.birdnet_labels import aliases_entry
from birdsed.model.meta import META, WEIGHTS
from birdsed.model.modeldir import save_model_dir
from birdsed.train.augment import augmented_mel
from birdsed.train.checkpoint import (
    DATA_KEY,
    EPOCH_CHECKPOINT,
    SED_CHECKPOINT,
    AtomicCheckpointIO,
    check_same_data,
    csv_logger,
    held_data,
    held_run_folder,
    read_checkpoint,
    write_run_config,
)
from birdsed.train.data import load_train_data
from birdsed.train.head_warmup import warm_up_head
from birdsed.train.task import SEDTask

log = logging.getLogger(__name__)

RUN_FILES = (
    "config.yaml",
    "metrics.csv",
    "model",
)  # what a run writes in its folder itself (a killed run's temporaries go; model: atomic_dir)


RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.max_steps",
    "train.device",
    "train.devices",
    "train.num_nodes",
    "train.strategy",
    "train.workers",
)  # how long a resumed run goes on and where it runs; any other setting is the run's own


def training_path(cfg: Config) -> str:
    """Which trainer a config runs: "sed" (a CNN, Lightning), "finetune" (BirdNET's port and the head from audio,
    finetune.py) or "cached" (the head, with train.backbone_cache BirdNET's last layers too, on cached features,
    embedtrain.py)."""
    if cfg.model.backbone != "birdnet":
        return "sed"
    return "finetune" if not cfg.model.freeze_backbone and not cfg.train.backbone_cache else "cached"


def resumed_checkpoint(cfg: Config) -> str:
    """The checkpoint `--resume` continues from, in the run folder: Lightning's for the CNNs, BirdNET's trainers'
    own (checkpoint.EPOCH_CHECKPOINT) for the head on cached features and for fine-tuning from audio."""
    return SED_CHECKPOINT if training_path(cfg) == "sed" else EPOCH_CHECKPOINT


def check_resume(run: Path, cfg: Config, teacher: bool = False) -> None:
    """`--resume` continues the run in `run` as it was set up: its checkpoint must be there and `cfg` may differ
    from its config.yaml only in RESUME_MAY_CHANGE. Else a ConfigError naming each changed key, before anything
    is written. With a teacher, the run's own teacher_pl table in data.pseudo is the one this command adds."""
    from birdsed.config import load_config
    from birdsed.config.load import flat_keys

    ckpt = resumed_checkpoint(cfg)
    if not (run / ckpt).is_file():
        raise ConfigError(f"--resume: no checkpoint at {run / ckpt}: nothing to continue (leave --resume out)")
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"--resume: {run} has a checkpoint but no config.yaml, so its settings are unknown")
    before, now = flat_keys(load_config(run / "config.yaml")), flat_keys(cfg)
    if teacher:
        own = str((run / "teacher_pl").resolve())
        before["data.pseudo"] = [p for p in before["data.pseudo"] if p != own]
    changed = [k for k in now if k not in RESUME_MAY_CHANGE and before.get(k) != now[k]]
    if changed:
        said = "; ".join(f"{k} {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(
            f"--resume: {run} was trained with other settings ({said}). A resumed run keeps its own (only "
            f"{', '.join(RESUME_MAY_CHANGE[:2])} and where it runs may change): leave those out, or train into a new "
            "--out"
        )


def train(
    data: str | Path,
    cfg: Config,
    out: str | Path,
    resume: bool = False,
    val_data: str | Path | None = None,
    quiet: bool = False,
    extra_callbacks: list | None = None,
    teacher: str | Path | None = None,
    unlabelled: list[str] | None = None,
) -> Path:
    """Train on `data` (a data-set folder or a prepared store) into the run folder `out`; returns out/model.
    model.backbone=birdnet trains the head on frozen BirdNET embeddings instead (embedtrain.py), or, with
    model.freeze_backbone false, the head and BirdNET's torch port together from audio (finetune.py), or with
    train.backbone_cache too, the head and BirdNET's last layers on the cached output of the others (embedtrain.py).
    teacher: distil, the teacher model's soft labels of the training recordings and of `unlabelled` recordings
    (out/teacher_pl) join training as pseudo-labels (data.pseudo).
    The config and the machine's limits are checked first, before anything is written. One run at a time into a
    folder: the launching process (rank zero) holds its lock and first removes what a killed run left
    half-written; the other ranks of a multi-process run write nothing there."""
    cfg.check()
    check_devices(cfg.train)
    die_with_parent()
    for given in (data, val_data):
        if given is not None and is_store(given):
            check_store(given)  # a damaged store is refused before the run folder exists
    run = Path(out)
    if resume:
        check_resume(run, cfg, teacher is not None)
    elif (run / "model" / META).is_file():  # said before hours of training replace it
        log.warning("%s holds a trained model: this run replaces it (train into a new --out to keep it)", run / "model")
    swept = {
        run: RUN_FILES,
        run / "checkpoints": lambda name: name.endswith((".ckpt", ".pt")),
        run / "model": (META, WEIGHTS),
    }
    fresh = not run.exists()
    try:
        with held_run_folder(run, swept):
            if teacher is not None:
                cfg = _with_teacher(cfg, Path(teacher), Path(data), run, unlabelled or [], quiet)
            path = training_path(cfg)
            if path == "finetune":
                from birdsed.train.finetune import train_finetuned

                return train_finetuned(Path(data), cfg, run, Path(val_data) if val_data else None, resume, quiet)
            if path == "cached":
                from birdsed.train.embedtrain import train_birdnet

                return train_birdnet(Path(data), cfg, run, Path(val_data) if val_data else None, resume, quiet)
            return _train_sed(Path(data), cfg, run, resume, val_data, quiet, extra_callbacks)
    except BirdsedError:
        if fresh:  # a refusal before the run wrote anything: no empty run folder left behind
            with contextlib.suppress(OSError):
                run.rmdir()
            if run.is_dir():  # the recordings prepared (and report.csv, why some were left out) are worth keeping
                kept = ", ".join(sorted(p.name for p in run.iterdir()))
                log.warning("%s keeps what this run prepared (%s): a train into the same --out reuses it", run, kept)
        raise


class SamplerEpoch(L.Callback):
    """Sets the sampler's epoch to the trainer's current epoch as each epoch starts (before its pass is drawn)."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.epoch = trainer.current_epoch


class StopCatcher(L.Callback):
    """Keeps the KeyboardInterrupt (Ctrl-C, or errors.Terminated for SIGTERM) that stopped a fit: Lightning
    hands it to on_exception, then turns it into exit(1)."""

    def __init__(self):
        self.signal: KeyboardInterrupt | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = exception


KEPT_NOTE = "The last finished epoch is kept"  # a stop's note (fit_stoppable, cli/train.py), then "(its checkpoint)."


def fit_stoppable(trainer: L.Trainer, stop: StopCatcher, fit: Callable[[], None], last: Path) -> None:
    """Run `fit`; stopped by a signal, raise it again (not Lightning's exit(1)) with a note saying what is kept:
    the last finished epoch's checkpoint, `last`, which a resumed run continues from."""
    try:
        fit()
    except (SystemExit, RuntimeError):  # a stop in the loop's set-up: Lightning's teardown may fail after it
        if stop.signal is None:
            raise
        kept = (
            f"{KEPT_NOTE} ({last})."
            if last.is_file()
            else f"No epoch had finished: nothing kept in {last.parent.parent}."
        )
        stop.signal.add_note(kept)
        raise stop.signal from None


def quiet_worker(worker_id: int) -> None:
    """A data-loader worker leaves Ctrl-C and SIGTERM to the training process (which stops it): a worker killed
    by the signal sent to the whole process group made the loader raise its own error instead of a clean stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


def _with_teacher(cfg: Config, teacher: Path, data: Path, run: Path, unlabelled: list[str], quiet: bool) -> Config:
    """cfg with the teacher's soft labels of `data` and `unlabelled` (run/teacher_pl) added to data.pseudo."""
    from birdsed.train.pseudo import teacher_labels

    pl = teacher_labels(
        teacher, data, run / "teacher_pl", unlabelled, quiet=quiet, allow_outside=cfg.data.allow_outside_paths
    )
    return replace(cfg, data=replace(cfg.data, pseudo=(*cfg.data.pseudo, str(pl.resolve()))))


def _train_sed(
    data: Path,
    cfg: Config,
    run: Path,
    resume: bool,
    val_data: str | Path | None,
    quiet: bool,
    extra_callbacks: list | None,
) -> Path:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    last = run / SED_CHECKPOINT  # with resume, there (check_resume)
    ckpt_dir = last.parent
    held = read_checkpoint(last) if resume else None  # a bad file: refused, nothing touched
    resume_epoch = int(held.get("epoch", 0)) if held is not None else None
    record = None
    if held is not None:
        hparams = held.get("hyper_parameters")
        record = held_data(hparams.get("classes") if isinstance(hparams, dict) else None, held.get(DATA_KEY))
    del held
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    td = load_train_data(Path(data), run, cfg, Path(val_data) if val_data else None)
    identity = td.identity()
    if record is not None:
        check_same_data(last, record, identity)
    write_run_config(run, cfg, resume)
    t = cfg.train
    items = build_items(td.train, cfg.data, t.seed)
    tgt = targets(td.train, td.classes, cfg.data)
    tgt.update(targets(td.val, td.classes, cfg.data))
    pool = None
    if cfg.data.pseudo:
        from birdsed.train.pseudo import load_pool

        pool = load_pool(
            list(cfg.data.pseudo), td.classes, run / "pseudo_store", t.workers or None, td.val.table["path"]
        )
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
    accel = lightning_accelerator(t.device)
    loader_kw = dict(
        num_workers=t.workers,
        pin_memory=accel == "gpu",
        persistent_workers=t.workers > 0,
        worker_init_fn=quiet_worker,
    )
    # loaders draw from their own generators, never the global one (a resumed run's RNG stream stays the same)
    sampler = EpochSampler(len(train_ds), t.seed, epoch=0 if resume_epoch is None else resume_epoch + 1)
    train_dl = DataLoader(
        train_ds,
        batch_size=t.batch_size,
        sampler=sampler,
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
    task.recordings = {"train": identity["train"], "val": identity["val"]}
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
    stop = StopCatcher()
    callbacks += [*(extra_callbacks or []), stop, SamplerEpoch(sampler)]
    trainer = L.Trainer(
        accelerator=accel,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision,
        max_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps > 0 else -1,  # 0 is no limit, as for the schedule (Lightning: none)
        gradient_clip_val=t.grad_clip or None,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
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
        fit_stoppable(
            trainer,
            stop,
            lambda: trainer.fit(task, train_dl, val_dl, ckpt_path=str(last) if resume else None, weights_only=True),
            last,
        )
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
        **aliases_entry(data),
    }  # what was kept
    model = task.model.to("cpu").to(memory_format=torch.contiguous_format)
    return save_model_dir(model, run / "model", extra=extra)
