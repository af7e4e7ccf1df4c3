"""What runs on `predict --cluster`'s workers (cluster.py is the client's side): loading the model once a worker
process, predicting a chunk of files into their parts, and exiting at once when the cluster closes them."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

from distributed import WorkerPlugin

_MODELS: dict[str, object] = {}  # per worker process: model directory -> loaded model


def load_on_worker(model_dir: str) -> tuple[float, float, list[str]]:
    """On a worker: load the model (kept for the worker's chunks); returns what the client needs of it (window_s,
    hop_s, classes), so that the client never builds the network itself."""
    from birdsed.model.modeldir import load_model_dir

    if model_dir not in _MODELS:
        _MODELS[model_dir] = load_model_dir(Path(model_dir))[0]
    model = _MODELS[model_dir]
    return model.window_s, model.hop_s, list(model.classes)


def run_chunk(model_dir: str, files: list[str], parts: list[str], options: dict) -> list[tuple[str, float | None, str]]:
    """On a worker: predict `files` whose parts are not there yet, writing each part; returns (file, duration_s,
    "") for each one predicted and (file, None, reason) for each that failed to decode."""
    from birdsed.infer.grid import FileResult, rows_table
    from birdsed.infer.loop import predict_files
    from birdsed.infer.writers import write_table

    part_of = dict(zip(files, map(Path, parts)))
    todo = [f for f in files if not part_of[f].is_file()]
    if not todo:
        return []
    load_on_worker(model_dir)
    model = _MODELS[model_dir]
    out = []
    for res in predict_files(model, todo, quiet=True, workers=0, **options):
        if isinstance(res, FileResult):
            write_table(rows_table(res, model.classes), part_of[res.path])
            out.append((res.path, res.duration_s, ""))
        else:
            out.append((res[0], None, res[1]))
    return out


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
