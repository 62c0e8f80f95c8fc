"""``cosanneal ensemble RUN [--last K]``: the snapshot ensemble of a run vs its best snapshot and final model.

See :mod:`cosanneal.analysis.ensemble` and ``docs/ensemble.md``.

Exit codes: 0 evaluated; 2 bad input (no run store, no cycle-end snapshots, ``--last`` out of range), as
one ``error:`` line.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cosanneal.commands.options import examples

__all__ = ["Device", "register"]


EXAMPLES = examples(
    "cosanneal ensemble runs/digits_sgdr",
    "cosanneal ensemble runs/digits_sgdr --last 3 --json",
)


class Device(StrEnum):
    """Where the snapshots are evaluated."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` command to the CLI app."""

    @app.command("ensemble", epilog=EXAMPLES)
    def ensemble(
        run: Annotated[Path, typer.Argument(help="Run directory (holding run.db and checkpoints/).")],
        last: Annotated[
            int | None, typer.Option("--last", help="Ensemble only the last K cycle-end snapshots.")
        ] = None,
        device: Annotated[
            Device, typer.Option("--device", help="Where to evaluate (auto: cuda when there is one).")
        ] = Device.auto,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Evaluate the ensemble of RUN's cycle-end snapshots (averaged softmax probabilities).

        On the run's validation set, next to every snapshot, the best one, the final model and the best
        checkpoint.
        """
        import sys

        from rich.console import Console
        from rich.table import Table

        from cosanneal.jobs.ensemble import evaluate_ensemble

        result = evaluate_ensemble(run, last, device=device.value)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
        used = ", ".join(str(s) for s in result.snapshots)
        console.print(
            f"{run}: {len(result.snapshots)} of {len(result.available)} cycle-end snapshots (steps {used}), "
            f"{result.n_val} validation samples"
        )
        table = Table()
        for column in ("model", "steps", "accuracy", "NLL"):
            table.add_column(column, justify="left" if column in ("model", "steps") else "right")
        for row in result.rows():
            table.add_row(
                row.label, ", ".join(str(s) for s in row.steps), f"{row.accuracy:.4f}", f"{row.nll:.4f}"
            )
        console.print(table, soft_wrap=False)
        gain = result.best_single.nll - result.ensemble.nll
        console.print(
            f"ensemble vs best snapshot: accuracy {result.ensemble.accuracy - result.best_single.accuracy:+.4f}, "
            f"NLL {-gain:+.4f}"
        )
