"""A predict run's scope: which recordings of the inputs it takes, which lock it holds, what a killed run of it left,
and what it ends with. One interface, `Scope`, two scopes:

  Whole         every input; the run builds the combined outputs itself (outputs.combine)
  Shard(i, n)   `--shard I/N`: the I-th of N shards of the input set (shard.py), side by side with the others in one
                --out; it records what it did, and the last shard to finish merges (merge.py)

predict.run_predict calls the same four things of either, in the same order, under the scope's lock:

    files, errors = scope.select(out, files, errors)
    with run_lock(out, scope.lock):
        scope.sweep(out, part_of)          # the temporaries a killed run of this scope left
        ... the runner writes the parts ...
        merged, n_detections = scope.finish(out, run)
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path

from birdsed.fsutil import remove_stale_temps
from birdsed.infer.merge import merge_if_complete
from birdsed.infer.outputs import OutputSpec, combine
from birdsed.infer.shard import my_inputs, parse_shard, write_record
from birdsed.infer.writers import COMBINED
from birdsed.model.kinds import ModelMeta

log = logging.getLogger(__name__)

RUN_FILES = ("run.json", "errors.csv", *COMBINED)  # what predict writes in OUT itself (a killed run's temporaries go)
PARTS = "parts"  # OUT/parts: one part per recording (parts.py)


@dataclass(frozen=True)
class FinishedRun:
    """What a run leaves its scope to finish with: its recordings and their parts, its errors (the inputs that could
    not run, and the recordings that failed to decode), the model's classes and model.json, the output spec."""

    files: list[str]
    part_of: dict[str, Path]
    errors: list[tuple[str, str]]
    classes: list[str]
    meta: ModelMeta
    spec: OutputSpec

    def done(self) -> list[tuple[str, Path]]:
        """(recording, part) of every recording whose part is written, in order."""
        return [(f, self.part_of[f]) for f in self.files if self.part_of[f].is_file()]


class Scope(abc.ABC):
    """Which recordings a run takes and what it ends with (module docstring)."""

    lock: str  # the run_lock a run of this scope holds in OUT

    @abc.abstractmethod
    def select(
        self, out: Path, files: list[str], errors: list[tuple[str, str]]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """This run's (files, errors) of the inputs listed."""

    @abc.abstractmethod
    def sweep(self, out: Path, part_of: dict[str, Path]) -> None:
        """Remove what a killed run of this scope left half-written (the caller holds the lock)."""

    @abc.abstractmethod
    def finish(self, out: Path, run: FinishedRun) -> tuple[bool, int | None]:
        """End the run (the caller holds the lock): (whether the combined outputs were built, the number of
        detections when this run counted them)."""


class Whole(Scope):
    """Every input, and the combined outputs built at the end."""

    lock = ".lock"

    def select(
        self, out: Path, files: list[str], errors: list[tuple[str, str]]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        return files, errors

    def sweep(self, out: Path, part_of: dict[str, Path]) -> None:
        remove_stale_temps(out, RUN_FILES)
        remove_stale_temps(out / PARTS, lambda name: name.endswith(".parquet"))  # any run's parts, of any input

    def finish(self, out: Path, run: FinishedRun) -> tuple[bool, int | None]:
        return True, combine(out, run.done(), run.errors, run.classes, run.meta, run.spec)


class Shard(Scope):
    """Shard i of n (1-based) of the input set; the last shard to finish merges every shard's parts."""

    def __init__(self, i: int, n: int) -> None:
        self.i, self.n = i, n
        self.lock = (
            f".lock-shard{i}of{n}"  # one lock per shard: N shards write side by side (their files never overlap)
        )

    def select(
        self, out: Path, files: list[str], errors: list[tuple[str, str]]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        out.mkdir(parents=True, exist_ok=True)
        files, errors, new = my_inputs(out, files, errors, self.i, self.n)
        if new:
            log.warning(
                "%d input(s) appeared after the first shard of %s started: not in its input set, not predicted "
                "(run them into a new --out): %s",
                len(new),
                out,
                ", ".join(new[:3]) + (", ..." if len(new) > 3 else ""),
            )
        return files, errors

    def sweep(self, out: Path, part_of: dict[str, Path]) -> None:
        # this shard's own temporaries only: never another shard's live files
        remove_stale_temps(out / PARTS, [p.name for p in part_of.values()])

    def finish(self, out: Path, run: FinishedRun) -> tuple[bool, int | None]:
        parts = {f: p.name for f, p in run.part_of.items()}
        write_record(out, self.i, self.n, run.files, run.errors, run.spec.to_dict(), parts)
        return merge_if_complete(out), None


def scope_of(shard: str | None) -> Scope:
    """The scope of `--shard` (None: the whole input set)."""
    return Shard(*parse_shard(shard)) if shard else Whole()
