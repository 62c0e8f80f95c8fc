"""The ``cosanneal`` command line: a thin typer app over the library.

Commands (more are added by other modules of the package as they land):

* ``cosanneal plot SPEC -o lr.png``: draw one or more schedules to a PNG;
* ``cosanneal show SPEC``: the cycles of a schedule as a table, and its lint;
* ``cosanneal lint SPEC --steps N``: problems of a schedule for a run of N steps (exit 1 if any);
* ``cosanneal trace SPEC --steps N``: the LR at every step as CSV or JSON.

``SPEC`` is a schedule file (TOML, YAML or JSON; see :mod:`cosanneal.schedules.spec`); ``--set
key=value`` overrides its values or, without a file, builds the whole spec. ``--steps`` is the run
length; it defaults to the schedule's end (horizon) when it has one.

Exit codes: 0 success, 1 ``lint`` found problems (``train``: the non-finite guard stopped the run), 2
bad input (one ``error:`` line on stderr, no traceback), 74 the run's files cannot be written (disk
full, read-only or vanished run directory; one ``error:`` line naming the device and what was kept),
143/130 ``train`` was preempted by SIGTERM/SIGINT and saved a checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cosanneal.errors import CosannealError, ScheduleError, SpecError
from cosanneal.io import atomic_write_bytes
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.lint import LintWarning, lint, timeline
from cosanneal.schedules.spec import load_spec

__all__ = ["app", "main"]

app = typer.Typer(
    name="cosanneal",
    help="Exact cosine-annealing LR schedules: preview, check and trace them before you train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from cosanneal import __version__

        typer.echo(f"cosanneal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Exact cosine-annealing LR schedules: preview, check and trace them before you train."""


_MAX_TABLE_ROWS = 200


class DType(StrEnum):
    """Training precisions ``lint`` can check the floor against (the keys of ``lint.DTYPES``).

    ``fp16``/``bf16`` (and ``amp-*``) are autocast/AMP with fp32 master weights; ``pure-*`` are weights
    updated in half precision with no fp32 copy, where small updates are lost.
    """

    fp16 = "fp16"
    float16 = "float16"
    amp_fp16 = "amp-fp16"
    bf16 = "bf16"
    bfloat16 = "bfloat16"
    amp_bf16 = "amp-bf16"
    fp32 = "fp32"
    float32 = "float32"
    pure_fp16 = "pure-fp16"
    pure_float16 = "pure-float16"
    pure_bf16 = "pure-bf16"
    pure_bfloat16 = "pure-bfloat16"


class TraceFormat(StrEnum):
    """Output formats of ``trace``."""

    csv = "csv"
    json = "json"


