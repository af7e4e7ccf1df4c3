"""The kinds of model a directory can hold, registered once (no torch): each kind declares its required model.json
keys, its typed metadata (a dataclass built from model.json with every value checked: types, finite numbers in
range, nesting bounded) and where its loader lives. meta.py reads model.json through here; modeldir.py loads the
network a kind names. File formats are unchanged: a kind reads the keys old directories have.

    KINDS["sed"].parse(path, raw)       # -> SedMeta, or a ModelError naming the key and the value
    KINDS["sed"].loader()               # -> the function that builds the Detector (imports torch, timm, ...)

A new kind is one Kind entry here with its metadata class, and its loader in its own module.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdsed.config import (
    DEFAULT_OUTPUT,
    OUTPUT_KINDS,
    SHORT_POLICIES,
    FrontendConfig,
    ModelConfig,
    section_from_dict,
)
from birdsed.decisions import Thresholds
from birdsed.errors import ConfigError, ModelError
from birdsed.model.birdnet_info import DEFAULT_HOP_S
from birdsed.rows import class_name_problem

MAX_DEPTH = 8  # model.json's deepest nesting is 4 (thresholds.per_class.<kind>.<class>): a bound against a hostile file
MAX_CLASSES = 100_000
MAX_MEMBERS = 64  # an ensemble's members are all loaded at once: a bound against a hostile model.json
BIRDNET_HOP_S = (0.1, 60.0)  # BirdNET's hop between 3 s windows: below 0.1 s a recording becomes millions of windows
BIRDNET_SENSITIVITY = (0.5, 1.5)  # BirdNET-Analyzer's range


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply `value` nests lists and dicts (stops counting past `limit`)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((depth(v, limit - 1) for v in items), default=0)


def _fail(path: Path, message: str) -> ModelError:
    return ModelError(f"{path}: {message}")


def number(path: Path, key: str, value: Any, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (a ModelError naming the key and the value otherwise)."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or not math.isfinite(value) or not lo <= value <= hi:
        raise _fail(path, f"{key} = {value!r}: must be a finite number in [{lo:g}, {hi:g}]")
    return float(value)


def text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{key} = {value!r:.80}: must be text")
    return value


def mapping(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"{key} = {value!r:.80}: must be a JSON object")
    return value


@dataclass(frozen=True)
class ModelMeta:
    """What every kind's model.json holds: its classes, thresholds, the output predict decides on, and how the model
    fits a recording shorter than a window."""

    path: Path  # the model.json it was read from (for messages)
    kind: str
    classes: list[str]
    thresholds: Thresholds
    default_output: str
    short_policy: str
    raw: dict[str, Any] = field(repr=False, compare=False)  # model.json as read: its digest, and what is written back

    @classmethod
    def common(cls, path: Path, kind: str, raw: dict[str, Any], short_policy: str) -> dict[str, Any]:
        classes = raw["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise _fail(path, "'classes' must be a non-empty list of names")
        if len(classes) > MAX_CLASSES:
            raise _fail(path, f"{len(classes)} classes; at most {MAX_CLASSES}")
        problem = class_name_problem(classes)
        if problem:
            raise _fail(path, problem)
        try:
            thresholds = Thresholds.of_model(raw)
        except ConfigError as e:
            raise _fail(path, str(e)) from None
        output = raw.get("default_output", DEFAULT_OUTPUT)
        if output not in OUTPUT_KINDS:
            raise _fail(path, f"default_output {output!r}: valid: {list(OUTPUT_KINDS)}")
        policy = raw.get("short_policy", short_policy)
        if policy not in SHORT_POLICIES:
            raise _fail(path, f"short_policy {policy!r}: valid: {list(SHORT_POLICIES)}")
        return dict(path=path, kind=kind, classes=list(classes), thresholds=thresholds, default_output=output,
                    short_policy=policy, raw=raw)  # fmt: skip


def frontend_section(path: Path, raw: Any) -> FrontendConfig:
    """model.json's front end, every value type- and range-checked (config/checks.py's RANGES)."""
    try:
        frontend = section_from_dict(FrontendConfig, raw, str(path), "frontend")
        frontend.check()
    except ConfigError as e:
        raise ModelError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    return frontend


@dataclass(frozen=True)
class SedMeta(ModelMeta):
    """An SED network (model/sed.py): its front end and model config; weights.safetensors beside."""

    frontend: FrontendConfig
    model: ModelConfig

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> SedMeta:
        # a loaded model reads nothing but its own directory: 'pretrained' (a training-time option) is ignored
        try:
            model = section_from_dict(ModelConfig, {**mapping(path, "model", raw["model"]), "pretrained": False},
                                      str(path), "model")  # fmt: skip
        except ConfigError as e:
            raise ModelError(str(e)) from None
        return cls(**cls.common(path, "sed", raw, "pad"), frontend=frontend_section(path, raw["frontend"]), model=model)


@dataclass(frozen=True)
class EnsembleMeta(ModelMeta):
    """An ensemble (model/ensemble.py): member folders inside its own, and their weights (summing to 1)."""

    members: list[str]
    weights: list[float] | None

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> EnsembleMeta:
        names = raw["ensemble"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise _fail(path, "'ensemble' must list member folders")
        if len(names) > MAX_MEMBERS:
            raise _fail(path, f"{len(names)} ensemble members; at most {MAX_MEMBERS}")
        if len(set(names)) != len(names):
            raise _fail(path, "an ensemble member is listed twice")
        folder = path.parent.resolve()
        for name in names:
            if folder not in (path.parent / name).resolve().parents:
                raise _fail(path, f"ensemble member {path.parent / name} is outside the ensemble folder")
        weights = raw.get("weights")
        if weights is not None:
            if not isinstance(weights, list) or len(weights) != len(names):
                raise _fail(path, f"'weights' must give one number per member ({len(names)}), got {weights!r:.80}")
            weights = [number(path, f"weights[{i}]", w, 0.0, 1.0) for i, w in enumerate(weights)]
            if min(weights) <= 0 or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
                raise _fail(path, f"'weights' {weights} must be positive and sum to 1")
        return cls(**cls.common(path, "ensemble", raw, "pad"), members=list(names), weights=weights)


@dataclass(frozen=True)
class BirdNETSection:
    """model.json's "birdnet": the pinned model file, the label index of each class (-1: unmapped) and scoring."""

    model_file: str
    sha256: str
    n_labels: int
    indices: list[int]
    via: list[str]
    hop_s: float
    sensitivity: float


