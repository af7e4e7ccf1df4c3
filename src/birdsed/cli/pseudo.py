"""`birdsed pseudo-label`: soft labels of unlabelled recordings from any model directory (pseudo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import batch_status, console, verb
from birdsed.cli.values import cores_cap, count, number
from birdsed.cli.windowing import add_window_options, window_arguments
from birdsed.config import OUTPUT_KINDS, preset_names


def _add_soft_label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="clipwise", choices=OUTPUT_KINDS, help="which output gives the soft labels")
    p.add_argument(
        "--temperature",
        type=number(0, 100, lo_open=True, hi_open=True),
        default=1.0,
        help="sigmoid(logit(p) / T) (below 1 sharpens)",
    )
    p.add_argument(
        "--power",
        type=number(0, 100, lo_open=True, hi_open=True),
        default=1.0,
        help="p ** power, after the temperature (above 1 sharpens)",
    )
    p.add_argument("--floor", type=number(0, 1, hi_open=True), default=0.0, help="soft labels below this become 0")
    p.add_argument("--top-k", type=count(1, None), help="keep each row's k highest soft labels, the rest 0")


def _add_pseudo_label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="any model directory (a model, an ensemble, BirdNET)")
    p.add_argument("inputs", nargs="+", help="unlabelled audio files and folders (recursive)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (a re-run resumes); writes pseudo_labels.parquet"
    )
    _add_soft_label_options(p)
    add_window_options(p)
    p.add_argument("--workers", type=count(0, cores_cap()), help="decoding processes (default as predict)")
    p.add_argument("--quiet", action="store_true")


@verb(
    "pseudo-label",
    "soft labels per 5 s row of unlabelled recordings, from any model (for training on them)",
    "birdsed pseudo-label --model runs/small/model soundscapes/ --out pl --power 2 --floor 0.05",
    _add_pseudo_label,
)
def cmd_pseudo_label(a: argparse.Namespace) -> int:
    from birdsed.train.pseudo import SoftLabelOptions, pseudo_label

    opts = SoftLabelOptions(a.output, a.temperature, a.power, a.floor, a.top_k)
    path, s = pseudo_label(
        a.model,
        a.inputs,
        a.out,
        opts,
        workers=a.workers,
        **window_arguments(a),
        quiet=a.quiet,
    )
    console.print(f"soft labels of {s.n_files - len(s.errors)} recording(s) written to {path}")
    return batch_status(len(s.errors), s.out / "errors.csv")


def _add_self_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="the labelled data set (or a prepared store)")
    p.add_argument("--unlabelled", nargs="+", required=True, help="unlabelled audio files and folders")
    p.add_argument("--rounds", type=count(1, 100), default=2, help="students after the teacher")
    p.add_argument(
        "--config",
        default="small",
        help=f"a YAML file or a preset name ({', '.join(preset_names())}), for teacher and students",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="run folder: round0/ (the teacher), round1/, ..., rounds.csv"
    )
    p.add_argument("--val", type=Path, help="a separate labelled validation set (default: the config's split)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config value")
    p.add_argument("--workers", type=count(0, cores_cap()), help="decoding processes while pseudo-labelling")
    p.add_argument("--quiet", action="store_true")
    _add_soft_label_options(p)


@verb(
    "self-train",
    "noisy student: teacher -> pseudo-labels of unlabelled recordings -> student, for N rounds (resumable)",
    "birdsed self-train --data data/synth --unlabelled soundscapes/ --rounds 2 --config small --out runs/st",
    _add_self_train,
)
def cmd_self_train(a: argparse.Namespace) -> int:
    from birdsed.config import apply_overrides, load_config
    from birdsed.train.pseudo import SoftLabelOptions
    from birdsed.train.selftrain import self_train

    cfg = apply_overrides(load_config(a.config), a.set)
    opts = SoftLabelOptions(a.output, a.temperature, a.power, a.floor, a.top_k)
    try:
        table = self_train(a.data, a.unlabelled, a.rounds, cfg, a.out, opts, a.val, a.quiet, a.workers)
    except KeyboardInterrupt as e:  # cli.main prints the notes
        e.add_note("The same command continues from the rounds and the epoch kept.")
        raise
    console.print(table.to_string(index=False))
    console.print(f"rounds written to {a.out / 'rounds.csv'}; the last student: {table['model'].iloc[-1]}")
    return 0
