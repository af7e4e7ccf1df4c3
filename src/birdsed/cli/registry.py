"""The verb registry every CLI module registers into, the console, and the one batch exit rule."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

# Long paths in messages stay whole, never wrapped mid-word. No markup: what is printed holds paths, class names and
# error texts, where `pip install 'birdsed[cluster]'` or a folder `site [A]` would lose its brackets; emphasis is a
# `style=` or a rich Text. Piped or captured, tables get room (TABLE_WIDTH; rich's default of 80 cut summary's nine
# columns to a few characters each); a narrower table prints at its own width.
TABLE_WIDTH = 220


def table_width(stream) -> int | None:
    """A console's width on `stream`: the terminal's (None: rich measures it, or reads COLUMNS where set), else
    TABLE_WIDTH."""
    return None if stream.isatty() or "COLUMNS" in os.environ else TABLE_WIDTH


console = Console(stderr=True, soft_wrap=True, markup=False, width=table_width(sys.stderr))
AddArgs = Callable[[argparse.ArgumentParser], None]
VERBS: dict[str, tuple[str, str, AddArgs, Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help: str, example: str, add_args: AddArgs):
    """Register `fn(args) -> int` as the verb `name`; `example` is shown in its --help."""

    def wrap(fn):
        VERBS[name] = (help, example, add_args, fn)
        return fn

    return wrap


def batch_status(n_skipped: int, report: Path, what: str = "recording(s) failed") -> int:
    """The batch rule every verb follows: 0 all done, 1 done with skipped items (said, with where they are listed);
    2 (refused) is main's, for errors."""
    if n_skipped:
        console.print(f"{n_skipped} {what}: see {report}", style="yellow")
        return 1
    return 0


@contextlib.contextmanager
def goes_on(note: Callable[[], str]) -> Iterator[None]:
    """Around a verb whose stopped run the same command continues: Ctrl-C or SIGTERM (a KeyboardInterrupt) gets
    note() (what was kept, how to go on), which main prints after "stopped by SIGINT."."""
    try:
        yield
    except KeyboardInterrupt as e:
        e.add_note(note())
        raise
