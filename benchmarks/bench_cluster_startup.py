"""The fixed cost of a local Dask cluster (issue #21): what `predict --cluster local:N` pays before and after its work.

    python benchmarks/bench_cluster_startup.py --workers 2 --repeats 3

Times, in this process: importing `distributed`, bringing up a LocalCluster of N one-thread worker processes and a
client, the workers importing torch and timm (what each does before its first chunk; side by side on the cores),
and closing the cluster. The peer is one process importing torch and timm, as single-process predict does.
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


def one_turn(workers: int) -> dict:
    t0 = time.perf_counter()
    from distributed import Client, LocalCluster

    t1 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    t2 = time.perf_counter()
    client.run(_import_stack)
    t3 = time.perf_counter()
    client.close()
    cluster.close()
    t4 = time.perf_counter()
    return {"import_s": t1 - t0, "up_s": t2 - t1, "workers_import_s": t3 - t2, "close_s": t4 - t3}


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
    table.append({"step": "sum: the cluster's fixed cost", "s": sum(med.values())})
    table.append({"step": "peer: one process imports torch and timm", "s": statistics.median(peer)})
    print_markdown(table, {"step": "{step}", f"median of {a.repeats} (s)": "{s:.2f}"})
    save_json(a.out / "cluster_startup.json", {"machine": machine(), "args": vars(a), "turns": rows, "peer_s": peer})


if __name__ == "__main__":
    main()
