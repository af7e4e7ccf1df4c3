"""Typed configuration: one dataclass per stage, YAML presets, `section.key=value` overrides.

The resolved Config is written into every run folder and the model's own part
(frontend + model) into model.json, so inference rebuilds the model with no flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from birdsed import SAMPLE_RATE_HZ
from birdsed.errors import ConfigError

OUTPUT_KINDS = ("segmentwise", "att", "clipwise")
SEED_THRESHOLDS = {"segmentwise": 0.9, "att": 0.15, "clipwise": 0.5}
COMPRESSIONS = ("db", "pcen")
SHORT_POLICIES = ("loop", "pad")
FREQ_POOLS = ("mean", "max", "meanmax", "flat")


@dataclass
class FrontendConfig:
    """Log-mel front end (PANNs / the seed: 32 kHz, 1024-point FFT, 10 ms hop)."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 128
    fmin_hz: float = 50.0
    fmax_hz: float = 14_000.0
    top_db: float | None = 80.0  # compression "db" only
    compression: str = "db"  # "db": log-mel in dB; "pcen": per-channel energy normalisation (librosa.pcen)
    pcen_time_constant_s: float = 0.4  # PCEN's smoother (librosa's defaults throughout)
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5

    def check(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"frontend.compression {self.compression!r}: valid: {list(COMPRESSIONS)}")


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: bool | str = False  # True: timm's weights (online); a path: a local weight file
    in_chans: int = 0  # 0: 3 when pretrained (the mel image repeated), else 1
    dropout: float = 0.5
    drop_path: float = 0.0
    freq_scale: float = 1.0  # the log-mel image resized by these factors before the backbone (bilinear):
    time_scale: float = 1.0  # ImageNet CNNs see 64 mels as a 2-cell-high feature map
    freq_pool: str = "mean"  # how the head pools the feature map's frequency cells: mean (PANNs), max, meanmax,
    # or flat (every cell kept as its own channels: the head knows where in the spectrum a pattern lies)
    embed_hop_s: float = 1.0  # backbone birdnet: 3 s sub-windows of a crop every this many seconds (embedhead.py)


@dataclass
class DataConfig:
    crop_s: float = 5.0
    short_policy: str = "loop"  # clips shorter than a crop: "loop" or "pad"
    secondary_max_s: float = 40.0  # secondary labels count only for recordings shorter than this
    secondary_weight: float = 1.0  # their target value (2nd place: 0.3)
    balance: bool = True
    balance_max: int = 80  # classes above: keep the 80 shortest recordings
    balance_min: int = 60  # classes below: split long recordings into up to 60 items
    val_fraction: float = 0.1  # 0: no validation split (every recording trained on, the last epoch kept)
    val_windows: int = 4  # windows of crop_s scored per validation recording (max over them)
    split_seed: int | None = None  # seed of the validation split (default: train.seed); fixed, ensemble members share it
    subsample: float = 1.0  # below 1: train on this fraction of the training recordings, drawn per train.seed
    # (stratified by first label, every label kept): bagging, so that ensemble members see different clips
    embedding_cache: str | None = None  # backbone birdnet: folder of cached embeddings (default RUN/embeddings)
    embedding_views: int = 1  # backbone birdnet: >1 adds views - 1 augmented copies of each recording (embedtrain.py)

    def val_split_seed(self, train_seed: int) -> int:
        return train_seed if self.split_seed is None else self.split_seed


@dataclass
class AugmentConfig:
    """Each augmentation has a probability (0 = off); all run on the device, in training only."""

    negatives_p: float = 0.0  # bird-free noise examples with all-zero targets
    gain_p: float = 0.5
    gain_db: float = 6.0
    noise_p: float = 0.0
    noise_snr_db: tuple[float, float] = (3.0, 30.0)
    lowpass_p: float = 0.0  # 2nd place: high frequencies fade with distance
    pitch_p: float = 0.3
    pitch_semitones: float = 2.0
    tempo_p: float = 0.3
    tempo_range: float = 0.15  # stretch factor in [1 - r, 1 + r]
    specaug_p: float = 0.5
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 2
    freq_mask_bins: int = 12
    mixup_p: float = 0.5
    mixup_alpha: float = 0.4
    mixup_union: bool = False  # 3rd place: targets are the union (max) of the two label sets


