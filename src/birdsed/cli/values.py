"""What a number on the command line may be: argparse types that refuse NaN, infinities and values outside a range
with a message naming the value and the range (argparse prefixes the option), and the machine's own limits on counts
of processes and devices. Every numeric option of every verb takes its type from here; config values are checked in
`config/checks.py`.

    p.add_argument("--hop-s", type=number(0.01, 3600), ...)          # finite, 0.01 <= x <= 3600
    p.add_argument("--threshold", type=number(0, 1), ...)
    p.add_argument("--batch-size", type=count(1, 65536), ...)        # a whole number, 1 <= n <= 65536
    p.add_argument("--workers", type=count(0, cores_cap()), ...)
    p.add_argument("--week", type=count(1, 48, also=(-1,)), ...)    # 1 <= n <= 48, or -1
    p.add_argument("--site", type=lat_lon(), ...)                    # "LAT,LON": -90..90, -180..180
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from birdsed.machine import cores, cores_cap  # noqa: F401 - the options' bounds, re-exported


def _fmt(x: float) -> str:
    return f"{x:g}"


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float in [lo, hi] (an open end with lo_open / hi_open; None: unbounded)."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        if lo is not None and (x < lo or (lo_open and x == lo)):
            raise argparse.ArgumentTypeError(f"{text}: must be {'>' if lo_open else '>='} {_fmt(lo)}")
        if hi is not None and (x > hi or (hi_open and x == hi)):
            raise argparse.ArgumentTypeError(f"{text}: must be {'<' if hi_open else '<='} {_fmt(hi)}")
        return x

    parse.__name__ = "number"  # argparse names the type in its own messages
    return parse


def count(lo: int | None = 0, hi: int | None = None, also: tuple[int, ...] = ()) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi] (None: unbounded on that side), or one of `also` (a value with a
    meaning of its own, such as BirdNET's week -1, all year)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n in also:
            return n
        if also and ((lo is not None and n < lo) or (hi is not None and n > hi)):
            raise argparse.ArgumentTypeError(f"{text}: must be {lo} to {hi} or {' or '.join(str(a) for a in also)}")
        if lo is not None and n < lo:
            raise argparse.ArgumentTypeError(f"{text}: must be >= {lo}")
        if hi is not None and n > hi:
            raise argparse.ArgumentTypeError(f"{text}: must be <= {hi}")
        return n

    parse.__name__ = "count"
    return parse


def count_or(word: str, lo: int | None = 0, hi: int | None = None) -> Callable[[str], int | str]:
    """An argparse type: `word` itself (e.g. "auto"), or a whole number in [lo, hi] (count)."""
    whole = count(lo, hi)

    def parse(text: str) -> int | str:
        if text == word:
            return word
        try:
            return whole(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (or {word!r})") from None

    parse.__name__ = "count"
    return parse


def lat_lon() -> Callable[[str], tuple[float, float]]:
    """An argparse type: "LAT,LON", a latitude in [-90, 90] and a longitude in [-180, 180] (each checked by number)."""
    lat, lon = number(-90, 90), number(-180, 180)

    def parse(text: str) -> tuple[float, float]:
        parts = text.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"{text!r}: give LAT,LON (e.g. 43.61,3.87)")
        try:
            return lat(parts[0].strip()), lon(parts[1].strip())
        except argparse.ArgumentTypeError as e:
            which = "latitude" if not _fits(lat, parts[0]) else "longitude"
            raise argparse.ArgumentTypeError(f"{which} {e}") from None

    parse.__name__ = "lat_lon"
    return parse


def _fits(parse: Callable[[str], float], text: str) -> bool:
    try:
        parse(text.strip())
    except argparse.ArgumentTypeError:
        return False
    return True
