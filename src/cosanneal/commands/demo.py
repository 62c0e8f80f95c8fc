"""``cosanneal demo``: a built-in job trained end to end, interrupted by a real SIGTERM, resumed, verified."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cosanneal.commands.options import SetOpt, examples
from cosanneal.commands.run_output import resume_command, stderr_log, summary_table

__all__ = ["Example", "register"]

EXAMPLES = examples(
    "cosanneal demo                      # the GPT demo, into runs/demo",
    "cosanneal demo --example digits --run-dir runs/digits-demo --no-interrupt",
)


class Example(StrEnum):
    """The demo's jobs."""

    gpt = "gpt"
    digits = "digits"


def demo(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where the demo run goes.")] = Path("runs/demo"),
    example: Annotated[
        Example,
        typer.Option("--example", help="gpt (a byte-level GPT on Python's own sources) or digits (fast)."),
    ] = Example.gpt,
    sets: SetOpt = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over even if an interrupted demo run can be resumed.")
    ] = False,
    interrupt: Annotated[
        bool | None,
        typer.Option(
            "--interrupt/--no-interrupt",
            help="SIGTERM the training process once and resume it (default: on a new gpt run).",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train a built-in job end to end: interrupted by a real SIGTERM, resumed, verified, reported.

    An interrupted demo run resumes where it stopped when you run the same command again; a finished
    one is moved aside and the demo starts over.
    """
    from cosanneal.jobs.demo import run_demo

    log = stderr_log()
    outcome = run_demo(
        example.value, run_dir, sets or [], fresh=fresh, progress=progress, interrupt=interrupt, log=log,
        resume_hint=f"run {resume_command()}",
    )  # fmt: skip
    result = outcome.result
    Console().print(summary_table(result))
    if result.status == "preempted":
        log(result.message)
        raise typer.Exit(result.exit_code)
    from cosanneal.plotting import plot_run

    png = run_dir / "lr_loss.png"
    plot_run(run_dir, png)
    table = Table(title="what the demo showed", show_header=True)
    table.add_column("step", style="bold")
    table.add_column("proved")
    for step in outcome.steps:
        table.add_row(step.what, step.proved)
    Console().print(table)
    Console().print(f"wrote {run_dir}/ (run.db, checkpoints/, tb/, report.html) and {png}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI app."""
    app.command(epilog=EXAMPLES)(demo)
