"""Memory at corpus scale (issue #21): the peak RSS of `predict` and of `birdsed merge` must not grow with the number
of recordings; beside them, in the same run, the peer they replaced: every part concatenated in memory (pandas).

    python benchmarks/bench_archive.py --counts 2000 20000 --long 50 --cluster-on 2000 long

Recordings: --count short ones (--short-s seconds each, 32 kHz WAV: quiet noise with a synthetic call) as hard links
of a few distinct files (each link its own path, so its own recording and part), and --long one-hour FLAC ones the
same way. Each measurement runs in a fresh process (its peak RSS alone): predict --shard 1/1 (predicts, then merges:
the whole job of one process), then `birdsed merge` again on its own, then the peer. Then the same archive on a local
Dask cluster of --cluster-workers workers beside one process (throughput, the cluster's overhead on one machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from bench_memory import long_recording  # noqa: E402
from bench_predict import random_model  # noqa: E402
from common import machine, print_markdown, save_json  # noqa: E402

MEASURE = (
    "import json, resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(json.dumps({'rc': rc, 'wall_s': time.perf_counter() - t, "
    "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)
PEER = (
    "import sys, pandas as pd, pathlib; parts = sorted(pathlib.Path(sys.argv[1]).glob('*.parquet')); "
    "pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).to_parquet(sys.argv[2])"
)


def measured(cmd: list[str]) -> dict:
    """Run cmd in a fresh process; its exit status, wall time and peak RSS."""
    res = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def archive(folder: Path, count: int, seconds: float, distinct: int = 8) -> Path:
    """`count` recordings of `seconds` each: hard links of `distinct` files."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.wav"))) == count:
        return folder
    rng = np.random.default_rng(0)
    sources = []
    for k in range(distinct):
        src = folder.parent / f"src_{seconds:g}s_{k}.wav"
        if not src.is_file():
            x = (rng.standard_normal(int(seconds * 32000)) * 0.01).astype(np.float32)
            t = np.arange(int(0.3 * 32000)) / 32000
            x[: len(t)] += 0.3 * np.sin(2 * np.pi * (2000 + 2000 * t) * t).astype(np.float32)
            sf.write(str(src), x, 32000)
        sources.append(src)
    for i in range(count):
        dst = folder / f"rec{i:06d}.wav"
        if not dst.exists():
            os.link(sources[i % distinct], dst)
    return folder


def predict_cmd(model: Path, audio: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "birdsed", "predict", "--model", str(model), str(audio), "--out", str(out),
            "--workers", "0", "--quiet", *extra]  # fmt: skip


def run_case(name: str, audio: Path, model: Path, out: Path, cluster_workers: int, repeats: int = 1) -> list[dict]:
    """Memory: predict, merge and the peer once each. Throughput: one process and the cluster, in turn, `repeats`
    times (each into an empty folder: a folder left by an earlier run would resume, not predict)."""
    n = len(list(audio.iterdir()))
    pred = out / f"pred_{name}"
    peer = [sys.executable, "-c", PEER, str(pred / "parts"), str(out / f"peer_{name}.parquet")]
    shutil.rmtree(pred, ignore_errors=True)
    runs = [
        ("predict (predict + merge)", predict_cmd(model, audio, pred, "--shard", "1/1")),
        ("birdsed merge", [sys.executable, "-m", "birdsed", "merge", str(pred)]),
        ("peer: pd.concat of every part", peer),
    ]
    for r in range(repeats if cluster_workers else 0):
        one, dask = out / f"thr_{name}_one_{r}", out / f"thr_{name}_dask_{r}"
        for folder in (one, dask):
            shutil.rmtree(folder, ignore_errors=True)
        runs += [
            (f"one process, again ({r + 1})", predict_cmd(model, audio, one)),
            (f"local Dask cluster of {cluster_workers} ({r + 1})",
             predict_cmd(model, audio, dask, "--cluster", f"local:{cluster_workers}")),
        ]  # fmt: skip
    return [{"archive": name, "recordings": n, "process": label, **measured(cmd)} for label, cmd in runs]


def cluster_costs(rows: list[dict]) -> list[dict]:
    """Per archive: each turn's cluster wall over the one process's just before it, and their median."""
    out = []
    for name in dict.fromkeys(r["archive"] for r in rows):
        one = [r["wall_s"] for r in rows if r["archive"] == name and r["process"].startswith("one process")]
        dask = [r["wall_s"] for r in rows if r["archive"] == name and r["process"].startswith("local Dask")]
        if one:
            ratios = [d / o - 1 for o, d in zip(one, dask)]
            out.append({"archive": name, "turns": len(ratios), "each": " ".join(f"{x:+.1%}" for x in ratios),
                        "median": statistics.median(ratios)})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/archive"))
    ap.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--short-s", type=float, default=2.0)
    ap.add_argument("--long", type=int, default=0, help="also this many one-hour recordings")
    ap.add_argument("--model", default="small")
    ap.add_argument("--cluster-workers", type=int, default=2, help="0: no throughput comparison")
    ap.add_argument("--repeats", type=int, default=1, help="turns of one process, then the cluster (throughput)")
    ap.add_argument(
        "--cluster-on",
        nargs="+",
        default=None,
        help="compare throughput on these archives: counts of short recordings, and/or 'long' (default: the first)",
    )
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = random_model(a.model, a.out, n_classes=20)
    rows, t0 = [], time.perf_counter()
    on = set(a.cluster_on or [str(a.counts[0])])
    for count in a.counts:
        audio = archive(a.out / f"short_{count}", count, a.short_s)
        workers = a.cluster_workers if str(count) in on else 0
        rows += run_case(f"{count} x {a.short_s:g} s", audio, model, a.out, workers, a.repeats)
    if a.long:
        src = long_recording(a.out / "long_src.flac", 1.0)
        folder = a.out / f"long_{a.long}"
        folder.mkdir(exist_ok=True)
        for i in range(a.long):
            if not (folder / f"hour{i:04d}.flac").exists():
                os.link(src, folder / f"hour{i:04d}.flac")
        rows += run_case(f"{a.long} x 1 h", folder, model, a.out, a.cluster_workers if "long" in on else 0, a.repeats)
    print_markdown(
        rows,
        {
            "archive": "{archive}",
            "process": "{process}",
            "peak RSS (MiB)": "{peak_rss_mb:.0f}",
            "wall (s)": "{wall_s:.1f}",
            "exit": "{rc}",
        },
    )
    costs = cluster_costs(rows)
    if costs:
        print_markdown(costs, {"archive": "{archive}", "turns": "{turns}", "the cluster's cost, each turn": "{each}",
                               "median": "{median:+.1%}"})  # fmt: skip
    save_json(
        a.out / "archive.json",
        {"args": vars(a), "machine": machine(), "rows": rows, "cluster_costs": costs,
         "seconds": round(time.perf_counter() - t0)},
    )  # fmt: skip


if __name__ == "__main__":
    main()
