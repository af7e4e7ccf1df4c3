"""The device and precision rules, written once for inference and training."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch

from birdsed.config import DEVICES, PRECISIONS
from birdsed.errors import ConfigError


def _check_device(device: str) -> None:
    if device.split(":")[0] not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")


def pick_device(device: str) -> torch.device:
    """ "auto" is the GPU when torch sees one, else the CPU."""
    _check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def use_bf16(precision: str, dev: torch.device) -> bool:
    """Inference in bf16 autocast: on CUDA by default; on CPUs with AMX/AVX512-BF16 on request (about 2x there,
    scores within ~1e-2)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and dev.type == "cuda")


def lightning_accelerator(device: str) -> str:
    """Lightning's accelerator for a --device: the same rule as pick_device."""
    return "gpu" if pick_device("cuda" if device == "gpu" else device).type == "cuda" else "cpu"


def lightning_precision(precision: str, accel: str) -> str:
    """train.precision for Lightning: auto is bf16-mixed on a GPU, 32-true on the CPU; anything else as given."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if accel == "gpu" else "32-true"


def check_devices(t) -> None:
    """train.devices (a TrainConfig's) within this machine: on the CPU one process per device, at most the cores
    this process may use; on CUDA at most the GPUs torch sees. A ConfigError naming the value and the limit."""
    from birdsed.machine import cores

    if t.devices == "auto":
        return
    gpu = lightning_accelerator(t.device) == "gpu"
    have, what = (torch.cuda.device_count(), "CUDA devices") if gpu else (cores(), "cores (one process per device)")
    if t.devices > have:
        raise ConfigError(f"train.devices = {t.devices}: this machine has {have} {what}; ask for at most {have}")


def die_with_parent() -> None:
    """In a process Lightning started for another device (LOCAL_RANK above 0), have Linux kill it when the process
    that started it dies: a killed `train --devices N` leaves no training process behind."""
    if int(os.environ.get("LOCAL_RANK", "0") or 0) == 0 or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request: nothing would kill this process later
        os._exit(1)
