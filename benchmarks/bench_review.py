"""`birdsed review` over a large archive: the time from the server's start to the first card, a card's picture and
audio over HTTP, and the server's peak memory.

A synthetic predict folder: N recordings (default 10,000) of 60 s, each a hard link to one real WAV file (so every
card decodes a real recording), and their scores.parquet (12 rows of 5 s x 3 output kinds x C classes, row groups of
whole recordings as predict writes them) with run.json. Then `birdsed review PRED` is started as a user starts it
(a fresh process) and asked over HTTP, as the page asks:

  first card   from the process's start to the first /api/queue answer with cards (the page's first request after
               its HTML), and the page itself
  picture      GET /api/spectrogram of each of K cards (a stratified queue: recordings all over the archive)
  audio        GET /api/audio of the same cards (the whole clip with context, as the browser's first request)
  peak RSS     the server's VmHWM (/proc) after the cards

    python benchmarks/bench_review.py --recordings 10000 --classes 100 --cards 40
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_markdown, save_json  # noqa: E402

ROWS_PER_RECORDING = 12  # 60 s recordings: 5 s rows
RECORDING_S = 60.0
RATE_HZ = 32_000
OUTPUTS = ("segmentwise", "att", "clipwise")


def make_pred(root: Path, n_recordings: int, n_classes: int, seed: int = 0) -> Path:
    """A predict folder of `n_recordings` hard links to one 60 s WAV, with random scores (made once per size)."""
    pred = root / f"pred-{n_recordings}x{n_classes}"
    if (pred / "scores.parquet").is_file():
        return pred
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    base = audio / "base.wav"
    if not base.is_file():
        t = np.arange(int(RECORDING_S * RATE_HZ)) / RATE_HZ
        chirps = 0.3 * np.sin(2 * np.pi * (2000 + 1500 * np.sin(2 * np.pi * 0.5 * t)) * t)
        sf.write(base, (chirps + 0.02 * rng.standard_normal(len(t))).astype(np.float32), RATE_HZ)
    files = []
    for i in range(n_recordings):
        f = audio / f"site{i % 20:02d}" / f"rec{i:05d}.wav"
        if not f.exists():
            f.parent.mkdir(exist_ok=True)
            os.link(base, f)
        files.append(str(f))
    classes = [f"sp{k:03d}" for k in range(n_classes)]
    pred.mkdir(parents=True, exist_ok=True)
    tmp = pred / "scores.parquet.tmp"
    per_group = max(1, 32_768 // (ROWS_PER_RECORDING * len(OUTPUTS)))
    writer = None
    for g in range(0, n_recordings, per_group):
        chunk = files[g : g + per_group]
        n = len(chunk) * ROWS_PER_RECORDING
        starts = np.tile(np.arange(ROWS_PER_RECORDING) * 5.0, len(chunk))
        cols = {
            "file": np.repeat(chunk, ROWS_PER_RECORDING).tolist() * len(OUTPUTS),
            "start_s": np.tile(starts, len(OUTPUTS)),
            "end_s": np.tile(starts + 5.0, len(OUTPUTS)),
            "output": np.repeat(OUTPUTS, n).tolist(),
        }
        scores = rng.beta(0.3, 3.0, (n * len(OUTPUTS), n_classes)).astype(np.float32)
        cols.update({c: scores[:, k] for k, c in enumerate(classes)})
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    writer.close()
    tmp.rename(pred / "scores.parquet")
    (pred / "run.json").write_text(json.dumps({"model": None, "classes": classes, "window_s": 5.0, "hop_s": 2.5}))
    return pred


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc: what it would take alone on an idle core)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench(pred: Path, n_cards: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdsed", "review", str(pred), "--no-browser", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while True:
            try:
                _, body = fetch(f"{base}/api/queue?n=20")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode()) from None
                time.sleep(0.02)
        first_card_s = time.perf_counter() - t0
        first_card_cpu_s = cpu_s(proc.pid)
        assert json.loads(body)["cards"], "the first queue came back empty"
        page_s, _ = fetch(f"{base}/")
        state_s, _ = fetch(f"{base}/api/state")
        queue_s, body = fetch(f"{base}/api/queue?n={n_cards}&sample=stratified&seed=1")
        cards = json.loads(body)["cards"]
        picture, audio = [], []
        cpu0 = cpu_s(proc.pid)
        for c in cards:
            q = f"file={urllib.parse.quote(c['file'])}&start_s={c['start_s']}&end_s={c['end_s']}"
            picture.append(fetch(f"{base}/api/spectrogram?{q}")[0])
            audio.append(fetch(f"{base}/api/audio?{q}")[0])
        card_cpu_ms = 1000 * (cpu_s(proc.pid) - cpu0) / max(1, len(cards))
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "first_card_s": first_card_s,
        "first_card_cpu_s": first_card_cpu_s,
        "card_cpu_ms": card_cpu_ms,
        "load_1min": os.getloadavg()[0],
        "page_ms": 1000 * page_s,
        "state_ms": 1000 * state_s,
        "queue_ms": 1000 * queue_s,
        "cards": len(cards),
        "picture_median_ms": 1000 * statistics.median(picture),
        "picture_p95_ms": 1000 * float(np.percentile(picture, 95)),
        "audio_median_ms": 1000 * statistics.median(audio),
        "audio_p95_ms": 1000 * float(np.percentile(audio, 95)),
        "peak_rss_mb": rss,
    }


def main() -> None:

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=10_000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--cards", type=int, default=40, help="cards whose picture and audio are timed")
    p.add_argument("--repeats", type=int, default=1, help="server starts")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-review"))
    p.add_argument("--label", default="", help="a name for this run in the results (e.g. before / after)")
    a = p.parse_args()
    t = time.perf_counter()
    pred = make_pred(a.out, a.recordings, a.classes)
    size_mb = (pred / "scores.parquet").stat().st_size / 2**20
    print(
        f"{pred}: {a.recordings} recordings, scores.parquet {size_mb:.0f} MiB (made in {time.perf_counter() - t:.0f} s)"
    )
    rows = []
    for _ in range(a.repeats):
        rows.append({"label": a.label, "recordings": a.recordings, "classes": a.classes, **bench(pred, a.cards)})
    print_markdown(
        rows,
        {
            "run": "{label}",
            "recordings": "{recordings}",
            "classes": "{classes}",
            "first card (s)": "{first_card_s:.2f}",
            "its server CPU (s)": "{first_card_cpu_s:.2f}",
            "page (ms)": "{page_ms:.0f}",
            "picture median / p95 (ms)": "{picture_median_ms:.0f} / {picture_p95_ms:.0f}",
            "audio median / p95 (ms)": "{audio_median_ms:.0f} / {audio_p95_ms:.0f}",
            "server CPU per card (ms)": "{card_cpu_ms:.0f}",
            "load (1 min)": "{load_1min:.1f}",
            "server peak RSS (MiB)": "{peak_rss_mb:.0f}",
        },
    )
    save_json(
        a.out / f"review{('-' + a.label) if a.label else ''}.json", {"python": sys.version.split()[0], "results": rows}
    )


if __name__ == "__main__":
    main()
