"""The model loop of inference: streamed windows (stream.py) batched across files through any Detector, the three
outputs' window scores pooled into 5 s rows (grid.py), one FileResult per recording as it completes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader

from birdsed.config import OUTPUT_KINDS, POOLINGS, PRECISIONS, SHORT_POLICIES
from birdsed.device import pick_device, use_bf16
from birdsed.errors import ConfigError
from birdsed.infer.grid import FileResult, RowAccumulator
from birdsed.infer.stream import WindowStream, samples_of
from birdsed.model.detector import Detector, float32_runtime, segment_scores, window_scores
from birdsed.model.windows import Piece
from birdsed.progress import progress_bar

log = logging.getLogger(__name__)


def score_pieces(
    model: Detector,
    audio: torch.Tensor,
    pieces: list[Piece],
    window: int,
    hop: int,
    batch_size: int,
    bf16: bool,
    short_policy: str | None = None,
) -> Iterator[tuple[list[Piece], dict[str, torch.Tensor]]]:
    """Run the model over the pieces' windows, at most about batch_size windows a call; yields (pieces, outputs).

    Each model (or ensemble member) fits a recording shorter than a window as it trained (its short_policy),
    unless short_policy overrides that for all.
    """
    dev_type = audio.device.type
    group: list[Piece] = []
    n_windows = 0  # in the group
    for j, p in enumerate(pieces):
        group.append(p)
        n_windows += p.n_windows
        if n_windows < batch_size and j + 1 < len(pieces):
            continue
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
            out = model.window_outputs(audio, group, window, hop, short_policy)
        yield group, out
        group, n_windows = [], 0


def _collate(batch):
    return batch


def default_workers(dev: torch.device) -> int:
    """Decoding processes: on a GPU, every core but one (the GPU does the model's work); on a CPU,
    none below 4 cores (the model's threads need every core, and a decoding process contending
    with them cost more than the overlap gained: 2 cores, small model, 22.05 kHz mp3: 518x real
    time with decoding between batches vs 421x with one worker, docs/BENCHMARKS.md), then one per 4 cores."""
    cores = os.cpu_count() or 1
    if dev.type == "cuda":
        return max(1, cores - 1)
    return 0 if cores < 4 else cores // 4


def _check_choices(pooling: str, precision: str, short_policy: str | None) -> None:
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; valid: {list(POOLINGS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if short_policy is not None and short_policy not in SHORT_POLICIES:
        raise ConfigError(f"unknown short-recording policy {short_policy!r}; valid: {list(SHORT_POLICIES)}")


def ready(model: Detector, device: str, precision: str) -> tuple[Detector, torch.device, bool]:
    """(the model ready to score on `device`, that device, whether it runs in bf16 autocast): a device this machine
    has not, or a runtime the model cannot build (a BirdNET file that fails its checksum), is refused here.

    SED models: BatchNorms folded (the small model's encoder 1.9x on a 2-core CPU), channels_last (1.7x there, and the
    usual layout on GPUs), on a copy, so the caller's model is not changed."""
    dev = pick_device(device)
    bf16 = use_bf16(precision, dev)
    if precision == "bf16" and (runtime := float32_runtime(model, dev)):
        said_float32(runtime, str(dev))
    return model.for_inference(dev), dev, bf16


@lru_cache(maxsize=None)
def said_float32(runtime: str, device: str) -> None:
    """Say once a process that --precision bf16 does not apply where `runtime` runs the model."""
    log.warning(
        "--precision bf16: on %s this model runs in %s, in float32 (bf16 applies where torch runs a model)",
        device,
        runtime,
    )


def silent_window(
    sample_rate_hz: int, window_s: float, hop_s: float, dev: torch.device
) -> tuple[torch.Tensor, list[Piece], int, int]:
    """One window of silence as the stream ships a recording's: (audio [shape=(window,)], its one piece, the window
    and the hop in samples)."""
    window, hop = samples_of(window_s, sample_rate_hz), samples_of(hop_s, sample_rate_hz)
    return torch.zeros(window, device=dev), [Piece(0, 0, 1, 0, window)], window, hop


def check_scoring(
    model: Detector,
    window_s: float | None = None,
    hop_s: float | None = None,
    device: str = "auto",
    pooling: str = "window",
    precision: str = "auto",
    short_policy: str | None = None,
) -> None:
    """Refuse now what predict_files (the same keywords) would refuse at its first batch, by scoring one window of
    silence as it scores a recording's: a device this machine has not, a runtime the model cannot build, a window
    the model does not take (BirdNET's 3 s, an ONNX export's own). A caller checks before it writes anything."""
    _check_choices(pooling, precision, short_policy)
    window_s = model.window_s if window_s is None else window_s
    hop_s = model.hop_s if hop_s is None else hop_s
    model, dev, bf16 = ready(model, device, precision)
    audio, pieces, window, hop = silent_window(model.sample_rate_hz, window_s, hop_s, dev)
    with torch.inference_mode():
        for _ in score_pieces(model, audio, pieces, window, hop, 1, bf16, short_policy):
            pass


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

    pooling "window": a row's score is the max over the windows overlapping it (the reference solution's rule).
    pooling "segment": segmentwise and att rows take the max over the head's time segments whose
    centre lies in the row (sharper in time); clipwise stays window-pooled.
    """
    _check_choices(pooling, precision, short_policy)
    window_s = model.window_s if window_s is None else window_s
    hop_s = model.hop_s if hop_s is None else hop_s
    model, dev, bf16 = ready(model, device, precision)
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
                model, audio, batch["pieces"], ds.window, ds.hop, batch_size, bf16, short_policy
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
