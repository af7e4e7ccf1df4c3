"""The model directory: weights.safetensors + model.json. Loading never unpickles."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from birdsed import __version__
from birdsed.config import FrontendConfig, ModelConfig
from birdsed.decide import Thresholds
from birdsed.ensemble import Ensemble, is_ensemble, member_dirs
from birdsed.errors import ModelError
from birdsed.fsutil import atomic_path, write_text_atomic
from birdsed.model import SEDModel

WEIGHTS = "weights.safetensors"
META = "model.json"


def save_model_dir(model: SEDModel, out: str | Path, thresholds: Thresholds | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write `model` with its configs, classes and thresholds; the weights first, model.json last."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    meta = {
        "birdsed_version": __version__,
        "classes": model.classes,
        "frontend": asdict(model.frontend_cfg),
        "model": {**asdict(model.model_cfg), "pretrained": False, "in_chans": model.in_chans},  # weights are in the file
        "thresholds": (thresholds or Thresholds()).to_dict(),
        **(extra or {}),
    }
    write_text_atomic(out / META, json.dumps(meta, indent=2))
    return out


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / META
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a model directory (no {META})")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from e
    for key in ("classes", "frontend", "model"):
        if key not in meta:
            raise ModelError(f"{path}: missing {key!r}")
    return meta


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SEDModel | Ensemble, Thresholds, dict]:
    """Rebuild the model (or ensemble, ensemble.py) from its directory alone; returns (model in eval mode,
    thresholds, meta)."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    if is_ensemble(meta):
        members = [load_model_dir(d, device)[0] for d in member_dirs(model_dir, meta)]
        return Ensemble(members).eval(), Thresholds.from_dict(meta.get("thresholds")), meta
    try:
        model = SEDModel(FrontendConfig(**meta["frontend"]), ModelConfig(**meta["model"]), meta["classes"])
    except TypeError as e:
        raise ModelError(f"{model_dir / META}: config does not fit this birdsed ({e})") from e
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{model_dir}: no {WEIGHTS}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelError(f"{weights}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit the model in {META} ({str(e)[:300]})") from e
    model.short_policy = short_policy_of(meta)
    return model.to(device).eval(), Thresholds.from_dict(meta.get("thresholds")), meta


def short_policy_of(meta: dict[str, Any]) -> str:
    """How the model saw recordings shorter than its crop in training ("loop" or "pad"); models saved before
    birdsed wrote it were predicted with zero padding, so "pad"."""
    return meta.get("short_policy", "pad")


def weights_bytes(model_dir: str | Path) -> int:
    """The size of the model's weights (an ensemble's: all its members'), a cheap stamp of which model ran."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    if is_ensemble(meta):
        return sum(weights_bytes(d) for d in member_dirs(model_dir, meta))
    return (model_dir / WEIGHTS).stat().st_size


def update_thresholds(model_dir: str | Path, thresholds: Thresholds, default_output: str | None = None) -> None:
    """Store tuned thresholds (and the output kind predict should decide on) in model.json."""
    meta = read_meta(model_dir)
    meta["thresholds"] = thresholds.to_dict()
    if default_output:
        meta["default_output"] = default_output
    write_text_atomic(Path(model_dir) / META, json.dumps(meta, indent=2))
