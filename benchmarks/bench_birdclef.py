"""Time to predict a BirdCLEF-sized test set on a CPU, against the competition's limit (issue #22): the `small`
model on torch, ONNX Runtime and OpenVINO, and an ensemble of three `small` models, in one run.

    python benchmarks/bench_birdclef.py --files 4 --minutes 4 --copies 4

The soundscapes are synthetic (32 kHz mp3, as `synth` writes them; BirdCLEF's are 32 kHz ogg), hard-linked copies
so that little is synthesised; every copy is decoded in full. Each backend predicts the same files into its own
--out (decoding included, as the submission notebook does); its real-time factor gives the minutes for the test
set of --test-soundscapes x --test-minutes (default 1,100 soundscapes of 4 min: BirdCLEF 2024's hidden test set as
its data page describes it) against --limit-min (BirdCLEF 2024: a CPU notebook of at most 120 min). The scores
of every backend are compared with torch's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_predict import random_model, soundscapes, with_copies  # noqa: E402
from common import machine, print_markdown, save_json  # noqa: E402

from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.export import export_onnx  # noqa: E402
from birdsed.model.modeldir import save_ensemble  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/birdclef"))
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--classes", type=int, default=182, help="BirdCLEF 2024 had 182 classes")
    ap.add_argument("--test-soundscapes", type=int, default=1100)
    ap.add_argument("--test-minutes", type=float, default=4.0)
    ap.add_argument("--limit-min", type=float, default=120.0)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx", "openvino", "ensemble3"])
    a = ap.parse_args()
    audio = with_copies(soundscapes(a.out, a.minutes, a.files, 32000), a.copies)
    small = random_model("small", a.out, a.classes)
    if not (small / "model.onnx").is_file():
        export_onnx(small, small / "model.onnx")
    members = [random_model("small", a.out / f"member{k}", a.classes) for k in range(3)]
    ensemble = (
        save_ensemble(members, a.out / "ensemble3")
        if not (a.out / "ensemble3" / "model.json").is_file()
        else a.out / "ensemble3"
    )
    test_h = a.test_soundscapes * a.test_minutes / 60
    rows, reference = [], None
    for backend in a.backends:
        out = a.out / f"pred_{backend}"
        model = ensemble if backend == "ensemble3" else small
        t0 = time.perf_counter()
        s = run_predict(model, [str(audio)], out, quiet=True, backend="torch" if backend == "ensemble3" else backend)
        wall = time.perf_counter() - t0
        scores = pd.read_parquet(out / "scores.parquet").sort_values(["file", "output", "start_s"])
        classes = [c for c in scores.columns if c not in ("file", "start_s", "end_s", "output")]
        diff = None
        if backend == "torch":
            reference = scores[classes].to_numpy()
        elif backend != "ensemble3" and reference is not None:
            diff = float(np.abs(scores[classes].to_numpy() - reference).max())
        x = s.audio_s / wall
        rows.append(
            {
                "backend": backend,
                "audio_h": s.audio_s / 3600,
                "wall_s": wall,
                "x_realtime": x,
                "test_min": test_h * 60 / x,
                "limit_min": a.limit_min,
                "max_diff_vs_torch": diff,
            }
        )
    print_markdown(
        rows,
        {
            "model / backend": "{backend}",
            "audio (h)": "{audio_h:.2f}",
            "wall (s)": "{wall_s:.1f}",
            "x real time": "{x_realtime:.0f}",
            f"{a.test_soundscapes} x {a.test_minutes:g} min (min)": "{test_min:.1f}",
            "limit (min)": "{limit_min:.0f}",
            "max |score - torch|": "{max_diff_vs_torch}",
        },
    )
    save_json(a.out / "birdclef.json", {"args": vars(a), "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
