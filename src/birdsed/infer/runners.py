"""How predict's recordings are scored into their parts: one interface, `Runner`, whatever runs the model.

    with open_runner(model_dir, meta, backend, cluster) as runner:  # the model loaded (or the workers loading it)
        facts = runner.facts()                                       # the model's window_s, hop_s and classes
        runner.check(scoring)                                        # what scoring would refuse, refused now
        scored = runner.score(files, part_of, scoring, quiet)        # one part per recording; Scored(audio_s, errors)
        runner.close_soon()                                          # let go of what the combined outputs don't need

  LocalRunner   this process: the model loaded here (torch, or its ONNX / OpenVINO export)
  ClusterRun    a Dask cluster (cluster.py): each worker loads the model once and runs write_parts over its tasks

`write_parts` is the one loop that scores recordings and writes their parts (parts.py names them, written atomically):
the local runner calls it, and so does every cluster worker (cluster_worker.py). Which recordings a run takes, and
who builds the combined outputs, is its scope's (scope.py: the whole input set, or a job-array shard), not the
runner's: a shard runs on either runner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from birdsed.config import BACKENDS
from birdsed.errors import ConfigError
from birdsed.model.kinds import ModelMeta


@dataclass(frozen=True)
class ModelFacts:
    """What predict needs of the model a runner holds (the names a Detector gives them)."""

    window_s: float
    hop_s: float
    classes: list[str]


@dataclass(frozen=True)
class ScoringOptions:
    """How the windows are scored (loop.predict_files' keywords): what every runner, and every cluster worker, gets.

    window_s, hop_s: None is the model's own (ScoringOptions.resolved fills them in)."""

    window_s: float | None = None
    hop_s: float | None = None
    batch_size: int = 64
    workers: int | None = None  # decoding processes (None: loop.default_workers)
    device: str = "auto"
    pooling: str = "window"
    precision: str = "auto"
    short_policy: str | None = None  # None: each model as it trained

    def resolved(self, facts: ModelFacts) -> ScoringOptions:
        """These options with the model's own window and hop where none was given."""
        return replace(
            self,
            window_s=facts.window_s if self.window_s is None else self.window_s,
            hop_s=facts.hop_s if self.hop_s is None else self.hop_s,
        )


@dataclass
class Scored:
    """What scoring some recordings gave: the seconds of audio scored, and (recording, reason) for each that failed to
    decode (an error, not an exception: a cluster never retries it)."""

    audio_s: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __iadd__(self, other: Scored) -> Scored:
        self.audio_s += other.audio_s
        self.errors += other.errors
        return self


def write_parts(model, files: list[str], part_of: dict[str, Path], scoring: ScoringOptions, quiet: bool) -> Scored:
    """Score each of `files` whose part is not there yet, writing its part (`part_of`) as it completes: the one loop
    that turns recordings into parts, wherever it runs (a killed run, or a retried cluster task, skips what is
    written). `model` is a Detector; scoring: resolved (ScoringOptions.resolved)."""
    from birdsed.infer.grid import FileResult, rows_table
    from birdsed.infer.loop import predict_files  # torch: only where the model runs
    from birdsed.infer.writers import write_table

    scored = Scored()
    todo = [f for f in files if not part_of[f].is_file()]
    if not todo:
        return scored
    for res in predict_files(model, todo, quiet=quiet, **asdict(scoring)):
        if isinstance(res, FileResult):
            write_table(rows_table(res, model.classes), part_of[res.path])
            scored.audio_s += res.duration_s
        else:
            scored.errors.append(res)
    return scored


def check_model(model, scoring: ScoringOptions) -> None:
    """Refuse what write_parts would refuse at its first batch (loop.check_scoring), wherever the model runs."""
    from birdsed.infer.loop import check_scoring  # torch: only where the model runs

    o = scoring
    check_scoring(model, o.window_s, o.hop_s, o.device, o.pooling, o.precision, o.short_policy)


class Runner(Protocol):
    """What runs the model for predict (module docstring): one process or a cluster, the same calls."""

    def facts(self) -> ModelFacts:
        """The model's window_s, hop_s and classes (a model that cannot be loaded raises its ModelError here, or
        before)."""

    def check(self, scoring: ScoringOptions) -> None:
        """Refuse what `score` would refuse at its first batch (loop.check_scoring: the device, the model's runtime,
        the window), before the caller writes anything into OUT."""

    def score(self, files: list[str], part_of: dict[str, Path], scoring: ScoringOptions, quiet: bool) -> Scored:
        """Write the part of each of `files` that has none (write_parts, wherever it runs)."""

    def close_soon(self) -> None:
        """Start letting go of what the combined outputs do not need (the runner's context waits for it on exit)."""


class LocalRunner:
    """This process runs the model (a Detector loaded here)."""

    def __init__(self, model) -> None:
        self.model = model

    def facts(self) -> ModelFacts:
        return ModelFacts(self.model.window_s, self.model.hop_s, list(self.model.classes))

    def check(self, scoring: ScoringOptions) -> None:
        check_model(self.model, scoring)

    def score(self, files: list[str], part_of: dict[str, Path], scoring: ScoringOptions, quiet: bool) -> Scored:
        return write_parts(self.model, files, part_of, scoring, quiet)

    def close_soon(self) -> None:
        """Nothing to let go of: the model goes with the process."""


def local_model(model_dir: Path, meta: ModelMeta, backend: str):
    """The Detector of `model_dir` (its model.json already read: `meta`) for this process: the network (torch), or
    the export alone (onnx, openvino: the PyTorch network, and timm, never built)."""
    if backend in ("onnx", "openvino"):
        from birdsed.model.onnx_detector import OnnxSED, OpenVinoSED

        heads = ("birdnet_head", "birdnet_finetuned", "birdnet_linear")
        exported = {"onnx": ("sed", *heads), "openvino": ("sed",)}[backend]
        if meta.kind not in exported:
            raise ConfigError(
                f"{model_dir} is a {meta.kind} model; the {backend} backend runs the exports of "
                f"{', '.join(exported)} models (use --backend torch)"
            )
        return (OnnxSED if backend == "onnx" else OpenVinoSED)(model_dir, meta=meta)
    if backend == "torch":
        from birdsed.model.modeldir import load_detector

        return load_detector(model_dir, meta)
    raise ConfigError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")


@contextlib.contextmanager
def open_runner(model_dir: Path, meta: ModelMeta, backend: str, cluster: str | None) -> Iterator[Runner]:
    """The runner of a predict: a cluster's (`cluster`: cluster.py's specs; its workers start loading the model at
    once, while the caller lists the inputs), or this process's, with the model loaded."""
    if cluster:
        from birdsed.infer.cluster import ClusterRun

        with ClusterRun(cluster, model_dir) as runner:
            yield runner
    else:
        yield LocalRunner(local_model(model_dir, meta, backend))