SpecArg = Annotated[
    Path | None,
    typer.Argument(
        help="Schedule spec file (.toml, .yaml, .yml, .json); may be left out when --set gives kind."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a spec value (repeatable); dotted keys reach nested values: schedules.1.peak_lr=0.01.",
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option("--steps", min=1, help="Run length in optimizer steps (default: the schedule's end)."),
]
StepsPerEpochOpt = Annotated[
    float | None,
    typer.Option("--steps-per-epoch", min=0.0, help="Optimizer steps per epoch, for durations like '3ep'."),
]
DTypeOpt = Annotated[
    DType | None,
    typer.Option("--dtype", help="Precision of the weight updates, to check the floor for underflow."),
]


# ---- shared helpers -----------------------------------------------------------------------------
def _source(spec: Path | None) -> str:
    return str(spec) if spec is not None else "--set"


def _bind(
    schedule: Schedule, source: str, steps: int | None, steps_per_epoch: float | None
) -> tuple[Schedule, int]:
    """Bind the schedule's durations and settle the run length (``--steps`` or the schedule's end)."""
    for name, value in schedule.unbound_fields().items():
        if value.endswith("ep") and steps_per_epoch is None:
            raise SpecError(f"{source}: {name}={value!r} is in epochs; pass --steps-per-epoch N")
        if value.endswith("dur") and steps is None:
            raise SpecError(f"{source}: {name}={value!r} is a fraction of the run; pass --steps N")
    try:
        bound = schedule.bind(total_steps=steps, steps_per_epoch=steps_per_epoch)
        end = bound.horizon
    except ScheduleError as exc:
        raise SpecError(f"{source}: {exc}") from None
    if steps is not None:
        return bound, steps
    if end is None:
        raise SpecError(
            f"{source}: the schedule never ends (it restarts forever); pass --steps N, the run length"
        )
    if end < 1:
        raise SpecError(
            f"{source}: the schedule is constant from step {end:g}; pass --steps N, the run length"
        )
    return bound, math.ceil(end)


def _load(spec: Path | None, sets: list[str] | None) -> Schedule:
    if spec is None and not sets:
        raise SpecError("give a spec file (cosanneal show sgdr.toml) or --set kind=... to build one")
    return load_spec(spec, sets or [])


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (:func:`cosanneal.io.atomic_write_bytes`); an OS error is a user error."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CosannealError(f"cannot write {path}: {exc.strerror or exc}") from None


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else f"{x:.6g}"


def _lint_lines(warnings: Sequence[LintWarning]) -> list[str]:
    return [str(w) for w in warnings]


# ---- plot ---------------------------------------------------------------------------------------
@app.command()
def plot(
    spec: SpecArg = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")] = Path("lr.png"),
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    vs: Annotated[
        list[Path] | None, typer.Option("--vs", help="Another spec to overlay (repeatable).")
    ] = None,
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic LR axis.")] = False,
    sets: SetOpt = None,
) -> None:
    """Draw the LR curve of SPEC (and every --vs spec) to a PNG, restarts and phases marked.

    --set applies to SPEC only. The run length is --steps, else the longest schedule end.
    """
    from cosanneal import plotting

    sources = [(_source(spec), _load(spec, sets))] + [(str(p), load_spec(p, [])) for p in vs or []]
    if steps is None:
        ends = [_bind(s, src, None, steps_per_epoch)[1] for src, s in sources]
        steps = max(ends)
    names = [Path(src).name if src != "--set" else "--set" for src, _ in sources]
    labels = names if len(set(names)) == len(names) else [src for src, _ in sources]
    curves = [
        plotting.curve(_bind(s, src, steps, steps_per_epoch)[0], steps, label)
        for (src, s), label in zip(sources, labels, strict=True)
    ]
    title = " vs ".join(labels) + f" ({steps} steps)"
    fig = plotting.plot_curves(curves, log_y=log_y, title=title)
    _atomic_write(output, plotting.png_bytes(fig))
    typer.echo(f"wrote {output} ({len(curves)} schedule{'s' if len(curves) > 1 else ''}, {steps} steps)")


# ---- show ---------------------------------------------------------------------------------------
def _cosine_rows(s: Cosine, n: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    warmup = int(s.warmup_steps)
    if warmup:
        rows.append(
            (
                "warmup",
                "0",
                _fmt(warmup),
                _fmt(warmup),
                _fmt(float(s.peak_lr)),
                _fmt(float(s.warmup_start_lr)),
                _pct(min(1.0, n / warmup)),
            )
        )
    i = 0
    while s.max_cycles is None or i < s.max_cycles:
        start = s.origin if i == 0 else s.cycle_start(i)
        if start >= n:
            break
        if len(rows) >= _MAX_TABLE_ROWS:
            rows.append(("...", "", "", "", "", "", ""))
            break
        end = s.cycle_start(i + 1)
        length = end - start
        rows.append(
            (
                str(i),
                _fmt(start),
                _fmt(end),
                _fmt(length),
                _fmt(s.cycle_peak(i)),
                _fmt(s.cycle_floor(i)),
                _pct(min(1.0, (n - start) / length)),
            )
        )
        i += 1
    hold = s.horizon
    if hold is not None and hold < n:
        rows.append(("hold", _fmt(hold), _fmt(n), _fmt(n - hold), "", _fmt(s(hold)), "100%"))
    return rows


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f}%" if x >= 1.0 or x == 0.0 else f"{100.0 * x:.1f}%"


def _generic_rows(s: Schedule, n: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    segments = timeline(s, n)
    horizon = s.horizon
    for k, g in enumerate(segments[:_MAX_TABLE_ROWS]):
        lr = np.asarray(s(np.arange(g.start, g.end, dtype=np.float64)))
        name = g.phase if g.phase != "anneal" else str(g.cycle)
        last = k == len(segments) - 1
        end = float(horizon) if last and horizon is not None and horizon > n and g.phase != "hold" else g.end
        rows.append(
            (
                name,
                _fmt(g.start),
                _fmt(end),
                _fmt(end - g.start),
                _fmt(float(lr.max())),
                _fmt(float(lr.min())),
                _pct((g.end - g.start) / (end - g.start)),
            )
        )
    return rows


@app.command()
def show(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    dtype: DTypeOpt = None,
    sets: SetOpt = None,
) -> None:
    """Print the cycles of SPEC (start, end, length, peak, floor) and its lint for the run."""
    source = _source(spec)
    schedule, n = _bind(_load(spec, sets), source, steps, steps_per_epoch)
    console = Console(soft_wrap=True)
    name = Path(source).name if spec else source
    console.print(
        f"{name}: {schedule.kind}, {n} steps, fingerprint {schedule.fingerprint()}", highlight=False
    )
    table = Table()
    for column in ("cycle", "start", "end", "length", "peak", "floor", "in run"):
        table.add_column(column, justify="left" if column == "cycle" else "right")
    rows = _cosine_rows(schedule, n) if isinstance(schedule, Cosine) else _generic_rows(schedule, n)
    for row in rows:
        table.add_row(*row)
    console.print(table, soft_wrap=False)
    restarts = schedule.restarts(n)
    shown = ", ".join(_fmt(float(r)) for r in restarts[:20]) + (", ..." if len(restarts) > 20 else "")
    console.print(f"restarts: {shown or 'none'}", highlight=False)
    warnings = lint(schedule, n, dtype=dtype.value if dtype is not None else None)
    if not warnings:
        console.print("lint: no warnings", style="green", highlight=False)
    for line in _lint_lines(warnings):
        console.print(f"lint: {line}", style="yellow", highlight=False)


# ---- lint ---------------------------------------------------------------------------------------
@app.command("lint")
def lint_command(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    dtype: DTypeOpt = None,
    sets: SetOpt = None,
) -> None:
    """Check SPEC for a run of --steps updates; exit 1 when there are warnings, 0 when clean."""
    schedule, n = _bind(_load(spec, sets), _source(spec), steps, steps_per_epoch)
    warnings = lint(schedule, n, dtype=dtype.value if dtype is not None else None)
    for line in _lint_lines(warnings):
        typer.echo(line)
    if warnings:
        typer.echo(f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''} for {n} steps")
        raise typer.Exit(1)
    typer.echo(f"no warnings for {n} steps")


# ---- trace --------------------------------------------------------------------------------------
def trace_columns(schedule: Schedule, total_steps: int) -> dict[str, list[Any]]:
    """The LR at steps ``0 .. total_steps - 1`` (plus phase and cycle for a Cosine), column by column."""
    steps = np.arange(total_steps, dtype=np.float64)
    columns: dict[str, list[Any]] = {
        "step": list(range(total_steps)),
        "lr": np.asarray(schedule(steps), dtype=np.float64).tolist(),
    }
    if isinstance(schedule, Cosine):
        segments = timeline(schedule, total_steps)
        counts = [g.end - g.start for g in segments]
        columns["phase"] = np.repeat(np.array([g.phase for g in segments]), counts).tolist()
        columns["cycle"] = np.repeat(np.array([g.cycle for g in segments], dtype=np.int64), counts).tolist()
    return columns


def _render_trace(schedule: Schedule, columns: dict[str, list[Any]], fmt: TraceFormat) -> str:
    if fmt is TraceFormat.json:
        payload = {"schedule": schedule.to_dict(), "fingerprint": schedule.fingerprint(), **columns}
        return json.dumps(payload, separators=(",", ":")) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))
    return buffer.getvalue()


