"""Result tables stay legible at 80 columns (a CI log, a pipe): nothing is cut."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from distil.cli.console import print_table


def _console(width: int) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=width, color_system=None), buffer


def _table(columns: int) -> Table:
    table = Table(title="steps")
    for k in range(columns):
        table.add_column(f"column {k}")
    table.add_row(*(f"value {k} of the first row" for k in range(columns)))
    table.add_row(*(f"value {k} of the second row" for k in range(columns)))
    return table


def test_a_table_wider_than_the_terminal_prints_every_header_and_cell_whole() -> None:
    console, buffer = _console(80)
    print_table(_table(6), console)
    text = buffer.getvalue()
    for k in range(6):
        assert f"column {k}" in text
        assert f"value {k} of the first row" in text and f"value {k} of the second row" in text
    assert "…" not in text


def test_a_table_that_fits_prints_as_a_grid() -> None:
    console, buffer = _console(200)
    print_table(_table(3), console)
    lines = buffer.getvalue().splitlines()
    [row] = [line for line in lines if "value 0 of the first row" in line]
    assert "value 2 of the first row" in row  # the row on one line, as a grid
