"""Time and peak memory of `birdsed report` on one long recording (an hour by default), beside the page's size.

    python benchmarks/bench_report.py --minutes 60 --out /tmp/bench-report [--src OTHER/src]

Makes a predict folder over one recording of `--minutes` (noise with tone bursts, 16-bit WAV at 32 kHz): scores of
6 classes per 5 s row and output kind, the rows at 0.5 or more as detections; then runs `birdsed report PRED
--max-minutes MINUTES` in a child process (the code of `--src`, default this checkout's) and reads its wall time and
peak RSS (wait4). Run it with `--src` of an older checkout for the before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
from common import REPO, print_markdown, save_json  # noqa: E402

CLASSES = ["amecro", "woothr", "eurbla", "norcar", "blujay", "houspa"]
KINDS = ("clipwise", "segmentwise", "att")
RATE_HZ = 32000


def make_pred(root: Path, minutes: int) -> Path:
    """One recording of `minutes` and its predict folder (scores.parquet, detections.csv; no run.json)."""
    rng = np.random.default_rng(0)
    wav, pred = root / "long.wav", root / "pred"
    pred.mkdir(parents=True, exist_ok=True)
    t = np.arange(60 * RATE_HZ) / RATE_HZ
    with sf.SoundFile(wav, "w", RATE_HZ, 1, subtype="PCM_16") as f:
        for m in range(minutes):  # a minute at a time: the recording is never held whole
            x = rng.normal(0, 0.02, len(t))
            for k in range(len(CLASSES)):
                burst = ((t % (7 + 3 * k)) < 0.4) & ((m + k) % 3 == 0)
                x += burst * 0.2 * np.sin(2 * np.pi * (1500 + 900 * k) * t)
            f.write(x.astype(np.float32))
    n = minutes * 12
    start = np.arange(n) * 5.0
    parts = []
    for kind in KINDS:
        scores = pd.DataFrame(rng.random((n, len(CLASSES))) ** 3, columns=CLASSES).astype(np.float32)
        parts.append(
            pd.concat(
                [pd.DataFrame({"file": str(wav), "start_s": start, "end_s": start + 5.0}), scores], axis=1
            ).assign(output=kind)
        )
    table = pd.concat(parts, ignore_index=True)[["file", "start_s", "end_s", "output", *CLASSES]]
    table.to_parquet(pred / "scores.parquet")
    rows = table[table["output"] == "clipwise"].melt(
        ["file", "start_s", "end_s", "output"], var_name="label", value_name="score"
    )
    rows[rows["score"] >= 0.5].drop(columns="output").to_csv(pred / "detections.csv", index=False)
    return pred


def run_report(pred: Path, minutes: int, src: Path) -> dict:
    """`birdsed report` in a child process: wall time and peak RSS (the child's own, from wait4)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = pred / "report.html"
    cmd = [sys.executable, "-m", "birdsed", "report", str(pred), "--out", str(out), "--max-minutes", str(minutes)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"report failed: {proc.stderr.read().decode()[-2000:]}")
    return {
        "wall_s": round(wall_s, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "html_mb": round(out.stat().st_size / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=60, help="the recording's length (at most 60: report's bound)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-report"))
    p.add_argument("--src", type=Path, default=REPO / "src", help="the birdsed sources to run (before / after)")
    a = p.parse_args()
    pred = make_pred(a.out, a.minutes)
    row = {"minutes": a.minutes, "src": str(a.src), **run_report(pred, a.minutes, a.src)}
    print(row, flush=True)
    print_markdown(
        [row],
        {
            "recording": "{minutes} min",
            "report wall": "{wall_s} s",
            "peak RSS": "{peak_rss_mb} MiB",
            "report.html": "{html_mb} MiB",
        },
    )
    save_json(a.out / "report.json", {"python": sys.version.split()[0], "cpu_count": os.cpu_count(), "results": [row]})


if __name__ == "__main__":
    main()
