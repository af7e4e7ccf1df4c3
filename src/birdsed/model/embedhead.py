"""birdsed's attention (SED) head on frozen BirdNET V2.4 embeddings (model.backbone: birdnet;
config/presets/birdnet.yaml).

A 5 s window at 48 kHz is cut into 3 s sub-windows every `embed_hop_s` (1 s: three of them, at 0, 1 and 2 s),
BirdNET embeds each (birdnet.py, 1,024-d), and the sequence (B, T' = 3, 1024) goes through the PANNs head as a
feature map with one frequency cell, so clipwise, segmentwise and att and every decision rule work as for the
CNNs. Training (embedtrain.py) sees cached embeddings only, so a head trains in minutes on a CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from birdsed import __version__
from birdsed.decisions import Thresholds
from birdsed.errors import ModelError
from birdsed.model.birdnet import EMBED_DIM, N_SAMPLES, SAMPLE_RATE_HZ, backend_for, shared_runtime
from birdsed.model.birdnet_info import LICENSE_NOTE
from birdsed.model.birdnet_labels import MODEL_FILE, SHA256
from birdsed.model.kinds import HeadMeta
from birdsed.model.meta import write_meta
from birdsed.model.modeldir import load_weights, save_weights
from birdsed.model.sed import AttentionHead
from birdsed.model.windows import SED_HOP_S, Piece, fitted_audio

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport


def n_subwindows(window_s: float, embed_hop_s: float, sub_s: float = N_SAMPLES / SAMPLE_RATE_HZ) -> int:
    """3 s sub-windows of a window, every embed_hop_s from its start, each wholly inside it (at least one)."""
    return max(1, int((window_s - sub_s) / embed_hop_s + 1e-9) + 1)


class EmbeddingHead(nn.Module):
    """(B, T', 1024) embeddings -> {"clipwise" (B, K), "segmentwise" (B, K, T'), "norm_att" (B, K, T')}.

    The embeddings are standardised by the training set's statistics (buffers), then pass through the PANNs head.

    With `prior` (model.birdnet_prior), BirdNET's own classifier row of each class that maps to a BirdNET label
    (birdnet.map_classes) gives that class a logit per sub-window, W_c . e + b_c on the raw embedding, which is
    scaled by a learnt gain per class (starting at 1) and added to the head's segment logits. The head then starts
    from BirdNET's detector and learns what the data set adds (its own classes, call and song apart, its site);
    unmapped classes (prior_known 0) get no prior. The rows are buffers, saved with the head's weights."""

    def __init__(self, n_classes: int, dropout: float = 0.5, dim: int = EMBED_DIM, prior: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.head = AttentionHead(dim, n_classes, dropout)
        self.prior = prior
        if prior:
            self.register_buffer("prior_w", torch.zeros(n_classes, dim))
            self.register_buffer("prior_b", torch.zeros(n_classes))
            self.register_buffer("prior_known", torch.zeros(n_classes))
            self.prior_gain = nn.Parameter(torch.ones(n_classes))

    def set_prior(self, w: torch.Tensor, b: torch.Tensor, known: torch.Tensor) -> None:
        """w (K, D), b (K,): BirdNET's classifier rows of the classes' labels; known (K,) bool: the class maps."""
        assert self.prior and w.shape == self.prior_w.shape and b.shape == known.shape == self.prior_b.shape
        k = known.float()
        self.prior_w.copy_(w * k[:, None])
        self.prior_b.copy_(b * k)
        self.prior_known.copy_(k)

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (emb - self.mean) / self.std  # (B, T', D)
        offset = None
        if self.prior:
            logit = emb @ self.prior_w.T + self.prior_b  # (B, T', K): BirdNET's logits of the mapped labels
            offset = (logit * (self.prior_gain * self.prior_known)).transpose(1, 2)  # (B, K, T')
        return self.head(x.transpose(1, 2)[:, :, None, :], offset)  # (B, D, F' = 1, T')


def cut_subwindows(windows: torch.Tensor, step: int, n_sub: int) -> torch.Tensor:
    """(W, window) 48 kHz -> (W, n_sub, 144000): BirdNET's 3 s sub-windows every `step` samples."""
    return windows.unfold(1, N_SAMPLES, step)[:, :n_sub]


class WindowNet(nn.Module):
    """(1, window) 48 kHz -> the head's outputs for that one window (clipwise (1, K); segmentwise, norm_att
    (1, K, T')): its sub-windows cut as predict cuts them (every `step` samples, `n_sub` of them), each embedded
    by BirdNET's torch `port`: what `export --onnx` traces for a head on BirdNET."""

    def __init__(self, port: nn.Module, head: nn.Module, n_sub: int, step: int):
        super().__init__()
        self.port, self.head, self.n_sub, self.step = port, head, n_sub, step

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        subs = cut_subwindows(wave, self.step, self.n_sub)  # (B, T', 144000)
        b, n = subs.shape[:2]
        return self.head(self.port(subs.reshape(b * n, N_SAMPLES))[1].float().view(b, n, EMBED_DIM))


def window_export(model: EmbeddingHeadModel, port: nn.Module, license: str) -> OnnxExport:
    """The ONNX export of a head on BirdNET embedded by `port` (BirdNETTorch: as shipped, or fine-tuned; copies of
    it and the head, on the CPU): one window of model.window_s a call (the port's shapes are fixed when traced),
    the licence its weights carry in the file's metadata."""
    from birdsed.model.onnx_detector import OnnxExport

    net = WindowNet(copy.deepcopy(port).cpu(), copy.deepcopy(model.head).cpu(), model.n_sub, model.sub_step)
    return OnnxExport(
        net.eval(),
        SAMPLE_RATE_HZ,
        int(round(model.window_s * SAMPLE_RATE_HZ)),
        ("clipwise", "segmentwise", "norm_att"),
        batch=1,
        metadata={"license": license},
    )


class EmbeddingHeadModel:
    """A Detector (detector.py): 48 kHz windows of window_s -> BirdNET embeddings of their sub-windows -> the head."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(
        self,
        classes: list[str],
        head: EmbeddingHead,
        window_s: float = 5.0,
        embed_hop_s: float = 1.0,
        hop_s: float = SED_HOP_S,
        short_policy: str = "loop",
    ):
        if embed_hop_s <= 0 or window_s * SAMPLE_RATE_HZ < N_SAMPLES:
            raise ModelError(
                f"a BirdNET-embedding head needs windows of at least 3 s and a positive embed_hop_s, "
                f"got window_s {window_s}, embed_hop_s {embed_hop_s}"
            )
        self.classes, self.head = list(classes), head
        self.window_s, self.embed_hop_s, self.hop_s, self.short_policy = window_s, embed_hop_s, hop_s, short_policy
        self.n_sub = n_subwindows(window_s, embed_hop_s)
        self.device = torch.device("cpu")  # where BirdNET runs (for_inference)

    @classmethod
    def from_meta(cls, meta: HeadMeta) -> EmbeddingHeadModel:
        """From model.json's checked "embedding" and "model" sections (kinds.py): BirdNET V2.4 embeddings only."""
        e = meta.embedding
        if e.backbone != "birdnet" or e.sha256 != SHA256[MODEL_FILE]:
            raise ModelError(
                f"{meta.path}: embeddings of {e.backbone!r} (sha256 {e.sha256[:12]}...); "
                "this birdsed embeds with BirdNET V2.4 only"
            )
        head = EmbeddingHead(len(meta.classes), meta.dropout, prior=meta.birdnet_prior)
        return cls(meta.classes, head, e.window_s, e.hop_s, short_policy=meta.short_policy)

    def meta(self) -> dict[str, Any]:
        """The model.json sections that rebuild this model (modeldir.py writes them)."""
        return {
            "embedding": {
                "backbone": "birdnet",
                "model_file": MODEL_FILE,
                "sha256": SHA256[MODEL_FILE],
                "window_s": self.window_s,
                "hop_s": self.embed_hop_s,
                "dim": EMBED_DIM,
            },
            "model": {"backbone": "birdnet", "dropout": self.head.head.dropout, "birdnet_prior": self.head.prior},
            "short_policy": self.short_policy,
        }

    @property
    def sub_step(self) -> int:
        """Samples between the starts of a window's sub-windows."""
        return int(round(self.embed_hop_s * SAMPLE_RATE_HZ))

    def sub_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(W, window) 48 kHz -> (W, T', 144000) sub-windows."""
        return cut_subwindows(windows, self.sub_step, self.n_sub)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(W, window) -> (W, T', 1024) BirdNET embeddings."""
        runtime = shared_runtime(True, self.device)
        subs = self.sub_windows(windows.float()).reshape(-1, N_SAMPLES)
        emb = runtime.embed(subs if backend_for(self.device) == "torch" else subs.cpu().numpy())
        return torch.from_numpy(emb).view(len(windows), self.n_sub, EMBED_DIM)

    def float32_runtime(self, device: torch.device) -> str | None:
        """BirdNET's embeddings in LiteRT on the CPU (backend_for), in float32; torch on CUDA."""
        return "LiteRT" if backend_for(device) == "litert" else None

    def for_inference(self, device: torch.device) -> EmbeddingHeadModel:
        """BirdNET on `device` (backend_for: torch on CUDA, LiteRT on the CPU); the head, tiny, on the CPU."""
        fast = copy.copy(self)
        fast.device = torch.device(device)
        shared_runtime(True, fast.device)  # built now, not in the middle of a batch
        fast.head = copy.deepcopy(self.head).eval().cpu()
        return fast

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        policy = short_policy or self.short_policy
        windows = torch.cat([fitted_audio(audio, q, policy).unfold(0, window, hop) for q in pieces])
        return self.head(self.embed(windows))

    def window_embeddings(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> torch.Tensor:
        """BirdNET's embedding of each window: the mean over its sub-windows [shape=(W, 1024)]."""
        policy = short_policy or self.short_policy
        windows = torch.cat([fitted_audio(audio, q, policy).unfold(0, window, hop) for q in pieces])
        return self.embed(windows).mean(dim=1)

    embedding_dim = EMBED_DIM

    @property
    def embedding_space(self) -> str | None:
        return (
            f"BirdNET V2.4 ({SHA256[MODEL_FILE][:12]}), mean of {self.n_sub} 3 s sub-windows every "
            f"{self.embed_hop_s:g} s"
        )

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.embed(wave))

    def onnx_export(self) -> OnnxExport:
        """BirdNET (as shipped, through the torch port) and the head, one window a call."""
        from birdsed.model.birdnet_torch import load_birdnet_torch

        return window_export(self, load_birdnet_torch(), LICENSE_NOTE)

    def eval(self) -> EmbeddingHeadModel:
        self.head.eval()
        return self


def load_head(model_dir: Path, meta: HeadMeta) -> EmbeddingHeadModel:
    """The loader of kind "birdnet_head" (kinds.py): the head's weights from weights.safetensors."""
    model = EmbeddingHeadModel.from_meta(meta)
    load_weights(model_dir, model.head)
    return model


def save_head_dir(
    model: EmbeddingHeadModel,
    out: str | Path,
    thresholds: Thresholds | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a head on BirdNET embeddings: the head's weights, then model.json (the saver of kind "birdnet_head")."""
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
