"""``cosanneal trace SPEC --steps N``: the LR at every step of the run, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cosanneal.commands.options import SetOpt, SpecArg, StepsOpt, StepsPerEpochOpt, atomic_write, examples
from cosanneal.commands.schedules_input import load_bound
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.lint import timeline

__all__ = ["TraceFormat", "register", "trace_columns"]

EXAMPLES = examples(
    "cosanneal trace examples/schedules/sgdr.toml --steps 3000 -o sgdr.csv",
    "cosanneal trace examples/schedules/wsd.toml --format json -o wsd.json",
    "cosanneal trace src/cosanneal/zoo/configs/digits_sgdr.toml -o digits.csv   # a training config",
)


class TraceFormat(StrEnum):
    """Output formats of ``trace``."""

    csv = "csv"
    json = "json"


def trace_columns(schedule: Schedule, total_steps: int) -> dict[str, list[Any]]:
    """The LR at steps ``0 .. total_steps - 1`` (plus phase and cycle for a Cosine), column by column.

    Example:
        >>> from cosanneal.schedules import Cosine
        >>> trace_columns(Cosine(peak_lr=1.0, cycle_steps=2), 2)["lr"]
        [1.0, 0.5]
    """
    steps = np.arange(total_steps, dtype=np.float64)
    columns: dict[str, list[Any]] = {
        "step": list(range(total_steps)),
        "lr": np.asarray(schedule(steps), dtype=np.float64).tolist(),
    }
    if isinstance(schedule, Cosine):
        segments = timeline(schedule, total_steps)
        counts = [g.end - g.start for g in segments]
        columns["phase"] = np.repeat(np.array([g.phase for g in segments]), counts).tolist()
        columns["cycle"] = np.repeat(np.array([g.cycle for g in segments], dtype=np.int64), counts).tolist()
    return columns


def _render(schedule: Schedule, columns: dict[str, list[Any]], fmt: TraceFormat) -> str:
    if fmt is TraceFormat.json:
        payload = {"schedule": schedule.to_dict(), "fingerprint": schedule.fingerprint(), **columns}
        return json.dumps(payload, separators=(",", ":")) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buffer.getvalue()


def trace(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    fmt: Annotated[TraceFormat, typer.Option("--format", help="csv or json.")] = TraceFormat.csv,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="File to write (default: stdout).", show_default=False),
    ] = None,
    sets: SetOpt = None,
) -> None:
    """Print step,lr (plus phase,cycle for a cosine schedule) for every step of the run.

    SPEC is a schedule spec or a training config (whose run gives the steps).
    """
    bound = load_bound(spec, sets, steps, steps_per_epoch)
    text = _render(bound.schedule, trace_columns(bound.schedule, bound.steps), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write(output, text.encode("utf-8"))


def register(app: typer.Typer) -> None:
    """Add ``trace`` to the CLI app."""
    app.command(epilog=EXAMPLES)(trace)
