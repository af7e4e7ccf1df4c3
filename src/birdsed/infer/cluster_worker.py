"""What runs on `predict --cluster`'s workers (cluster.py is the client's side): loading the model once a worker
process, writing the parts of a task's recordings, and exiting at once when the cluster closes them."""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import replace
from pathlib import Path

from distributed import WorkerPlugin

from birdsed.infer.runners import Scored, ScoringOptions, check_model, write_parts

_MODELS: dict[str, object] = {}  # per worker process: model directory -> loaded model


def load_on_worker(model_dir: str) -> tuple[float, float, list[str]]:
    """On a worker: load the model (kept for the worker's tasks); returns what the client needs of it (window_s,
    hop_s, classes), so that the client never builds the network itself."""
    from birdsed.model.modeldir import load_detector

    if model_dir not in _MODELS:
        _MODELS[model_dir] = load_detector(model_dir)
    model = _MODELS[model_dir]
    return model.window_s, model.hop_s, list(model.classes)


def check_on_worker(model_dir: str, scoring: ScoringOptions) -> None:
    """On a worker: refuse what run_task would refuse at its first batch (runners.check_model), on its device."""
    load_on_worker(model_dir)
    check_model(_MODELS[model_dir], scoring)


def run_task(model_dir: str, files: list[str], parts: list[str], scoring: ScoringOptions) -> Scored:
    """On a worker: write the parts of a task's recordings that are not there yet (runners.write_parts, the loop a
    single process runs too), decoding in this process."""
    load_on_worker(model_dir)
    part_of = dict(zip(files, map(Path, parts)))
    return write_parts(_MODELS[model_dir], files, part_of, replace(scoring, workers=0), quiet=True)


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class QuickExit(WorkerPlugin):
    """A worker process holding torch took 1.4-1.9 s to tear its interpreter down after a normal close, which a run
    waited for at its end. Nothing of it is needed then (every part is written and renamed, the queues to its nanny are
    flushed before the interpreter exits), so after a normal close the process exits at once. Registered only on the
    clusters birdsed starts (local:N, a batch system's jobs), never on workers someone else runs."""

    def teardown(self, worker) -> None:
        atexit.register(_exit_now)  # registered last, so run first of the exit handlers
