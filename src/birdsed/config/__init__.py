"""Typed configuration: one dataclass per stage (sections.py), YAML presets (presets/), `section.key=value`
overrides checked against each field's type, range and choices (checks.py, load.py), every choice list once
(choices.py).

The resolved Config is written into every run folder and the model's own part (frontend + model) into model.json,
so inference rebuilds the model with no flags. Import from here: `from birdsed.config import Config, load_config`.
"""

from birdsed.config.checks import (
    CHOICES,
    RANGES,
    coerce,
)
from birdsed.config.choices import (
    BACKENDS,
    COMPETITIONS,
    COMPRESSIONS,
    DATA_FORMATS,
    DEFAULT_MIN_OVERLAP_S,
    DEFAULT_OUTPUT,
    DEVICES,
    FREQ_POOLS,
    MAX_SHARDS,
    MAX_WINDOW_S,
    MIN_HOP_S,
    MIN_WINDOW_S,
    OUTPUT_FORMATS,
    OUTPUT_KINDS,
    POOLINGS,
    PRECISIONS,
    REFERENCE_THRESHOLDS,
    SHORT_POLICIES,
    SMOOTHINGS,
    SPECIES_NAMES,
    TRUTH_FORMATS,
)
from birdsed.config.load import (
    apply_overrides,
    config_from_dict,
    load_config,
    preset_names,
    save_config,
    section_from_dict,
)
from birdsed.config.sections import (
    AugmentConfig,
    Config,
    DataConfig,
    FrontendConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "OUTPUT_KINDS",
    "DEFAULT_OUTPUT",
    "REFERENCE_THRESHOLDS",
    "COMPRESSIONS",
    "SHORT_POLICIES",
    "FREQ_POOLS",
    "POOLINGS",
    "PRECISIONS",
    "DEVICES",
    "BACKENDS",
    "OUTPUT_FORMATS",
    "SMOOTHINGS",
    "SPECIES_NAMES",
    "MAX_SHARDS",
    "MAX_WINDOW_S",
    "MIN_HOP_S",
    "MIN_WINDOW_S",
    "DATA_FORMATS",
    "TRUTH_FORMATS",
    "DEFAULT_MIN_OVERLAP_S",
    "COMPETITIONS",
    "FrontendConfig",
    "ModelConfig",
    "DataConfig",
    "AugmentConfig",
    "TrainConfig",
    "Config",
    "RANGES",
    "CHOICES",
    "coerce",
    "section_from_dict",
    "config_from_dict",
    "preset_names",
    "load_config",
    "apply_overrides",
    "save_config",
]
