"""A synthetic bird data set in the Kaggle Cornell layout, deterministic for a seed.

Species are parametric calls (FM sweeps, trills, harmonic stacks, whistles with
vibrato, two-note chirps), each with its own band, note length and rhythm, varied per
individual. Training clips are focal (loud) and weakly labelled; soundscapes are
distant (quieter, low-passed), overlapping, with silent stretches, and are labelled
per 5 s row, like the competition's test set.

SynthConfig.shift (0 by default) moves the soundscapes further from the training clips, the domain shift that
pseudo-labelling attacks: at shift s, calls are s * 8 dB quieter still and reverberant (an exponential tail of
RT60 s * 0.8 s mixed in), and an insect chorus that no training clip holds (a pulsing band of noise at 2.5-5 kHz,
over the birds' bands) sounds through half of each soundscape, at a level that grows with s. The note events,
and so the row labels, are those of shift 0.

Layout written:
  train.csv, train_audio/<code>/<file>   (mixed formats, rates and channels)
  test.csv, test_audio/<audio_id>.mp3, test_labels.csv (row_id,birds)
  test_raven/<audio_id>.Table.1.selections.txt   the same truth as an ecologist keeps it: a box per note
  species.csv
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
import scipy.signal
import soundfile as sf
import soxr

from birdsed.data.manifest import SPECIES_FILE
from birdsed.data.synth_calls import Species, call_bout, insects, make_species, noise_bed, place, reverb
from birdsed.errors import ConfigError
from birdsed.fsutil import atomic_dir, atomic_path, remove_stale_temps, run_lock
from birdsed.progress import progress_bar
from birdsed.rows import ROW_S

BASE_RATE_HZ = 32_000
# (format, subtype, rate, channels, extension): the mix of files real collections hold
_FILE_FORMATS = [
    ("WAV", "PCM_16", 44_100, 2, "wav"),
    ("FLAC", "PCM_16", 32_000, 1, "flac"),
    ("OGG", "VORBIS", 22_050, 1, "ogg"),
    ("MP3", "MPEG_LAYER_III", 48_000, 2, "mp3"),
    ("WAV", "PCM_32", 48_000, 1, "wav"),
    ("FLAC", "PCM_24", 44_100, 2, "flac"),
]
UNMAPPED_SECONDARY = "Distant Frog (Rana fictiva)"


@dataclass(frozen=True)
class SynthConfig:
    species: int = 6
    clips_per_species: int = 10
    soundscapes: int = 4
    soundscape_s: float = 120.0
    min_clip_s: float = 3.0
    max_clip_s: float = 60.0
    seed: int = 0
    soundscape_rate_hz: int = 32_000  # the test mp3s' sample rate (Kaggle's were mixed)
    soundscape_seed: int | None = None  # other soundscapes of the same species (a validation set); None: seed
    shift: float = 0.0  # domain shift of the soundscapes (module docstring): 0 none, 1 strong

    @property
    def soundscape_seed_or_seed(self) -> int:
        return self.seed if self.soundscape_seed is None else self.soundscape_seed


def _write_audio(path: Path, mono_32k: np.ndarray, fmt: tuple) -> None:
    container, subtype, rate, channels, _ = fmt
    x = soxr.resample(mono_32k, BASE_RATE_HZ, rate, "HQ") if rate != BASE_RATE_HZ else mono_32k
    x = np.clip(x, -0.99, 0.99).astype(np.float32)
    data = np.stack([x, 0.9 * x], axis=1) if channels == 2 else x
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, rate, format=container, subtype=subtype)
        if container == "OGG":
            tmp.write_bytes(_fix_ogg_serial(tmp.read_bytes()))


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _fix_ogg_serial(data: bytes, serial: int = 0x62697264) -> bytes:
    """Give every Ogg page the same stream serial number (libsndfile picks a random one), so equal seeds give
    equal bytes."""
    out, pos = bytearray(data), 0
    while pos + 27 <= len(out) and out[pos : pos + 4] == b"OggS":
        n_segments = out[pos + 26]
        end = pos + 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos:end])).to_bytes(4, "little")
        pos = end
    return bytes(out)


def _train_clip(
    sp: Species, others: list[Species], idx: int, cfg: SynthConfig
) -> tuple[np.ndarray, list[Species], bool]:
    rng = np.random.default_rng([cfg.seed, 2, idx])
    dur = float(np.exp(rng.uniform(np.log(cfg.min_clip_s), np.log(cfg.max_clip_s))))
    n = int(dur * BASE_RATE_HZ)
    buf = noise_bed(rng, n, BASE_RATE_HZ, level=rng.uniform(0.005, 0.04))
    scale = rng.uniform(0.95, 1.05)  # this individual's pitch
    # focal recordings: the bird sings through most of the clip, bouts a few seconds apart
    t = rng.uniform(0, 1.5)
    while t < dur:
        bout, _ = call_bout(sp, rng, scale, BASE_RATE_HZ)
        place(buf, bout, int(t * BASE_RATE_HZ), rng.uniform(0.3, 0.8))
        t += len(bout) / BASE_RATE_HZ + rng.uniform(0.5, 4.0)
    secondary: list[Species] = []
    if others and rng.random() < 0.3:
        sec = others[int(rng.integers(0, len(others)))]
        bout, _ = call_bout(sec, rng, rng.uniform(0.95, 1.05), BASE_RATE_HZ)
        place(buf, bout, int(rng.integers(0, max(1, n - len(bout)))), rng.uniform(0.05, 0.15))
        secondary.append(sec)
    return buf, secondary, bool(rng.random() < 0.05)


def _soundscape(
    species: list[Species], idx: int, cfg: SynthConfig
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """A long field recording and its (code, start_s, end_s) note events."""
    rng = np.random.default_rng([cfg.soundscape_seed_or_seed, 3, idx])
    tails = np.random.default_rng([cfg.soundscape_seed_or_seed, 6, idx])  # its own draws: every shift, the same calls
    n = int(cfg.soundscape_s * BASE_RATE_HZ)
    buf = noise_bed(rng, n, BASE_RATE_HZ, level=rng.uniform(0.01, 0.05))
    events: list[tuple[str, float, float]] = []
    # active stretches alternate with silent ones; calls may overlap inside a stretch
    t = float(rng.uniform(0, 10))
    while t < cfg.soundscape_s:
        active_s = rng.uniform(10, 40)
        for sp_i in rng.choice(len(species), size=int(rng.integers(1, min(3, len(species)) + 1)), replace=False):
            sp = species[sp_i]
            scale = rng.uniform(0.95, 1.05)
            cutoff = rng.uniform(max(sp.f_hi_hz * 1.1, 4000), 14000)
            sos = scipy.signal.butter(4, min(cutoff, BASE_RATE_HZ / 2 - 100), "lowpass", fs=BASE_RATE_HZ, output="sos")
            gain = 10 ** (rng.uniform(-14, -4) / 20) * 0.6
            bt = t + rng.uniform(0, active_s * 0.3)
            while bt < min(t + active_s, cfg.soundscape_s):
                bout, spans = call_bout(sp, rng, scale, BASE_RATE_HZ)
                bout = scipy.signal.sosfilt(sos, bout).astype(np.float32)
                if cfg.shift > 0:
                    bout = reverb(bout, 0.8 * cfg.shift, tails, BASE_RATE_HZ)
                at = int(bt * BASE_RATE_HZ)
                place(buf, bout, at, gain * 10 ** (-8 * cfg.shift / 20))
                events += [(sp.code, bt + a, bt + b) for a, b in spans if bt + a < cfg.soundscape_s]
                bt += len(bout) / BASE_RATE_HZ + rng.uniform(1.0, 8.0)
        t += active_s + rng.uniform(10, 35)  # a silent stretch
    if cfg.shift > 0:  # drawn after the calls, so that every shift places the same calls
        buf += insects(np.random.default_rng([cfg.soundscape_seed_or_seed, 5, idx]), n, BASE_RATE_HZ, 0.03 * cfg.shift)
    return buf, events


def row_truth(
    events: list[tuple[str, float, float]], duration_s: float, min_overlap_s: float = 0.05
) -> list[list[str]]:
    """Species per 5 s row: those whose notes cover at least min_overlap_s of the row together (a trill of 40 ms
    notes counts by its notes together): the rule `evaluate` applies to annotated calls (rows.row_labels)."""
    from birdsed.rows import n_rows, row_labels

    table = pd.DataFrame(events, columns=["label", "start_s", "end_s"])
    return [sorted(r) for r in row_labels(table, n_rows(duration_s), min_overlap_s)]


def write_raven_truth(path: Path, events: list[tuple[str, float, float]], species: list[Species]) -> None:
    """The soundscape's notes as a Raven selection table (one box per note, the species' band as its frequencies)."""
    band = {sp.code: (sp.f_lo_hz * (0.6 if sp.call_type == "harmonic" else 1.0), sp.f_hi_hz) for sp in species}
    rows = sorted(events, key=lambda e: (e[1], e[0]))
    table = pd.DataFrame(
        {
            "Selection": range(1, len(rows) + 1),
            "View": "Spectrogram 1",
            "Channel": 1,
            "Begin Time (s)": [round(a, 4) for _, a, _ in rows],
            "End Time (s)": [round(b, 4) for *_, b in rows],
            "Low Freq (Hz)": [round(band[c][0]) for c, *_ in rows],
            "High Freq (Hz)": [round(band[c][1]) for c, *_ in rows],
            "Species": [c for c, *_ in rows],
        }
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


def synthesize(out: str | os.PathLike, cfg: SynthConfig = SynthConfig(), quiet: bool = False) -> Path:
    """Write the synthetic data set to `out`; returns `out`."""
    if not 0 <= cfg.shift <= 2:
        raise ConfigError(f"synth shift must be in [0, 2], got {cfg.shift}")
    if cfg.min_clip_s > cfg.max_clip_s:
        raise ConfigError(f"synth min_clip_s {cfg.min_clip_s:g} is above max_clip_s {cfg.max_clip_s:g}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(out.parent, f".{out.name}.lock"):  # one synth into `out` at a time; then a killed one's folder goes
        remove_stale_temps(out.parent, [out.name])
        with atomic_dir(out, into_existing=True) as tmp:  # a failed or killed run leaves no half-written data set
            _synthesize(tmp, cfg, quiet)
    return out


def _synthesize(out: Path, cfg: SynthConfig, quiet: bool) -> None:
    """Write the data set into the (new, empty) folder `out`."""
    species = make_species(cfg.species, cfg.seed)
    pd.DataFrame(
        [
            {
                "ebird_code": s.code,
                "species": s.common_name,
                "sci_name": s.sci_name,
                "call_kind": s.call_type,
                "f_lo_hz": round(s.f_lo_hz),
                "f_hi_hz": round(s.f_hi_hz),
            }
            for s in species
        ]
    ).to_csv(out / SPECIES_FILE, index=False)
    rows = []
    total = cfg.species * cfg.clips_per_species + cfg.soundscapes
    with progress_bar(total=total, description="synth", disable=quiet) as advance:
        for si, sp in enumerate(species):
            others = [o for o in species if o.code != sp.code]
            for ci in range(cfg.clips_per_species):
                idx = si * cfg.clips_per_species + ci
                wave, secondary, unmapped = _train_clip(sp, others, idx, cfg)
                fmt = _FILE_FORMATS[idx % len(_FILE_FORMATS)]
                filename = f"XC{100000 + idx}.{fmt[4]}"
                _write_audio(out / "train_audio" / sp.code / filename, wave, fmt)
                sec_names = [f"{s.common_name} ({s.sci_name})" for s in secondary] + (
                    [UNMAPPED_SECONDARY] if unmapped else []
                )
                rows.append(
                    {
                        "rating": f"{3.5 + (idx % 4) * 0.5:.1f}",
                        "ebird_code": sp.code,
                        "channels": f"{fmt[3]} ({'stereo' if fmt[3] == 2 else 'mono'})",
                        "duration": str(int(round(len(wave) / BASE_RATE_HZ))),
                        "filename": filename,
                        "species": sp.common_name,
                        "sci_name": sp.sci_name,
                        "secondary_labels": repr(sec_names),
                        "sampling_rate": f"{fmt[2]} (Hz)",
                        "type": "call, song",
                        "primary_label": f"{sp.sci_name}_{sp.common_name}",
                    }
                )
                advance(1)
        pd.DataFrame(rows).to_csv(out / "train.csv", index=False)
        test_rows, truth_rows = [], []
        for k in range(cfg.soundscapes):
            wave, events = _soundscape(species, k, cfg)
            audio_id = f"{np.random.default_rng([cfg.soundscape_seed_or_seed, 4, k]).integers(0, 16**8):08x}"
            _write_audio(
                out / "test_audio" / f"{audio_id}.mp3",
                wave,
                ("MP3", "MPEG_LAYER_III", cfg.soundscape_rate_hz, 1, "mp3"),
            )
            per_row = row_truth(events, cfg.soundscape_s)
            (out / "test_raven").mkdir(exist_ok=True)
            write_raven_truth(out / "test_raven" / f"{audio_id}.Table.1.selections.txt", events, species)
            site = "site_3" if k == cfg.soundscapes - 1 else f"site_{1 + k % 2}"
            if site == "site_3":
                test_rows.append({"site": site, "row_id": f"{site}_{audio_id}", "seconds": "", "audio_id": audio_id})
                truth_rows.append(
                    {
                        "row_id": f"{site}_{audio_id}",
                        "birds": " ".join(sorted({c for r in per_row for c in r})) or "nocall",
                    }
                )
            for r, birds in enumerate(per_row if site != "site_3" else []):
                row_id = f"{site}_{audio_id}_{int((r + 1) * ROW_S)}"
                test_rows.append(
                    {"site": site, "row_id": row_id, "seconds": str(int((r + 1) * ROW_S)), "audio_id": audio_id}
                )
                truth_rows.append({"row_id": row_id, "birds": " ".join(birds) or "nocall"})
            advance(1)
    pd.DataFrame(test_rows, columns=["site", "row_id", "seconds", "audio_id"]).to_csv(out / "test.csv", index=False)
    pd.DataFrame(truth_rows, columns=["row_id", "birds"]).to_csv(out / "test_labels.csv", index=False)
