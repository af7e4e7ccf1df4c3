"""model.json, read and written without torch: what kind of model a directory holds, its classes, thresholds,
default output and members, checked; its digest; copies. Loading the networks is modeldir.py's.

The files of a model directory:
  model.json            every kind: kind, classes, thresholds, default_output, and the kind's own keys
  weights.safetensors   the network's weights (sed, birdnet_head)
  members/<i>/          an ensemble's members, each a model directory
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from birdsed.config import DEFAULT_OUTPUT, OUTPUT_KINDS, FrontendConfig, section_from_dict
from birdsed.errors import ConfigError, ModelError
from birdsed.fsutil import write_text_atomic
from birdsed.infer.decide import Thresholds

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


def default_output_of(meta: dict[str, Any]) -> str:
    """The output kind predict decides on: model.json's default_output (set by tune), else DEFAULT_OUTPUT."""
    kind = meta.get("default_output", DEFAULT_OUTPUT)
    if kind not in OUTPUT_KINDS:
        raise ModelError(f"model.json default_output {kind!r}: valid: {list(OUTPUT_KINDS)}")
    return kind


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


def frontend_of(model_dir: Path, meta: dict[str, Any]) -> FrontendConfig:
    """model.json's front end, every value type- and range-checked (a ModelError naming the file)."""
    try:
        frontend = section_from_dict(FrontendConfig, meta["frontend"], str(model_dir / META), "frontend")
        frontend.check()
    except ConfigError as e:
        raise ModelError(f"{model_dir / META}: {e}") from None
    return frontend


def thresholds_of(model_dir: Path, meta: dict[str, Any]) -> Thresholds:
    """model.json's thresholds, checked (numbers in [0, 1]; a ModelError naming the file)."""
    try:
        return Thresholds.from_dict(meta.get("thresholds"))
    except ConfigError as e:
        raise ModelError(f"{Path(model_dir) / META}: {e}") from None


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
