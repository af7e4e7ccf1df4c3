"""`predict` end to end (decode included) over folders of long mp3 soundscapes.

    python benchmarks/bench_predict.py --minutes 10 --files 3 --device cpu --models small seed108

Makes the soundscapes with `synth` (at 22.05 and 44.1 kHz), builds each model with random
weights (speed does not depend on the weights; 264 classes as in the competition) or takes
a trained model directory (--model-dir), runs `predict` and reports audio seconds, wall
seconds, real-time factor and peak RSS (this process plus its decoding workers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import machine, peak_rss_mb, predict_workers, print_markdown, save_json, workers_peak_rss_mb  # noqa: E402

from birdsed.config import load_config  # noqa: E402
from birdsed.data.synth import SynthConfig, synthesize  # noqa: E402
from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.modeldir import save_model_dir  # noqa: E402
from birdsed.model.sed import SEDModel  # noqa: E402


def soundscapes(out: Path, minutes: float, files: int, rate: int) -> Path:
    folder = (
        out / f"soundscapes_{rate}_{files}x{minutes:g}min"
    )  # one folder per setting: a cached set never stands in for another
    if not (folder / "test_labels.csv").is_file():
        synthesize(
            folder,
            SynthConfig(
                species=6,
                clips_per_species=1,
                soundscapes=files,
                soundscape_s=minutes * 60,
                min_clip_s=3,
                max_clip_s=3,
                soundscape_rate_hz=rate,
            ),
            quiet=True,
        )
    return folder / "test_audio"


def with_copies(folder: Path, copies: int) -> Path:
    """A folder holding every recording of `folder` `copies` times (hard links): hours of input for fast
    devices without hours of synthesis. Each copy is decoded in full like any other file."""
    if copies <= 1:
        return folder
    out = folder.parent / f"{folder.name}_x{copies}"
    out.mkdir(exist_ok=True)
    for f in sorted(folder.glob("*.mp3")):
        for c in range(copies):
            link = out / f"{f.stem}_copy{c}{f.suffix}"
            if not link.exists():
                link.hardlink_to(f)
    return out


def random_model(preset: str, out: Path, n_classes: int = 264) -> Path:
    cfg = load_config(preset)
    cfg.model.pretrained = False
    model_dir = out / f"model_{preset}"
    if not (model_dir / "model.json").is_file():
        save_model_dir(SEDModel(cfg.frontend, cfg.model, [f"sp{i:03d}" for i in range(n_classes)]), model_dir)
    return model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/predict"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--copies", type=int, default=1, help="predict each soundscape this many times (hard links)")
    ap.add_argument("--rates", type=int, nargs="+", default=[22050, 44100])
    ap.add_argument("--models", nargs="+", default=["small", "seed108"])
    ap.add_argument("--model-dir", type=Path, help="a trained model instead of random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--pooling", default="window")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    workers = predict_workers(a.workers, a.device)
    rows = []
    for rate in a.rates:
        folder = with_copies(soundscapes(a.out, a.minutes, a.files, rate), a.copies)
        for preset in [str(a.model_dir)] if a.model_dir else a.models:
            model_dir = a.model_dir or random_model(preset, a.out)
            if a.backend == "onnx" and not (model_dir / "model.onnx").is_file():
                from birdsed.model.export import export_onnx

                export_onnx(model_dir, model_dir / "model.onnx")
            out = a.out / f"pred_{Path(preset).name}_{rate}_{a.device}_{a.backend}_{a.precision}_{time.time_ns()}"
            s = run_predict(
                model_dir,
                [str(folder)],
                out,
                batch_size=a.batch_size,
                workers=workers,
                device=a.device,
                quiet=True,
                backend=a.backend,
                pooling=a.pooling,
                precision=a.precision,
            )
            row = {
                "model": Path(preset).name,
                "input_rate_hz": rate,
                "device": a.device,
                "backend": a.backend,
                "precision": a.precision,
                "files": s.n_files,
                "audio_s": round(s.audio_s, 1),
                "wall_s": round(s.wall_s, 2),
                "realtime_x": round(s.realtime_factor, 1),
                "peak_rss_mb": round(peak_rss_mb(), 0),
                "peak_rss_workers_mb": workers_peak_rss_mb(workers),
            }
            print(row, flush=True)
            rows.append(row)
    print_markdown(
        rows,
        {
            "model": "{model}",
            "input": "mp3 {input_rate_hz} Hz",
            "device": "{device}",
            "backend": "{backend}",
            "precision": "{precision}",
            "audio s": "{audio_s:.0f}",
            "wall s": "{wall_s:.1f}",
            "x real time": "{realtime_x:.0f}",
            "peak RSS MiB (main / workers)": "{peak_rss_mb:.0f} / {peak_rss_workers_mb}",
        },
    )
    save_json(
        a.out / f"predict_{a.device}_{a.backend}_{a.precision}.json",
        {"machine": machine(), "args": vars(a), "results": rows},
    )


if __name__ == "__main__":
    main()
