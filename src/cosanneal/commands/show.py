"""``cosanneal show SPEC``: the cycles of a schedule (or of a training config's run) and its lint."""

from __future__ import annotations

import typer

from cosanneal.commands.options import DTypeOpt, SetOpt, SpecArg, StepsOpt, StepsPerEpochOpt, examples
from cosanneal.commands.schedule_table import print_schedule
from cosanneal.commands.schedules_input import load_bound

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal show examples/schedules/sgdr.toml --steps 3000",
    "cosanneal show src/cosanneal/zoo/configs/digits_sgdr.toml   # a training config: steps from its data",
    "cosanneal show --set kind=cosine --set peak_lr=0.1 --set cycle_steps=1000 --steps 1500",
)


def show(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    dtype: DTypeOpt = None,
    sets: SetOpt = None,
) -> None:
    """Print the cycles of SPEC (start, end, length, peak, floor) and its lint for the run.

    SPEC is a schedule spec or a training config; a config's run length and updates per epoch come
    from its epochs, batch size and data, exactly as `cosanneal train` computes them.
    """
    print_schedule(load_bound(spec, sets, steps, steps_per_epoch), dtype)


def register(app: typer.Typer) -> None:
    """Add ``show`` to the CLI app."""
    app.command(epilog=EXAMPLES)(show)
