"""BirdNET V2.4 through LiteRT and through torch (model/birdnet_torch.py) on the same real recordings, with the same
threads, in one run: x real time of the model itself (decoding excluded), and the largest difference between them.

    python benchmarks/bench_birdnet_torch.py --clips 40 --threads 2 --batch 16 --out bench-out/birdnet_torch

Windows: the first --clips NIPS4B clips (32 kHz FLAC) resampled to 48 kHz and cut into 3 s windows every 3 s (the
last one zero-padded), as BirdNETDetector feeds the model. Each side runs every window --repeat times after one
warm-up batch; the best repeat counts. Rows:
- litert logits: the detector's runtime (XNNPACK delegate, logits only);
- litert embed: the embedding runtime (no delegate, so the embedding tensor can be read; logits come with it);
- torch fp32 (and torch bf16 with --bf16): one forward gives the logits and the embedding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402

from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ, BirdNETRuntime  # noqa: E402
from birdsed.model.birdnet_torch import load_birdnet_torch  # noqa: E402


def nips4b_windows(clips: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, 144000) 3 s windows at 48 kHz of the first `clips` NIPS4B clips, every 3 s, the last one zero-padded;
    and (W,) bool: the window holds padding."""
    paths = sorted((NIPS4B / "audio").glob("*.flac"))[:clips]
    if not paths:
        sys.exit(f"NIPS4B not found at {NIPS4B}")
    out, padded = [], []
    for p in paths:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(1), sr, SAMPLE_RATE_HZ).astype(np.float32)
        n = len(x)
        x = np.pad(x, (0, -n % N_SAMPLES)).reshape(-1, N_SAMPLES)
        out.extend(x)
        padded.extend(np.arange(1, len(x) + 1) * N_SAMPLES > n)
    return np.stack(out), np.array(padded)


def timed(run, windows: np.ndarray, batch: int, repeat: int) -> tuple[float, np.ndarray]:
    """Best wall seconds over `repeat` passes of run over windows in batches, and the last pass's output."""
    run(windows[:batch])  # warm-up
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = np.concatenate([run(windows[i : i + batch]) for i in range(0, len(windows), batch)])
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also torch in bf16 (autocast) on the CPU")
    ap.add_argument("--out", type=Path, default=Path("bench-out/birdnet_torch"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    windows, padded = nips4b_windows(a.clips)
    audio_s = len(windows) * N_SAMPLES / SAMPLE_RATE_HZ
    detector, embedder = BirdNETRuntime(False, a.threads), BirdNETRuntime(True, a.threads)
    model = load_birdnet_torch()

    def torch_run(bf16: bool):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits, _ = model(torch.from_numpy(x))
            return logits.float().numpy()

        return run

    sides = {
        "litert logits (XNNPACK)": lambda x: detector.logits(x, a.batch),
        "litert embed (no delegate)": lambda x: embedder.logits(x, a.batch),
        "torch fp32 (logits + embedding)": torch_run(False),
    }
    if a.bf16:
        sides["torch bf16 autocast (logits + embedding)"] = torch_run(True)
    rows, ref = [], None
    for name, run in sides.items():
        wall, logits = timed(run, windows, a.batch, a.repeat)
        ref = logits if ref is None else ref
        rows.append(
            {
                "side": name,
                "windows": len(windows),
                "audio_s": round(audio_s, 1),
                "wall_s": round(wall, 2),
                "x_realtime": round(audio_s / wall, 1),
                # apart: the zero-padded tails (a constant stretch leaves FFT rounding noise in most bins, which the
                # spectrogram's power < 1 lifts: the port's FFT runs in float64 for them)
                "max_diff_full": float(np.abs(logits - ref)[~padded].max(initial=0)),
                "max_diff_padded": float(np.abs(logits - ref)[padded].max(initial=0)),
            }
        )
        print(rows[-1], flush=True)
    print_markdown(
        rows,
        {
            "side": "{side}",
            "3 s windows": "{windows}",
            "wall s": "{wall_s}",
            "x real time": "{x_realtime}",
            "max abs logit diff vs LiteRT, full windows": "{max_diff_full:.1e}",
            "zero-padded windows": "{max_diff_padded:.1e}",
        },
    )
    save_json(a.out / "bench_birdnet_torch.json", {"machine": machine(), "args": vars(a), "rows": rows})


if __name__ == "__main__":
    main()
