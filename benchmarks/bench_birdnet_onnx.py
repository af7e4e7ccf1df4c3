"""Heads on BirdNET predicted three ways on the CPU, same recordings, same threads, one run: the model as trained
(the frozen head: BirdNET through LiteRT, the CPU default; the fine-tuned head: its torch port), its ONNX export run
by ONNX Runtime (`predict --backend onnx`), and the export's largest score difference from the first.

    python benchmarks/bench_birdnet_onnx.py --models bench-out/nips4b-birdnet-frozen/fold0/run/model \
        bench-out/tail2/from0.75_syn/fold0/run/model --clips 110

Each model directory is copied (its model.onnx is written into the copy, under --out); the clips are NIPS4B's first
--clips recordings (skipped cleanly when the data set is absent). x real time = audio seconds / wall seconds of the
whole `predict` (decoding included, in the main process as predict does below 4 cores), each runtime's own thread
default.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402

from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.export import export_onnx  # noqa: E402
from birdsed.model.meta import read_model_meta  # noqa: E402


def timed_predict(model: Path, files: list[str], out: Path, backend: str) -> tuple[float, pd.DataFrame]:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    run_predict(model, files, out, quiet=True, workers=0, backend=backend)
    wall = time.perf_counter() - t
    return wall, pd.read_parquet(out / "scores.parquet").sort_values(["file", "output", "start_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--clips", type=int, default=110)
    ap.add_argument("--out", type=Path, default=Path("bench-out/birdnet_onnx"))
    a = ap.parse_args()
    if not NIPS4B.is_dir():
        sys.exit(f"{NIPS4B} not found: the benchmark needs NIPS4B's recordings")
    files = sorted(str(p) for p in (NIPS4B / "audio").iterdir())[: a.clips]
    audio_s = sum(sf.info(f).duration for f in files)
    rows = []
    for i, src in enumerate(a.models):
        model = a.out / f"model{i}"
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(src, model)
        kind = read_model_meta(model).kind
        t = time.perf_counter()
        diffs = export_onnx(model, model / "model.onnx", check_audio=files[0])
        export_s = time.perf_counter() - t
        own_s, own = timed_predict(model, files, a.out / f"pred{i}_torch", "torch")
        onnx_s, onnx = timed_predict(model, files, a.out / f"pred{i}_onnx", "onnx")
        classes = [c for c in own.columns if c not in ("file", "start_s", "end_s", "output")]
        rows.append(
            {
                "model": str(src),
                "kind": kind,
                "own_x": audio_s / own_s,
                "onnx_x": audio_s / onnx_s,
                "max_diff": float(np.abs(onnx[classes].to_numpy() - own[classes].to_numpy()).max()),
                "export_s": export_s,
                "export_check": max(diffs.values()),
                "onnx_mib": (model / "model.onnx").stat().st_size / 2**20,
            }
        )
        print(rows[-1], flush=True)
    columns = {
        "model": "{model}",
        "kind": "{kind}",
        "as trained (x real time)": "{own_x:.1f}",
        "ONNX Runtime (x real time)": "{onnx_x:.1f}",
        "max score difference": "{max_diff:.1e}",
        "export s (check)": "{export_s:.1f} ({export_check:.1e})",
        "model.onnx MiB": "{onnx_mib:.1f}",
    }
    print_markdown(rows, columns)
    save_json(a.out / "results.json", {"machine": machine(), "clips": len(files), "audio_s": audio_s, "rows": rows})


if __name__ == "__main__":
    main()
