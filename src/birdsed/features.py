"""Log-mel front end: an nn.Module, so it runs on the model's device inside the batch."""

from __future__ import annotations

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from birdsed.config import FrontendConfig


CPU_CHUNK = 8


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
        self.norm = nn.BatchNorm1d(cfg.n_mels)
        self.conv_stft = False  # True: the STFT as a strided convolution with a DFT basis (ONNX export)

    def _dft_basis(self) -> torch.Tensor:
        """(2 * (n_fft // 2 + 1), 1, n_fft) windowed cos and -sin kernels."""
        n = self.cfg.n_fft
        k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
        t = torch.arange(n, dtype=torch.float64)[None, :]
        ang = 2 * torch.pi * k * t / n
        win = self.window.double()[None, :]
        return torch.cat([torch.cos(ang) * win, -torch.sin(ang) * win]).float().unsqueeze(1).to(self.window.device)

    def _power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) -> (B, n_fft // 2 + 1, n_frames) power spectrogram, centred and zero-padded."""
        if not self.conv_stft:
            spec = torch.stft(wave, self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                              center=True, pad_mode="constant", return_complex=True)
            return spec.real.square() + spec.imag.square()
        half = self.cfg.n_fft // 2
        x = F.pad(wave.unsqueeze(1), (half, half))
        ri = F.conv1d(x, self._dft_basis(), stride=self.cfg.hop_length)  # (B, 2 * bins, n_frames)
        re, im = ri.chunk(2, dim=1)
        return re.square() + im.square()

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.cfg.hop_length

    def power_db(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) -> (B, n_mels, n_frames) mel power in dB, computed in float32."""
        if wave.device.type == "cpu" and len(wave) > CPU_CHUNK:
            # on a CPU, 8 windows at a time keep the complex spectrogram in cache: 4x faster than one big batch
            return torch.cat([self.power_db(c) for c in wave.split(CPU_CHUNK)])
        with torch.autocast(device_type=wave.device.type, enabled=False):
            mel = torch.matmul(self.mel_fb, self._power(wave.float()))
            db = 10.0 * torch.log10(mel.clamp_min(1e-10))
            if self.cfg.top_db is not None:
                db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.cfg.top_db)
        return db

    def normalize(self, db: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) dB -> (B, 1, n_mels, T), normalised per mel bin."""
        return self.norm(db).unsqueeze(1)  # BatchNorm1d over (B, n_mels, T): one mean and scale per mel bin

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        assert wave.ndim == 2, f"expected (B, n_samples), got {tuple(wave.shape)}"
        return self.normalize(self.power_db(wave))
