"""The Detector interface: what every kind of model gives `predict`, `tune`, `ensemble`, `report` and `export`.

A kind of model (an SED network, an ensemble, an ONNX export, BirdNET, a head on BirdNET embeddings) is
one class implementing this; nothing downstream asks which kind it holds. The model directory
(modeldir.py) maps a `kind` in model.json to the class that loads it.

A detector is handed the audio of an inference batch (one tensor at its own sample rate) and the pieces
of recordings in it (windows.Piece), and returns per-window outputs in the SED head's shapes:

  clipwise    (W, K)      one score per window and class
  segmentwise (W, K, T')  scores along the window's time (T' = 1 for a model with one score a window)
  norm_att    (W, K, T')  attention weights over T', summing to 1

so that the three output kinds predict writes (clipwise, segmentwise, att) exist for every kind.

Optional: a kind that can give one embedding per window (`birdsed embed`, search/) implements

  window_embeddings(audio, pieces, window, hop, short_policy) -> (W, D)   the same windows as window_outputs
  embedding_dim: int            D
  embedding_space: str | None   what makes two models' embeddings comparable (BirdNET's file and window), None:
                                the model's own (its digest stands for it)

(`window_embeddings` below calls it, or refuses a kind without it, naming it).

Optional too: a kind that runs, on some device, outside torch and in float32 whatever --precision asks (LiteRT,
ONNX Runtime, OpenVINO) says so with

  float32_runtime(device) -> str | None   that runtime's name there, None where torch runs it

(`float32_runtime` below; predict says once that bf16 does not apply there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from birdsed.errors import ModelError
from birdsed.model.windows import Piece

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport


@runtime_checkable
class Detector(Protocol):
    classes: list[str]
    sample_rate_hz: int  # the rate its windows are decoded at
    window_s: float  # the audio one window holds (5 s for the SED models, 3 s for BirdNET)
    hop_s: float  # the hop between windows predict uses unless told otherwise
    short_policy: str  # "loop" | "pad": how it fits a recording shorter than a window

    def for_inference(self, device: torch.device) -> Detector:
        """A copy (or self) ready to score on `device`, in eval mode; the original is not changed."""
        ...

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        """Outputs for every window of `pieces` in order (shapes above); `audio` [shape=(n,)] holds the pieces'
        samples; `short_policy` overrides the detector's own when given."""
        ...

    def onnx_export(self) -> OnnxExport:
        """What `export --onnx` traces (onnx_detector.OnnxExport); a ModelError for kinds that have no ONNX graph."""
        ...


def window_scores(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One score per class for each output kind of a window, each (B, K):
    clipwise; segmentwise = max_t segmentwise; att = max_t norm_att * segmentwise."""
    return {
        "clipwise": out["clipwise"],
        "segmentwise": out["segmentwise"].amax(dim=-1),
        "att": (out["norm_att"] * out["segmentwise"]).amax(dim=-1),
    }


def segment_scores(out: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Time-resolved scores of a window, each [shape=(B, K, T')]: segmentwise, and att = norm_att * segmentwise."""
    seg = out["segmentwise"].float()
    return {"segmentwise": seg.cpu().numpy(), "att": (out["norm_att"].float() * seg).cpu().numpy()}


def window_embeddings(
    model: Detector, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
) -> torch.Tensor:
    """The embedding of every window of `pieces` [shape=(W, D)], as window_outputs orders them; a ModelError for a
    kind of model that gives none (an ensemble, an ONNX export)."""
    fn = getattr(model, "window_embeddings", None)
    if fn is None:
        raise ModelError(
            f"a {type(model).__name__} model gives no window embedding (BirdNET, a head on BirdNET embeddings and the "
            "SED networks do): embed with one of those"
        )
    return fn(audio, pieces, window, hop, short_policy)


def float32_runtime(model: Detector, device: torch.device) -> str | None:
    """The runtime outside torch that runs `model` on `device` in float32 whatever the precision asked (its optional
    `float32_runtime`); None where torch runs it."""
    fn = getattr(model, "float32_runtime", None)
    return fn(device) if callable(fn) else None


def can_embed(model: Detector) -> bool:
    return callable(getattr(model, "window_embeddings", None))