@dataclass
class TrainConfig:
    epochs: int = 30
    max_steps: int = -1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_frac: float = 0.05
    head_warmup_epochs: int = 0  # LP-FT: first train the head on the frozen backbone's cached features (probe.py)
    head_warmup_lr: float = 1e-3
    head_warmup_views: int = 1  # >1: the warm-up cache also holds views - 1 augmented copies of each window
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics (pretrained ones) fixed while fine-tuning
    grad_clip: float = 1.0
    ema: bool = False
    ema_decay: float = 0.999
    framewise_loss_weight: float = 0.0  # 6th place: + w * BCE(max_t framewise)
    select_metric: str = "val_f1_clipwise"
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32 on CPU
    devices: int | str = 1
    strategy: str = "auto"
    limit_val_batches: float = 1.0


@dataclass
class Config:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Values no type says are wrong, refused (ConfigError naming the key) before `train` writes or prepares anything."""
        self.frontend.check()
        checks = [
            (0.0 <= self.data.val_fraction < 1.0, f"data.val_fraction must be at least 0 and below 1, got {self.data.val_fraction}"),
            (0.0 < self.data.subsample <= 1.0, f"data.subsample must be above 0 and at most 1, got {self.data.subsample}"),
            (self.model.freq_pool in FREQ_POOLS, f"model.freq_pool {self.model.freq_pool!r}: valid: {list(FREQ_POOLS)}"),
            (self.data.short_policy in SHORT_POLICIES, f"data.short_policy {self.data.short_policy!r}: valid: {list(SHORT_POLICIES)}"),
            (self.data.embedding_views >= 1, f"data.embedding_views must be at least 1, got {self.data.embedding_views}"),
            (self.model.backbone != "birdnet" or (0 < self.model.embed_hop_s <= 3.0 and self.data.crop_s >= 3.0),
             f"backbone birdnet needs 0 < model.embed_hop_s <= 3 and data.crop_s >= 3, got {self.model.embed_hop_s}, "
             f"{self.data.crop_s}"),
            (self.augment.lowpass_p <= 0 or self.frontend.compression == "db",
             f"augment.lowpass_p attenuates in dB; frontend.compression {self.frontend.compression!r} needs augment.lowpass_p=0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _section_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(d: dict[str, Any], where: str = "config") -> Config:
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; valid: {sorted(sections)}")
    defaults = Config()
    parts = {}
    for name in sections:
        cls = type(getattr(defaults, name))
        values = d.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section '{name}' must be a mapping, got {values!r}")
        parts[name] = _section_from_dict(cls, values, f"{where}: [{name}]")
    return Config(**parts)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("birdsed.configs").iterdir() if p.name.endswith(".yaml"))


def load_config(path_or_name: str | Path | None) -> Config:
    """A YAML file, or the name of a packaged preset (seed108, small, nips4b)."""
    if path_or_name is None:
        return Config()
    p = Path(path_or_name)
    if not p.is_file():
        name = p.name[:-5] if p.name.endswith(".yaml") else p.name
        if name not in preset_names():
            raise ConfigError(f"config {path_or_name}: no such file or preset; presets: {preset_names()}")
        text = resources.files("birdsed.configs").joinpath(f"{name}.yaml").read_text()
    else:
        text = p.read_text()
    try:
        d = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path_or_name}: invalid YAML ({e})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"config {path_or_name}: top level must be a mapping of sections")
    return config_from_dict(d, str(path_or_name))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (numbers, true/false, lists)."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        if section not in d or name not in d[section]:
            valid = sorted(f"{s}.{k}" for s in d for k in d[s])
            raise ConfigError(f"override {item!r}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        try:
            d[section][name] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value ({e})") from e
    return config_from_dict(d, "overrides")


def save_config(cfg: Config, path: Path) -> None:
    from birdsed.fsutil import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
