"""Printing for the CLI: the one error handler, progress per stage, result tables."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from distil.errors import DistilError

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn a DistilError into a message on stderr and its exit code; anything else is a bug."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DistilError as exc:
            # The message is text, not markup: a "[default: ...]" in it must print as written.
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """A spinner while a stage runs, then a line with its duration."""
    started = time.perf_counter()
    with err.status(f"{name}..."):
        yield
    err.print(f"[green]✓[/] {name} [dim]({time.perf_counter() - started:.1f}s)[/]", highlight=False)


def print_table(table: Table, console: Console = out) -> None:
    """Print ``table`` as a grid where it fits; where it would not (a CI log or a pipe at 80 columns, where
    rich would cut every header and most cells), one block per row, a line per column, nothing cut."""
    unbounded = console.options.update_width(10_000)  # the table's natural width, not the terminal's
    if Measurement.get(console, unbounded, table).maximum <= console.width:
        console.print(table)
        return
    table.box, table.padding, table.show_edge = None, (0, 1), False  # without borders it may fit
    if Measurement.get(console, unbounded, table).maximum <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(str(table.title), highlight=False)
    headers = [str(column.header) for column in table.columns]
    width = max(len(header) for header in headers[1:]) if len(headers) > 1 else 0
    for row in zip(*(list(column.cells) for column in table.columns), strict=True):
        console.print(f"{headers[0]} {row[0]}" if headers[0] else str(row[0]), highlight=False)
        for header, cell in zip(headers[1:], row[1:], strict=True):
            console.print(f"  {header:<{width}}  {cell}", highlight=False, soft_wrap=True)
    if table.caption:
        console.print(str(table.caption), highlight=False)


def progress_note(line: str) -> None:
    """A progress line from inside a long stage, printed above its spinner."""
    err.print(f"  [dim]{escape(line)}[/]", highlight=False)


def quiet_libraries() -> None:
    """Progress bars of transformers and the hub would interleave with ours."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    disable_progress_bars()
