"""The synthetic species and their calls: parametric notes (FM sweeps, trills, harmonic stacks, whistles with
vibrato, two-note chirps), bouts, and the noises around them (a noise bed, reverberation, an insect chorus)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

CALL_TYPES = ("sweep", "trill", "harmonic", "whistle", "chirp")

_NAMES = [
    ("amber piper", "Fictus amberi"),
    ("slate trillbird", "Fictus ardesia"),
    ("reed chanter", "Fictus arundo"),
    ("dusk whistler", "Fictus crepus"),
    ("coral sparrow", "Fictus corallus"),
    ("hill warbler", "Fictus collinus"),
    ("marsh chat", "Fictus palustris"),
    ("pine flute", "Fictus pinicola"),
    ("river thrush", "Fictus fluvialis"),
    ("sand lark", "Fictus arenarius"),
    ("moss wren", "Fictus muscus"),
    ("ash finch", "Fictus cinereus"),
]


@dataclass(frozen=True)
class Species:
    code: str
    common_name: str
    sci_name: str
    call_type: str  # one of CALL_TYPES (species.csv's call_kind column)
    f_lo_hz: float
    f_hi_hz: float
    note_s: float
    notes_per_bout: int
    gap_s: float


def make_species(n: int, seed: int) -> list[Species]:
    """n distinct species: call types cycle, bands spread over 1.2-9 kHz on a log scale."""
    rng = np.random.default_rng([seed, 1])
    centres = np.geomspace(1500, 7000, n) if n > 1 else np.array([3000.0])
    rng.shuffle(centres)
    out = []
    for i in range(n):
        common, sci = _NAMES[i % len(_NAMES)]
        if i >= len(_NAMES):
            common, sci = f"{common} {i // len(_NAMES) + 1}", f"{sci} {i // len(_NAMES) + 1}"
        call_type = CALL_TYPES[i % len(CALL_TYPES)]
        width = centres[i] * rng.uniform(0.25, 0.6)
        note_s = {"sweep": 0.25, "trill": 0.04, "harmonic": 0.35, "whistle": 0.6, "chirp": 0.09}[
            call_type
        ] * rng.uniform(0.8, 1.25)
        notes = {"sweep": 4, "trill": 18, "harmonic": 3, "whistle": 2, "chirp": 6}[call_type] + int(rng.integers(0, 3))
        gap = {"sweep": 0.15, "trill": 0.03, "harmonic": 0.25, "whistle": 0.3, "chirp": 0.12}[call_type] * rng.uniform(
            0.8, 1.25
        )
        code = "".join(w[:3] for w in common.split()[:2])[:6] + (str(i // len(_NAMES)) if i >= len(_NAMES) else "")
        out.append(
            Species(
                code, common.title(), sci, call_type, centres[i] - width / 2, centres[i] + width / 2, note_s, notes, gap
            )
        )
    return out


def _note(sp: Species, rng: np.random.Generator, scale: float, sr: int) -> np.ndarray:
    """One note of a species, float32 in [-1, 1]."""
    dur = sp.note_s * rng.uniform(0.9, 1.1)
    t = np.arange(int(dur * sr)) / sr
    lo, hi = sp.f_lo_hz * scale, sp.f_hi_hz * scale
    frac = t / dur
    if sp.call_type == "sweep":
        freq = lo + (hi - lo) * frac if sp.code[0] < "m" else hi - (hi - lo) * frac
    elif sp.call_type == "trill":
        freq = np.full_like(t, (lo + hi) / 2)
    elif sp.call_type == "harmonic":
        freq = np.full_like(t, lo * 0.6) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    elif sp.call_type == "whistle":
        freq = (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * 9 * t)
    else:  # chirp: fast up-sweep
        freq = lo + (hi - lo) * frac**2
    phase = 2 * np.pi * np.cumsum(freq) / sr
    wave = np.sin(phase)
    if sp.call_type == "harmonic":
        wave = wave + 0.6 * np.sin(2 * phase) + 0.35 * np.sin(3 * phase)
        wave /= 1.95
    env = np.sin(np.pi * frac) ** 0.5
    return (wave * env).astype(np.float32)


def call_bout(
    sp: Species, rng: np.random.Generator, scale: float, sr: int
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A bout of notes and the (start_s, end_s) of each note inside it."""
    parts, spans, t = [], [], 0.0
    n_notes = max(1, sp.notes_per_bout + int(rng.integers(-1, 2)))
    for _ in range(n_notes):
        note = _note(sp, rng, scale, sr)
        gap = np.zeros(int(sp.gap_s * rng.uniform(0.8, 1.2) * sr), np.float32)
        spans.append((t, t + len(note) / sr))
        parts += [note, gap]
        t += (len(note) + len(gap)) / sr
    return np.concatenate(parts), spans


def noise_bed(rng: np.random.Generator, n: int, sr: int, level: float) -> np.ndarray:
    """Pink noise, wind rumble (low-passed, slowly modulated) and sparse rain clicks."""
    m = scipy.fft.next_fast_len(n, real=True)  # pocketfft is slow on lengths with large prime factors
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / sr)
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(f, 20.0)), m)[:n]
    pink /= np.abs(pink).max() + 1e-9
    sos = scipy.signal.butter(2, 300, "lowpass", fs=sr, output="sos")
    wind = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    wind *= 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * np.arange(n) / sr + rng.uniform(0, 6.28))
    wind /= np.abs(wind).max() + 1e-9
    rain = np.zeros(n)
    n_clicks = int(rng.uniform(0, 3) * n / sr)
    rain[rng.integers(0, n, n_clicks)] = rng.uniform(-1, 1, n_clicks)
    bed = level * (0.5 * pink + rng.uniform(0.2, 1.0) * wind + 0.4 * rain)
    return bed.astype(np.float32)


def place(buf: np.ndarray, sig: np.ndarray, at: int, gain: float) -> None:
    end = min(len(buf), at + len(sig))
    if end > at:
        buf[at:end] += gain * sig[: end - at]


def reverb(x: np.ndarray, rt60_s: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """x with a diffuse tail: decaying noise (60 dB down at rt60_s) convolved, mixed in at half the dry level."""
    n = max(1, int(rt60_s * sr))
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    tail *= 0.5 / (np.sqrt(np.sum(tail**2)) + 1e-9)
    return (x + scipy.signal.fftconvolve(x, tail)[: len(x)]).astype(np.float32)


def insects(rng: np.random.Generator, n: int, sr: int, level: float) -> np.ndarray:
    """An insect chorus: band noise at 2.5-5 kHz, pulsing at 20-40 Hz, sounding through half of the recording
    (a random half, in stretches of 10-30 s)."""
    sos = scipy.signal.butter(4, [2500, 5000], "bandpass", fs=sr, output="sos")
    band = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    band /= np.abs(band).max() + 1e-9
    t = np.arange(n) / sr
    pulse = 0.5 * (1 + np.sign(np.sin(2 * np.pi * rng.uniform(20, 40) * t)))
    on = np.zeros(n, np.float32)
    pos = int(rng.uniform(0, 10) * sr)
    while pos < n:
        span = int(rng.uniform(10, 30) * sr)
        on[pos : pos + span] = 1.0
        pos += 2 * span
    return (level * band * pulse * on).astype(np.float32)
