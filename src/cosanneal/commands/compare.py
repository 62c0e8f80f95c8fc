"""``cosanneal compare CONFIG --schedules a.toml b.toml ... --seeds 5``: schedules side by side.

Trains every schedule with every seed (sequentially), prints a table (final and best validation metric,
mean ± std; steps and training seconds to reach ``--target``; cost) and writes ``summary.json``,
``summary.md``, ``lr_curves.png`` and ``val_curves.png`` into ``-o`` (default ``runs/compare``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the CLI."""

    @app.command()
    def compare(
        config: Annotated[Path, typer.Argument(help="Training config (TOML, YAML or JSON).")],
        schedules: Annotated[
            list[Path], typer.Option("--schedules", help="Schedule spec files (repeat, or list after it).")
        ],
        extra: Annotated[
            list[Path] | None, typer.Argument(help="More schedule spec files.", show_default=False)
        ] = None,
        seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per schedule (0 .. N-1).")] = 5,
        metric: Annotated[
            str,
            typer.Option("--metric", help="Any metric the task reports (val_acc, val_loss, val_ppl, ...)."),
        ] = "val_acc",
        target: Annotated[
            float | None, typer.Option("--target", help="Time the first evaluation reaching this.")
        ] = None,
        mode: Annotated[
            str | None,
            typer.Option(
                "--mode", help="max or min (default: min for a loss, perplexity or error, else max)."
            ),
        ] = None,
        out: Annotated[Path, typer.Option("-o", "--out", help="Output directory.")] = Path("runs/compare"),
        sets: Annotated[
            list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override a config value.")
        ] = None,
    ) -> None:
        """Train every schedule with every seed; table of final/best metric (mean ± std), time to target, cost."""
        from rich.console import Console
        from rich.table import Table

        from cosanneal.analysis.compare import CompareSettings, load_schedules, table_cells, table_header
        from cosanneal.jobs.compare import run_compare
        from cosanneal.jobs.config import load_config

        cfg = load_config(config, sets or [])
        specs = load_schedules([*schedules, *(extra or [])])
        settings = CompareSettings(
            out_dir=out,
            seeds=tuple(range(seeds)),
            metric=metric,
            mode=mode,  # type: ignore[arg-type]  # checked by CompareSettings
            target=target,
        )
        err = Console(stderr=True)
        rows, _ = run_compare(
            cfg.to_dict(), specs, settings, log=lambda m: err.print(m, markup=False, highlight=False)
        )
        table = Table(title=f"{cfg.name}: {len(specs)} schedules x {seeds} seeds (mean ± std)")
        for i, title in enumerate(table_header(settings)):
            table.add_column(title, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*table_cells(row, settings))
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
            console = Console(width=200)
        console.print(table)
        console.print(f"wrote {out}/summary.md, summary.json, lr_curves.png, val_curves.png")
