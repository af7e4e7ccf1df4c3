"""What a training run keeps on disk and a kill must not corrupt: Lightning checkpoints and BirdNET's trainers' epoch
checkpoints, written atomically beside their path and read without running code, and metrics.csv, rewritten
atomically (a resumed run appends to the epochs it kept)."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from birdsed.config import Config, save_config
from birdsed.errors import ConfigError, ModelError
from birdsed.fsutil import atomic_path, remove_stale_temps, run_lock

log = logging.getLogger(__name__)


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


def close_epoch(ckpt: dict) -> None:
    """Count a checkpoint's epoch completed and its batches done, as the uninterrupted run does right after writing
    it, when no validation closed that epoch. last.ckpt is written at an epoch's end, before Lightning counts the
    epoch completed; resumed with max_steps and without validation, Lightning took that epoch for unfinished and
    went on with it: a batch past its end under the finished epoch's number, and every later epoch's crops and
    learning rate one epoch off. (With validation, or without max_steps, Lightning closes the epoch itself.)"""
    loops = ckpt.get("loops", {}).get("fit_loop", {})
    validated = loops.get("epoch_loop.val_loop.batch_progress", {}).get("total", {}).get("ready", 0)
    if validated or not isinstance(loops.get("epoch_progress"), dict):
        return
    for counts in loops["epoch_progress"].values():
        if isinstance(counts, dict) and {"processed", "completed"} <= counts.keys():
            counts["completed"] = counts["processed"]
    batches = loops.get("epoch_loop.batch_progress", {})
    if isinstance(batches.get("current"), dict):
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False


@contextlib.contextmanager
def held_run_folder(
    run: Path, swept: dict[Path, Iterable[str] | Callable[[str], bool]], lock: str = ".lock"
) -> Iterator[None]:
    """Hold `run`'s lock and remove what a killed run left half-written in the `swept` folders (each with the files
    the run writes there: remove_stale_temps), in the launching process (rank zero) alone: a multi-process run's
    other ranks start after it, and write nothing there."""
    run.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank != 0:
        yield
        return
    with run_lock(run, lock):
        for folder, owned in swept.items():
            remove_stale_temps(folder, owned)
        yield


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their path, then renamed over it. Lightning's own write goes
    through the system's temporary folder and is moved across file systems: a kill mid-move left a truncated
    last.ckpt (the run could not resume) and the whole checkpoint in /tmp."""

    def save_checkpoint(self, checkpoint: dict, path: str | os.PathLike, storage_options: object = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk is an OSError (errno)
            torch.save(checkpoint, f)


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


DATA_KEY = "birdsed_data"  # a Lightning checkpoint's record of its run's recordings ({"train": ids, "val": ids})
SED_CHECKPOINT = "checkpoints/last.ckpt"  # Lightning's (the CNNs), every epoch's end
EPOCH_CHECKPOINT = "checkpoints/last.pt"  # BirdNET's trainers (finetune.py, embedtrain.py): every epoch's end


def write_run_config(run: Path, cfg: Config, resume: bool) -> None:
    """RUN/config.yaml, as a run starts training (its data read); a fresh run (not `resume`) first removes the
    checkpoints an earlier run left in the folder: a fresh run killed before its first epoch ended would otherwise
    leave another run's checkpoint that `--resume` took for its own."""
    if not resume:
        for name in (SED_CHECKPOINT, EPOCH_CHECKPOINT):
            (run / name).unlink(missing_ok=True)
    save_config(cfg, run / "config.yaml")


EPOCH_KEYS = ("epoch", "step", "net", "opt", "sched", "rows")  # and "classes", "data", "ema", "best" where written


def write_epoch_checkpoint(path: Path, state: dict) -> None:
    """An epoch checkpoint of BirdNET's trainers (EPOCH_KEYS: tensors and plain data), written beside its path and
    renamed over it: a kill never leaves half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def epoch_state(
    epoch: int,
    step: int,
    rows: list[dict],
    data: dict[str, list[str]],
    opt: torch.optim.Optimizer,
    sched,
    saved: Callable[[torch.nn.Module], dict[str, torch.Tensor]],
    net: torch.nn.Module,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> dict:
    """What an epoch checkpoint holds (EPOCH_KEYS, the classes and the recordings of `data`, TrainData.identity):
    `net`'s weights as `saved` gives them, the optimiser and the schedule; with train.ema the average's weights and
    how many steps it holds ("ema")."""
    state = {"epoch": epoch, "step": step, "net": saved(net), "rows": rows, "classes": list(data["classes"])}
    state["data"] = {"train": list(data["train"]), "val": list(data["val"])}
    state.update(opt=opt.state_dict(), sched=sched.state_dict())
    if ema is not None:
        state["ema"] = {"net": saved(ema.module), "n": int(ema.n_averaged)}
    return state


def resume_optimiser(ckpt: dict, opt: torch.optim.Optimizer, sched, path: Path) -> tuple[int, int, list[dict]]:
    """Put an epoch checkpoint's optimiser and schedule back; returns (the epoch to go on with, the steps done, the
    rows of metrics.csv so far)."""
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    first = int(ckpt["epoch"]) + 1
    log.info("resuming after epoch %d from %s", first - 1, path)
    return first, int(ckpt["step"]), list(ckpt["rows"])


def read_epoch_checkpoint(path: Path, data: dict[str, list[str]] | None = None) -> dict:
    """An epoch checkpoint, read with weights_only (a planted file cannot run code); a damaged or foreign file is a
    ModelError naming it. With `data` (TrainData.identity of the data given), a checkpoint of a run on other data
    is a ConfigError saying how, before any weight is loaded (check_same_data)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad or unsafe files
        raise ModelError(
            f"{path}: not a readable training checkpoint (damaged, cut short, or not written by birdsed: torch "
            f"says {type(e).__name__}); nothing was changed"
        ) from e
    if not isinstance(ckpt, dict) or not set(EPOCH_KEYS) <= set(ckpt):
        raise ModelError(f"{path}: not a training checkpoint of birdsed; nothing was changed")
    if data is not None:
        rows = ckpt["rows"]
        validated = "val_macro_ap" in rows[-1] if rows and isinstance(rows[-1], dict) else None
        check_same_data(path, held_data(ckpt.get("classes"), ckpt.get("data")), data, validated)
    return ckpt


