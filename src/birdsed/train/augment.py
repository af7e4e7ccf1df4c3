"""Augmentations: named, switchable, each with a probability, active only in training.

All of them run on the model's device on whole batches (vectorised, no per-sample
Python loops), between the stages of the front end:

  wave  --gain, noise-->  power dB  --lowpass-->  normalised log-mel
        --pitch + tempo (one grid_sample)--> --SpecAugment--> --mixup--> backbone

Why on the device: a loader worker doing librosa pitch shift or time stretch costs
50-100 ms per 5 s clip, so even 16 workers would cap a GPU at a few hundred clips/s
against the ~2,800 clips/s a ResNet50 trains at. Resampling the log-mel image along
frequency (pitch, on the mel-centre frequencies) and time (tempo) costs microseconds
per clip and leaves the loader workers only memory-mapped crops to read.
"""

from __future__ import annotations

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from birdsed.config import AugmentConfig, FrontendConfig


def _chosen(p: float, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) bool: which examples get an augmentation of probability p."""
    return torch.rand(batch, device=device) < p


class Augmenter(nn.Module):
    def __init__(self, cfg: AugmentConfig, frontend: FrontendConfig):
        super().__init__()
        self.cfg = cfg
        centres = librosa.mel_frequencies(frontend.n_mels + 2, fmin=frontend.fmin_hz, fmax=frontend.fmax_hz)[1:-1]
        self.register_buffer("mel_centres_hz", torch.tensor(centres, dtype=torch.float32), persistent=False)

    def negatives(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace examples, with probability negatives_p, by bird-free noise with an all-zero target.

        Focal training clips are labelled positive in every crop, so without negatives a
        model learns that any background means a bird; soundscapes are mostly background.
        """
        c = self.cfg
        if not self.training or c.negatives_p <= 0:
            return x, y
        B = x.shape[0]
        chosen = _chosen(c.negatives_p, B, x.device)
        if not chosen.any():
            return x, y
        noise = self._coloured_noise(x)
        level = 10 ** (-1.3 - 2.0 * torch.rand(B, 1, device=x.device))  # RMS from 0.05 down to 5e-4
        noise = noise / noise.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-8) * level
        return torch.where(chosen[:, None], noise, x), torch.where(chosen[:, None], torch.zeros_like(y), y)

    @staticmethod
    def _coloured_noise(x: torch.Tensor) -> torch.Tensor:
        """(B, N) noise with a random spectral slope per example: white (0) to brown (-2, wind-like)."""
        spec = torch.fft.rfft(torch.randn_like(x))
        f = torch.arange(spec.shape[-1], device=x.device).clamp_min(1).float()
        slope = -2.0 * torch.rand(x.shape[0], 1, device=x.device)
        return torch.fft.irfft(spec * f[None, :] ** (slope / 2), n=x.shape[-1])

    def wave(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N): random gain, background noise (white to brown) at a random SNR."""
        c = self.cfg
        if not self.training:
            return x
        B = x.shape[0]
        if c.gain_p > 0:
            db = (torch.rand(B, 1, device=x.device) * 2 - 1) * c.gain_db
            x = torch.where(_chosen(c.gain_p, B, x.device)[:, None], x * 10 ** (db / 20), x)
        if c.noise_p > 0:
            noise = self._coloured_noise(x)
            lo, hi = c.noise_snr_db
            snr_db = lo + torch.rand(B, 1, device=x.device) * (hi - lo)
            sig_rms = x.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-4)
            noise = (
                noise / noise.square().mean(-1, keepdim=True).sqrt().clamp_min(1e-8) * sig_rms * 10 ** (-snr_db / 20)
            )
            x = torch.where(_chosen(c.noise_p, B, x.device)[:, None], x + noise, x)
        return x

    def db(self, d: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) dB -> same: low-pass (high mel bins fade, as with distance)."""
        c = self.cfg
        if not self.training or c.lowpass_p <= 0:
            return d
        B, M, _ = d.shape
        cutoff = M * (0.4 + 0.5 * torch.rand(B, 1, device=d.device))
        slope_db = 0.5 + 2.0 * torch.rand(B, 1, device=d.device)  # dB per mel bin above the cutoff
        bins = torch.arange(M, device=d.device, dtype=d.dtype)[None, :]
        atten = ((bins - cutoff).clamp_min(0) * slope_db)[:, :, None]
        floor = d.amin(dim=(1, 2), keepdim=True)
        lowpassed = torch.maximum(d - atten, floor)
        return torch.where(_chosen(c.lowpass_p, B, d.device)[:, None, None], lowpassed, d)

    def spec(self, m: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, T) -> same: pitch shift and tempo change (one resampling), then SpecAugment."""
        if not self.training:
            return m
        m = self._pitch_tempo(m)
        return self._specaugment(m)

    def _pitch_tempo(self, m: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.pitch_p <= 0 and c.tempo_p <= 0:
            return m
        B, _, M, T = m.shape
        dev = m.device
        semitones = (torch.rand(B, device=dev) * 2 - 1) * c.pitch_semitones * _chosen(c.pitch_p, B, dev)
        stretch = 1 + (torch.rand(B, device=dev) * 2 - 1) * c.tempo_range * _chosen(c.tempo_p, B, dev)
        # output mel bin i shows the source frequency centre_i / 2^(semitones/12), as a fractional bin index
        src_hz = self.mel_centres_hz[None, :] / (2 ** (semitones[:, None] / 12))
        idx = torch.searchsorted(self.mel_centres_hz, src_hz.contiguous()).clamp(1, M - 1)
        lo, hi = self.mel_centres_hz[idx - 1], self.mel_centres_hz[idx]
        frac_bin = (idx - 1) + (src_hz - lo) / (hi - lo)  # (B, M); outside [0, M-1] reads padding
        y = frac_bin / (M - 1) * 2 - 1
        # output frame t shows source frame t * stretch (faster: calls get shorter)
        x = torch.arange(T, device=dev)[None, :] * stretch[:, None] / (T - 1) * 2 - 1  # (B, T)
        grid = torch.stack([x[:, None, :].expand(B, M, T), y[:, :, None].expand(B, M, T)], dim=-1)
        return F.grid_sample(m, grid.to(m.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)

    def _specaugment(self, m: torch.Tensor) -> torch.Tensor:
        return specaugment(m, self.cfg)


def specaugment(m: torch.Tensor, c: AugmentConfig) -> torch.Tensor:
    """(B, C, n_freq, T) -> same: with probability specaug_p per example, time_masks stripes of up to
    time_mask_frames frames and freq_masks stripes of up to freq_mask_bins bins zeroed (the same on every channel)."""
    if c.specaug_p <= 0:
        return m
    B, _, M, T = m.shape
    dev = m.device
    keep = torch.ones(B, M, T, dtype=torch.bool, device=dev)
    for n, width, size, axis in ((c.time_masks, c.time_mask_frames, T, 1), (c.freq_masks, c.freq_mask_bins, M, 2)):
        if n <= 0 or width <= 0:
            continue
        w = torch.randint(0, width + 1, (B, n, 1), device=dev)
        start = (torch.rand(B, n, 1, device=dev) * (size - w).clamp_min(1)).long()
        pos = torch.arange(size, device=dev)[None, None, :]
        masked = ((pos >= start) & (pos < start + w)).any(dim=1)  # (B, size)
        keep &= ~masked.unsqueeze(axis)
    keep |= ~_chosen(c.specaug_p, B, dev)[:, None, None]
    return m * keep.unsqueeze(1)


def specaugment_nhwc(x: torch.Tensor, c: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, H freq, W time, C) channels-last -> same: specaugment's masks, drawn under a seed taken from `gen` (the
    global generator, which dropout draws from, is left as it was): BirdNET's spectrogram, or its activation at a
    cut."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(1 << 30, (), generator=gen)))
        return specaugment(x.permute(0, 3, 1, 2), c).permute(0, 2, 3, 1)


def mixup(
    m: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, w: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix each example with another of the batch (log-mel and targets), with probability mixup_p per batch;
    returns (m, y, w). Targets are lam * y1 + (1 - lam) * y2, or max(y1, y2) with mixup_union (3rd place);
    the examples' loss weights w (B,) (default 1) mix as lam * w1 + (1 - lam) * w2."""
    w = torch.ones(len(m), device=m.device) if w is None else w
    if cfg.mixup_p <= 0 or torch.rand(()) >= cfg.mixup_p or len(m) < 2:
        return m, y, w
    perm = torch.randperm(len(m), device=m.device)
    lam = torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample((len(m),)).to(m.device)
    lam = torch.maximum(lam, 1 - lam)  # the first example dominates
    m = lam.view(-1, 1, 1, 1).to(m.dtype) * m + (1 - lam.view(-1, 1, 1, 1).to(m.dtype)) * m[perm]
    y = torch.maximum(y, y[perm]) if cfg.mixup_union else lam[:, None] * y + (1 - lam[:, None]) * y[perm]
    return m, y, lam * w + (1 - lam) * w[perm]


def augmented_mel(
    aug: Augmenter, frontend, wave: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, w: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recipe's augmented model input of a batch: wave (B, n_samples), y (B, K), loss weights w (B,)
    (default 1) -> (normalised log-mel (B, 1, n_mels, T), targets (B, K), weights (B,)). `frontend` is the
    model's LogMel; every augmentation the config switches on runs (the Augmenter must be in training mode)."""
    wave, y = aug.negatives(wave, y)
    db = aug.db(frontend.power_db(aug.wave(wave)))
    mel = aug.spec(frontend.normalize(db))
    return mixup(mel, y, cfg, w)
