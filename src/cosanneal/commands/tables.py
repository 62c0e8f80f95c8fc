"""Tables that fit the terminal they are printed on (``compare``, ``sweep --show``).

A table wider than the console is printed as records instead, one small two-column block per row
(like ``psql``'s expanded display), so nothing is cut or wrapped into unreadable cells. Output that is
not a terminal (a pipe, a file, CI logs) gets 200 columns, or ``$COLUMNS`` when it is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

__all__ = ["output_console", "print_table", "table_width"]


def output_console() -> Console:
    """The console for stdout: the terminal's width, or ``$COLUMNS`` / 200 columns when not a terminal."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)
    return console


def _wide(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def table_width(console: Console, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Columns the one-line-per-row table needs on ``console``."""
    unbounded = console.options.update_width(1_000_000)
    return Measurement.get(console, unbounded, _wide(title, header, rows)).maximum


def print_table(console: Console, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``header``: one line per row when that fits ``console``, else as records.

    Example:
        >>> from io import StringIO
        >>> narrow = Console(file=StringIO(), width=30)
        >>> print_table(narrow, "t", ["schedule", "final val_acc", "best val_acc"], [["cosine", "0.9", "0.95"]])
        >>> print(narrow.file.getvalue().strip())
        t
        schedule       cosine
        final val_acc     0.9
        best val_acc     0.95
    """
    if table_width(console, title, header, rows) <= console.width:
        console.print(_wide(title, header, rows))
        return
    console.print(title, highlight=False, markup=False)
    for k, row in enumerate(rows):
        if k:
            console.print()
        record = Table(box=None, show_header=False, pad_edge=False)
        record.add_column(style="bold", no_wrap=True)
        record.add_column(justify="right", overflow="fold")
        for name, cell in zip(header, row, strict=True):
            record.add_row(name, cell)
        console.print(record)
