"""Progress bars (rich) shared by every long step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(
    total: int | None, description: str, disable: bool = False, extra: Callable[[], str] | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; `extra()` returns a short status string shown after the bar (e.g. speed)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
    ]
    with Progress(*columns, disable=disable, transient=False) as bar:
        task = bar.add_task(description, total=total, extra="")

        def advance(n: int = 1) -> None:
            bar.update(task, advance=n, extra=extra() if extra else "")

        yield advance
