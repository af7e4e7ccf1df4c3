"""A piece of a recording's audio in an inference batch, and its windows: what every kind of model
(detector.py) is handed to score."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the SED models' window and hop (the reference solution's crop; README: how predict reads a recording)
SED_WINDOW_S = 5.0
SED_HOP_S = 2.5


@dataclass
class Piece:
    """A stretch of one file's audio holding its windows first_window .. first_window + n_windows - 1:
    samples [offset, offset + n_samples) of the batch's "audio"; window k starts k * hop samples into the file."""

    file: int
    first_window: int
    n_windows: int
    offset: int
    n_samples: int
    short_len: int = 0  # a whole recording shorter than a window: its length (its one window is zero-padded)

    def audio_of(self, audio: torch.Tensor) -> torch.Tensor:
        """This piece's samples, a view of the batch's audio [shape=(n_samples,)]."""
        return audio[self.offset : self.offset + self.n_samples]


def piece_windows(audio: torch.Tensor, piece: Piece, window: int, hop: int, policy: str = "pad") -> torch.Tensor:
    """The piece's windows [shape=(n_windows, window)], a view of the batch's audio unless `policy` loops it."""
    return fitted_audio(audio, piece, policy).unfold(0, window, hop)


def fitted_audio(audio: torch.Tensor, piece: Piece, policy: str) -> torch.Tensor:
    """The piece's samples, with a recording shorter than a window repeated to fill it when `policy` is "loop"
    (as `train` crops short recordings with data.short_policy=loop); otherwise as streamed (zero-padded)."""
    a = piece.audio_of(audio)
    if policy != "loop" or not piece.short_len:
        return a
    return a[: piece.short_len].repeat(-(-len(a) // piece.short_len))[: len(a)]
