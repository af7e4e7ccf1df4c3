"""Ensembles: several trained models over the same classes, their outputs averaged window by window.

Averaging a few models trained with other seeds or recipes was the largest single gain measured on
NIPS4B (docs/BENCHMARKS.md), as it was for most of the competition's top solutions.

An ensemble directory is a model directory whose model.json names its members instead of holding
weights; each member is a whole model directory inside it, so the folder travels (and is published)
as one piece:

  model.json          birdsed version, "ensemble": ["members/0", ...], classes, the first member's
                      front end, thresholds (the members' mean until `tune` sets its own)
  members/<i>/        weights.safetensors + model.json of member i

Members may be of any kind (detector.py) and differ in backbone, mel count, image scale or sample rate (a member
at a lower rate than the highest gets each stretch of audio resampled to its own); they must share classes and
window length, so that they score the same windows and their rows align on the 5 s grid. Their time-resolved
outputs (segmentwise, norm_att) are resampled to the finest member's segment count. The directory is written and
read by modeldir.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch
import torch.nn.functional as F

from birdsed.config import OUTPUT_KINDS
from birdsed.decisions import Thresholds
from birdsed.errors import ModelError
from birdsed.model.detector import Detector, float32_runtime
from birdsed.model.windows import Piece

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport


def average_outputs(outs: list[dict[str, torch.Tensor]], weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The (weighted) mean of several models' output dicts: clipwise (B, K); segmentwise and norm_att (B, K, T')
    each linearly resampled to the largest T' first (members with other image scales or backbones differ in T';
    a model with one score a window has T' = 1). weights sum to 1 (default equal)."""
    if len(outs) == 1:
        return outs[0]
    t = max(o["segmentwise"].shape[-1] for o in outs)
    w = torch.tensor(weights if weights is not None else [1.0 / len(outs)] * len(outs))

    def at_t(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 1:
            return x.float().expand(*x.shape[:-1], t)
        return x if x.shape[-1] == t else F.interpolate(x.float(), size=t, mode="linear", align_corners=False)

    def mean(xs: list[torch.Tensor]) -> torch.Tensor:
        s = torch.stack(xs)  # (M, ...)
        return (s * w.to(s.device).view(-1, *([1] * (s.dim() - 1)))).sum(0)

    res = {"clipwise": mean([o["clipwise"].float() for o in outs])}
    for k in ("segmentwise", "norm_att"):
        res[k] = mean([at_t(o[k].float()) for o in outs])
    res["norm_att"] = res["norm_att"] / res["norm_att"].sum(-1, keepdim=True).clamp_min(
        1e-12
    )  # sums to 1 over T' again
    return res


class Ensemble:
    """Several Detectors as one (detector.py): same classes, sample rate and window; their per-window outputs
    averaged, weighted by `weights` (default equal), as average_outputs does."""

    def __init__(self, members: list[Detector], weights: list[float] | None = None):
        if not members:
            raise ModelError("an ensemble needs at least one model")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            if m.classes != first.classes:
                raise ModelError(
                    f"ensemble member {i} has other classes than member 0 "
                    f"({len(m.classes)} vs {len(first.classes)}, or another order)"
                )
            if m.window_s != first.window_s:
                raise ModelError(
                    f"ensemble member {i} scores {m.window_s:g} s windows, member 0 {first.window_s:g} s: "
                    "members must score the same windows"
                )
        self.weights = check_weights(weights, len(members))
        self.members = list(members)
        self.classes = list(first.classes)
        # the stream runs at the highest member rate; members at another rate get each piece resampled (at_rate)
        self.sample_rate_hz = max(m.sample_rate_hz for m in members)
        self.window_s, self.hop_s = first.window_s, first.hop_s
        self.short_policy = first.short_policy  # members fit short recordings each as they trained (window_outputs)

    def for_inference(self, device: torch.device) -> Ensemble:
        return Ensemble([m.for_inference(device) for m in self.members], self.weights)

    def float32_runtime(self, device: torch.device) -> str | None:
        """The members' runtimes outside torch (detector.float32_runtime), named once each; None when torch runs
        them all."""
        names = dict.fromkeys(r for m in self.members if (r := float32_runtime(m, device)))
        return ", ".join(names) or None

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        outs = []
        for m in self.members:
            if m.sample_rate_hz == self.sample_rate_hz:
                outs.append(m.window_outputs(audio, pieces, window, hop, short_policy))
            else:
                a, ps, w, h = at_rate(audio, pieces, window, hop, self.sample_rate_hz, m.sample_rate_hz)
                outs.append(m.window_outputs(a, ps, w, h, short_policy))
        return average_outputs(outs, self.weights)

    def onnx_export(self) -> OnnxExport:
        raise ModelError("an ensemble has no single ONNX graph; export its members one by one (members/*)")

    def eval(self) -> Ensemble:
        return self

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, n_samples) waveforms at the members' rate -> averaged output dict."""
        return average_outputs([m(wave) for m in self.members], self.weights)


def at_rate(
    audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, rate_hz: int, to_hz: int
) -> tuple[torch.Tensor, list[Piece], int, int]:
    """The pieces' audio resampled (soxr) from rate_hz to to_hz, with new pieces, window and hop in samples at to_hz;
    every piece keeps its windows (trimmed or zero-padded to exactly their span), so rows align across rates."""
    w, h = round(window * to_hz / rate_hz), round(hop * to_hz / rate_hz)
    parts, new, at = [], [], 0
    for q in pieces:
        x = soxr.resample(q.audio_of(audio).float().cpu().numpy(), rate_hz, to_hz).astype(np.float32)
        n = (q.n_windows - 1) * h + w
        x = np.pad(x[:n], (0, max(0, n - len(x))))
        short = min(n, round(q.short_len * to_hz / rate_hz)) if q.short_len else 0
        new.append(Piece(q.file, q.first_window, q.n_windows, at, n, short))
        parts.append(x)
        at += n
    return torch.from_numpy(np.concatenate(parts)).to(audio.device), new, w, h


def check_weights(weights: list[float] | None, n: int) -> list[float]:
    """Member weights normalised to sum to 1; None: equal. Each must be finite and positive; they are scaled by
    their largest first, so that their sum stays finite (1e308 twice is 0.5 each, not 0)."""
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ModelError(f"{len(w)} weights for {n} ensemble members")
    if not all(np.isfinite(x) and x > 0 for x in w):
        raise ModelError(f"ensemble weights must be finite and > 0, got {w}")
    top = max(w)
    scaled = [x / top for x in w]  # in (0, 1]: the sum is at most n
    if not all(x > 0 for x in scaled):
        raise ModelError(f"ensemble weights {w}: their ratio is beyond what a float holds")
    return [x / sum(scaled) for x in scaled]


def mean_thresholds(members: list[Thresholds], classes: list[str]) -> Thresholds:
    """Per class and output kind, the members' mean threshold (a starting point; `tune` the ensemble for its own)."""
    glob = {k: float(np.mean([t.global_[k] for t in members])) for k in OUTPUT_KINDS}
    per = {
        k: {c: float(v) for c, v in zip(classes, np.mean([t.vector(k, classes) for t in members], axis=0))}
        for k in OUTPUT_KINDS
    }
    return Thresholds(glob, per)
