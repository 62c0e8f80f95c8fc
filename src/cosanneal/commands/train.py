"""``cosanneal train CONFIG``: a config-driven training job (resumes from its run directory).

Exit codes: 0 finished; 1 the non-finite guard stopped the run; 2 bad input (one ``error:`` line);
74 the run's files cannot be written; 143/130 preempted by SIGTERM/SIGINT after saving a checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cosanneal.commands.options import ConfigArg, SetOpt, examples
from cosanneal.commands.run_output import resume_command, stderr_log, summary_table

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal train src/cosanneal/zoo/configs/digits_sgdr.toml --run-dir runs/digits",
    "cosanneal train src/cosanneal/zoo/configs/digits_sgdr.toml --dry-run   # the cycle table, no training",
    "cosanneal train my_job.toml --set optimizer.name=adamw --set schedule.peak_lr=3e-4 --fresh",
    "torchrun --nproc-per-node 2 -m cosanneal train my_job.toml",
)


def _dry_run(cfg: Any, config: Path) -> None:
    from cosanneal.commands.schedule_table import print_schedule
    from cosanneal.commands.schedules_input import Bound
    from cosanneal.jobs.preview import bind_run

    schedule, total, shape = bind_run(cfg)
    console = Console(soft_wrap=True)
    console.print(
        f"{cfg.name}: {cfg.epochs} epochs x {shape.steps_per_epoch} updates, batch {cfg.batch_size} "
        f"x {shape.world_size} process(es) = {shape.samples_per_update} samples per update"
        + ("" if shape.tokens_per_update is None else f" ({shape.tokens_per_update} tokens)")
        + (f", max_steps {cfg.max_steps}" if cfg.max_steps is not None else ""),
        highlight=False,
        markup=False,
    )
    print_schedule(
        Bound(str(config), schedule, total, shape.steps_per_epoch, from_config=True), None, console
    )
    console.print("dry run: nothing was trained or written", highlight=False, markup=False)


def train(
    config: ConfigArg,
    sets: SetOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Run directory (default: runs/<config name>).", show_default=False),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over (an existing run dir is moved aside).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the bound schedule's cycle table and lint, then exit."),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show a progress bar (default: the config's telemetry.progress).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a config-driven job; resumes from its run directory unless --fresh. Works under torchrun.

    The run directory gets run.db (the run store), checkpoints/, tb/ and lr_loss.png. A SIGTERM or
    Ctrl-C saves a checkpoint and exits 143/130; the same command resumes the run exactly.
    """
    from cosanneal.jobs.config import load_config

    cfg = load_config(config, sets or [])  # every config error is reported here, before torch is imported
    # a model, data set, task or sink module next to the config file is importable by its name
    sys.path.append(str(config.resolve().parent))
    if dry_run:
        _dry_run(cfg, config)
        return
    _run(cfg, run_dir or Path("runs") / cfg.name, fresh, progress)


def _run(config: Any, run_dir: Path, fresh: bool, progress: bool | None) -> None:
    from cosanneal.jobs.trainer import Trainer

    hint = f"run {resume_command()}"
    log = stderr_log()
    result = Trainer(config, run_dir, fresh=fresh, log=log, progress=progress, resume_hint=hint).run()
    if int(os.environ.get("RANK", "0")) == 0:
        Console().print(summary_table(result))
        if result.status == "preempted":  # in full, on one line, whatever the table's width
            log(result.message)
        else:
            from cosanneal.plotting import plot_run

            png = run_dir / "lr_loss.png"
            plot_run(run_dir, png)
            Console().print(f"wrote {run_dir}/ (run.db, checkpoints/, tb/) and {png}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI app."""
    app.command(epilog=EXAMPLES)(train)
