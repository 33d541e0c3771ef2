"""Progress bars for long jobs, shown only when the CLI turns them on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

_ENABLED: ContextVar[bool] = ContextVar("cashback_progress_enabled", default=False)

Advance = Callable[[float], None]


def _ignore(_n: float = 1.0) -> None:
    """Advance nothing (progress bars are off)."""


def enable_progress(enabled: bool = True) -> None:
    """Turn progress bars on (the CLI does) or off (the default for library calls)."""
    _ENABLED.set(enabled)


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator[Advance]:
    """A progress bar on stderr while the block runs.

    Args:
        description: what is being done.
        total: number of steps, or None for a spinner.

    Yields:
        A function that advances the bar by its argument.
    """
    if not _ENABLED.get():
        yield _ignore
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: float = 1.0) -> None:
            bar.advance(task, n)

        yield advance
        if total is None:
            bar.update(task, total=1, completed=1)
