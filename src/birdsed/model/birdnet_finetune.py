"""birdsed's attention head on BirdNET V2.4 fine-tuned with it (model.freeze_backbone: false; train/finetune.py).

The same model as embedhead.py (3 s sub-windows of a window every embed_hop_s, their 1,024-d embeddings, the PANNs
head), but the embeddings come from the torch port of BirdNET (birdnet_torch.py) with its own, fine-tuned weights,
so it runs in torch on any device (never LiteRT). The model directory holds the head's weights and those of the port
that the embedding depends on (`backbone.*`, about 6.1 M values); the port itself is built from the installed,
checksum-checked BirdNET file and those weights are loaded over it. The weights derive from BirdNET V2.4 and carry
its licence, CC BY-NC-SA 4.0 (model.json says so).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from birdsed import __version__
from birdsed.decisions import Thresholds
from birdsed.errors import ConfigError
from birdsed.model.birdnet import EMBED_DIM, N_SAMPLES
from birdsed.model.birdnet_torch import BirdNETTorch
from birdsed.model.embedhead import EmbeddingHead, EmbeddingHeadModel, window_export
from birdsed.model.kinds import FineTunedMeta
from birdsed.model.meta import WEIGHTS, write_meta
from birdsed.model.modeldir import check_fits, read_weights, save_weights

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport

LICENSE = (
    "weights derive from BirdNET V2.4 (Kahl et al., Cornell Lab of Ornithology and Chemnitz University of "
    "Technology), fine-tuned by birdsed; licensed CC BY-NC-SA 4.0: non-commercial use, attribution, share alike"
)
INFER_BATCH = 64  # sub-windows per forward pass at inference


class FineTunedNet(nn.Module):
    """(B, n_sub, 144000) sub-windows -> the head's output dict, BirdNET's port embedding each sub-window; with
    `cut` (train.backbone_cache), (B, n_sub, *shape) activations at that tensor of the port's graph instead, from
    which only the layers after it run (the model it saves runs from audio all the same)."""

    def __init__(self, backbone: BirdNETTorch, head: EmbeddingHead, train_from: float = 0.0, cut: int | None = None):
        """train_from (train.backbone_train_from): only the port's weights at that depth of its graph or deeper
        (BirdNETTorch.parameter_depths) train; 0 all those the embedding depends on."""
        super().__init__()
        self.backbone, self.head, self.cut = backbone, head, cut
        depth = backbone.parameter_depths()
        trainable = [p for k, p in backbone.embedding_parameters().items() if depth[k] >= train_from]
        if not trainable:
            raise ConfigError(
                f"train.backbone_train_from {train_from:g}: none of BirdNET's layers is that deep (the deepest "
                f"starts at {max(depth.values()):.3f}), so none would train"
            )
        for p in backbone.parameters():  # the classifier after the embedding gets no gradient: kept out of training
            p.requires_grad_(any(p is q for q in trainable))

    def embed(self, subs: torch.Tensor) -> torch.Tensor:
        """(B, n_sub, 144000) -> (B, n_sub, 1024)."""
        b, n = subs.shape[:2]
        return self.backbone(subs.reshape(b * n, N_SAMPLES))[1].float().view(b, n, EMBED_DIM)

    def embed_cut(self, acts: torch.Tensor) -> torch.Tensor:
        """(B, n_sub, *shape) activations at self.cut -> (B, n_sub, 1024)."""
        b, n = acts.shape[:2]
        return self.backbone.embed_from(acts.flatten(0, 1), self.cut).float().view(b, n, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.embed(x) if self.cut is None else self.embed_cut(x))

    def saved_state(self) -> dict[str, torch.Tensor]:
        """What the model directory keeps: the head's state and the port's weights the embedding depends on."""
        head = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        emb = {f"backbone.{k}": p.detach() for k, p in self.backbone.embedding_parameters().items()}
        return {**head, **emb}

    def load_saved_state(self, state: dict[str, torch.Tensor], source: Path | str) -> None:
        """Load saved_state's dict (its keys exactly, else a ModelError naming `source`)."""
        check_fits(self.saved_state(), state, source, "a fine-tuned BirdNET head")
        self.load_state_dict(state, strict=False)


class FineTunedHeadModel(EmbeddingHeadModel):
    """A Detector (detector.py): the head on its own fine-tuned BirdNET port, in torch on the device given."""

    embedding_space = None  # its own fine-tuned BirdNET: the model's digest stands for it

    def __init__(self, classes: list[str], net: FineTunedNet, **kw: Any):
        super().__init__(classes, net.head, **kw)
        self.net = net

    @classmethod
    def from_meta(cls, meta: FineTunedMeta) -> FineTunedHeadModel:
        from birdsed.model.birdnet_torch import load_birdnet_torch

        frozen = EmbeddingHeadModel.from_meta(meta)  # the same sections, checked the same way
        net = FineTunedNet(load_birdnet_torch(), frozen.head)
        return cls(
            frozen.classes,
            net,
            window_s=frozen.window_s,
            embed_hop_s=frozen.embed_hop_s,
            short_policy=frozen.short_policy,
        )

    def meta(self) -> dict[str, Any]:
        m = super().meta()
        m["model"]["freeze_backbone"] = False
        m["embedding"]["fine_tuned"] = True
        return m

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """(W, window) -> (W, T', 1024) embeddings of the fine-tuned port, on self.device."""
        subs = self.sub_windows(windows.float())
        out = []
        with torch.inference_mode():
            for i in range(0, len(subs), max(1, INFER_BATCH // self.n_sub)):
                out.append(self.net.embed(subs[i : i + max(1, INFER_BATCH // self.n_sub)].to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.n_sub, EMBED_DIM)

    def float32_runtime(self, device: torch.device) -> str | None:
        """Its own port runs in torch on every device."""
        return None

    def for_inference(self, device: torch.device) -> FineTunedHeadModel:
        """The port on `device`, the head (tiny) on the CPU, both in eval mode."""
        fast = copy.copy(self)
        fast.device = torch.device(device)
        fast.net = copy.deepcopy(self.net).eval()
        fast.net.backbone.to(fast.device)
        fast.head = fast.net.head.cpu()
        return fast

    def onnx_export(self) -> OnnxExport:
        return window_export(self, self.net.backbone, LICENSE)

    def eval(self) -> FineTunedHeadModel:
        self.net.eval()
        return self


def load_finetuned(model_dir: Path, meta: FineTunedMeta) -> FineTunedHeadModel:
    """The loader of kind "birdnet_finetuned" (kinds.py): the port built from the installed BirdNET file, then the
    head's and the port's fine-tuned weights from weights.safetensors."""
    model = FineTunedHeadModel.from_meta(meta)
    model.net.load_saved_state(read_weights(model_dir), model_dir / WEIGHTS)
    return model.eval()


def save_finetuned_dir(
    model: FineTunedHeadModel,
    out: str | Path,
    thresholds: Thresholds | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the head and its port's weights, then model.json with the licence they carry (the saver of kind
    "birdnet_finetuned")."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model.net, out, model.net.saved_state())
    meta = {
        "birdsed_version": __version__,
        "kind": "birdnet_finetuned",
        "classes": model.classes,
        **model.meta(),
        "license": LICENSE,
        "thresholds": (thresholds or Thresholds()).to_dict(),
        **(extra or {}),
    }
    write_meta(out, meta)
    return out
