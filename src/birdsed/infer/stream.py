"""Streamed decoding for inference: files read chunk by chunk in DataLoader worker processes (or the main process),
several side by side, shipped as pieces of audio (one recording's complete windows each) that go to the model in
batches across files."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from birdsed.audio.decode import stream_audio
from birdsed.errors import AudioDecodeError
from birdsed.infer.grid import window_starts
from birdsed.model.windows import Piece


def samples_of(seconds: float, sample_rate_hz: int) -> int:
    """A window's or a hop's length in samples at `sample_rate_hz` (the one rounding of the stream and its checks)."""
    return int(round(seconds * sample_rate_hz))


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
    windows as one piece of audio (the windows overlap, so a piece carries each sample about
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
        self.window = samples_of(window_s, sample_rate_hz)
        self.hop = samples_of(hop_s, sample_rate_hz)
        self.sample_rate_hz = sample_rate_hz

    def _pieces(self, path: str) -> Iterator[tuple[int, int, np.ndarray, int] | int]:
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
            rest = buf[next_start - buf_start :]
            tail[: len(rest)] = rest[: len(tail)]
            yield next_start // self.hop, n, tail, total if total < self.window else 0
        yield total

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = iter(range(wid, len(self.files), nw))
        # the next batch's pieces: (file, first window, n windows, audio, short_len)
        pieces: list[tuple[int, int, int, np.ndarray, int]] = []
        done: list[FileDone] = []
        open_files: list[list] = []  # [file index, its _pieces generator, windows sent so far], one a decoding thread

        def flush():
            offsets = np.cumsum([0] + [len(h[3]) for h in pieces])
            batch = {
                "audio": torch.from_numpy(np.concatenate([h[3] for h in pieces])) if pieces else torch.zeros(0),
                "pieces": [
                    Piece(f, first, n, int(o), len(a), short) for (f, first, n, a, short), o in zip(pieces, offsets)
                ],
                "done": list(done),
            }
            pieces.clear(), done.clear()
            return batch

        def step(entry):  # one chunk of one file; soundfile and soxr release the GIL, so open files decode in parallel
            try:
                return next(entry[1])
            except AudioDecodeError as e:
                return e

        with ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else nullcontext() as pool:
            while True:
                while len(open_files) < self.decode_threads and (i := next(mine, None)) is not None:
                    open_files.append([i, self._pieces(self.files[i]), 0])
                if not open_files:
                    break
                items = list(pool.map(step, open_files) if pool else map(step, open_files))
                for entry, item in zip(list(open_files), items):
                    i = entry[0]
                    if isinstance(item, AudioDecodeError):
                        pieces[:] = [h for h in pieces if h[0] != i]  # drop the failed file's unsent audio
                        done.append(FileDone(i, entry[2], 0, str(item)))
                    elif isinstance(item, int):
                        done.append(FileDone(i, entry[2], item))
                    else:
                        first, n, a, short = item
                        pieces.append((i, first, n, a, short))
                        entry[2] = first + n
                        continue
                    open_files.remove(entry)
                if sum(h[2] for h in pieces) >= self.batch_size or (done and not pieces):
                    yield flush()
        if pieces or done:
            yield flush()
