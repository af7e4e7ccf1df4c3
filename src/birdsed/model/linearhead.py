"""A linear classifier on BirdNET V2.4 embeddings (kind "birdnet_linear"), the model `birdsed learn` writes by
default: one logistic regression per class on the standardised 1,024-d embedding of a 3 s window.

It runs as a head of EmbeddingHeadModel (embedhead.py), which embeds 48 kHz windows with BirdNET: a 3 s window is
one sub-window (T' = 1), so the head sees (B, 1, 1024) and gives the SED head's three outputs (clipwise = the
window's score, segmentwise the same along T', norm_att uniform), and predict, tune and the decisions treat it as
any other kind.

    head = LinearHead(n_classes)                       # weight (K, D), bias (K,), mean and std (D,) buffers
    save_linear_dir(classes, head, out, hop_s=3.0)     # weights.safetensors + model.json
    model = load_model_dir(out)[0]                     # an EmbeddingHeadModel whose head is this one
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from birdsed import __version__
from birdsed.decisions import Thresholds
from birdsed.errors import ModelError
from birdsed.model.birdnet import EMBED_DIM, WINDOW_S
from birdsed.model.birdnet_labels import MODEL_FILE, SHA256
from birdsed.model.embedhead import EmbeddingHeadModel
from birdsed.model.kinds import LinearMeta
from birdsed.model.meta import write_meta
from birdsed.model.modeldir import load_weights, save_weights

LICENSE = "runs BirdNET V2.4, whose weights are CC BY-NC-SA 4.0 (non-commercial)"


class LinearHead(nn.Module):
    """(B, T', D) embeddings -> {"clipwise" (B, K), "segmentwise" (B, K, T'), "norm_att" (B, K, T')}:
    sigmoid(weight . (e - mean) / std + bias) per sub-window; clipwise is their maximum."""

    def __init__(self, n_classes: int, dim: int = EMBED_DIM):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.weight = nn.Parameter(torch.zeros(n_classes, dim))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K)."""
        return ((emb - self.mean) / self.std) @ self.weight.T + self.bias

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        seg = torch.sigmoid(self.logits(emb)).transpose(1, 2)  # (B, K, T')
        return {"clipwise": seg.amax(dim=-1), "segmentwise": seg, "norm_att": torch.full_like(seg, 1 / seg.shape[-1])}


def linear_model(classes: list[str], head: LinearHead, hop_s: float) -> EmbeddingHeadModel:
    """The Detector of a linear head: 3 s BirdNET windows every hop_s, one embedding each."""
    return EmbeddingHeadModel(classes, head, window_s=WINDOW_S, embed_hop_s=WINDOW_S, hop_s=hop_s, short_policy="pad")


def load_linear(model_dir: Path, meta: LinearMeta) -> EmbeddingHeadModel:
    """The loader of kind "birdnet_linear" (kinds.py): BirdNET V2.4 embeddings only, the head's weights."""
    e = meta.embedding
    if e.backbone != "birdnet" or e.sha256 != SHA256[MODEL_FILE]:
        raise ModelError(
            f"{meta.path}: embeddings of {e.backbone!r} (sha256 {e.sha256[:12]}...); "
            "this birdsed embeds with BirdNET V2.4 only"
        )
    head = LinearHead(len(meta.classes))
    load_weights(model_dir, head)
    model = linear_model(meta.classes, head.eval(), meta.hop_s)
    model.short_policy = meta.short_policy
    return model


def save_linear_dir(
    classes: list[str],
    head: LinearHead,
    out: str | Path,
    hop_s: float = WINDOW_S,
    thresholds: Thresholds | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a linear head as a model directory: its weights, then model.json (the saver of kind "birdnet_linear")."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(head, out)
    meta = {
        "birdsed_version": __version__,
        "kind": "birdnet_linear",
        "classes": list(classes),
        "embedding": {
            "backbone": "birdnet",
            "model_file": MODEL_FILE,
            "sha256": SHA256[MODEL_FILE],
            "window_s": WINDOW_S,
            "hop_s": WINDOW_S,
            "dim": EMBED_DIM,
        },
        "model": {"head": "linear", "hop_s": hop_s},
        "short_policy": "pad",
        "license": LICENSE,
        "thresholds": (thresholds or Thresholds()).to_dict(),
        **(extra or {}),
    }
    write_meta(out, meta)
    return out
