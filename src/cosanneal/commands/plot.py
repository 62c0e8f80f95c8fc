"""``cosanneal plot SPEC -o lr.png``: the LR curve of one or more schedules, restarts and phases marked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cosanneal.commands.options import SetOpt, SpecArg, StepsOpt, StepsPerEpochOpt, atomic_write, examples
from cosanneal.commands.schedules_input import load_bound

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal plot examples/schedules/sgdr.toml -o sgdr.png",
    "cosanneal plot examples/schedules/sgdr.toml --vs examples/schedules/wsd.toml --steps 3000 -o vs.png",
    "cosanneal plot src/cosanneal/zoo/configs/digits_sgdr.toml --log-y -o digits.png   # a training config",
)


def plot(
    spec: SpecArg = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")] = Path("lr.png"),
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    vs: Annotated[
        list[Path] | None,
        typer.Option(
            "--vs", metavar="SPEC", help="Another spec or config to overlay (repeatable).", show_default=False
        ),
    ] = None,
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic LR axis.")] = False,
    sets: SetOpt = None,
) -> None:
    """Draw the LR curve of SPEC (and every --vs spec) to a PNG, restarts and phases marked.

    SPEC is a schedule spec or a training config. --set applies to SPEC only. The run length is
    --steps, else the longest of the inputs' lengths (a training config's run, a spec's end).
    """
    from cosanneal import plotting

    inputs = [(spec, sets or []), *((p, []) for p in vs or [])]
    bounds = [load_bound(path, given, steps, steps_per_epoch) for path, given in inputs]
    n = steps if steps is not None else max(b.steps for b in bounds)
    # a spec is bound for the n steps drawn ('dur' lengths are fractions of them); a config keeps its run
    rebound = [
        b if b.from_config or b.steps == n else load_bound(path, given, n, steps_per_epoch)
        for b, (path, given) in zip(bounds, inputs, strict=True)
    ]
    names = [Path(b.source).name if b.source != "--set" else "--set" for b in rebound]
    labels = names if len(set(names)) == len(names) else [b.source for b in rebound]
    curves = [plotting.curve(b.schedule, n, label) for b, label in zip(rebound, labels, strict=True)]
    title = " vs ".join(labels) + f" ({n} steps)"
    fig = plotting.plot_curves(curves, log_y=log_y, title=title)
    atomic_write(output, plotting.png_bytes(fig))
    typer.echo(f"wrote {output} ({len(curves)} schedule{'s' if len(curves) > 1 else ''}, {n} steps)")


def register(app: typer.Typer) -> None:
    """Add ``plot`` to the CLI app."""
    app.command(epilog=EXAMPLES)(plot)
