"""The parts of `predict` that this repository speeds up, each measured alone.

    python benchmarks/bench_parts.py

1. Decoding (decode + resample to 32 kHz) of the cached bench_predict soundscapes, one file
   after another vs two files side by side in threads (soundfile and soxr release the GIL).
2. The encoder over 64 windows (median of 5 calls), BatchNorms as trained vs folded into their
   convolutions (`SEDModel.inference_copy`), channels_last both.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from bench_predict import soundscapes  # noqa: E402
from common import machine, save_json  # noqa: E402

from birdsed.audio.decode import stream_audio  # noqa: E402
from birdsed.config import load_config  # noqa: E402
from birdsed.model.sed import SEDModel  # noqa: E402


def decode_rates(files: list[str], threads: int) -> float:
    decode = lambda f: sum(len(c) for c in stream_audio(f))  # noqa: E731
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(decode, files))
    return n / 32000 / (time.perf_counter() - t0)


def encoder_ms(model: SEDModel, mel: torch.Tensor) -> float:
    times = []
    with torch.inference_mode():
        model.encode(mel, framewise=False)
        for _ in range(5):
            t0 = time.perf_counter()
            model.encode(mel, framewise=False)
            times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/predict"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--backbones", nargs="+", default=["mobilenetv3_small_100", "tf_efficientnet_lite0", "resnet10t"])
    a = ap.parse_args()
    rows = []
    for rate in (22050, 44100):
        files = sorted(str(p) for p in soundscapes(a.out, a.minutes, a.files, rate).glob("*.mp3"))
        rows.append(
            {
                "part": f"decode mp3 {rate} Hz (x real time)",
                "before": round(decode_rates(files, 1)),
                "after": round(decode_rates(files, 2)),
            }
        )
    cfg = load_config("small")
    cfg.model.pretrained = False
    for backbone in a.backbones:
        cfg.model.backbone = backbone
        model = SEDModel(cfg.frontend, cfg.model, [f"sp{i:03d}" for i in range(264)]).eval()
        mel = model.frontend(torch.randn(64, 5 * cfg.frontend.sample_rate_hz))
        plain = copy.deepcopy(model).use_channels_last()
        rows.append(
            {
                "part": f"{backbone} encoder, 64 windows (ms)",
                "before": round(encoder_ms(plain, mel)),
                "after": round(encoder_ms(model.inference_copy(), mel)),
            }
        )
    print("\n| part | before | after |\n|---|---|---|")
    for r in rows:
        print(f"| {r['part']} | {r['before']} | {r['after']} |")
    save_json(a.out / "parts.json", {"machine": machine(), "results": rows})


if __name__ == "__main__":
    main()
