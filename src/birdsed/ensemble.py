"""Ensembles: several trained models over the same classes, their outputs averaged window by window.

Averaging a few models trained with other seeds or recipes was the largest single gain measured on
NIPS4B (docs/BENCHMARKS.md), as it was for most of the competition's top solutions.

An ensemble directory is a model directory whose model.json names its members instead of holding
weights; each member is a whole model directory inside it, so the folder travels (and is published)
as one piece:

  model.json          birdsed version, "ensemble": ["members/0", ...], classes, the first member's
                      front end, thresholds (the members' mean until `tune` sets its own)
  members/<i>/        weights.safetensors + model.json of member i

Members may differ in backbone, mel count or image scale; they must share classes and sample rate.
Their time-resolved outputs (segmentwise, norm_att) are resampled to the finest member's segment count.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdsed import __version__
from birdsed.config import OUTPUT_KINDS
from birdsed.decide import Thresholds
from birdsed.errors import ModelError
from birdsed.fsutil import atomic_dir, write_text_atomic
from birdsed.model import SEDModel

MEMBERS = "members"


def average_outputs(outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of several models' output dicts: clipwise (B, K); segmentwise and norm_att (B, K, T') each
    linearly resampled to the largest T' first (members with other image scales or backbones differ in T')."""
    if len(outs) == 1:
        return outs[0]
    t = max(o["segmentwise"].shape[-1] for o in outs)

    def at_t(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-1] == t else F.interpolate(x.float(), size=t, mode="linear", align_corners=False)

    res = {"clipwise": torch.stack([o["clipwise"].float() for o in outs]).mean(0)}
    for k in ("segmentwise", "norm_att"):
        res[k] = torch.stack([at_t(o[k].float()) for o in outs]).mean(0)
    res["norm_att"] = res["norm_att"] / res["norm_att"].sum(-1, keepdim=True).clamp_min(1e-12)  # sums to 1 over T' again
    return res


class Ensemble(nn.Module):
    """Several SEDModels as one: same classes, same sample rate; outputs averaged (average_outputs)."""

    def __init__(self, members: list[SEDModel]):
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one model")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            if m.classes != first.classes:
                raise ModelError(f"ensemble member {i} has other classes than member 0 "
                                 f"({len(m.classes)} vs {len(first.classes)}, or another order)")
            if m.frontend_cfg.sample_rate_hz != first.frontend_cfg.sample_rate_hz:
                raise ModelError(f"ensemble member {i} runs at {m.frontend_cfg.sample_rate_hz} Hz, member 0 at "
                                 f"{first.frontend_cfg.sample_rate_hz} Hz")
        self.members = nn.ModuleList(members)
        self.classes = list(first.classes)
        self.frontend_cfg = first.frontend_cfg

    def inference_copy(self) -> Ensemble:
        return Ensemble([m.inference_copy() for m in self.members])

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, n_samples) waveforms at the members' rate -> averaged output dict."""
        return average_outputs([m(wave) for m in self.members])


def is_ensemble(meta: dict) -> bool:
    return "ensemble" in meta


def member_dirs(model_dir: Path, meta: dict) -> list[Path]:
    names = meta["ensemble"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{model_dir / 'model.json'}: 'ensemble' must list member folders")
    dirs = [model_dir / n for n in names]
    for d in dirs:
        if model_dir.resolve() not in d.resolve().parents:
            raise ModelError(f"{model_dir / 'model.json'}: ensemble member {d} is outside the ensemble folder")
    return dirs


def mean_thresholds(members: list[Thresholds], classes: list[str]) -> Thresholds:
    """Per class and output kind, the members' mean threshold (a starting point; `tune` the ensemble for its own)."""
    glob = {k: float(np.mean([t.global_[k] for t in members])) for k in OUTPUT_KINDS}
    per = {k: {c: float(v) for c, v in zip(classes, np.mean([t.vector(k, classes) for t in members], axis=0))}
           for k in OUTPUT_KINDS}
    return Thresholds(glob, per)


def save_ensemble(model_dirs: list[str | Path], out: str | Path) -> Path:
    """Copy the model directories into an ensemble directory `out` (written beside it, then renamed)."""
    from birdsed.modeldir import META, WEIGHTS, load_model_dir

    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists; give a new folder for the ensemble")
    if len(model_dirs) < 2:
        raise ModelError("an ensemble needs at least two model directories")
    loaded = [load_model_dir(d) for d in model_dirs]  # checks each member whole before anything is written
    for d, (model, _, _) in zip(model_dirs, loaded):
        if isinstance(model, Ensemble):
            raise ModelError(f"{d} is an ensemble already; give its members instead")
    ens = Ensemble([model for model, _, _ in loaded])
    names = [f"{MEMBERS}/{i}" for i in range(len(model_dirs))]
    first = loaded[0][2]
    meta = {"birdsed_version": __version__, "ensemble": names, "classes": ens.classes, "frontend": first["frontend"],
            "model": {"members": len(names), "backbones": [m.model_cfg.backbone for m in ens.members]},
            "thresholds": mean_thresholds([thr for _, thr, _ in loaded], ens.classes).to_dict(),
            "default_output": first.get("default_output", "segmentwise"),
            "sources": [str(Path(d).resolve()) for d in model_dirs]}
    with atomic_dir(out) as tmp:
        for d, name in zip(map(Path, model_dirs), names):
            (tmp / name).mkdir(parents=True)
            for f in (WEIGHTS, META):
                shutil.copy2(d / f, tmp / name / f)
        write_text_atomic(tmp / META, json.dumps(meta, indent=2))
    return out
