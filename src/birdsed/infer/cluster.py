"""`predict --cluster`: the same work on a dask.distributed cluster (optional extra: pip install 'birdsed[cluster]').

    local:N           a local cluster of N worker processes (one thread each)
    tcp://HOST:PORT   an existing scheduler (`dask scheduler` + `dask worker` on each machine)
    FILE.yaml         a batch-system cluster of dask-jobqueue: {kind: slurm|pbs|sge|lsf|htcondor, jobs: N, then the
                      keyword arguments of its cluster class: cores, memory, queue, walltime, account, ...}

Work goes out in chunks of files of about equal total size (shard.partition), several per worker, so that a slow
one is not waited for. Each worker loads the model once and keeps it (one per worker process), and runs the same
streamed, batched loop as `predict` on one machine (loop.predict_files) over its chunk, writing each recording's
part into OUT/parts (a shared file system for workers on other machines), atomically. What the client gets back
is small: each recording's duration, or why it failed to decode.

Faults: a worker that dies mid-chunk loses what it had not written; the scheduler runs the chunk again elsewhere,
and the recordings whose parts exist are skipped there. A recording that fails to decode is an error returned once,
not an exception, so it is never retried. A client killed and started again with the same command resumes from the
parts. The combined outputs are built by the client afterwards (outputs.py), as on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer.shard import partition
from birdsed.progress import progress_bar

log = logging.getLogger(__name__)
JOBQUEUE = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
_MODELS: dict[str, object] = {}  # per worker process: model directory -> loaded model


def _need_distributed():
    try:
        import distributed
    except ImportError as e:
        raise BirdsedError("--cluster needs dask.distributed: pip install 'birdsed[cluster]'") from e
    return distributed


@contextlib.contextmanager
def connect(spec: str) -> Iterator[object]:
    """A dask Client for a --cluster value (module docstring); the cluster it started is closed on exit."""
    distributed = _need_distributed()
    cluster = None
    environ = dict(os.environ)  # dask sets OMP_NUM_THREADS=1 and more in this process for its workers: undone on exit
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--cluster {spec!r}: expected local:N, e.g. local:4") from None
        if n < 1:
            raise ConfigError(f"--cluster {spec!r}: N must be at least 1")
        import dask

        # Dask spawns each worker with MALLOC_TRIM_THRESHOLD_=65536: glibc then returns freed memory to the system at
        # every large free, and a local cluster ran 78 % slower than one process (docs/BENCHMARKS.md, Archives); the
        # thread limits it sets (OMP_NUM_THREADS=1, ...) are kept
        spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
        keep = {k: v for k, v in spawn_env.items() if k != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": keep}):
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
        address = cluster
    elif spec.endswith((".yaml", ".yml")):
        cluster = _jobqueue(Path(spec))
        address = cluster
    elif "://" in spec:
        address = spec
    else:
        raise ConfigError(f"--cluster {spec!r}: expected local:N, tcp://HOST:PORT or a cluster YAML file")
    try:
        with distributed.Client(address) as client:
            yield client
    except OSError as e:
        raise BirdsedError(f"--cluster {spec}: cannot reach the scheduler ({e})") from e
    finally:
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def _jobqueue(path: Path):
    import yaml

    if not path.is_file():
        raise ConfigError(f"--cluster {path}: file not found")
    try:
        conf = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML ({e})") from e
    if not isinstance(conf, dict) or conf.get("kind") not in JOBQUEUE:
        raise ConfigError(f"{path}: needs kind: one of {sorted(JOBQUEUE)}")
    try:
        import dask_jobqueue
    except ImportError as e:
        raise BirdsedError(f"{path}: a batch-system cluster needs dask-jobqueue: pip install dask-jobqueue") from e
    kind, jobs = conf.pop("kind"), int(conf.pop("jobs", 1))
    cluster = getattr(dask_jobqueue, JOBQUEUE[kind])(**conf)
    cluster.scale(jobs=jobs)
    return cluster


def run_chunk(model_dir: str, files: list[str], parts: list[str], options: dict) -> list[tuple[str, float | None, str]]:
    """On a worker: predict `files` whose parts are not there yet, writing each part; returns (file, duration_s,
    "") for each one predicted and (file, None, reason) for each that failed to decode."""
    from birdsed.infer.grid import FileResult, rows_table
    from birdsed.infer.loop import predict_files
    from birdsed.infer.writers import write_table
    from birdsed.model.modeldir import load_model_dir

    part_of = dict(zip(files, map(Path, parts)))
    todo = [f for f in files if not part_of[f].is_file()]
    if not todo:
        return []
    if model_dir not in _MODELS:
        _MODELS[model_dir] = load_model_dir(Path(model_dir))[0]
    model = _MODELS[model_dir]
    out = []
    for res in predict_files(model, todo, quiet=True, workers=0, **options):
        if isinstance(res, FileResult):
            write_table(rows_table(res, model.classes), part_of[res.path])
            out.append((res.path, res.duration_s, ""))
        else:
            out.append((res[0], None, res[1]))
    return out


def predict_on_cluster(
    spec: str,
    model_dir: Path,
    files: list[str],
    part_of: dict[str, Path],
    options: dict,
    quiet: bool = False,
    chunks_per_worker: int = 4,
) -> tuple[float, list[tuple[str, str]]]:
    """Run the files on the cluster (module docstring); returns (seconds of audio predicted, decode errors)."""
    with connect(spec) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        n_chunks = min(len(files), max(1, n_workers * chunks_per_worker))
        chunks = [c for c in partition(files, n_chunks) if c]
        futures = [
            client.submit(
                run_chunk,
                str(model_dir.resolve()),
                c,
                [str(part_of[f]) for f in c],
                options,
                key=f"birdsed-chunk-{i}-{len(chunks)}",
                retries=2,
                pure=False,
            )
            for i, c in enumerate(chunks)
        ]
        audio_s, errors = 0.0, []
        with progress_bar(len(files), f"predict on {n_workers} worker(s)", disable=quiet) as advance:
            size = {fut.key: len(c) for fut, c in zip(futures, chunks)}
            for fut in _need_distributed().as_completed(futures):
                for f, duration, reason in fut.result():
                    if duration is None:
                        errors.append((f, reason))
                    else:
                        audio_s += duration
                advance(size[fut.key])
        log.info("%d chunk(s) on %d worker(s): %.2f h of audio", len(chunks), n_workers, audio_s / 3600)
        return audio_s, errors
