"""Log-mel front end: an nn.Module, so it runs on the model's device inside the batch."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from birdsed.config import FrontendConfig

CPU_CHUNK = 8
PCEN_SCALE = 2.0**31  # PCEN's input: the mel amplitude at int32 scale, as librosa.pcen advises
PCEN_EPS = 1e-6


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney mel filterbank [shape=(n_mels, n_fft // 2 + 1)], bit for bit librosa.filters.mel's default (tested): its
    triangles written here because importing librosa.filters (and scipy.signal with it) costs about 0.6 s of every
    model load; the mel scale itself is librosa's."""
    from librosa.core.convert import mel_frequencies

    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)  # (n_mels + 2,) band edges and centres, Slaney scale
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    # float32 before the area normalisation, as librosa rounds it: the same bits, so the same features
    weights = np.maximum(0, np.minimum(lower, upper)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: each band's area 1
    return weights


class LogMel(nn.Module):
    """(B, n_samples) waveform at 32 kHz -> (B, 1, n_mels, n_frames) normalised log-mel.

    Power spectrogram (Hann window, centred, zero-padded as librosa), Slaney mel
    filterbank from librosa, then compressed: power to dB (ref 1.0, amin 1e-10, optional
    top_db below the clip's maximum), or with compression "pcen" per-channel energy
    normalisation (each mel band divided by its own smoothed recent energy, then
    root-compressed: stationary noise such as wind, rain or traffic flattens while onsets
    stand out; Lostanlen et al. 2019); then per-mel normalisation by a BatchNorm over mel
    bins (PANNs' bn0), which learns dataset statistics and, unlike per-clip
    standardisation, keeps a quiet clip quiet. The methods named `*_db` return the
    compressed values whichever the compression.
    """

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        cfg.check()  # a model.json's front end does not pass through Config.check
        self.cfg = cfg
        mel = mel_filterbank(cfg.sample_rate_hz, cfg.n_fft, cfg.n_mels, cfg.fmin_hz, cfg.fmax_hz)
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
            spec = torch.stft(
                wave,
                self.cfg.n_fft,
                self.cfg.hop_length,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            return spec.real.square() + spec.imag.square()
        half = self.cfg.n_fft // 2
        x = F.pad(wave.unsqueeze(1), (half, half))
        ri = F.conv1d(x, self._dft_basis(), stride=self.cfg.hop_length)  # (B, 2 * bins, n_frames)
        re, im = ri.chunk(2, dim=1)
        return re.square() + im.square()

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.cfg.hop_length

    def power_db(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) -> (B, n_mels, n_frames) mel power in dB (or PCEN), computed in float32."""
        if wave.device.type == "cpu" and len(wave) > CPU_CHUNK:
            # on a CPU, 8 windows at a time keep the complex spectrogram in cache: 4x faster than one big batch
            return torch.cat([self.power_db(c) for c in wave.split(CPU_CHUNK)])
        return self._compress(self._mel_power(wave))

    def _mel_power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) -> (B, n_mels, n_frames) mel power (float32, before dB)."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return torch.matmul(self.mel_fb, self._power(wave.float()))

    def _compress(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, n_frames) mel power -> dB or PCEN, each item on its own (its own maximum, its own smoother)."""
        return self._pcen(mel) if self.cfg.compression == "pcen" else self._to_db(mel)

    def _pcen(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) mel power -> PCEN, as librosa.pcen on the amplitude sqrt(mel) * 2^31.

        The smoother M[t] = (1 - b) M[t-1] + b E[t], started at E[0] as librosa starts it, is a (T, T) matrix
        product: exact, and one kernel on any device."""
        c = self.cfg
        with torch.autocast(device_type=mel.device.type, enabled=False):
            e = mel.float().clamp_min(0).sqrt() * PCEN_SCALE
            smooth = torch.matmul(
                e, _smoother(e.shape[-1], c.pcen_time_constant_s * c.sample_rate_hz / c.hop_length, e.device)
            )
            gained = e * (PCEN_EPS + smooth).pow(-c.pcen_gain)
            return (gained + c.pcen_bias).pow(c.pcen_power) - c.pcen_bias**c.pcen_power  # no expm1 in ONNX

    def _to_db(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, n_frames) mel power -> dB, floored top_db below each item's maximum."""
        with torch.autocast(device_type=mel.device.type, enabled=False):
            db = 10.0 * torch.log10(mel.clamp_min(1e-10))
            if self.cfg.top_db is not None:
                db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.cfg.top_db)
        return db

    def windowed_db(self, audio: torch.Tensor, window: int, hop: int) -> torch.Tensor:
        """Half-overlapping windows of one stretch of audio -> (W, n_mels, n_frames) dB, equal to
        power_db(audio.unfold(0, window, hop)) but with each sample's spectrum computed once.

        audio [shape=(n_samples,)], W = 1 + (n_samples - window) // hop. One STFT runs over the whole
        stretch and each window takes its frames from it; only the frames whose FFT support crosses
        a window edge (where the per-window STFT sees zero padding, not the neighbouring audio) are
        recomputed from the window's own first and last samples.
        """
        assert audio.ndim == 1 and len(audio) >= window, f"expected (n >= {window},), got {tuple(audio.shape)}"
        h, half = self.cfg.hop_length, self.cfg.n_fft // 2
        n_frames = self.n_frames(window)
        edge = -(-half // h)  # frames at each end whose support crosses the window's edge
        if window % h or hop % h or n_frames <= 2 * edge:
            return self.power_db(audio.unfold(0, window, hop))
        n_windows = 1 + (len(audio) - window) // hop
        mel = self._mel_power(audio[None])[0]  # (n_mels, frames of the stretch)
        mel = mel.unfold(1, n_frames, hop // h)[:, :n_windows].permute(1, 0, 2).contiguous()  # (W, n_mels, n_frames)
        span = 2 * edge * h  # samples that hold every edge frame's support, a whole number of hops
        heads = audio[: (n_windows - 1) * hop + span].unfold(0, span, hop)  # (W, span): each window's first samples
        tails = audio[window - span : window - span + (n_windows - 1) * hop + span].unfold(0, span, hop)
        ends = self._mel_power(torch.cat([heads, tails]))  # (2W, n_mels, 2 edge + 1), zero-padded as per window
        mel[:, :, :edge] = ends[:n_windows, :, :edge]
        mel[:, :, -edge:] = ends[n_windows:, :, -edge:]
        return self._compress(mel)

    def normalize(self, db: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) dB -> (B, 1, n_mels, T), normalised per mel bin."""
        return self.norm(db).unsqueeze(1)  # BatchNorm1d over (B, n_mels, T): one mean and scale per mel bin

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        assert wave.ndim == 2, f"expected (B, n_samples), got {tuple(wave.shape)}"
        return self.normalize(self.power_db(wave))


@functools.lru_cache(maxsize=8)
def _smoother(n_frames: int, time_constant_frames: float, device: torch.device) -> torch.Tensor:
    """(T, T) W with (E @ W)[t] = PCEN's smoothed energy at frame t: W[k, t] = b (1 - b)^(t - k) for k <= t, plus
    (1 - b)^(t + 1) on row 0 (the filter's state starts at E[0]); b from the time constant as librosa computes it."""
    t2 = time_constant_frames**2
    b = (math.sqrt(1 + 4 * t2) - 1) / (2 * t2)
    with torch.inference_mode(False):  # cached: a plain tensor, usable later in training as well
        t = torch.arange(n_frames, dtype=torch.float64)
        lag = t[None, :] - t[:, None]  # (k, t): t - k
        w = torch.where(lag >= 0, b * (1 - b) ** lag.clamp_min(0), torch.zeros(()))
        w[0] += (1 - b) ** (t + 1)
        return w.float().to(device)
