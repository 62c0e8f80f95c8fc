"""What ``train`` and ``demo`` print: log lines on stderr, the run's summary table, the resume command."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["resume_command", "stderr_log", "summary_table"]


def stderr_log() -> Callable[[str], None]:
    """A log function printing each message to stderr as written (no markup, no highlighting)."""
    console = Console(stderr=True)

    def log(message: str) -> None:
        console.print(message, soft_wrap=True, markup=False, highlight=False)

    return log


def resume_command() -> str:
    """The command line that continues this job: the one given, without ``--fresh``."""
    args = [a for a in sys.argv[1:] if a != "--fresh"]
    return shlex.join(["cosanneal", *args])


def summary_table(result: Any) -> Table:
    """The summary of a finished (or preempted) run: status, updates, metrics, restarts, checkpoints."""
    table = Table(title=f"run {result.run_dir}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("status", result.status + (f" ({result.message})" if result.message else "")),
        ("updates", f"{result.steps} of {result.total_steps} ({result.epochs_done:.1f} epochs)"),
        *((name, f"{value:.4f}") for name, value in sorted(result.final_metrics.items())),
        ("best val metric", "-" if result.best_metric is None else f"{result.best_metric:.4f}"),
        ("restarts", str(result.restarts)),
        ("checkpoints kept", str(result.checkpoints_kept)),
        ("non-finite updates / rollbacks", f"{result.nonfinite} / {result.rollbacks}"),
        ("wall time", f"{result.wall_seconds:.1f} s"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table
