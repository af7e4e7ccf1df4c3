"""Decoding: any file soundfile reads -> mono float32 at 32 kHz, whole or streamed.

The whole-file reader is the streamed reader concatenated, so the two can never
disagree; the streamed output itself does not depend on the chunk size (soxr's
stream resampler keeps its filter state between calls).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from birdsed import SAMPLE_RATE_HZ
from birdsed.errors import AudioDecodeError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aif", ".aiff", ".w64", ".rf64")
DEFAULT_CHUNK_S = 60.0
_READ_BLOCK_FRAMES = 1 << 16  # frames decoded per soundfile call, at the source rate


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds before decoding."""

    path: Path
    sample_rate_hz: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header of an audio file; raises AudioDecodeError for missing or unreadable files."""
    path = Path(path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (a relative path, read from {Path.cwd()})"
        raise AudioDecodeError(f"{path}: file not found{where}")
    if path.is_dir():
        raise AudioDecodeError(f"{path}: is a folder, not an audio file")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # never opened: reading a FIFO would block
        raise AudioDecodeError(f"{path}: not a regular file (a pipe, socket or device), not opened")
    if st.st_size == 0:
        raise AudioDecodeError(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        # libsndfile says "does not exist or is not a regular file" of any file whose format it cannot tell: not said
        said = str(e).split(":")[-1].strip()
        said = "" if "regular file" in said else f"; libsndfile: {said}"
        raise AudioDecodeError(
            f"{path}: not a readable audio file: its format is not recognised or its header is "
            f"corrupt ({st.st_size} bytes{said})"
        ) from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioDecodeError(f"{path}: holds no audio frames")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def stream_audio(
    path: str | os.PathLike,
    chunk_s: float = DEFAULT_CHUNK_S,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
) -> Iterator[np.ndarray]:
    """Yield a recording as mono float32 chunks at `sample_rate_hz`.

    Every chunk has exactly round(chunk_s * sample_rate_hz) samples except the last,
    which is shorter (never empty). Memory stays bounded by the chunk size.
    Raises AudioDecodeError naming the file for any decoding problem.
    """
    info = audio_info(path)
    chunk_samples = int(round(chunk_s * sample_rate_hz))
    if chunk_samples <= 0:
        raise ValueError(f"chunk_s must give at least one sample, got {chunk_s}")
    resampler = None
    if info.sample_rate_hz != sample_rate_hz:
        resampler = soxr.ResampleStream(info.sample_rate_hz, sample_rate_hz, 1, dtype="float32", quality="HQ")
    pending: list[np.ndarray] = []
    pending_len = 0
    frames_read = 0
    try:
        with sf.SoundFile(str(info.path)) as f:
            while True:
                block = f.read(_READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) < _READ_BLOCK_FRAMES
                frames_read += len(block)
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if not np.isfinite(mono).all():
                    raise AudioDecodeError(
                        f"{info.path}: holds NaN or Inf samples near {frames_read / info.sample_rate_hz:.2f} s"
                    )
                out = resampler.resample_chunk(mono, last=last) if resampler else np.ascontiguousarray(mono)
                if len(out):
                    pending.append(out)
                    pending_len += len(out)
                while pending_len >= chunk_samples:
                    joined = np.concatenate(pending)
                    yield joined[:chunk_samples]
                    rest = joined[chunk_samples:]
                    pending, pending_len = ([rest], len(rest)) if len(rest) else ([], 0)
                if last:
                    break
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AudioDecodeError(f"{info.path}: decoding failed after {frames_read} frames ({e})") from e
    if frames_read == 0:
        raise AudioDecodeError(f"{info.path}: holds no audio frames")
    if pending_len:
        yield np.concatenate(pending)


def load_audio(path: str | os.PathLike, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A whole recording as mono float32 at `sample_rate_hz`. [shape=(n_samples,)]"""
    chunks = list(stream_audio(path, sample_rate_hz=sample_rate_hz))
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def find_audio_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of audio files, one entry per real file (the first
    name it was given by: `one one/x.wav`, or a relative and an absolute path, is scored once; said under -v).
    Entries named like audio that are not regular files (a folder `x.mp3`, a pipe) are listed too, so that the batch
    reports them. In a folder, hidden entries (a name starting with '.', macOS's AppleDouble sidecars `._x.mp3` among
    them, and whatever lies in a hidden folder) are skipped, said under -v; a hidden file named itself is listed."""
    found: list[Path] = []
    hidden = 0
    for p in map(Path, paths):
        if p.is_dir():
            audio = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_EXTENSIONS)
            shown = [q for q in audio if not is_hidden(q.relative_to(p))]
            hidden += len(audio) - len(shown)
            found.extend(shown)
        else:
            found.append(p)
    if hidden:
        log.info("skipped %d hidden / AppleDouble files (names starting with '.') in the input folders", hidden)
    return _one_per_file(found)


def is_hidden(relative: Path) -> bool:
    """Whether a path inside a listed folder is hidden: one of its parts starts with '.' (AppleDouble `._x.mp3`, a
    `.Trash` or `.cache` folder)."""
    return any(part.startswith(".") for part in relative.parts)


def _one_per_file(found: list[Path]) -> list[Path]:
    """`found` without a second name of a file already listed (symbolic links and `..` resolved)."""
    first: dict[str, Path] = {}
    for p in found:
        real = os.path.realpath(p)
        if real in first:
            log.info("%s is %s, given already: predicted once", p, first[real])
        else:
            first[real] = p
    return list(first.values())
