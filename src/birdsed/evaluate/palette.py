"""Each species' colour in the report: the same between reports and runs, different within one report.

A class's home colour is a slot of PALETTE chosen by a stable hash of its name (SHA-1, not Python's salted `hash`),
so `woothr` is drawn in one colour in every report. Two classes of one report whose homes collide: the one whose
name sorts first keeps its home, the other takes the next free slot; the detected species are placed before those
only the truth names, so they are told apart first; only past len(PALETTE) classes do colours repeat.

    class_colours(["woothr", "amecro", "norcar"], first=["woothr"])    # {'amecro': '#…', 'norcar': …, 'woothr': …}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# A qualitative palette readable as lines on white and as bars with white text: saturated, mid to dark, no greys
PALETTE = (
    "#1f77b4",  # blue
    "#d62728",  # red
    "#2ca02c",  # green
    "#ff7f0e",  # orange
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#17becf",  # cyan
    "#a6a600",  # olive yellow
    "#0b3d91",  # navy
    "#7b0041",  # wine
    "#005f3a",  # dark green
    "#b35900",  # rust
    "#4b0082",  # indigo
    "#ff1493",  # deep pink
    "#008b8b",  # teal
    "#6b8e23",  # olive drab
    "#ff4500",  # orange red
    "#2f4f4f",  # slate
    "#5a3d1e",  # dark brown
)


def home_slot(name: str, n_slots: int = len(PALETTE)) -> int:
    """The palette slot a class name hashes to (the same in every process and on every machine)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8", "surrogatepass")).digest()[:8], "big") % n_slots


def class_colours(
    names: Iterable[str], first: Iterable[str] = (), palette: tuple[str, ...] = PALETTE
) -> dict[str, str]:
    """{class: colour} for `names` and `first`, the classes of `first` (the detected ones) placed before the others:
    within each group, every class whose home slot is free keeps it; where homes collide, the name that sorts first
    keeps the slot and the others take the next free slots (so one class more in a report moves at most the classes
    that collide with it). Past len(palette) classes, colours repeat."""
    first = sorted(set(first))
    rest = sorted(set(names) - set(first))
    n = len(palette)
    slots: dict[str, int] = {}
    for group in (first, rest):
        moved = []
        for name in group:
            home = home_slot(name, n)
            if home in slots.values():
                moved.append(name)
            else:
                slots[name] = home
        for name in moved:
            free = set(range(n)) - set(slots.values())
            home = home_slot(name, n)
            slots[name] = min(free, key=lambda s: (s - home) % n) if free else home
    return {name: palette[slots[name]] for name in sorted(slots)}
