"""``cosanneal lint SPEC --steps N``: the problems of a schedule for a run (exit 1 if any)."""

from __future__ import annotations

import typer

from cosanneal.commands.options import DTypeOpt, SetOpt, SpecArg, StepsOpt, StepsPerEpochOpt, examples
from cosanneal.commands.schedules_input import load_bound

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal lint examples/schedules/sgdr.toml --steps 3000",
    "cosanneal lint examples/schedules/train_config.yaml --steps-per-epoch 100 --dtype bf16",
    "cosanneal lint src/cosanneal/zoo/configs/pysource_gpt.toml   # a training config",
)


def lint_command(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    dtype: DTypeOpt = None,
    sets: SetOpt = None,
) -> None:
    """Check SPEC for a run of --steps updates; exit 1 when there are warnings, 0 when clean.

    SPEC is a schedule spec or a training config (whose run gives the steps).
    """
    from cosanneal.schedules.lint import lint

    bound = load_bound(spec, sets, steps, steps_per_epoch)
    n = bound.steps
    warnings = lint(
        bound.schedule,
        n,
        steps_per_epoch=bound.steps_per_epoch,
        dtype=dtype.value if dtype is not None else None,
    )
    for w in warnings:
        typer.echo(str(w))
    if warnings:
        typer.echo(f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''} for {n} steps")
        raise typer.Exit(1)
    typer.echo(f"no warnings for {n} steps")


def register(app: typer.Typer) -> None:
    """Add ``lint`` to the CLI app."""
    app.command("lint", epilog=EXAMPLES)(lint_command)