def held_data(classes: object, record: object) -> dict:
    """A checkpoint's record of its run's data, as check_same_data reads it: the classes, and the training and
    validation ids of `record` ({"train": ids, "val": ids}; anything else, or none: not held)."""
    return {"classes": classes, **(record if isinstance(record, dict) else {})}


def check_same_data(path: Path, held: dict, data: dict[str, list[str]], validated: bool | None = None) -> None:
    """`--resume` reads the data its run was trained on: the classes, the training and the validation recordings
    held in the checkpoint at `path` (any of them may be absent from an older one; `validated`: whether its run
    logged validation) against `data` (TrainData.identity). Another data set, a recording added or left out, a
    validation split added, dropped or drawn otherwise: a ConfigError naming the difference (the resumed run would
    go on with other items, a model of neither). A checkpoint whose record is not lists of names: a ModelError."""
    again = ": resume with the data the run was trained on (the same --data and --val), or train into a new --out"
    for key in ("classes", "train", "val"):
        if held.get(key) is not None and not (
            isinstance(held[key], (list, tuple)) and all(isinstance(x, str) for x in held[key])
        ):
            raise ModelError(f"{path}: its record of the run's {key} is not a list of names; nothing was changed")
    classes, had = data["classes"], held.get("classes")
    if had is not None and list(had) != list(classes):
        gone, new = sorted(set(had) - set(classes)), sorted(set(classes) - set(had))
        raise ConfigError(
            f"--resume: {path} was trained on {len(had)} classes, the data given has {len(classes)}"
            + (f" (not in the data: {_few(gone)})" if gone else "")
            + (f" (new: {_few(new)})" if new else "")
            + ("" if gone or new else " in another order")
            + again
        )
    if validated is not None and validated != bool(data["val"]):
        raise ConfigError(
            f"--resume: {path} was trained {'with' if validated else 'without'} a validation split (--val or "
            f"data.val_fraction), the data given have {'one' if data['val'] else 'none'}" + again
        )
    if held.get("train") is None or held.get("val") is None:
        return
    was, now = {*held["train"], *held["val"]}, {*data["train"], *data["val"]}
    if was != now:  # a recording moved between the splits is neither gone nor new
        gone, new = sorted(was - now), sorted(now - was)
        raise ConfigError(
            f"--resume: {path} was trained and validated on {len(was)} recordings, the data given have {len(now)}"
            + (f" (not in the data: {_few(gone, 3)})" if gone else "")
            + (f" (new: {_few(new, 3)})" if new else "")
            + again
        )
    if set(held["val"]) != set(data["val"]):
        moved = sorted(set(held["val"]) ^ set(data["val"]))
        raise ConfigError(
            f"--resume: {path} was validated on other recordings of the same data (in one split and not the other: "
            f"{_few(moved, 3)}; another --val, data.val_fraction or seed)" + again
        )


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def epoch_seed(seed: int, epoch: int) -> int:
    """The global torch generator's seed for one epoch (dropout draws from it), apart from the epoch's own
    generators': a resumed run's epoch draws the masks the uninterrupted run's did."""
    return int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])
