"""Decoding alone, on one core: what a `predict` decoding worker can deliver.

    python benchmarks/bench_decode.py --minutes 10

On the mp3 soundscapes of bench_predict.py (made if absent): birdsed's streamed decode to
mono 32 kHz (`stream_audio`), and its two parts, libsndfile's decode and soxr's resampling
(HQ, the quality birdsed uses), as x real time on one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import soundscapes  # noqa: E402
from common import machine, print_markdown, save_json  # noqa: E402

from birdsed.audio.decode import stream_audio  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/predict"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rates", type=int, nargs="+", default=[22050, 44100])
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for rate in a.rates:
        path = sorted(soundscapes(a.out, a.minutes, 1, rate).glob("*.mp3"))[0]
        dur = sf.info(str(path)).duration
        stream_s = timed(lambda: sum(len(c) for c in stream_audio(path, 30.0, 32000)))
        x, sr = sf.read(str(path), dtype="float32")
        read_s = timed(lambda: sf.read(str(path), dtype="float32"))
        resample_s = timed(lambda: soxr.resample(x, sr, 32000, quality="HQ"))
        rows.append(
            {"rate": rate, "audio_s": dur, "stream": dur / stream_s, "read": dur / read_s, "resample": dur / resample_s}
        )
    print_markdown(
        rows,
        {
            "input": "mp3 {rate} Hz",
            "audio s": "{audio_s:.0f}",
            "stream_audio (decode + resample), x real time": "{stream:.0f}",
            "libsndfile decode": "{read:.0f}",
            "soxr HQ resample": "{resample:.0f}",
        },
    )
    save_json(a.out / "decode.json", {"machine": machine(), "threads": 1, "rows": rows})


if __name__ == "__main__":
    main()
