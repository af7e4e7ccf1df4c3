"""model.json, read and written without torch: what kind of model a directory holds, its classes, thresholds,
default output and members, checked by its kind's typed metadata (kinds.py); its digest; copies. A file of a model
folder that is a link leaving the folder is refused (own_file). Loading the networks is modeldir.py's.

The files of a model directory:
  model.json            every kind: kind, classes, thresholds, default_output, and the kind's own keys
  weights.safetensors   the network's weights (sed, birdnet_head, birdnet_linear, birdnet_finetuned)
  members/<i>/          an ensemble's members, each a model directory
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from birdsed.decisions import Thresholds
from birdsed.errors import ModelError
from birdsed.fsutil import file_sha256, hash_file, write_text_atomic
from birdsed.model.kinds import KINDS, MAX_MEMBERS, EnsembleMeta, ModelMeta, parse_meta

__all__ = ["MAX_MEMBERS"]

WEIGHTS = "weights.safetensors"

META = "model.json"

MEMBERS = "members"

MAX_META_BYTES = 64 << 20  # a model.json of 6,522 BirdNET classes is under 1 MB

DECIDING_KEYS = ("thresholds", "default_output", "calibration", "birdsed_version")  # not part of the model's digest


def own_file(model_dir: str | Path, name: str) -> Path:
    """`model_dir/name`, refused (a ModelError naming it) when it is a link that leaves the model folder: a loaded
    model reads only its own folder (docs/reliability.md: links in a model folder)."""
    path = Path(model_dir) / name
    if path.is_symlink() and Path(model_dir).resolve() not in path.resolve().parents:
        raise ModelError(f"{path}: a link to {path.resolve()}, outside the model folder; a model reads only its own")
    return path


def read_model_meta(model_dir: str | Path) -> ModelMeta:
    """model.json as its kind's typed metadata (model/kinds.py), every value checked (`.raw`: as read, what is
    written back): a ModelError naming the file and what is wrong (no JSON, nested too deeply, a key missing, a value
    of the wrong type or out of range, a link out of the folder). The one reader of model.json."""
    path = own_file(model_dir, META)
    if not path.is_file():
        raise ModelError(f"{model_dir}: not a model directory (no {META})")
    if path.stat().st_size > MAX_META_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size} bytes; a model.json is at most {MAX_META_BYTES}")
    try:
        raw = json.loads(path.read_text())
    except RecursionError:
        raise ModelError(f"{path}: nested too deeply to be a model.json") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from e
    return parse_meta(path, raw)


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write model.json, checked first by its kind's typed metadata: what birdsed writes, it can load again."""
    parse_meta(out / META, meta)
    write_text_atomic(out / META, json.dumps(meta, indent=2))


def member_dirs(model_dir: Path, meta: EnsembleMeta) -> list[Path]:
    """An ensemble's member folders (their names checked by model/kinds.py), each inside the ensemble's folder."""
    return [model_dir / n for n in meta.members]


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of the directory's weights file: what `export --onnx` stamps into the export, so that a stale one
    (the model trained again into the same folder since) is refused."""
    return file_sha256(Path(model_dir) / WEIGHTS)


def model_digest(model_dir: str | Path, meta: ModelMeta | None = None) -> str:
    """sha256 of what makes the model's scores: every file of the directory (an ensemble's members too) but
    model.json's thresholds, default output and calibration, which only decide. predict stamps its --out with it.
    meta: the directory's model.json already read (read_model_meta), so that it is not read again."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    meta = read_model_meta(model_dir) if meta is None else meta
    scoring = {k: v for k, v in meta.raw.items() if k not in DECIDING_KEYS}
    h.update(json.dumps(scoring, sort_keys=True).encode())
    for f in sorted(own_file(model_dir, p.name) for p in model_dir.iterdir() if p.is_file() and p.name != META):
        h.update(f.name.encode())
        hash_file(h, f)
    if isinstance(meta, EnsembleMeta):
        for d in member_dirs(model_dir, meta):
            h.update(model_digest(d).encode())
    return h.hexdigest()


def required_licences(model_dir: str | Path) -> set[str]:
    """The licences a model directory must be shared under (its kind's, an ensemble's members' too): e.g. BirdNET
    V2.4's CC BY-NC-SA 4.0 for anything that runs or holds its weights; empty when the sharer may choose."""
    model_dir = Path(model_dir)
    meta = read_model_meta(model_dir)
    found = {KINDS[meta.kind].licence} - {""}
    if isinstance(meta, EnsembleMeta):
        for d in member_dirs(model_dir, meta):
            found |= required_licences(d)
    return found


def copy_model_dir(model_dir: str | Path, out: str | Path) -> None:
    """Copy a model directory's files (an ensemble's members inside it) into `out`; links and stray folders are not
    followed."""
    model_dir, out = Path(model_dir), Path(out)
    meta = read_model_meta(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and not f.is_symlink():
            shutil.copy2(f, out / f.name)
    if isinstance(meta, EnsembleMeta):
        for d in member_dirs(model_dir, meta):
            copy_model_dir(d, out / d.relative_to(model_dir))


def update_thresholds(model_dir: str | Path, thresholds: Thresholds, default_output: str | None = None) -> None:
    """Store tuned thresholds (and the output kind predict should decide on) in model.json."""
    meta = dict(read_model_meta(model_dir).raw)
    meta["thresholds"] = thresholds.to_dict()
    if default_output:
        meta["default_output"] = default_output
    write_meta(Path(model_dir), meta)
