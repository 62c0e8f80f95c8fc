"""``cosanneal lr-find CONFIG``: an LR range test on a training config, plotted and turned into a cosine spec.

The test runs on a fresh copy of the config's model (see :func:`cosanneal.jobs.lrfind.lr_find_config`); it
prints the suggestion and the loss curve as tables, writes ``loss vs LR`` (log x) to a PNG with the
suggestion marked, and with ``--write-spec`` a ``[schedule]`` table that both ``cosanneal show`` and
``cosanneal train`` read. Exit codes: 0 done, 2 bad config or options (one ``error:`` line).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cosanneal.commands.options import ConfigArg, SetOpt, examples, renamed
from cosanneal.tune.lrfind_plot import plot_lr_find

if TYPE_CHECKING:
    from cosanneal.tune.lrfind import LRFindResult

__all__ = ["lr_find_command", "plot_lr_find", "register"]

EXAMPLES = examples(
    "cosanneal lr-find src/cosanneal/zoo/configs/digits_sgdr.toml -o lrfind.png",
    "cosanneal lr-find my_job.toml --min 1e-6 --max 1 --sweep-steps 200 --write-spec suggested.toml",
)

#: At most this many rows of the curve are printed.
CURVE_ROWS = 25
#: Library argument -> command-line option, for error messages.
_OPTIONS = {
    "min_lr": "--min",
    "max_lr": "--max",
    "steps": "--sweep-steps",
    "smoothing": "--smoothing",
    "diverge": "--diverge",
}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _tables(result: LRFindResult) -> list[Any]:
    from rich.table import Table

    s = result.suggestion
    summary = Table(title="suggestion", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value", justify="right")
    summary.add_column("rule")
    if s is not None:
        summary.add_row(
            "peak_lr", _fmt(s.peak_lr), "min(sqrt(steepest descent x lowest loss), lowest-loss LR / 3)"
        )
        summary.add_row(
            "min_lr", _fmt(s.min_lr), "LR where the loss starts falling, within [peak/1000, peak/10]"
        )
        summary.add_row("warmup_steps", str(s.warmup_steps), "sweep updates from that LR to the peak")
        summary.add_row("steepest descent at", _fmt(s.steepest_lr), "")
        summary.add_row("lowest loss at", _fmt(s.min_loss_lr), "")
    summary.add_row("diverged at", "-" if result.diverged_at is None else _fmt(result.diverged_at), "")
    curve = Table(title="loss vs LR")
    for column in ("step", "lr", "loss", "smoothed"):
        curve.add_column(column, justify="right")
    n = len(result.lrs)
    picks = sorted({round(i * (n - 1) / (CURVE_ROWS - 1)) for i in range(CURVE_ROWS)}) if n else []
    for i in picks:
        curve.add_row(str(i), _fmt(result.lrs[i]), _fmt(result.losses[i]), _fmt(result.smoothed[i]))
    return [curve, summary]


def lr_find_command(
    config: ConfigArg,
    sets: SetOpt = None,
    min_lr: Annotated[float, typer.Option("--min", help="First LR of the sweep (> 0).")] = 1e-7,
    max_lr: Annotated[float, typer.Option("--max", help="Last LR of the sweep.")] = 1.0,
    sweep_steps: Annotated[
        int | None,
        typer.Option(
            "--sweep-steps",
            metavar="N",
            help="Updates in the sweep (>= 5).  [default: 100]",
            show_default=False,
        ),
    ] = None,
    steps_old: Annotated[int | None, typer.Option("--steps", hidden=True)] = None,
    smoothing: Annotated[float, typer.Option("--smoothing", help="EMA factor of the smoothed loss.")] = 0.98,
    diverge: Annotated[
        float, typer.Option("--diverge", help="Stop when the smoothed loss exceeds this x its best.")
    ] = 4.0,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")] = Path("lrfind.png"),
    write_spec: Annotated[
        Path | None, typer.Option("--write-spec", help="Write the suggested cosine [schedule] to this TOML.")
    ] = None,
) -> None:
    """LR range test on CONFIG's model and data (on a copy); suggest a peak, a floor and a warmup.

    The LR grows geometrically from --min to --max over --sweep-steps updates; the picture shows the
    smoothed loss the suggestion is read from. --write-spec saves the suggested cosine as a
    [schedule] table that `cosanneal show` and `cosanneal train` read.
    """
    from rich.console import Console

    from cosanneal.errors import ConfigError, CosannealError
    from cosanneal.io import atomic_write_bytes, atomic_write_text
    from cosanneal.jobs.config import load_config
    from cosanneal.jobs.lrfind import lr_find_config
    from cosanneal.plotting import png_bytes
    from cosanneal.tune.lrfind import spec_toml

    steps = renamed(sweep_steps, steps_old, old="--steps", new="--sweep-steps") or 100
    cfg = load_config(config, sets or [])
    try:
        result = lr_find_config(
            cfg, min_lr=min_lr, max_lr=max_lr, steps=steps, smoothing=smoothing, diverge=diverge
        )
    except ConfigError as exc:  # name the command-line option, not the library argument
        key, _, rest = str(exc).partition(":")
        if key in _OPTIONS:
            raise ConfigError(f"{_OPTIONS[key]}:{rest}") from None
        raise
    console = Console(soft_wrap=True)
    for table in _tables(result):
        console.print(table, soft_wrap=False)
    title = f"lr-find {config.name}: {len(result.lrs)} updates, {_fmt(min_lr)} .. {_fmt(max_lr)}"
    try:
        atomic_write_bytes(output, png_bytes(plot_lr_find(result, title)))
        console.print(f"wrote {output}", highlight=False)
        s = result.suggestion
        if s is None:
            raise ConfigError(
                f"--min/--max: the loss did not fall between {_fmt(min_lr)} and {_fmt(max_lr)}; "
                "widen the range or raise --sweep-steps"
            )
        if len(result.lrs) and s.min_loss_lr >= result.lrs[-1] and result.diverged_at is None:
            console.print(
                f"note: the loss was still falling at --max {_fmt(max_lr)}; raise --max", style="yellow"
            )
        if write_spec is not None:
            atomic_write_text(write_spec, spec_toml(s, f"cosanneal lr-find {config} (suggested schedule)"))
            console.print(f"wrote {write_spec} (cosine, peak_lr={_fmt(s.peak_lr)})", highlight=False)
    except OSError as exc:
        raise CosannealError(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    """Add ``lr-find`` to the ``cosanneal`` app."""
    app.command("lr-find", epilog=EXAMPLES)(lr_find_command)
