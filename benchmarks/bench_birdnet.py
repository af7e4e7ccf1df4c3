"""BirdNET V2.4 over long real recordings: `birdsed predict` with a `birdnet init` model beside the way birdnetlib runs
the same model (file by file, no pipeline), in one run.

    python benchmarks/bench_birdnet.py --minutes 10 --files 4 --out bench-out/birdnet_speed

The recordings are real field audio: the 550 NIPS4B clips (32 kHz) concatenated in a fixed order into --files mp3
files of --minutes each (written once, cached in --out). Both sides run the same TFLite file with the same threads:
- birdsed: `run_predict` (streamed decoding in chunks, 3 s windows at the model's 3 s hop batched across files,
  scores into 5 s rows, every output written);
- file by file, as birdnetlib 0.18 does it: librosa.load of the whole file at 48 kHz, then one interpreter call per
  3 s chunk (batch 1, the input resized each time), sigmoid of the logits; nothing written.
Reports audio seconds, wall seconds and x real time of each, and the largest difference between the two sides'
scores on the rows both score (they cut 3 s windows at the same places; decoders and resamplers differ slightly).
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
from common import NIPS4B, machine, peak_rss_mb, print_markdown, save_json  # noqa: E402

from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ, BirdNETRuntime, init_model_dir
from birdsed.model.birdnet_labels import read_labels  # noqa: E402


def real_soundscapes(out: Path, files: int, minutes: float) -> list[Path]:
    """NIPS4B clips concatenated into `files` mp3s of `minutes` each (the clips reused in order when they run out)."""
    folder = out / f"nips4b_{files}x{minutes:g}min"
    paths = [folder / f"nips4b_concat_{i}.mp3" for i in range(files)]
    if all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    clips = sorted((NIPS4B / "audio").glob("*.flac"))
    if not clips:
        sys.exit(f"NIPS4B not found at {NIPS4B}")
    k = 0
    for p in paths:
        need, parts = int(minutes * 60 * 32000), []
        while need > 0:
            x, sr = sf.read(clips[k % len(clips)], dtype="float32")
            assert sr == 32000
            parts.append(x[:need])
            need -= len(parts[-1])
            k += 1
        sf.write(p, np.concatenate(parts), 32000, format="MP3")
    return paths


def file_by_file(paths: list[Path], classes_idx: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """birdnetlib's way: whole file at 48 kHz, one 3 s chunk per interpreter call.
    Returns per-file (chunks, K) scores."""
    import librosa

    rt = BirdNETRuntime(embeddings=False)
    out, audio_s = {}, 0.0
    for p in paths:
        x, _ = librosa.load(p, sr=SAMPLE_RATE_HZ, mono=True)
        audio_s += len(x) / SAMPLE_RATE_HZ
        scores = []
        for s in range(0, len(x), N_SAMPLES):
            chunk = x[s : s + N_SAMPLES]
            if len(chunk) < N_SAMPLES // 2:  # birdnetlib drops a last chunk under 1.5 s
                break
            chunk = np.pad(chunk, (0, N_SAMPLES - len(chunk)))
            logit = rt.logits(chunk[None], batch=1)[0]
            scores.append(1 / (1 + np.exp(-logit[classes_idx])))
        out[str(p)] = np.stack(scores)
    return out, audio_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("bench-out/birdnet_speed"))
    a = ap.parse_args()
    paths = real_soundscapes(a.out, a.files, a.minutes)
    model = a.out / "model_birdnet"
    if not model.is_dir():
        init_model_dir(model, classes_from=NIPS4B)
    meta = pd.read_json(model / "model.json", typ="series")
    idx = np.array([max(i, 0) for i in meta["birdnet"]["indices"]])
    rows = []
    pred = a.out / "predict"
    if pred.exists():
        import shutil

        shutil.rmtree(pred)
    t0 = time.perf_counter()
    s = run_predict(model, [str(p) for p in paths], pred, quiet=True)
    wall = time.perf_counter() - t0
    rows.append(
        {
            "runner": "birdsed predict (streamed, batched)",
            "audio_s": s.audio_s,
            "wall_s": wall,
            "x_realtime": s.audio_s / wall,
        }
    )
    t0 = time.perf_counter()
    naive, audio_s = file_by_file(paths, idx)
    wall = time.perf_counter() - t0
    rows.append(
        {"runner": "file by file (birdnetlib's loop)", "audio_s": audio_s, "wall_s": wall, "x_realtime": audio_s / wall}
    )
    # agreement: birdsed's window k (hop 3 s) is the naive chunk k; compare the clipwise rows' inputs via scores.parquet
    scores = pd.read_parquet(pred / "scores.parquet")
    known = [c for c, i in zip(meta["classes"], meta["birdnet"]["indices"]) if i >= 0]
    col = [meta["classes"].index(c) for c in known]
    diffs = []
    for p in paths:
        ours = scores[(scores["file"] == str(p)) & (scores["output"] == "clipwise")][known].to_numpy()
        theirs = naive[str(p)][:, col]
        # a 5 s row is the max over the 3 s windows that overlap it: rebuild that from the naive chunks
        n = min(len(ours), int(len(theirs) * 3 // 5))
        starts = np.arange(len(theirs)) * 3.0
        rebuilt = np.stack([theirs[(starts < (r + 1) * 5) & (starts + 3 > r * 5)].max(0) for r in range(n)])
        diffs.append(float(np.abs(rebuilt - ours[:n]).max()))
    res = {
        "machine": machine(),
        "files": a.files,
        "minutes": a.minutes,
        "labels": len(read_labels()),
        "rows": rows,
        "max_abs_score_diff": max(diffs),
        "peak_rss_mb": peak_rss_mb(),
    }
    print_markdown(
        rows,
        {
            "runner": "{runner}",
            "audio (s)": "{audio_s:.0f}",
            "wall (s)": "{wall_s:.1f}",
            "x real time": "{x_realtime:.0f}",
        },
    )
    print(
        f"largest score difference between the two, over the 5 s rows: {max(diffs):.4f}; "
        f"peak RSS {res['peak_rss_mb']:.0f} MB"
    )
    save_json(a.out / "bench_birdnet.json", res)


if __name__ == "__main__":
    main()
