"""What a configuration value may be: ranges of numbers, choice lists, and the coercion of YAML, --set and
model.json values to each field's type (a ConfigError naming the key)."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from birdsed.config.choices import COMPRESSIONS, FREQ_POOLS, SHORT_POLICIES
from birdsed.errors import ConfigError

# Ranges of numeric values: (low, high, low included, high included); None: no bound on that side. Every field
# named *_p is a probability in [0, 1]. Checked whenever a section is built from a preset, YAML, --set or model.json.
POSITIVE, NONNEG, PROBABILITY, FRACTION = (
    (0, None, False, False),
    (0, None, True, False),
    (0, 1, True, True),
    (0, 1, True, False),
)

RANGES: dict[str, tuple] = {
    "frontend.sample_rate_hz": (0, 768_000, False, True),  # upper bounds: what a front end can be built with
    "frontend.n_fft": (0, 65_536, False, True),
    "frontend.hop_length": (0, 65_536, False, True),
    "frontend.n_mels": (0, 1_024, False, True),
    "frontend.fmin_hz": NONNEG,
    "frontend.fmax_hz": POSITIVE,
    "frontend.top_db": POSITIVE,
    "frontend.pcen_time_constant_s": POSITIVE,
    "frontend.pcen_gain": NONNEG,
    "frontend.pcen_bias": NONNEG,
    "frontend.pcen_power": POSITIVE,
    "model.in_chans": (0, 16, True, True),
    "model.dropout": FRACTION,
    "model.drop_path": FRACTION,
    "model.freq_scale": (0.05, 16, True, True),  # the mel image resized: not to nothing
    "model.time_scale": (0.05, 16, True, True),
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
    "train.backbone_lr_scale": (0, 1, False, True),
    "train.backbone_train_from": (0, 1, True, True),
    "train.head_warmup_epochs": NONNEG,
    "train.head_warmup_lr": POSITIVE,
    "train.head_warmup_views": (1, None, True, False),
    "train.grad_clip": NONNEG,
    "train.ema_decay": (0, 1, False, False),
    "train.framewise_loss_weight": NONNEG,
    "train.workers": NONNEG,
    "train.seed": (0, 2**32 - 1, True, True),  # numpy's and Lightning's seeds are 32-bit
    "train.devices": (1, None, True, False),
    "train.limit_val_batches": (0, 1, False, True),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "frontend.compression": COMPRESSIONS,
    "model.freq_pool": FREQ_POOLS,
    "data.short_policy": SHORT_POLICIES,
    "train.device": ("auto", "cpu", "cuda", "gpu"),
    "train.precision": ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64", "64-true"),
}


def check_range(key: str, v: Any) -> None:
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


# What the network can build: the backbone's input image (the log-mel resized by model.freq_scale and
# model.time_scale) from MIN_SIDE (a CNN's stride of 32: one cell) to MAX_SIDE pixels a side.
MIN_SIDE, MAX_SIDE = 32, 4096


def check_frontend(f: Any) -> None:
    """A FrontendConfig's cross-field limits (also a model.json's front end): an FFT window of at most a second of
    audio, a hop within it, and no more mel bands than FFT bins."""
    if f.n_fft > f.sample_rate_hz:
        raise ConfigError(
            f"frontend.n_fft = {f.n_fft}: a window longer than a second (sample_rate_hz {f.sample_rate_hz}); "
            f"at most {f.sample_rate_hz}"
        )
    if f.hop_length > f.n_fft:
        raise ConfigError(f"frontend.hop_length {f.hop_length} is longer than n_fft {f.n_fft}")
    if f.n_mels > f.n_fft // 2 + 1:
        raise ConfigError(
            f"frontend.n_mels = {f.n_mels}: more mel bands than the {f.n_fft // 2 + 1} FFT bins of n_fft {f.n_fft}"
        )


def check_image(f: Any, m: Any, crop_s: float) -> None:
    """The backbone's input for a crop, n_mels x frames resized by model.freq_scale x model.time_scale (as
    F.interpolate sizes it), between MIN_SIDE and MAX_SIDE pixels a side."""
    frames = int(crop_s * f.sample_rate_hz) // f.hop_length + 1
    sides = {
        "height": (int(f.n_mels * m.freq_scale), f"frontend.n_mels {f.n_mels} x model.freq_scale {m.freq_scale:g}"),
        "width": (int(frames * m.time_scale), f"{frames} frames of data.crop_s x model.time_scale {m.time_scale:g}"),
    }
    for side, (pixels, how) in sides.items():
        if not MIN_SIDE <= pixels <= MAX_SIDE:
            raise ConfigError(
                f"the backbone's input image would be {pixels} pixels in {side} ({how}): it must be between "
                f"{MIN_SIDE} and {MAX_SIDE}"
            )


def check_run(t: Any) -> None:
    """A TrainConfig's devices ("auto" or a whole number) and strategy (one Lightning knows)."""
    if isinstance(t.devices, str) and t.devices != "auto":
        raise ConfigError(f"train.devices = {t.devices!r}: a whole number or auto")
    if t.strategy == "auto":  # the default: checked without importing Lightning (config stays torch-free)
        return
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if t.strategy not in strategies:
        raise ConfigError(f"train.strategy = {t.strategy!r}: valid: {', '.join(sorted(strategies))}")
