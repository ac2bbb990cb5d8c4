"""Rich progress bars for SeRA's own stages (scoring, generation); TRL's trainer shows its own."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr; silent when SERA_NO_PROGRESS is set (tests, logs) and
    for a single step (a bar that is full at once says nothing)."""
    if os.environ.get("SERA_NO_PROGRESS") or (total is not None and total <= 1):
        yield from items
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield from progress.track(items, total=total, description=description)
