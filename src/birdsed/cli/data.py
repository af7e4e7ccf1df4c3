"""Verbs that make and prepare data: synth, prepare, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from birdsed.cli.registry import batch_status, console, goes_on, verb
from birdsed.cli.values import cores_cap, count, number
from birdsed.config import DATA_FORMATS
from birdsed.rows import ROW_S

MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most tools take 32-bit seeds
MAX_SPECIES, MAX_CLIPS_PER_SPECIES, MAX_SOUNDSCAPES = 1000, 10_000, 1000
MIN_CLIP_S, MAX_CLIP_S, MAX_SOUNDSCAPE_S = 0.5, 600.0, 3600.0


def _add_synth_sizes(p: argparse.ArgumentParser, clips_per_species: int) -> None:
    """The synthetic data set's size and seed, shared by synth and demo."""
    p.add_argument("--species", type=count(1, MAX_SPECIES), default=6)
    p.add_argument("--clips-per-species", type=count(1, MAX_CLIPS_PER_SPECIES), default=clips_per_species)
    p.add_argument("--seed", type=count(0, MAX_SEED), default=0)


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="folder to write the data set into")
    _add_synth_sizes(p, clips_per_species=10)
    p.add_argument(
        "--soundscapes",
        type=count(1, MAX_SOUNDSCAPES),
        default=4,
        help="test recordings (the last one is a site_3 file)",
    )
    p.add_argument(
        "--soundscape-s",
        type=number(ROW_S, MAX_SOUNDSCAPE_S),
        default=120.0,
        help="length of each soundscape in seconds",
    )
    p.add_argument("--min-clip-s", type=number(MIN_CLIP_S, MAX_CLIP_S), default=3.0)
    p.add_argument("--max-clip-s", type=number(MIN_CLIP_S, MAX_CLIP_S), default=60.0)
    p.add_argument("--soundscape-rate", type=count(8000, 192000), default=32000, help="sample rate of the test mp3s")
    p.add_argument(
        "--soundscape-seed", type=count(0, MAX_SEED), help="other soundscapes of the same species (default: --seed)"
    )
    p.add_argument(
        "--shift",
        type=number(0, 2),
        default=0.0,
        help="domain shift of the soundscapes: quieter, reverberant calls and an insect chorus (0 none, 1 strong)",
    )


@verb(
    "synth",
    "write a synthetic data set in the Kaggle layout",
    "birdsed synth data/synth --species 6 --clips-per-species 10 --soundscapes 4 --seed 0",
    _add_synth,
)
def cmd_synth(a: argparse.Namespace) -> int:
    from birdsed.data.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        a.species,
        a.clips_per_species,
        a.soundscapes,
        a.soundscape_s,
        a.min_clip_s,
        a.max_clip_s,
        a.seed,
        a.soundscape_rate,
        a.soundscape_seed,
        a.shift,
    )
    synthesize(a.out, cfg)
    console.print(
        f"synthetic data set written to {a.out} (train.csv, train_audio/, test.csv, test_audio/, test_labels.csv)"
    )
    return 0


def _add_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", type=Path, help="a data-set folder (Cornell train.csv, BirdCLEF train_metadata.csv or labels.csv)"
    )
    p.add_argument("--out", type=Path, required=True, help="store folder (created; a re-run resumes)")
    p.add_argument("--format", default="auto", choices=DATA_FORMATS)
    p.add_argument(
        "--workers", type=count(0, cores_cap()), default=None, help="decoding processes (default: all cores)"
    )
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="open files the table names outside its audio folder (refused by default)",
    )


@verb(
    "prepare",
    "decode and resample every recording once into a memory-mapped 32 kHz store",
    "birdsed prepare ../shared/data/nips4b --out stores/nips4b",
    _add_prepare,
)
def cmd_prepare(a: argparse.Namespace) -> int:
    from birdsed.data.manifest import read_dataset
    from birdsed.data.store import prepare

    manifest = read_dataset(a.data, a.format, allow_outside=a.allow_outside_paths)
    with goes_on(lambda: f"What was decoded is kept in {a.out}; the same command goes on from it."):
        result = prepare(manifest, a.out, workers=a.workers)
    console.print(result.summary())
    return batch_status(result.n_skipped, a.out / "report.csv", "recording(s) skipped")


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("birdsed-demo"), help="folder for data, run, predictions, report")
    _add_synth_sizes(p, clips_per_species=20)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override the small config")
    p.add_argument("--quiet", action="store_true")


@verb(
    "demo",
    "the whole job on synthetic data: synth, train a small model, predict, evaluate, report",
    "birdsed demo --out birdsed-demo",
    _add_demo,
)
def cmd_demo(a: argparse.Namespace) -> int:
    import dataclasses

    from birdsed.cli.result_tables import print_score_report, print_tune_result
    from birdsed.demo import DEMO_SYNTH, run_demo

    synth = dataclasses.replace(DEMO_SYNTH, species=a.species, clips_per_species=a.clips_per_species, seed=a.seed)
    console.print(f"demo: data, run, predictions and report go into {a.out.resolve()}")  # said before anything
    res = run_demo(a.out, synth, a.set, a.quiet)
    print_tune_result(res.tuned)
    print_score_report(res.score_report)
    console.print(
        Text.assemble(
            (f"row-wise micro F1 on the synthetic test soundscapes: {res.row_f1:.4f}", "bold green"),
            f" (output {res.output} at the thresholds tuned on the validation soundscapes; {res.seconds / 60:.1f} min)",
        )
    )
    console.print(
        f"outputs: {res.out / 'predict'} "
        "(report.html, submission.csv, detections.csv, scores.parquet, raven/, audacity/); "
        f"model: {res.out / 'run' / 'model'}"
    )
    return 0
