"""`predict --cluster`: the same work on a dask.distributed cluster (optional extra: pip install 'birdsed[cluster]').

    local:N           a local cluster of N worker processes (one thread each)
    tcp://HOST:PORT   an existing scheduler (`dask scheduler` + `dask worker` on each machine)
    FILE.yaml         a batch-system cluster of dask-jobqueue: {kind: slurm|pbs|sge|lsf|htcondor, jobs: N, then the
                      keyword arguments of its cluster class: cores, memory, queue, walltime, account, ...}

Work goes out in tasks, each a group of recordings of about equal total size (shard.partition), 16 per worker, so that a
slow one is not waited for. Each worker loads the model once and keeps it (one per worker process), and runs the same
loop as `predict` on one machine (runners.write_parts) over its task's recordings, writing each recording's part into
OUT/parts (a shared file system for workers on other machines), atomically. What the client gets back is small: the
seconds of audio scored, and why the recordings that failed to decode did (runners.Scored).

Faults: a worker that dies mid-task loses what it had not written; the scheduler runs the task again elsewhere,
and the recordings whose parts exist are skipped there. A recording that fails to decode is an error returned once,
not an exception, so it is never retried. A client killed and started again with the same command resumes from the
parts. The combined outputs are built by the client afterwards (outputs.py), as on one machine, while the cluster
closes.

The client never imports torch or builds the network: the workers start loading the model as soon as the cluster is
up, while the client lists the inputs, and the first to finish tells it the model's window and classes
(cluster_worker.py holds what runs on the workers).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import remove_stale_temps
from birdsed.infer.runners import ModelFacts, Scored, ScoringOptions
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


def _need_distributed():
    try:
        import distributed
    except ImportError as e:
        raise BirdsedError("--cluster needs dask.distributed: pip install 'birdsed[cluster]'") from e
    if not log.isEnabledFor(logging.DEBUG):  # its start and stop (about 35 lines a run) only under -v
        logging.getLogger("distributed").setLevel(logging.WARNING)
    return distributed


def connect(spec: str) -> tuple[object, object | None]:
    """(a dask Client for a --cluster value (module docstring), the cluster it started, or None for a running
    scheduler): the caller closes both."""
    distributed = _need_distributed()
    cluster = None
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
        # no HTTP server answers but the scheduler's own protocol: the dashboard is off, and its status, health and
        # metrics pages (served on 127.0.0.1:8787 even so) are not asked for
        no_pages = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": keep, **no_pages, **_forkserver()}):
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
        return distributed.Client(address), cluster
    except OSError as e:
        if cluster is not None:
            cluster.close()
        raise BirdsedError(f"--cluster {spec}: cannot reach the scheduler ({e})") from e


# what a local worker needs before its first task: imported once, in the fork server, not once a worker
WORKER_PRELOAD = ["distributed", "birdsed.infer.cluster_worker", "birdsed.infer.runners", "birdsed.infer.loop",
                  "birdsed.model.modeldir", "birdsed.model.sed"]  # fmt: skip


def _forkserver() -> dict:
    """Dask configuration under which local workers are forked from a server that has imported torch, timm and the
    model stack once (WORKER_PRELOAD), rather than each spawned and importing them itself: two workers took 5-6 s
    to be ready side by side on 2 cores, against 3.5-4 s for one process. The server starts with the first worker,
    so it has Dask's thread limits in its environment; {} where fork servers do not exist (Windows)."""
    import multiprocessing

    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return {}
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(WORKER_PRELOAD)  # after Dask's own preload list, which it sets once
    return {"distributed.worker.multiprocessing-method": "forkserver"}


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


