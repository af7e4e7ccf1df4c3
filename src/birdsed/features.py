"""Log-mel front end: an nn.Module, so it runs on the model's device inside the batch."""

from __future__ import annotations

import librosa
import torch
from torch import nn

from birdsed.config import FrontendConfig


class LogMel(nn.Module):
    """(B, n_samples) waveform at 32 kHz -> (B, 1, n_mels, n_frames) normalised log-mel.

    Power spectrogram (Hann window, centred, zero-padded as librosa), Slaney mel
    filterbank from librosa, power to dB (ref 1.0, amin 1e-10, optional top_db below the
    clip's maximum), then per-mel normalisation by a BatchNorm over mel bins (PANNs' bn0),
    which learns dataset statistics and, unlike per-clip standardisation, keeps a quiet
    clip quiet.
    """

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        mel = librosa.filters.mel(sr=cfg.sample_rate_hz, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz)
        self.register_buffer("mel_fb", torch.from_numpy(mel).float(), persistent=False)  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.norm = nn.BatchNorm2d(cfg.n_mels)

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.cfg.hop_length

    def power_db(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) -> (B, n_mels, n_frames) mel power in dB, computed in float32."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                              center=True, pad_mode="constant", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # (B, n_fft // 2 + 1, n_frames)
            mel = torch.matmul(self.mel_fb, power)
            db = 10.0 * torch.log10(mel.clamp_min(1e-10))
            if self.cfg.top_db is not None:
                db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.cfg.top_db)
        return db

    def normalize(self, db: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) dB -> (B, 1, n_mels, T), normalised per mel bin."""
        return self.norm(db.unsqueeze(2)).transpose(1, 2)  # BatchNorm2d sees (B, n_mels, 1, T)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        assert wave.ndim == 2, f"expected (B, n_samples), got {tuple(wave.shape)}"
        return self.normalize(self.power_db(wave))
