"""The cycle table of a bound schedule (``show``, ``train --dry-run``): one row per phase or cycle.

Columns: ``cycle`` (``warmup``, the cycle index, ``hold``), ``start``, ``end``, ``length``, ``peak``,
``floor`` and ``in run`` (how much of it the run covers). At most 200 rows are printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cosanneal.commands.options import DType, fmt_number
from cosanneal.commands.schedules_input import Bound
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.lint import LintWarning, lint, timeline

__all__ = ["cycle_rows", "print_schedule"]

_MAX_TABLE_ROWS = 200
_COLUMNS = ("cycle", "start", "end", "length", "peak", "floor", "in run")


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f}%" if x >= 1.0 or x == 0.0 else f"{100.0 * x:.1f}%"


def _cosine_rows(s: Cosine, n: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    warmup = int(s.warmup_steps)
    if warmup:
        f = fmt_number
        rows.append(
            ("warmup", "0", f(warmup), f(warmup), f(float(s.peak_lr)), f(float(s.warmup_start_lr)),
             _pct(min(1.0, n / warmup)))
        )  # fmt: skip
    i = 0
    while s.max_cycles is None or i < s.max_cycles:
        start = s.origin if i == 0 else s.cycle_start(i)
        if start >= n:
            break
        if len(rows) >= _MAX_TABLE_ROWS:
            rows.append(("...", "", "", "", "", "", ""))
            break
        end = s.cycle_start(i + 1)
        length = end - start
        f = fmt_number
        rows.append(
            (str(i), f(start), f(end), f(length), f(s.cycle_peak(i)), f(s.cycle_floor(i)),
             _pct(min(1.0, (n - start) / length)))
        )  # fmt: skip
        i += 1
    hold = s.horizon
    if hold is not None and hold < n:
        rows.append(
            ("hold", fmt_number(hold), fmt_number(n), fmt_number(n - hold), "", fmt_number(s(hold)), "100%")
        )
    return rows


def _generic_rows(s: Schedule, n: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    segments = timeline(s, n)
    horizon = s.horizon
    for k, g in enumerate(segments[:_MAX_TABLE_ROWS]):
        lr = np.asarray(s(np.arange(g.start, g.end, dtype=np.float64)))
        name = g.phase if g.phase != "anneal" else str(g.cycle)
        last = k == len(segments) - 1
        end = float(horizon) if last and horizon is not None and horizon > n and g.phase != "hold" else g.end
        f = fmt_number
        rows.append(
            (name, f(g.start), f(end), f(end - g.start), f(float(lr.max())), f(float(lr.min())),
             _pct((g.end - g.start) / (end - g.start)))
        )  # fmt: skip
    return rows


def cycle_rows(schedule: Schedule, steps: int) -> list[tuple[str, ...]]:
    """The table's rows for a run of ``steps`` updates.

    Example:
        >>> from cosanneal.schedules import Cosine
        >>> cycle_rows(Cosine(peak_lr=0.1, cycle_steps=100, min_lr=0.001), 100)
        [('0', '0', '100', '100', '0.1', '0.001', '100%')]
    """
    if isinstance(schedule, Cosine):
        return _cosine_rows(schedule, steps)
    return _generic_rows(schedule, steps)


def print_schedule(bound: Bound, dtype: DType | None, console: Console | None = None) -> list[LintWarning]:
    """Print the header, the cycle table, the restarts and the lint of ``bound``; return the warnings."""
    console = console or Console(soft_wrap=True)
    schedule, n = bound.schedule, bound.steps
    name = Path(bound.source).name if bound.source != "--set" else bound.source
    per_epoch = "" if bound.steps_per_epoch is None else f" ({fmt_number(bound.steps_per_epoch)} per epoch)"
    console.print(
        f"{name}: {schedule.kind}, {n} steps{per_epoch}, fingerprint {schedule.fingerprint()}",
        highlight=False,
        markup=False,
    )
    table = Table()
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "cycle" else "right")
    for row in cycle_rows(schedule, n):
        table.add_row(*row)
    console.print(table, soft_wrap=False)
    restarts = schedule.restarts(n)
    shown = ", ".join(fmt_number(float(r)) for r in restarts[:20]) + (", ..." if len(restarts) > 20 else "")
    console.print(f"restarts: {shown or 'none'}", highlight=False, markup=False)
    warnings = lint(
        schedule, n, steps_per_epoch=bound.steps_per_epoch, dtype=dtype.value if dtype is not None else None
    )
    if not warnings:
        console.print("lint: no warnings", style="green", highlight=False, markup=False)
    for w in warnings:
        console.print(f"lint: {w}", style="yellow", highlight=False, markup=False)
    return list(warnings)


def lint_lines(warnings: Sequence[LintWarning]) -> list[str]:
    """One line per warning, as ``lint`` prints them."""
    return [str(w) for w in warnings]
