"""Peak memory of `predict` on a 24-hour recording, written to disk block by block (never held whole).

    python benchmarks/bench_memory.py --hours 24

The recording is 22.05 kHz FLAC: quiet coloured noise with a synthetic call every minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from bench_predict import random_model  # noqa: E402
from common import machine, peak_rss_mb, predict_workers, save_json, workers_peak_rss_mb  # noqa: E402

from birdsed.data.synth_calls import call_bout, make_species  # noqa: E402
from birdsed.infer.predict import run_predict  # noqa: E402


def long_recording(path: Path, hours: float, rate: int = 22050) -> Path:
    if path.is_file() and sf.info(str(path)).duration >= hours * 3600 - 1:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    species = make_species(4, 0)
    call, _ = call_bout(species[0], rng, 1.0, 32000)
    call = soxr.resample(call, 32000, rate).astype(np.float32) * 0.3
    block = rate * 60  # one minute per block
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16", format="FLAC") as f:
        for _ in range(int(hours * 60)):
            x = (rng.standard_normal(block) * 0.003).astype(np.float32)
            at = int(rng.integers(0, block - len(call)))
            x[at : at + len(call)] += call
            f.write(x)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/memory"))
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--model", default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: predict's)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    rec = long_recording(a.out / f"long_{a.hours:g}h.flac", a.hours)
    make_s = time.perf_counter() - t0
    model_dir = random_model(a.model, a.out)
    out = a.out / f"pred_{time.time_ns()}"
    workers = predict_workers(a.workers, a.device)
    s = run_predict(model_dir, [str(rec)], out, workers=workers, device=a.device, quiet=True)
    row = {
        "hours": a.hours,
        "file_mb": round(rec.stat().st_size / 2**20),
        "make_s": round(make_s, 1),
        "model": a.model,
        "device": a.device,
        "wall_s": round(s.wall_s, 1),
        "realtime_x": round(s.realtime_factor),
        "peak_rss_main_mb": round(peak_rss_mb()),
        "peak_rss_workers_mb": workers_peak_rss_mb(workers),
        "rows": int(len(pd.read_parquet(out / "scores.parquet")) / 3),
    }
    print(row)
    save_json(a.out / "memory.json", {"machine": machine(), "results": [row]})


if __name__ == "__main__":
    main()
