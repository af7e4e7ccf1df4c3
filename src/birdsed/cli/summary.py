"""`birdsed summary PRED`: per species (and recording / site / day / hour), rows, minutes present, first and last
detection, the highest score, detections per hour; a console table, and CSV or Parquet with --out."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import number
from birdsed.config import OUTPUT_KINDS

GROUPINGS = ("all", "recording", "site", "day", "hour")  # evaluate/summary.GROUPINGS, without importing pandas
SHOWN_ROWS = 40


def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, metavar="PRED", help="a predict --out folder (its scores.parquet and run.json)")
    p.add_argument(
        "--by",
        choices=GROUPINGS,
        default="all",
        help="one row per species (all, the default), or per species and recording, site, day or hour of day "
        "(site, day and hour need the recordings' places and times in the scores)",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write the table: FILE.csv or FILE.parquet")
    p.add_argument("--output", choices=OUTPUT_KINDS, help="output kind to decide on (default: the one predict used)")
    p.add_argument(
        "--threshold",
        type=number(0, 1),
        help="global threshold (default: the model's, as predict used them; give predict's --threshold if it had one)",
    )


@verb(
    "summary",
    "per species: 5 s rows with it, minutes present, first and last detection, highest score, detections per hour",
    "birdsed summary preds --by recording --out preds/summary.csv",
    _add_summary,
)
def cmd_summary(a: argparse.Namespace) -> int:
    from rich.table import Table

    from birdsed.evaluate.summary import summarize, write_summary

    if a.out is not None and a.out.suffix.lower() not in (".csv", ".parquet"):
        from birdsed.errors import ConfigError

        raise ConfigError(f"--out {a.out}: the summary is written as .csv or .parquet")
    table, decision = summarize(a.pred, a.by, a.output, a.threshold)
    kind = decision.options.output or decision.default_output
    shown = Table(title=f"{a.pred}: {len(table)} rows, species by {a.by} ({kind}, {decision.source})")
    group = [table.columns[0]] if a.by != "all" else []
    # the class too where it is not its code (a data set's Erirub_call and Erirub_song are one species' two classes)
    own = ["class"] if (table["class"] != table["code"]).any() else []
    for c in [*group, *own, "code", "common", "rows", "minutes", "first", "last", "max", "per hour"]:
        shown.add_column(c, overflow="fold", justify="right" if c in ("rows", "minutes", "max", "per hour") else "left")
    for r in table.head(SHOWN_ROWS).to_dict("records"):
        first, last = _when(r, "first", a.by), _when(r, "last", a.by)
        cells = [Path(r[c]).name if c == "file" else str(r[c]) for c in [*group, *own]] + [
            r["code"],
            r["common"],
            str(r["rows"]),
            f"{r['minutes']:g}",
        ]
        shown.add_row(*cells, first, last, f"{r['max_score']:.3f}", f"{r['per_hour']:.1f}")
    console.print(shown)
    if len(table) > SHOWN_ROWS:
        console.print(f"... {len(table) - SHOWN_ROWS} more rows" + ("" if a.out else " (--out FILE.csv writes all)"))
    if a.out is not None:
        write_summary(table, a.out)
        console.print(f"summary written to {a.out}")
    return 0


def _when(r: dict, which: str, by: str) -> str:
    """A detection's place for the console: its time when known, else the recording (unless grouped by it) and
    the offset."""
    time = r.get(f"{which}_time")
    if time is not None and time == time and str(time):  # not None, NaN or "": unknown
        return str(time)
    offset = f"{r[f'{which}_s']:g} s"
    return offset if by == "recording" else f"{Path(r[f'{which}_file']).name} {offset}"
