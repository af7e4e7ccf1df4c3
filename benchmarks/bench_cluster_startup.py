"""The fixed cost of a local Dask cluster (issue #21): what `predict --cluster local:N` pays before and after its work.

    python benchmarks/bench_cluster_startup.py --workers 2 --repeats 3

Times, in this process: importing `distributed`, bringing up birdsed's local cluster of N one-thread workers and a
client (`--cluster local:N`: workers forked from a server that imports torch, timm and the model stack once), the
workers importing torch and timm (what each needs before its first chunk), and closing the cluster; then the same for
Dask's default LocalCluster (spawned workers, each importing them itself). The peer is one process importing torch and
timm, as single-process predict does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_markdown, save_json  # noqa: E402


def _import_stack() -> None:
    import timm  # noqa: F401 - timm imports torch


def _use_and_close(client, cluster, prefix: str) -> dict:
    """The workers import torch and timm (what each needs before its first chunk), then the cluster closes."""
    t0 = time.perf_counter()
    client.run(_import_stack)
    t1 = time.perf_counter()
    client.close()
    cluster.close()
    return {f"{prefix}workers_import_s": t1 - t0, f"{prefix}close_s": time.perf_counter() - t1}


def one_turn(workers: int) -> dict:
    """birdsed's own local cluster (cluster.connect: forked workers, QuickExit) beside Dask's default one."""
    t0 = time.perf_counter()
    import distributed

    from birdsed.infer.cluster import connect
    from birdsed.infer.cluster_worker import QuickExit

    t1 = time.perf_counter()
    client, cluster = connect(f"local:{workers}")
    client.register_plugin(QuickExit(), name="birdsed-quick-exit")
    row = {"import_s": t1 - t0, "up_s": time.perf_counter() - t1, **_use_and_close(client, cluster, "")}
    t2 = time.perf_counter()
    default = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    default_client = distributed.Client(default)
    row["dask_default_up_s"] = time.perf_counter() - t2
    return {**row, **_use_and_close(default_client, default, "dask_default_")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-out/cluster_startup"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in range(a.repeats):  # each turn in a fresh process: `distributed` is imported once a process
        code = f"import json, bench_cluster_startup as b; print(json.dumps(b.one_turn({a.workers})))"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    peer = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, timm"], check=True)
        peer.append(time.perf_counter() - t)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    table = [{"step": k, "s": v} for k, v in med.items()]
    table.append({"step": "sum: birdsed's cluster", "s": sum(v for k, v in med.items() if not k.startswith("dask"))})
    table.append({"step": "sum: Dask's default cluster", "s": sum(v for k, v in med.items() if k.startswith("dask"))})
    table.append({"step": "peer: one process imports torch and timm", "s": statistics.median(peer)})
    print_markdown(table, {"step": "{step}", f"median of {a.repeats} (s)": "{s:.2f}"})
    save_json(a.out / "cluster_startup.json", {"machine": machine(), "args": vars(a), "turns": rows, "peer_s": peer})


if __name__ == "__main__":
    main()