@app.command()
def trace(
    spec: SpecArg = None,
    steps: StepsOpt = None,
    steps_per_epoch: StepsPerEpochOpt = None,
    fmt: Annotated[TraceFormat, typer.Option("--format", help="csv or json.")] = TraceFormat.csv,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
    sets: SetOpt = None,
) -> None:
    """Print step,lr (plus phase,cycle for a cosine schedule) for every step of the run."""
    schedule, n = _bind(_load(spec, sets), _source(spec), steps, steps_per_epoch)
    text = _render_trace(schedule, trace_columns(schedule, n), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        _atomic_write(output, text.encode("utf-8"))


# ---- entry point --------------------------------------------------------------------------------
def _summary(result: Any) -> Table:
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


def _run_training(config: Any, run_dir: Path, fresh: bool, progress: bool | None) -> None:
    """Train ``config`` in ``run_dir``; ``progress`` None lets the config's ``telemetry.progress`` decide."""
    from cosanneal.jobs.trainer import Trainer

    console = Console(stderr=True)

    def log(message: str) -> None:
        console.print(message, soft_wrap=True, markup=False, highlight=False)

    hint = f"run {_resume_command()}"
    result = Trainer(config, run_dir, fresh=fresh, log=log, progress=progress, resume_hint=hint).run()
    if int(os.environ.get("RANK", "0")) == 0:
        Console().print(_summary(result))
        if result.status == "preempted":  # in full, on one line, whatever the table's width
            log(result.message)
        else:
            from cosanneal.plotting import plot_run

            png = run_dir / "lr_loss.png"
            plot_run(run_dir, png)
            Console().print(f"wrote {run_dir}/ (run.db, checkpoints/, tb/) and {png}")
    raise typer.Exit(result.exit_code)


def _resume_command() -> str:
    """The command line that continues this job: the one given, without ``--fresh``."""
    import shlex

    args = [a for a in sys.argv[1:] if a != "--fresh"]
    return shlex.join(["cosanneal", *args])


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Training config (TOML, YAML or JSON).")],
    sets: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: runs/<config name>).")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over (an existing run dir is moved aside).")
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
    """Train a config-driven job; resumes from its run directory unless --fresh. Works under torchrun."""
    from cosanneal.jobs.config import load_config

    cfg = load_config(config, sets or [])
    # a model, data set, task or sink module next to the config file is importable by its name
    sys.path.append(str(config.resolve().parent))
    _run_training(cfg, run_dir or Path("runs") / cfg.name, fresh, progress)


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where the demo run goes.")] = Path("runs/demo"),
    example: Annotated[
        str,
        typer.Option("--example", help="gpt (a byte-level GPT on Python's own sources) or digits (fast)."),
    ] = "gpt",
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

    console = Console(stderr=True)

    def log(message: str) -> None:
        console.print(message, soft_wrap=True, markup=False, highlight=False)

    hint = f"run {_resume_command()}"
    outcome = run_demo(
        example, run_dir, sets or [], fresh=fresh, progress=progress, interrupt=interrupt, log=log,
        resume_hint=hint,
    )  # fmt: skip
    result = outcome.result
    Console().print(_summary(result))
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


def _register_commands() -> None:
    """Let every module of :mod:`cosanneal.commands` add its subcommands."""
    import importlib
    import pkgutil

    from cosanneal import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cosanneal.commands.{info.name}")
        module.register(app)


_register_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; a cosanneal error prints ``error: <one line>`` to stderr and exits 2."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="cosanneal")
    except CosannealError as exc:
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