@dataclass(frozen=True)
class BirdNETMeta(ModelMeta):
    """BirdNET V2.4 as a detector (model/birdnet.py): model.json only."""

    birdnet: BirdNETSection

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> BirdNETMeta:
        common = cls.common(path, "birdnet", raw, "pad")
        b = mapping(path, "birdnet", raw["birdnet"])
        k = len(common["classes"])
        n_labels = b.get("n_labels")
        if isinstance(n_labels, bool) or not isinstance(n_labels, int) or not 0 < n_labels <= 1_000_000:
            raise _fail(path, f"birdnet.n_labels = {n_labels!r}: must be a positive whole number")
        indices = b.get("indices")
        if (
            not isinstance(indices, list)
            or len(indices) != k
            or not all(isinstance(i, int) and not isinstance(i, bool) and -1 <= i < n_labels for i in indices)
        ):
            raise _fail(path, f"birdnet.indices must give one BirdNET label index (or -1) per class ({k})")
        via = b.get("via", [""] * k)
        if not isinstance(via, list) or len(via) != k or not all(isinstance(v, str) for v in via):
            raise _fail(path, f"birdnet.via must give one text per class ({k})")
        section = BirdNETSection(
            model_file=text(path, "birdnet.model_file", b.get("model_file")),
            sha256=text(path, "birdnet.sha256", b.get("sha256")),
            n_labels=n_labels,
            indices=indices,
            via=via,
            hop_s=number(path, "birdnet.hop_s", b.get("hop_s", DEFAULT_HOP_S), *BIRDNET_HOP_S),
            sensitivity=number(path, "birdnet.sensitivity", b.get("sensitivity", 1.0), *BIRDNET_SENSITIVITY),
        )
        return cls(**common, birdnet=section)


@dataclass(frozen=True)
class EmbeddingSection:
    """model.json's "embedding": what embedded the windows (BirdNET V2.4, pinned by sha256) and how."""

    backbone: str
    sha256: str
    window_s: float
    hop_s: float


@dataclass(frozen=True)
class HeadMeta(ModelMeta):
    """A head on BirdNET embeddings (model/embedhead.py): the embedding's section and the head's own."""

    embedding: EmbeddingSection
    dropout: float
    birdnet_prior: bool

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> HeadMeta:
        e, m = mapping(path, "embedding", raw["embedding"]), mapping(path, "model", raw["model"])
        prior = m.get("birdnet_prior", False)
        if not isinstance(prior, bool):
            raise _fail(path, f"model.birdnet_prior = {prior!r}: must be true or false")
        section = EmbeddingSection(
            backbone=text(path, "embedding.backbone", e.get("backbone")),
            sha256=text(path, "embedding.sha256", e.get("sha256")),
            window_s=number(path, "embedding.window_s", e.get("window_s"), 3.0, 60.0),
            hop_s=number(path, "embedding.hop_s", e.get("hop_s"), 0.1, 3.0),
        )
        return cls(
            **cls.common(path, "birdnet_head", raw, "loop"),
            embedding=section,
            dropout=number(path, "model.dropout", m.get("dropout", 0.5), 0.0, 0.999),
            birdnet_prior=prior,
        )


