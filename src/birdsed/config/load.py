"""Configs from dictionaries, YAML presets (config/presets/) and files, `section.key=value` overrides; and saved
as YAML."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from birdsed.config.checks import CHOICES, check_range, coerce
from birdsed.config.sections import Config
from birdsed.errors import ConfigError
from birdsed.fsutil import write_text_atomic


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
            check_range(key, v)
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
    return sorted(p.name[:-5] for p in resources.files("birdsed.config.presets").iterdir() if p.name.endswith(".yaml"))


def load_config(path_or_name: str | Path | None) -> Config:
    """A YAML file, or the bare name of a packaged preset (seed108, small, nips4b, ...). Anything that looks like a
    path (a folder in it, or a .yaml/.yml suffix) is a file and must exist: `some/dir/small.yaml` is never the preset
    `small`."""
    if path_or_name is None:
        return Config()
    p = Path(path_or_name)
    if p.is_file():
        text = p.read_text()
    elif str(path_or_name) in preset_names():
        text = resources.files("birdsed.config.presets").joinpath(f"{path_or_name}.yaml").read_text()
    elif str(path_or_name) != p.name or p.suffix in (".yaml", ".yml"):
        raise ConfigError(f"config {path_or_name}: no such file")
    else:
        raise ConfigError(f"config {path_or_name}: no such file or preset; presets: {preset_names()}")
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
    write_text_atomic(path, yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def flat_keys(cfg: Config) -> dict[str, Any]:
    """{"section.key": value} of every setting, values as config.yaml holds them (lists, not tuples)."""
    return {f"{s}.{k}": v for s, section in _plain(cfg.to_dict()).items() for k, v in section.items()}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
