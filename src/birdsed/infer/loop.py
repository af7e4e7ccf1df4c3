"""Inference over long recordings: streamed decoding in worker processes, 5 s windows every
2.5 s batched across files, per-window scores of the three outputs, max-pooled into 5 s rows."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from birdsed.audio.decode import stream_audio
from birdsed.config import OUTPUT_KINDS, SHORT_POLICIES
from birdsed.model.detector import Detector
from birdsed.errors import AudioDecodeError, ConfigError
from birdsed.model.sed import segment_scores, window_scores
from birdsed.config import POOLINGS, PRECISIONS  # noqa: F401 - re-exported
from birdsed.progress import progress_bar
from birdsed.rows import ROW_S, n_rows  # noqa: F401 - n_rows re-exported for callers of infer
from birdsed.model.windows import Piece, fitted_audio, piece_windows  # noqa: F401 - re-exported for callers of infer

log = logging.getLogger(__name__)


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of windows covering a recording: 0, hop, 2 hop, ... until one reaches the end.

    A recording shorter than a window gets one window; the last window may run past the
    end (it is zero-padded).
    """
    n_windows = 1 + max(0, math.ceil((n_samples - window) / hop))
    return np.arange(n_windows, dtype=np.int64) * hop


def window_row_pairs(starts_s: np.ndarray, window_s: float, row_s: float = ROW_S) -> tuple[np.ndarray, np.ndarray]:
    """(window index, row index) for every row each window overlaps: window [s, s + w) overlaps
    row [r * row_s, (r + 1) * row_s) when they share a positive stretch of time."""
    first = np.floor(starts_s / row_s + 1e-9).astype(np.int64)
    last = np.ceil((starts_s + window_s) / row_s - 1e-9).astype(np.int64) - 1  # inclusive
    span = int((last - first).max(initial=0)) + 1
    w = np.repeat(np.arange(len(starts_s)), span)
    r = (first[:, None] + np.arange(span)[None, :]).ravel()
    ok = r <= np.repeat(last, span)
    return w[ok], r[ok]


def segment_rows(starts_s: np.ndarray, window_s: float, n_segments: int, row_s: float = ROW_S) -> np.ndarray:
    """Row index of every segment of every window [shape=(W, n_segments)], by the segment's centre time."""
    centres = starts_s[:, None] + (np.arange(n_segments)[None, :] + 0.5) * (window_s / n_segments)
    return np.floor(centres / row_s).astype(np.int64)


def rows_from_windows(
    starts_s: np.ndarray, window_s: float, scores: np.ndarray, duration_s: float, row_s: float = ROW_S
) -> np.ndarray:
    """Per-row scores [shape=(n_rows, K)]: for each row, the max over the windows overlapping it.

    starts_s [shape=(W,)], scores [shape=(W, K)].
    """
    acc = RowAccumulator(scores.shape[1], row_s)
    acc.add_windows(starts_s, window_s, scores)
    return acc.result(duration_s)


class RowAccumulator:
    """Running per-row maxima of one output kind of one recording, fed window batches as they come.

    Memory grows with the number of rows (K floats per 5 s), never with the audio.
    """

    def __init__(self, n_classes: int, row_s: float = ROW_S):
        self.row_s = row_s
        self.rows = np.full((64, n_classes), -np.inf, dtype=np.float32)

    def _grow(self, max_row: int) -> None:
        if max_row >= len(self.rows):
            extra = np.full(
                (max(max_row + 1, 2 * len(self.rows)) - len(self.rows), self.rows.shape[1]), -np.inf, np.float32
            )
            self.rows = np.vstack([self.rows, extra])

    def add_windows(self, starts_s: np.ndarray, window_s: float, scores: np.ndarray) -> None:
        """Window pooling: scores [shape=(W, K)] go to every row each window overlaps."""
        w, r = window_row_pairs(starts_s, window_s, self.row_s)
        self._grow(int(r.max(initial=0)))
        np.maximum.at(self.rows, r, scores[w])

    def add_segments(self, starts_s: np.ndarray, window_s: float, seg: np.ndarray) -> None:
        """Segment pooling: seg [shape=(W, K, T')]; each segment goes to the row holding its centre."""
        r = segment_rows(starts_s, window_s, seg.shape[2], self.row_s)  # (W, T')
        self._grow(int(r.max(initial=0)))
        np.maximum.at(self.rows, r.ravel(), seg.transpose(0, 2, 1).reshape(-1, seg.shape[1]))

    def result(self, duration_s: float) -> np.ndarray:
        out = self.rows[: n_rows(duration_s, self.row_s)]
        return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


@dataclass
class FileDone:
    index: int
    n_windows: int
    n_samples: int
    error: str | None = None


