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


def audio_pace(audio_s: float, wall_s: float) -> str:
    """A batch's audio and pace: "0.12 h of audio in 3.1 s = 140x real time"; "no new audio (0.3 s)" where every
    recording was done before (a pace of 0x said nothing true)."""
    if audio_s <= 0:
        return f"no new audio ({wall_s:.1f} s)"
    rate = audio_s / wall_s if wall_s > 0 else float("inf")
    return f"{audio_s / 3600:.2f} h of audio in {wall_s:.1f} s = {rate:.0f}x real time"