class ClusterRun:
    """One predict's cluster, a Runner (runners.py): started first, its workers load the model while the client lists
    the inputs (the client itself imports neither torch nor the network); closed in the background while the client
    builds the combined outputs (close_soon), and waited for on exit.

        with ClusterRun(spec, model_dir) as run:
            facts = run.facts()  # window_s, hop_s, classes, from the first worker to load the model
            run.check(scoring)   # what the workers would refuse at their first batch, refused by one of them now
            scored = run.score(files, part_of, scoring, quiet)
            run.close_soon()
    """

    def __init__(self, spec: str, model_dir: Path, tasks_per_worker: int = 16):
        self.spec, self.model_dir, self.tasks_per_worker = spec, str(model_dir.resolve()), tasks_per_worker
        self.client = self.cluster = self._closer = None

    def __enter__(self) -> ClusterRun:
        self._environ = dict(os.environ)  # dask sets OMP_NUM_THREADS=1 and more here for its workers: undone on exit
        try:
            self.client, self.cluster = connect(self.spec)
            from birdsed.infer.cluster_worker import QuickExit, load_on_worker

            if self.cluster is not None:  # workers birdsed started: they exit at once when closed
                self.client.register_plugin(QuickExit(), name="birdsed-quick-exit")
            # one per worker there now (a batch system's may still be queued: then the first to come)
            workers = list(self.client.scheduler_info().get("workers", {})) or [None]
            self._loading = [
                self.client.submit(
                    load_on_worker,
                    self.model_dir,
                    key=f"birdsed-load-{i}",
                    workers=None if w is None else [w],
                    allow_other_workers=True,
                    pure=False,
                )
                for i, w in enumerate(workers)
            ]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._closer is None:
                self._close_client()
                self._close_cluster()
            else:
                self._closer.join()
        finally:
            os.environ.clear()
            os.environ.update(self._environ)

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def close_soon(self) -> None:
        """Close the client, and start closing the cluster (a graceful close takes a second or two) while the caller
        goes on; __exit__ waits for it."""
        self._close_client()
        self._closer = threading.Thread(target=self._close_cluster, name="birdsed-cluster-close", daemon=True)
        self._closer.start()

    def facts(self) -> ModelFacts:
        """The model's window_s, hop_s and classes, from the first worker to load it (a model a worker cannot load
        raises its ModelError here)."""
        first = next(iter(_need_distributed().as_completed(self._loading)))
        return ModelFacts(*first.result())

    def check(self, scoring: ScoringOptions) -> None:
        """Refuse what the workers would refuse at their first batch, as one of them sees it (its device, its model's
        runtime, the window): its exception is raised here."""
        from birdsed.infer.cluster_worker import check_on_worker

        self.client.submit(check_on_worker, self.model_dir, scoring, key="birdsed-check", pure=False).result()

    def score(self, files: list[str], part_of: dict[str, Path], scoring: ScoringOptions, quiet: bool) -> Scored:
        """Write the files' parts on the cluster, in tasks (module docstring); a worker killed mid-write left a
        temporary, removed here."""
        if not files:
            return Scored()
        from birdsed.infer.cluster_worker import run_task

        client = self.client
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        n_tasks = min(len(files), max(1, n_workers * self.tasks_per_worker))
        tasks = [t for t in partition(files, n_tasks) if t]
        futures = [
            client.submit(
                run_task,
                self.model_dir,
                t,
                [str(part_of[f]) for f in t],
                scoring,
                key=f"birdsed-task-{i}-{len(tasks)}",
                retries=2,
                pure=False,
            )
            for i, t in enumerate(tasks)
        ]
        scored = Scored()
        with progress_bar(len(files), f"predict on {n_workers} worker(s)", disable=quiet) as advance:
            size = {fut.key: len(t) for fut, t in zip(futures, tasks)}
            for fut in _need_distributed().as_completed(futures):
                scored += fut.result()
                advance(size[fut.key])
        log.info("%d task(s) on %d worker(s): %.2f h of audio", len(tasks), n_workers, scored.audio_s / 3600)
        remove_stale_temps(part_of[files[0]].parent, [part_of[f].name for f in files])
        return scored
