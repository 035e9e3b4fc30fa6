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


def quiet_libraries() -> None:
    """Progress bars of transformers and the hub would interleave with ours."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    disable_progress_bars()
