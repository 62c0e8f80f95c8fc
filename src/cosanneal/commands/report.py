"""``cosanneal report RUN [RUN ...] -o report.html``: an offline HTML report of one or more runs.

Exit codes: 0 written; 2 bad input (a path without a run store, or a run.db that is not an SQLite run
store), as one ``error:`` line.

A run's cooldown branches (``cosanneal branch``) are overlaid on it unless ``--no-branches``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cosanneal.commands.options import examples

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal report runs/demo -o report.html",
    "cosanneal report runs/compare/*/seed0 -o compare.html --title 'five schedules'",
)


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the CLI app."""

    @app.command("report", epilog=EXAMPLES)
    def report(
        runs: Annotated[
            list[Path],
            typer.Argument(metavar="RUN...", help="Run directories (holding run.db); several are overlaid."),
        ],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="HTML file to write; PNGs go to <name>_files/.")
        ] = Path("report.html"),
        title: Annotated[
            str | None,
            typer.Option("--title", help="Page title (default: the run names).", show_default=False),
        ] = None,
        smoothing: Annotated[
            float,
            typer.Option(
                "--smoothing",
                min=0.0,
                max=0.999,
                help="EMA weight of the smoothed loss curves (the page has a slider; the PNGs use this).",
            ),
        ] = 0.9,
        max_points: Annotated[
            int,
            typer.Option(
                "--max-points", min=16, help="Points per series in the page (every kept point is exact)."
            ),
        ] = 10_000,
        branches: Annotated[
            bool,
            typer.Option(
                "--branches/--no-branches",
                help="Overlay the cooldown branches of each RUN (`cosanneal branch`) on it.",
            ),
        ] = True,
    ) -> None:
        """Write one self-contained HTML report of RUN..., plus its charts as PNG files.

        The report shows the LR vs the expected LR, loss, gradient norm, non-finite values,
        checkpoints and throughput, every run in its own colour; the page zooms (drag, wheel,
        double-click resets) and shows every run's value under the cursor. One file, offline.
        """
        from rich.console import Console

        from cosanneal.analysis.report import build_report

        if branches:
            runs = _with_branches(runs)
        info = build_report(runs, output, title=title, smoothing=smoothing, max_points=max_points)
        console = Console(stderr=False, highlight=False)
        for s in info.runs:
            console.print(
                f"{s.name}: {s.status}, {s.updates} updates, {s.restarts} restarts, "
                f"{s.checkpoints} checkpoints, {s.nonfinite} non-finite"
            )
        console.print(f"wrote {info.html} and {len(info.pngs)} charts in {info.html.stem}_files/")


def _with_branches(runs: list[Path]) -> list[Path]:
    """``runs``, each followed by its cooldown branches that are not listed already (in branch-step order)."""
    from cosanneal.analysis.branches import find_branches

    seen = {Path(os.path.abspath(r)) for r in runs}
    out: list[Path] = []
    for run in runs:
        out.append(run)
        for branch in find_branches(run):
            where = Path(os.path.abspath(branch.run_dir))
            if where not in seen and (where / "run.db").exists():
                seen.add(where)
                out.append(branch.run_dir)
    return out
