"""``cosanneal compare CONFIG --schedules a.toml b.toml ... --seeds 5``: schedules side by side.

Trains every schedule with every seed (sequentially), prints a table (final and best validation metric,
mean ± 95% confidence interval, Welch's p against the best; steps and training seconds to reach
``--target``; cost) and writes ``summary.json``, ``summary.md``, ``lr_curves.png`` and ``val_curves.png``
into ``-o`` (default ``runs/compare``). A spec file may carry an ``[optimizer]`` table (schedule-free
AdamW); ``--swa LABEL`` adds a row of that schedule's stable-phase checkpoints averaged.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cosanneal.commands.options import ConfigArg, SetOpt, examples, metric_names, renamed
from cosanneal.commands.tables import output_console, print_table

__all__ = ["Mode", "register"]

EXAMPLES = examples(
    "cosanneal compare src/cosanneal/zoo/configs/pysource_gpt.toml --schedules examples/compare/gpt/*.toml --seeds 2 "
    "--metric val_ppl -o runs/compare-gpt",
    "cosanneal compare src/cosanneal/zoo/configs/digits_sgdr.toml --schedules examples/compare/cosine.toml "
    "examples/compare/sgdr.toml --seeds 3 --target 0.95",
    "cosanneal compare src/cosanneal/zoo/configs/pysource_gpt.toml --schedules examples/compare/modern/gpt/*.toml "
    "--seeds 3 --metric val_ppl --swa wsd_1sqrt -o runs/compare-modern",
)


class Mode(StrEnum):
    """Which way a metric is better."""

    max = "max"
    min = "min"


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the CLI."""

    @app.command(epilog=EXAMPLES)
    def compare(
        config: ConfigArg,
        schedules: Annotated[
            list[Path],
            typer.Option(
                "--schedules", metavar="SPEC", help="Schedule spec files (repeat, or list them after it)."
            ),
        ],
        extra: Annotated[
            list[Path] | None, typer.Argument(help="More schedule spec files.", show_default=False)
        ] = None,
        seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per schedule (0 .. N-1).")] = 5,
        metric: Annotated[
            str,
            typer.Option(
                "--metric",
                metavar="val_<name>",
                help="Any metric the task reports: val_acc, val_loss, val_ppl, ...",
                autocompletion=metric_names,
            ),
        ] = "val_acc",
        target: Annotated[
            float | None, typer.Option("--target", help="Time the first evaluation reaching this.")
        ] = None,
        mode: Annotated[
            Mode | None,
            typer.Option(
                "--mode",
                help="Is a higher metric better (max) or a lower (min)? Default: min for a loss, perplexity "
                "or error, else max.",
                show_default=False,
            ),
        ] = None,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Output directory.  [default: runs/compare]", show_default=False
            ),
        ] = None,
        swa: Annotated[
            list[str] | None,
            typer.Option(
                "--swa",
                metavar="LABEL",
                help="Also average the stable-phase checkpoints of this schedule's runs (SWA): a LABEL+swa row.",
                show_default=False,
            ),
        ] = None,
        swa_every: Annotated[
            int | None,
            typer.Option(
                "--swa-every",
                min=1,
                help="Updates between the averaged checkpoints.  [default: 1/40 of the run]",
                show_default=False,
            ),
        ] = None,
        swa_window: Annotated[
            float, typer.Option("--swa-window", help="Fraction of the stable phase averaged, its end.")
        ] = 0.5,
        out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
        sets: SetOpt = None,
    ) -> None:
        """Train every schedule with every seed: final and best metric (mean ± 95% CI), time to target, cost.

        Writes summary.md, summary.json, lr_curves.png and val_curves.png into --output; each run
        directory is <output>/<schedule>/seed<k> and is resumed if the command is run again.
        """
        from rich.console import Console

        from cosanneal.analysis.compare import CompareSettings, load_entries, table_cells, table_header
        from cosanneal.jobs.compare import run_compare
        from cosanneal.jobs.config import load_config

        out_dir = renamed(output, out, old="--out", new="--output") or Path("runs/compare")
        cfg = load_config(config, sets or [])
        specs = load_entries([*schedules, *(extra or [])])
        settings = CompareSettings(
            out_dir=out_dir,
            seeds=tuple(range(seeds)),
            metric=metric,
            mode=None if mode is None else mode.value,
            target=target,
            swa=tuple(swa or ()),
            swa_every=swa_every,
            swa_window=swa_window,
        )
        err = Console(stderr=True)
        rows, _ = run_compare(
            cfg.to_dict(), specs, settings, log=lambda m: err.print(m, markup=False, highlight=False)
        )
        console = output_console()
        print_table(
            console,
            f"{cfg.name}: {len(specs)} schedules x {seeds} seeds (mean ± 95% CI, Student t)",
            table_header(settings),
            [table_cells(row, settings) for row in rows],
        )
        console.print(
            f"wrote {out_dir}/summary.md, summary.json, lr_curves.png, val_curves.png", highlight=False
        )
