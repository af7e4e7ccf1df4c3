"""The training loss: binary cross-entropy on probabilities, optionally weighted per item."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on probabilities (targets may be soft), in float32 (unsafe under autocast otherwise);
    with w (B,), each example's mean loss is weighted by it (its share of the batch mean)."""
    with torch.autocast(device_type=p.device.type, enabled=False):
        if w is None:
            return F.binary_cross_entropy(p.float().clamp(1e-7, 1 - 1e-7), y.float())
        per = F.binary_cross_entropy(p.float().clamp(1e-7, 1 - 1e-7), y.float(), reduction="none").flatten(1).mean(1)
        return (per * w.float()).mean()
