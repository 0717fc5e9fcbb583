"""Terminal output shared by all commands: verbosity, rich progress bars and summary tables."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 160
"""Columns of tables written to a file or pipe (rich would assume 80 and fold the figures)."""

console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
err_console = Console(stderr=True)


@dataclass
class Verbosity:
    """Global output level set by `cops -v/--verbose` and `--quiet`."""

    verbose: bool = False
    quiet: bool = False


state = Verbosity()


@dataclass
class Activity:
    """What the running command does, for the line `cops.cli.app.main` prints on Ctrl-C."""

    what: str = ""
    how_to_continue: str = ""


activity = Activity()


def set_activity(what: str, how_to_continue: str) -> None:
    """Record what is running now and how a user continues it after an interruption."""
    activity.what, activity.how_to_continue = what, how_to_continue


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Route `logging` through rich on stderr at the level the flags ask for."""
    state.verbose, state.quiet = verbose, quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=verbose, show_time=False)],
        force=True,
    )


def make_progress(
    *extra: ProgressColumn, description: str = "{task.description}", show: bool = True
) -> Progress:
    """The project's progress bar on stderr (hidden by `--quiet` or `show=False`)."""
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=state.quiet or not show,
    )


@contextmanager
def split_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar with one task per split; yields a ``progress(split, done, total)``."""
    progress = make_progress()
    tasks: dict[str, TaskID] = {}

    def update(split: str, done: int, total: int) -> None:
        if split not in tasks:
            tasks[split] = progress.add_task(split, total=total)
        progress.update(tasks[split], completed=done, total=total)

    with progress:
        yield update


class RateColumn(ProgressColumn):
    """A task's items per second (rich's running estimate), e.g. "12.5 frames/s"."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("" if speed is None else f"{speed:.1f} {self.unit}/s", "progress.data.speed")


@contextmanager
def work_progress(
    description: str, rate: str | None = None
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar drawn from the first ``progress(advance, total)`` call on; with `rate`
    (a unit such as "frames") it also shows items per second.

    The work reports ``progress(0, total)`` once it knows its size and is ready to start, so a
    bad option or file found before that ends in one error line, not beside an empty bar.
    """
    extra = () if rate is None else (RateColumn(rate),)
    progress = make_progress(*extra, description=description)
    task: TaskID | None = None

    def update(advance: int, total: int) -> None:
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task("", total=total)
        progress.update(task, advance=advance, total=total)

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()


def print_table(table: Table) -> None:
    """Print a table unless `--quiet`."""
    if not state.quiet:
        console.print(table)


def counts_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A simple right-aligned numeric table with a first text column."""
    table = Table(title=title)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table
