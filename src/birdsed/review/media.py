"""A clip's sound and picture, decoded on demand from the original recording (nothing is copied in advance): the
clip's seconds with `context_s` on each side, as a 16-bit WAV and as a spectrogram PNG (kHz against seconds of the
recording, the detection's 5 s boxed)."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile as sf

from birdsed.audio.decode import audio_info
from birdsed.errors import AudioDecodeError

CONTEXT_S = 1.5  # seconds of sound played and shown before and after the clip
N_FFT = 512
HOP = 128
MAX_RATE_HZ = 48_000  # a picture above 24 kHz is of no bird; faster recordings are decimated for the picture only
FIG_SIZE_IN = (8.0, 3.0)
DPI = 100
PNG_COMPRESS_LEVEL = 1  # zlib level of the picture: level 6 (the default) spent half of a card's time compressing


@dataclass(frozen=True)
class Excerpt:
    """Mono samples of [t0_s, t1_s) of a recording at its own rate."""

    samples: np.ndarray  # [shape=(n,)] float32
    rate_hz: int
    t0_s: float
    t1_s: float


def excerpt(path: str, start_s: float, end_s: float, context_s: float = CONTEXT_S) -> Excerpt:
    """[start_s - context_s, end_s + context_s) of `path` (clipped to the recording), mono; an AudioDecodeError naming
    the file if it moved or does not decode."""
    info = audio_info(path)
    rate = info.sample_rate_hz
    first = max(0, int(round((start_s - context_s) * rate)))
    last = min(info.frames, int(round((end_s + context_s) * rate)))
    if last <= first:
        raise AudioDecodeError(
            f"{path}: the clip {start_s:g}-{end_s:g} s lies past the recording's end ({info.duration_s:.1f} s)"
        )
    try:
        with sf.SoundFile(path) as f:
            f.seek(first)
            block = f.read(last - first, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AudioDecodeError(f"{path}: decoding {start_s:g}-{end_s:g} s failed ({e})") from e
    mono = block.mean(axis=1, dtype=np.float32)
    if not len(mono) or not np.isfinite(mono).all():
        raise AudioDecodeError(f"{path}: no finite samples at {start_s:g}-{end_s:g} s")
    return Excerpt(mono, rate, first / rate, (first + len(mono)) / rate)


def wav_bytes(x: Excerpt) -> bytes:
    """The excerpt as a 16-bit PCM WAV file, peak-normalised so that quiet, distant calls can be heard."""
    peak = float(np.abs(x.samples).max())
    gain = 0.9 / peak if peak > 0 else 1.0
    buf = io.BytesIO()
    sf.write(buf, x.samples * gain, x.rate_hz, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_db(x: Excerpt) -> tuple[np.ndarray, float, np.ndarray]:
    """Power in dB [shape=(freqs, frames)], the rate it was taken at, and each frame's centre in recording seconds."""
    samples, rate = x.samples, x.rate_hz
    if rate > MAX_RATE_HZ:
        step = int(np.ceil(rate / MAX_RATE_HZ))
        samples, rate = samples[::step], rate / step
    if len(samples) < N_FFT:
        samples = np.pad(samples, (0, N_FFT - len(samples)))
    n_frames = 1 + (len(samples) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    frames = samples[idx] * np.hanning(N_FFT).astype(np.float32)  # (frames, N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10 * np.log10(np.maximum(power, 1e-12)).T
    centres_s = x.t0_s + (np.arange(n_frames) * HOP + N_FFT / 2) / rate
    return db, rate, centres_s


def spectrogram_png(x: Excerpt, start_s: float, end_s: float, title: str = "") -> bytes:
    """The excerpt's spectrogram (kHz against seconds of the recording) with the clip [start_s, end_s) boxed."""
    db, rate, _ = spectrogram_db(x)
    db = _pooled_frames(db, MAX_FRAMES)
    top_khz = rate / 2000
    vmax = float(db.max())
    with _CANVAS_LOCK:
        fig, ax, image, box = _canvas(bool(title))
        image.set_data(db)
        image.set_extent((x.t0_s, x.t1_s, 0.0, top_khz))
        image.set_clim(vmax - 80, vmax)
        box.set_bounds(start_s, 0.02 * top_khz, end_s - start_s, 0.96 * top_khz)
        ax.set_xlim(x.t0_s, x.t1_s)
        ax.set_ylim(0.0, top_khz)
        ax.set_title(title, fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buf.getvalue()


MAX_FRAMES = 1024  # a picture's columns: more frames than the plot has pixels are max-pooled (a call stays seen)
_CANVAS_LOCK = threading.Lock()


def _pooled_frames(db: np.ndarray, max_frames: int) -> np.ndarray:
    """[shape=(freqs, frames)] -> at most `max_frames` columns, each the max of consecutive frames."""
    step = -(-db.shape[1] // max_frames)
    if step <= 1:
        return db
    n = db.shape[1] // step * step
    return db[:, :n].reshape(db.shape[0], -1, step).max(axis=2)


@lru_cache(maxsize=2)
def _canvas(titled: bool):
    """One figure per layout, made once and redrawn for every clip (making a figure's axes and ticks cost more than
    drawing it): (figure, axes, image, box). Used under _CANVAS_LOCK only."""
    from matplotlib.figure import Figure  # no pyplot: no global state
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
    ax = fig.add_axes((0.07, 0.17, 0.91, 0.73 if titled else 0.8))
    image = ax.imshow(np.zeros((2, 2)), origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
    box = ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, edgecolor="#00e5ff", linewidth=2))
    ax.set_xlabel("time in the recording (s)")
    ax.set_ylabel("kHz")
    return fig, ax, image, box