class WindowStream(IterableDataset):
    """Yields batches {"audio" (n,), "pieces": [Piece], "done": [FileDone]} of about batch_size windows across files.

    Each worker process (or the main process) streams its share of the files chunk by chunk
    (bounded memory), decode_threads files side by side, and ships each chunk's newly complete
    windows as one stretch of audio (the windows overlap, so a stretch carries each sample about
    once, not twice); `piece_windows` cuts them.
    """

    def __init__(
        self,
        files: list[str],
        window_s: float,
        hop_s: float,
        batch_size: int,
        sample_rate_hz: int,
        chunk_s: float = 30.0,
        decode_threads: int = 1,
    ):
        self.files, self.batch_size, self.chunk_s = files, batch_size, chunk_s
        self.decode_threads = max(1, decode_threads)  # files decoded side by side, a chunk each per step
        self.window = int(round(window_s * sample_rate_hz))
        self.hop = int(round(hop_s * sample_rate_hz))
        self.sample_rate_hz = sample_rate_hz

    def _stretches(self, path: str) -> Iterator[tuple[int, int, np.ndarray, int] | int]:
        """(first window, n windows, audio, short_len) as windows complete, then the file's total sample count;
        short_len is the recording's length when the whole of it is shorter than a window, else 0."""
        buf = np.zeros(0, np.float32)
        buf_start = 0  # sample index of buf[0]
        next_start = 0
        total = 0
        for chunk in stream_audio(path, self.chunk_s, self.sample_rate_hz):
            buf = np.concatenate([buf, chunk])
            total += len(chunk)
            n = max(0, (buf_start + len(buf) - self.window - next_start) // self.hop + 1)
            if n:
                a = next_start - buf_start
                yield next_start // self.hop, n, buf[a : a + (n - 1) * self.hop + self.window], 0
                next_start += n * self.hop
                buf, buf_start = buf[next_start - buf_start :], next_start
        # the tail: windows that run past the end, zero-padded, as window_starts() lists them
        starts = window_starts(total, self.window, self.hop)
        n = int((starts >= next_start).sum())
        if n:
            tail = np.zeros((n - 1) * self.hop + self.window, np.float32)
            piece = buf[next_start - buf_start :]
            tail[: len(piece)] = piece[: len(tail)]
            yield next_start // self.hop, n, tail, total if total < self.window else 0
        yield total

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = iter(range(wid, len(self.files), nw))
        held: list[tuple[int, int, int, np.ndarray, int]] = []  # (file, first window, n windows, audio, short_len)
        done: list[FileDone] = []
        lanes: list[list] = []  # [file index, its _stretches generator, windows sent so far], one per decoding thread

        def flush():
            offsets = np.cumsum([0] + [len(h[3]) for h in held])
            batch = {
                "audio": torch.from_numpy(np.concatenate([h[3] for h in held])) if held else torch.zeros(0),
                "pieces": [
                    Piece(f, first, n, int(o), len(a), short) for (f, first, n, a, short), o in zip(held, offsets)
                ],
                "done": list(done),
            }
            held.clear(), done.clear()
            return batch

        def step(lane):  # one chunk of one file; soundfile and soxr release the GIL, so lanes decode in parallel
            try:
                return next(lane[1])
            except AudioDecodeError as e:
                return e

        with ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else nullcontext() as pool:
            while True:
                while len(lanes) < self.decode_threads and (i := next(mine, None)) is not None:
                    lanes.append([i, self._stretches(self.files[i]), 0])
                if not lanes:
                    break
                items = list(pool.map(step, lanes) if pool else map(step, lanes))
                for lane, item in zip(list(lanes), items):
                    i = lane[0]
                    if isinstance(item, AudioDecodeError):
                        held[:] = [h for h in held if h[0] != i]  # drop the failed file's unsent audio
                        done.append(FileDone(i, lane[2], 0, str(item)))
                    elif isinstance(item, int):
                        done.append(FileDone(i, lane[2], item))
                    else:
                        first, n, a, short = item
                        held.append((i, first, n, a, short))
                        lane[2] = first + n
                        continue
                    lanes.remove(lane)
                if sum(h[2] for h in held) >= self.batch_size or (done and not held):
                    yield flush()
        if held or done:
            yield flush()


def score_pieces(
    model: Detector,
    audio: torch.Tensor,
    pieces: list[Piece],
    window: int,
    hop: int,
    batch_size: int,
    use_bf16: bool,
    short_policy: str | None = None,
) -> Iterator[tuple[list[Piece], dict[str, torch.Tensor]]]:
    """Run the model over the pieces' windows, at most about batch_size windows a call; yields (pieces, outputs).

    Each model (or ensemble member) fits a recording shorter than a window as it trained (its short_policy),
    unless short_policy overrides that for all.
    """
    dev_type = audio.device.type
    group: list[Piece] = []
    held = 0  # windows in the group
    for j, p in enumerate(pieces):
        group.append(p)
        held += p.n_windows
        if held < batch_size and j + 1 < len(pieces):
            continue
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model.window_outputs(audio, group, window, hop, short_policy)
        yield group, out
        group, held = [], 0


def _collate(batch):
    return batch


@dataclass
class FileResult:
    path: str
    duration_s: float
    rows: dict[str, np.ndarray]  # kind -> (n_rows, K)


def default_workers(dev: torch.device) -> int:
    """Decoding processes: on a GPU, every core but one (the GPU does the model's work); on a CPU,
    none below 4 cores (the model's threads need every core, and a decoding process contending
    with them cost more than the overlap gained: 2 cores, small model, 22.05 kHz mp3: 518x real
    time with decoding between batches vs 421x with one worker, docs/BENCHMARKS.md), then one per 4 cores."""
    cores = os.cpu_count() or 1
    if dev.type == "cuda":
        return max(1, cores - 1)
    return 0 if cores < 4 else cores // 4


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def predict_files(
    model: Detector,
    files: list[str],
    window_s: float | None = None,
    hop_s: float | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    quiet: bool = False,
    pooling: str = "window",
    precision: str = "auto",
    short_policy: str | None = None,
) -> Iterator[FileResult | tuple[str, str]]:
    """Yield a FileResult per recording (in completion order), or (path, error) for files that fail to decode.

    window_s, hop_s: default the model's own (5 s and 2.5 s for the SED models, 3 s for BirdNET).

    short_policy "loop": a recording shorter than a window is repeated to fill it (as `train` crops such
    recordings with data.short_policy=loop); "pad": zero-padded, like the last window of any recording;
    None: each model, or ensemble member, as it trained.

    pooling "window": a row's score is the max over the windows overlapping it (the seed's rule).
    pooling "segment": segmentwise and att rows take the max over the head's time segments whose
    centre lies in the row (sharper in time); clipwise stays window-pooled.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; valid: {list(POOLINGS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if short_policy is not None and short_policy not in SHORT_POLICIES:
        raise ConfigError(f"unknown short-recording policy {short_policy!r}; valid: {list(SHORT_POLICIES)}")
    dev = pick_device(device)
    # bf16 autocast: on CUDA by default; on CPUs with AMX/AVX512-BF16 on request (about 2x, scores within ~1e-2)
    use_bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
    window_s = model.window_s if window_s is None else window_s
    hop_s = model.hop_s if hop_s is None else hop_s
    # SED models: BatchNorms folded (the small model's encoder 1.9x on a 2-core CPU), channels_last (1.7x there,
    # and the usual layout on GPUs), on a copy, so the caller's model is not changed
    model = model.for_inference(dev)
    workers = default_workers(dev) if workers is None else workers
    workers = min(workers, len(files))
    sr = model.sample_rate_hz
    # decoding in the main process runs between batches, so it may take every core (threads: soundfile and soxr
    # release the GIL); a decoding process takes one core
    decode_threads = (os.cpu_count() or 1) if workers == 0 else 1
    ds = WindowStream(files, window_s, hop_s, batch_size, sr, decode_threads=decode_threads)
    dl = DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    pending: dict[int, dict[str, RowAccumulator]] = {}
    n_classes = len(model.classes)
    hop_s_exact = ds.hop / sr
    audio_s = 0.0  # decoded so far, for the progress bar's real-time factor
    t0 = time.perf_counter()
    rate = lambda: f"{audio_s / max(time.perf_counter() - t0, 1e-9):.0f}x real time"  # noqa: E731
    with progress_bar(len(files), "predict", disable=quiet, extra=rate) as advance, torch.inference_mode():
        for batch in dl:
            audio = batch["audio"].to(dev, non_blocking=True)
            for group, out in score_pieces(
                model, audio, batch["pieces"], ds.window, ds.hop, batch_size, use_bf16, short_policy
            ):
                scores = {k: v.float().cpu().numpy() for k, v in window_scores(out).items()}
                segs = segment_scores(out) if pooling == "segment" else {}
                at = 0
                for p in group:
                    sel = slice(at, at + p.n_windows)
                    at += p.n_windows
                    starts_s = np.arange(p.first_window, p.first_window + p.n_windows) * hop_s_exact
                    accs = pending.setdefault(p.file, {k: RowAccumulator(n_classes) for k in OUTPUT_KINDS})
                    for k in OUTPUT_KINDS:
                        if k in segs:
                            accs[k].add_segments(starts_s, window_s, segs[k][sel])
                        else:
                            accs[k].add_windows(starts_s, window_s, scores[k][sel])
            for d in batch["done"]:
                accs = pending.pop(d.index, None)
                advance(1)
                if d.error:
                    yield files[d.index], d.error
                    continue
                duration_s = d.n_samples / sr
                audio_s += duration_s
                yield FileResult(files[d.index], duration_s, {k: a.result(duration_s) for k, a in accs.items()})


def rows_table(result: FileResult, classes: list[str], row_s: float = ROW_S) -> pd.DataFrame:
    """The scores.parquet rows of one file: file, start_s, end_s, output, one column per class."""
    frames = []
    for kind in OUTPUT_KINDS:
        scores = result.rows[kind]
        starts = np.arange(len(scores)) * row_s
        df = pd.DataFrame(scores, columns=classes)
        df.insert(0, "output", kind)
        df.insert(0, "end_s", np.minimum(starts + row_s, result.duration_s))
        df.insert(0, "start_s", starts)
        df.insert(0, "file", result.path)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
