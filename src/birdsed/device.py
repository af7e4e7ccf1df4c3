"""The device and precision rules, written once for inference and training."""

from __future__ import annotations

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
