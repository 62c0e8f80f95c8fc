"""``cosanneal branch RUN --at STEP[,STEP...] --cooldown 0.2``: cooldown branches from a run's checkpoints.

Each branch trains a cooldown from the parent's checkpoint at ``STEP`` into its own run directory
(``<RUN>-branch-<STEP>`` beside the parent, or under ``--out``) that names its parent in
``branch.json`` (:mod:`cosanneal.jobs.branch`). Several steps run as a sweep, one after another or
``--workers N`` at a time; a finished branch with the same settings is reused, an interrupted one
resumes when the command runs again.

Exit codes: 0 every branch finished (or was planned, with ``--dry-run``); 2 bad input (a step without
a checkpoint, a cooldown that does not fit, a RUN that is not a run directory), as one ``error:``
line, and nothing written; otherwise the exit code of the first branch that stopped early (143/130
preempted: run the command again to resume it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cosanneal.commands.options import examples

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal branch runs/wsd --at 2000,4000,6000 --cooldown 0.2 --dry-run",
    "cosanneal branch runs/wsd --at 4000 --cooldown 800 --shape 1-sqrt --out runs/branches",
    "cosanneal branch runs/wsd --at 2000,4000,6000,8000 --cooldown 0.2 --workers 2 --plot branches.png",
)


def _line(r: Any) -> str:
    b = r.branch
    head = (
        f"branch at {b.at}: {b.cooldown}-update {b.shape} cooldown ({b.cooldown / b.total:.3g} of {b.total}), "
        f"LR {b.lr_at:.6g} -> {b.lr_end:.6g}, {b.run_dir}"
    )
    tail = {"planned": "dry run", "reused": "reused (finished before)"}.get(r.status, r.status)
    if r.val_loss is not None:
        tail += f", val_loss {r.val_loss:.6g}"
    return f"{head}: {tail}"


def register(app: typer.Typer) -> None:
    """Add ``branch`` to the CLI."""

    @app.command("branch", epilog=EXAMPLES)
    def branch_command(
        run: Annotated[
            Path, typer.Argument(metavar="RUN", help="The parent run directory.", show_default=False)
        ],
        at: Annotated[
            str,
            typer.Option(
                "--at",
                metavar="STEP[,STEP...]",
                help="The parent's checkpoints to branch from, in updates (e.g. 40,80).",
                show_default=False,
            ),
        ],
        cooldown: Annotated[
            str,
            typer.Option(
                "--cooldown",
                help="The cooldown: updates (200), or its fraction of each branch's own total (0.2).",
                show_default=False,
            ),
        ],
        shape: Annotated[str, typer.Option("--shape", help="linear, cosine or 1-sqrt.")] = "linear",
        floor: Annotated[
            float | None,
            typer.Option("--floor", help="The cooldown's final LR (default: the parent plan's final LR)."),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option("--out", help="Put the branch directories here (default: beside RUN)."),
        ] = None,
        workers: Annotated[
            int, typer.Option("--workers", min=1, help="Branches trained at once, one process each.")
        ] = 1,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check and print the branches; write nothing.")
        ] = False,
        plot: Annotated[
            Path | None,
            typer.Option("--plot", help="Write a PNG overlaying the parent's and branches' LR and val_loss."),
        ] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = False,
    ) -> None:
        """Train cooldown branches from a run's checkpoints, each into its own run directory."""
        from cosanneal.commands.run_output import stderr_log
        from cosanneal.jobs.branch import branch

        results = branch(
            run,
            at=at,
            cooldown=cooldown,
            shape=shape,
            floor=floor,
            out=out,
            workers=workers,
            dry_run=dry_run,
            progress=progress,
            log=stderr_log(),
        )
        for r in results:
            typer.echo(_line(r))
        if dry_run:
            typer.echo("dry run: nothing written")
            return
        if plot is not None:
            from cosanneal.analysis.branches import branches_figure, read_branch
            from cosanneal.io import atomic_write_bytes
            from cosanneal.plotting import png_bytes

            infos = [i for i in (read_branch(r.run_dir) for r in results) if i is not None]
            atomic_write_bytes(plot, png_bytes(branches_figure(run, infos)))
            typer.echo(f"wrote {plot}")
        stopped = [r for r in results if r.exit_code]
        if stopped:
            typer.echo(
                f"branch at {stopped[0].branch.at} stopped early; run the same command again to resume"
            )
            raise typer.Exit(stopped[0].exit_code)
