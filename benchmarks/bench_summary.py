"""Peak memory of `birdsed summary` on the scores of a large archive (hours of 5 s rows), beside the file's size.

    python benchmarks/bench_summary.py --hours 10 100 --classes 264 --out /tmp/bench-summary

Makes, per --hours, a predict folder: one-hour recordings of 720 rows x 3 output kinds, `--classes` score columns
(mostly low, a few high: beta(0.3, 6)), written as predict writes them (row groups of whole recordings, about
parts.ROW_GROUP_ROWS rows), a model.json with a threshold of 0.5; then runs `birdsed summary PRED --by recording
--out summary.csv` in a child process and reads its peak RSS. Memory that does not grow with the hours is the claim.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from common import REPO, print_markdown, save_json  # noqa: E402

from birdsed.infer.parts import ROW_GROUP_ROWS  # noqa: E402
from birdsed.model.meta import model_digest  # noqa: E402
from birdsed.rows import ROW_S  # noqa: E402

KINDS = ("clipwise", "segmentwise", "att")


def recording_rows(name: str, classes: list[str], rng: np.random.Generator, hours: float = 1.0) -> pd.DataFrame:
    """One recording's rows of every output kind, as predict's parts hold them."""
    n = int(hours * 3600 / ROW_S)
    start = np.arange(n) * ROW_S
    parts = []
    for kind in KINDS:
        df = pd.DataFrame({"file": name, "start_s": start, "end_s": start + ROW_S, "output": kind})
        scores = rng.beta(0.3, 6.0, size=(n, len(classes))).astype(np.float32)
        parts.append(pd.concat([df, pd.DataFrame(scores, columns=classes)], axis=1))
    return pd.concat(parts, ignore_index=True)


def make_pred(root: Path, hours: int, n_classes: int) -> Path:
    """A predict folder of `hours` one-hour recordings (kept when already there)."""
    pred = root / f"pred-{hours}h-{n_classes}c"
    if (pred / "scores.parquet").is_file():
        return pred
    classes = [f"sp{i:04d}" for i in range(n_classes)]
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "birdnet", "classes": classes, "birdnet": {}, "thresholds": {"global": {"clipwise": 0.5}}}
    (model / "model.json").write_text(json.dumps({**meta, "default_output": "clipwise"}))
    pred.mkdir(parents=True, exist_ok=True)
    stamp = {"model": str(model), "model_sha256": model_digest(model), "classes": classes}
    (pred / "run.json").write_text(json.dumps(stamp))
    rng = np.random.default_rng(0)
    per_group = max(1, ROW_GROUP_ROWS // int(3 * 3600 / ROW_S))  # whole recordings per row group
    writer = None
    for first in range(0, hours, per_group):
        names = [f"site{h % 7}/rec{h:05d}.wav" for h in range(first, min(hours, first + per_group))]
        table = pa.Table.from_pandas(pd.concat([recording_rows(f, classes, rng) for f in names]), preserve_index=False)
        writer = writer or pq.ParquetWriter(pred / "scores.parquet", table.schema)
        writer.write_table(table, row_group_size=len(table))
    writer.close()
    return pred


def run_summary(pred: Path) -> dict:
    """`birdsed summary` in a child process: wall time and peak RSS (the child's own, from wait4)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "birdsed", "summary", str(pred), "--by", "recording", "--out", str(pred / "s.csv")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"summary failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall_s, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=int, nargs="+", default=[10, 100], help="archive sizes in hours of recordings")
    p.add_argument("--classes", type=int, default=264, help="score columns (species)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-summary"))
    a = p.parse_args()
    rows = []
    for hours in a.hours:
        t0 = time.perf_counter()
        pred = make_pred(a.out, hours, a.classes)
        made_s = time.perf_counter() - t0
        f = pq.ParquetFile(pred / "scores.parquet")
        row = {
            "hours": hours,
            "classes": a.classes,
            "rows": f.metadata.num_rows,
            "row_groups": f.num_row_groups,
            "scores_mb": round((pred / "scores.parquet").stat().st_size / 2**20),
            "in_memory_mb": round(f.metadata.num_rows * a.classes * 4 / 2**20),  # the float32 scores, whole
            "made_s": round(made_s, 1),
            **run_summary(pred),
        }
        print(row, flush=True)
        rows.append(row)
    print_markdown(
        rows,
        {
            "hours": "{hours}",
            "rows x classes": "{rows:,} x {classes}",
            "scores.parquet": "{scores_mb} MiB",
            "scores as float32": "{in_memory_mb} MiB",
            "summary peak RSS": "{peak_rss_mb} MiB",
            "wall": "{wall_s} s",
        },
    )
    save_json(a.out / "summary.json", {"python": sys.version.split()[0], "cpu_count": os.cpu_count(), "results": rows})


if __name__ == "__main__":
    main()