@dataclass(frozen=True)
class FineTunedMeta(HeadMeta):
    """A head fine-tuned with its own BirdNET port (model/birdnet_finetune.py): a head's sections, and the licence
    its weights carry (they derive from BirdNET V2.4)."""

    license: str

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> FineTunedMeta:
        head = HeadMeta.parse(path, raw)
        fields = {f: getattr(head, f) for f in head.__dataclass_fields__}
        return cls(**{**fields, "kind": "birdnet_finetuned"}, license=text(path, "license", raw["license"]))


@dataclass(frozen=True)
class LinearMeta(HeadMeta):
    """A linear classifier on BirdNET embeddings (model/linearhead.py, written by `learn`): a head's sections (its
    "model" holds no dropout), and the hop between the 3 s windows predict scores."""

    hop_s: float

    @classmethod
    def parse(cls, path: Path, raw: dict[str, Any]) -> LinearMeta:
        head = HeadMeta.parse(path, raw)
        fields = {f: getattr(head, f) for f in head.__dataclass_fields__}
        hop_s = number(path, "model.hop_s", mapping(path, "model", raw["model"]).get("hop_s"), *BIRDNET_HOP_S)
        return cls(**{**fields, "kind": "birdnet_linear"}, hop_s=hop_s)


@dataclass(frozen=True)
class Kind:
    """One kind of model: the model.json keys it requires, its typed metadata, and its loader ("module:function",
    imported only when a model of this kind is loaded: that is where torch, timm or LiteRT come in)."""

    name: str
    required: tuple[str, ...]
    meta: type[ModelMeta]
    load: str
    licence: str = ""  # the licence (Kaggle's name) a model of this kind must be shared under; "": the sharer's choice

    def parse(self, path: Path, raw: dict[str, Any]) -> ModelMeta:
        missing = [key for key in self.required if key not in raw]
        if missing:
            raise _fail(path, f"missing {missing[0]!r}")
        return self.meta.parse(path, raw)  # type: ignore[attr-defined]

    def loader(self) -> Callable[[Path, Any], Any]:
        module, name = self.load.split(":")
        return getattr(importlib.import_module(module), name)


BIRDNET_LICENCE = "CC-BY-NC-SA-4.0"  # BirdNET V2.4's weights; a head holds its classifier rows (model.birdnet_prior)

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("sed", ("classes", "frontend", "model"), SedMeta, "birdsed.model.modeldir:load_sed"),
        Kind("ensemble", ("classes", "ensemble"), EnsembleMeta, "birdsed.model.modeldir:load_ensemble"),
        Kind("birdnet", ("classes", "birdnet"), BirdNETMeta, "birdsed.model.birdnet:load_birdnet", BIRDNET_LICENCE),
        Kind(
            "birdnet_head",
            ("classes", "model", "embedding"),
            HeadMeta,
            "birdsed.model.embedhead:load_head",
            BIRDNET_LICENCE,
        ),
        Kind(
            "birdnet_finetuned",
            ("classes", "model", "embedding", "license"),
            FineTunedMeta,
            "birdsed.model.birdnet_finetune:load_finetuned",
            BIRDNET_LICENCE,
        ),
        Kind(
            "birdnet_linear",
            ("classes", "model", "embedding"),
            LinearMeta,
            "birdsed.model.linearhead:load_linear",
            BIRDNET_LICENCE,
        ),
    )
}


def kind_of(raw: dict[str, Any]) -> str:
    """model.json's kind (directories written before kinds existed: "ensemble" when it lists members, else "sed");
    a kind that is not a name (0, [1], {}) is returned as written, for parse_meta to refuse."""
    kind = raw.get("kind")
    return ("ensemble" if "ensemble" in raw else "sed") if kind is None else kind


def parse_meta(path: Path, raw: Any) -> ModelMeta:
    """The typed, checked metadata of a model.json already read as JSON (a ModelError naming what is wrong)."""
    if not isinstance(raw, dict):
        raise _fail(path, "not a JSON object")
    if depth(raw) > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels; not a model.json birdsed wrote")
    kind = kind_of(raw)
    if not isinstance(kind, str) or kind not in KINDS:
        raise _fail(path, f"unknown model kind {kind!r:.100}; valid: {list(KINDS)}")
    return KINDS[kind].parse(path, raw)
