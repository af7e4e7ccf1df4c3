"""Typed configuration: one dataclass per stage, YAML presets, `section.key=value` overrides.

The resolved Config is written into every run folder and the model's own part
(frontend + model) into model.json, so inference rebuilds the model with no flags.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
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
# the choices of predict (each owned by the module named, written here once so that the CLI lists them without
# importing that module's libraries)
POOLINGS = ("window", "segment")  # infer.py: a row's score from whole windows, or from the head's time segments
PRECISIONS = ("auto", "fp32", "bf16")  # infer.py
BACKENDS = ("torch", "onnx", "openvino")  # predict.py, export.py
OUTPUT_FORMATS = ("csv", "kaggle", "raven", "audacity")  # outputs.py
SMOOTHINGS = ("sum", "max")  # decide.py
DEVICES = ("auto", "cpu", "cuda")
DATA_FORMATS = ("auto", "cornell", "birdclef", "labels")  # manifest.py
TRUTH_FORMATS = ("auto", "raven", "audacity", "table", "cornell2020", "birdclef2021")  # truth/, kaggle/truth.py
DEFAULT_MIN_OVERLAP_S = 0.05  # truth/events.py: a row is positive for a label its calls cover this long
COMPETITIONS = ("birdclef2021", "birdclef2023", "birdclef2024", "birdclef2025")  # kaggle/birdclef.py


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
        if not self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError(
                f"frontend needs fmin_hz < fmax_hz <= sample_rate_hz / 2 (Nyquist), got fmin_hz "
                f"{self.fmin_hz}, fmax_hz {self.fmax_hz}, sample_rate_hz {self.sample_rate_hz}"
            )
        if self.hop_length > self.n_fft:
            raise ConfigError(f"frontend.hop_length {self.hop_length} is longer than n_fft {self.n_fft}")


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
    birdnet_prior: bool = False  # backbone birdnet: classes BirdNET knows start from its own classifier (embedhead.py)


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
    split_seed: int | None = (
        None  # seed of the validation split (default: train.seed); fixed, ensemble members share it
    )
    subsample: float = 1.0  # below 1: train on this fraction of the training recordings, drawn per train.seed
    # (stratified by first label, every label kept): bagging, so that ensemble members see different clips
    embedding_cache: str | None = None  # backbone birdnet: folder of cached embeddings (default RUN/embeddings)
    embedding_views: int = 1  # backbone birdnet: >1 adds views - 1 augmented copies of each recording (embedtrain.py)
    allow_outside_paths: bool = False  # a table's file outside its audio folder is refused unless this is true
    pseudo: tuple[str, ...] = ()  # pseudo-label tables (birdsed pseudo-label) whose windows join training (pseudo.py)
    pseudo_items: float = (
        0.5  # pseudo-labelled windows per epoch, as a fraction of the labelled items (0: background only)
    )
    pseudo_weight: float = 1.0  # the loss weight of a pseudo-labelled window against a labelled crop's 1

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
    pseudo_mix_p: float = 0.0  # a labelled crop gets a pseudo-labelled window as its background; targets: the max


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
    num_nodes: int = 1  # machines of a multi-node run (Lightning reads the rest from SLURM or torchrun)
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
        """Values no type says are wrong, refused (ConfigError naming the key) before `train` writes or prepares
        anything."""
        config_from_dict(self.to_dict(), "config")  # every value's type, range and choices, as from YAML or --set
        self.frontend.check()
        from birdsed.model.sed import BACKBONES  # the registry (imports torch; check() runs where training will)

        f, m = self.frontend, self.model
        checks = [
            (
                m.backbone in BACKBONES or m.backbone == "birdnet",
                f"model.backbone {m.backbone!r}: valid: {sorted([*BACKBONES, 'birdnet'])}",
            ),
            (
                m.backbone == "birdnet" or f.sample_rate_hz == SAMPLE_RATE_HZ,
                f"frontend.sample_rate_hz {f.sample_rate_hz}: the store holds audio at {SAMPLE_RATE_HZ} Hz, "
                f"so the front end must read it at {SAMPLE_RATE_HZ}",
            ),
            (
                m.backbone != "birdnet" or (m.embed_hop_s <= 3.0 and self.data.crop_s >= 3.0),
                f"backbone birdnet needs 0 < model.embed_hop_s <= 3 and data.crop_s >= 3, got {m.embed_hop_s}, "
                f"{self.data.crop_s}",
            ),
            (
                not m.birdnet_prior or m.backbone == "birdnet",
                f"model.birdnet_prior needs model.backbone birdnet, got {m.backbone!r}",
            ),
            (
                self.augment.lowpass_p <= 0 or f.compression == "db",
                f"augment.lowpass_p attenuates in dB; frontend.compression {f.compression!r} needs augment.lowpass_p=0",
            ),
            (
                m.backbone != "birdnet" or not self.augment.pseudo_mix_p,
                "augment.pseudo_mix_p mixes audio under the CNNs' crops; backbone birdnet takes pseudo-labelled "
                "windows as items of their own only (data.pseudo, data.pseudo_items)",
            ),
            (
                not self.augment.pseudo_mix_p or self.data.pseudo,
                "augment.pseudo_mix_p needs pseudo-label tables (data.pseudo)",
            ),
            (
                self.augment.noise_snr_db[0] <= self.augment.noise_snr_db[1],
                f"augment.noise_snr_db {list(self.augment.noise_snr_db)}: low above high",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# Ranges of numeric values: (low, high, low included, high included); None: no bound on that side. Every field
# named *_p is a probability in [0, 1]. Checked whenever a section is built from a preset, YAML, --set or model.json.
POSITIVE, NONNEG, PROBABILITY, FRACTION = (
    (0, None, False, False),
    (0, None, True, False),
    (0, 1, True, True),
    (0, 1, True, False),
)
RANGES: dict[str, tuple] = {
    "frontend.sample_rate_hz": POSITIVE,
    "frontend.n_fft": POSITIVE,
    "frontend.hop_length": POSITIVE,
    "frontend.n_mels": POSITIVE,
    "frontend.fmin_hz": NONNEG,
    "frontend.fmax_hz": POSITIVE,
    "frontend.top_db": POSITIVE,
    "frontend.pcen_time_constant_s": POSITIVE,
    "frontend.pcen_gain": NONNEG,
    "frontend.pcen_bias": NONNEG,
    "frontend.pcen_power": POSITIVE,
    "model.in_chans": NONNEG,
    "model.dropout": FRACTION,
    "model.drop_path": FRACTION,
    "model.freq_scale": POSITIVE,
    "model.time_scale": POSITIVE,
    "model.embed_hop_s": POSITIVE,
    "data.crop_s": POSITIVE,
    "data.secondary_max_s": NONNEG,
    "data.secondary_weight": PROBABILITY,
    "data.balance_max": (1, None, True, False),
    "data.balance_min": (1, None, True, False),
    "data.val_fraction": FRACTION,
    "data.val_windows": (1, None, True, False),
    "data.split_seed": NONNEG,
    "data.subsample": (0, 1, False, True),
    "data.embedding_views": (1, None, True, False),
    "data.pseudo_items": NONNEG,
    "data.pseudo_weight": NONNEG,
    "augment.gain_db": NONNEG,
    "augment.pitch_semitones": NONNEG,
    "augment.tempo_range": FRACTION,
    "augment.time_masks": NONNEG,
    "augment.time_mask_frames": NONNEG,
    "augment.freq_masks": NONNEG,
    "augment.freq_mask_bins": NONNEG,
    "augment.mixup_alpha": POSITIVE,
    "train.num_nodes": (1, None, True, False),
    "train.epochs": (1, None, True, False),
    "train.max_steps": (-1, None, True, False),
    "train.batch_size": (1, None, True, False),
    "train.lr": POSITIVE,
    "train.weight_decay": NONNEG,
    "train.warmup_frac": FRACTION,
    "train.head_warmup_epochs": NONNEG,
    "train.head_warmup_lr": POSITIVE,
    "train.head_warmup_views": (1, None, True, False),
    "train.grad_clip": NONNEG,
    "train.ema_decay": (0, 1, False, False),
    "train.framewise_loss_weight": NONNEG,
    "train.workers": NONNEG,
    "train.seed": NONNEG,
    "train.limit_val_batches": (0, 1, False, True),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "frontend.compression": COMPRESSIONS,
    "model.freq_pool": FREQ_POOLS,
    "data.short_policy": SHORT_POLICIES,
    "train.device": ("auto", "cpu", "cuda", "gpu"),
    "train.precision": ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64", "64-true"),
}


def _in_range(key: str, v: Any) -> None:
    lo, hi, lo_in, hi_in = RANGES.get(key) or (PROBABILITY if key.endswith("_p") else (None, None, True, True))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return
    ok = (lo is None or (v >= lo if lo_in else v > lo)) and (hi is None or (v <= hi if hi_in else v < hi))
    if not ok:
        low, high = "-inf" if lo is None else lo, "inf" if hi is None else hi
        want = f"{'[' if lo_in else '('}{low}, {high}{']' if hi_in else ')'}"
        raise ConfigError(f"{key} = {v!r}: must be in {want}")


def coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` of the field `key` ("section.name"): ints, floats (also from strings such as
    "1e-3", which YAML 1.1 leaves as text), bools, strings, tuples, `X | None`, unions; a ConfigError naming the
    key and the value otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arm)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{key} = {value!r}: expected one of {' | '.join(getattr(a, '__name__', str(a)) for a in args)}"
        )
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any number of X
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected a list")
        return tuple(coerce(key, v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} = {value!r}: expected a list of {len(args)} values")
        return tuple(coerce(key, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f"{key} = {value!r}: expected true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected a whole number")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        if isinstance(value, int):
            return value
        raise ConfigError(f"{key} = {value!r}: expected a whole number")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        try:
            v = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            v = None
        if v is None or not math.isfinite(v):
            raise ConfigError(f"{key} = {value!r}: expected a finite number")
        return v
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: expected text")
        return value
    return value


def section_from_dict(cls: type, values: dict[str, Any], where: str, section: str) -> Any:
    """A config section `cls` from a mapping: unknown keys refused, every value coerced to its field's type and
    checked against RANGES and CHOICES (ConfigError naming `where` and the key)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: section '{section}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for name, raw in values.items():
        key = f"{section}.{name}"
        try:
            v = coerce(key, raw, hints[name])
            _in_range(key, v)
            if key in CHOICES and v not in CHOICES[key]:
                raise ConfigError(f"{key} = {v!r}: valid: {list(CHOICES[key])}")
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        kwargs[name] = v
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
        parts[name] = section_from_dict(cls, d.get(name) or {}, where, name)
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
