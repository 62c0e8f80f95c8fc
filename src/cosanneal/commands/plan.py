"""``cosanneal plan``: a schedule whose last cycle ends exactly at the budget, its cost and checkpoint interval.

See :mod:`cosanneal.analysis.plan` for the formulas and ``docs/plan.md`` for examples.

Exit codes: 0 planned (and written with ``-o``); 2 an impossible budget or bad input, as one ``error:`` line.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cosanneal.commands.options import UsageError, examples, renamed

if TYPE_CHECKING:
    from cosanneal.analysis.plan import BranchPlan, Plan

__all__ = ["format_seconds", "register"]


def format_seconds(seconds: float) -> str:
    """A wall time for people: ``"42.0 s"``, ``"12m 30s"``, ``"3h 05m"``, ``"2d 04h"``.

    Example:
        >>> format_seconds(42), format_seconds(750), format_seconds(11100), format_seconds(187200)
        ('42.0 s', '12m 30s', '3h 05m', '2d 04h')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _g(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else f"{x:.6g}"


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _print_plan(p: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    s = p.schedule
    budget = f"{p.total_steps} steps"
    if p.steps_per_epoch:
        budget += f" ({_g(p.total_steps / p.steps_per_epoch)} epochs of {_g(p.steps_per_epoch)})"
    console.print(
        f"plan: {budget}, warmup {p.warmup_steps}, {p.cycles} cycle{'s' if p.cycles != 1 else ''} "
        f"(cycle_mult {_g(float(s.cycle_mult))}, first {_g(float(s.cycle_steps))} steps), "
        f"peak {_g(float(s.peak_lr))}, fingerprint {s.fingerprint()}"
    )
    if p.min_cycle is not None:
        console.print(f"cycles chosen: the most whose shortest cycle is >= {_g(p.min_cycle)} steps")
    table = Table()
    columns = ["cycle", "start", "end", "length"]
    if p.steps_per_epoch:
        columns.append("epochs")
    columns += ["peak", "floor", "wall", "cost"]
    for column in columns:
        table.add_column(column, justify="left" if column == "cycle" else "right")
    for row in p.rows:
        cells = [
            "warmup" if row.index is None else str(row.index),
            _g(row.start),
            _g(row.end),
            _g(row.length),
        ]
        if p.steps_per_epoch:
            cells.append(f"{row.length / p.steps_per_epoch:.4g}")
        cells += [
            _g(row.peak),
            _g(row.floor),
            "-" if row.seconds is None else format_seconds(row.seconds),
            _money(row.cost),
        ]
        table.add_row(*cells)
    console.print(table, soft_wrap=False)
    wall = p.wall_seconds
    if wall is not None:
        console.print(
            f"total: {p.total_steps} steps x {_g(p.step_seconds or 0.0)} s = {format_seconds(wall)}"
            + ("" if p.cost is None else f", cost {p.cost:.2f} at {_g(p.price_per_hour or 0.0)}/h")
        )
    console.print(
        f"last cycle ends at step {_g(float(s.horizon or 0.0))} = the budget"
        + ("" if p.horizon_error == 0.0 else f" (off by {p.horizon_error:.3g} steps of float rounding)")
    )
    ck = p.checkpoint
    if ck is not None:
        every = format_seconds(ck.interval_seconds)
        if ck.interval_steps is not None:
            every += f" = every {ck.interval_steps} steps"
        console.print(
            f"checkpoint (Young/Daly, sqrt(2 x {_g(ck.checkpoint_seconds)} s x {format_seconds(ck.mtbf_seconds)})): "
            f"every {every}"
        )
        line = (
            f"expected loss per preemption: {format_seconds(ck.lost_seconds)} "
            f"(half an interval + {format_seconds(ck.restart_seconds)} restart)"
        )
        if ck.expected_preemptions is not None and ck.overhead_seconds is not None and wall:
            line += (
                f"; {ck.expected_preemptions:.2g} preemptions expected, overhead "
                f"{format_seconds(ck.overhead_seconds)} ({100.0 * ck.overhead_seconds / wall:.1f}%)"
            )
        console.print(line)


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _print_branch_plan(p: BranchPlan, parent: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    source = (
        f"the branches of {parent}" if parent is not None else f"budgets up to {p.rows[-1].budget} updates"
    )
    console.print(f"plan: one stable run + cooldown branches vs a cosine run per budget ({source})")
    measured = any(r.branch_loss is not None or r.cosine_loss is not None for r in p.rows)
    table = Table()
    columns = ["budget", "branch at", "cooldown", "branch updates", "cosine run updates"]
    columns += ["branch val_loss", "cosine val_loss"] if measured else []
    for column in columns:
        table.add_column(column, justify="right")
    for r in p.rows:
        cells = [str(r.budget), str(r.at), f"{r.cooldown} ({r.cooldown / r.budget:.3g})", str(r.cooldown)]
        cells.append(str(r.budget))
        if measured:
            cells += [_loss(r.branch_loss), _loss(r.cosine_loss)]
        table.add_row(*cells)
    console.print(table, soft_wrap=False)

    def hours(updates: int) -> str:
        h = p.hours(updates)
        return "" if h is None else f" = {h:.3g} device-hours"

    console.print(
        f"stable run: {p.stable_updates} updates (to the last branch point){hours(p.stable_updates)}"
    )
    console.print(f"stable run + {len(p.rows)} branches: {p.branch_updates} updates{hours(p.branch_updates)}")
    console.print(f"{len(p.rows)} separate cosine runs: {p.cosine_updates} updates{hours(p.cosine_updates)}")
    saved = p.cosine_updates - p.branch_updates
    console.print(f"branches save {saved} updates ({100.0 * p.saved_fraction:.1f}%){hours(saved)}")


def _run_length(run: Path) -> tuple[int, float | None]:
    """A run's trained updates and its median step time (``None``: not recorded)."""
    import numpy as np

    from cosanneal import runs
    from cosanneal.errors import ConfigError

    if not (run / "run.db").is_file():
        raise ConfigError(
            f"{run} is not a run directory (no run.db); pass the directory `cosanneal train` wrote"
        )
    with runs.open(run) as store:
        names = store.scalar_names()
        steps: Any = store.scalar("lr", 0)[0] if "lr" in names else []
        times: Any = store.scalar("step_time")[1] if "step_time" in names else []
    seconds = float(np.nanmedian(times)) if len(times) else None
    return (int(steps[-1]) + 1 if len(steps) else 0), seconds


def _measured(parent: Path, cosine: list[Path], step_seconds: float | None) -> BranchPlan:
    from cosanneal.analysis.branches import final_metric, find_branches
    from cosanneal.analysis.plan import measured_branch_plan
    from cosanneal.errors import ConfigError

    try:
        _, measured_seconds = _run_length(parent)
    except ConfigError as exc:
        raise ConfigError(f"--branches: {exc}") from None
    found = find_branches(parent)
    if not found:
        raise ConfigError(
            f"--branches: {parent} has no cooldown branches; train them with "
            f"`cosanneal branch {parent} --at STEP --cooldown 0.2`"
        )
    losses: dict[int, float | None] = {}
    for run in cosine:
        try:
            length, _ = _run_length(run)
        except ConfigError as exc:
            raise ConfigError(f"--cosine: {exc}") from None
        losses[length] = final_metric(run)
    return measured_branch_plan(
        [(b.at, b.cooldown, final_metric(b.run_dir)) for b in found],
        cosine=losses,
        step_seconds=step_seconds if step_seconds is not None else measured_seconds,
    )


EXAMPLES = examples(
    "cosanneal plan --steps 35100 --cycles 3 --cycle-mult 2 --warmup 500 --peak 0.1",
    "cosanneal plan --steps 90ep --steps-per-epoch 390 --cycle-mult 2 --step-seconds 0.12 --price-per-hour 2.5",
    "cosanneal plan --steps 20000 --warmup 0.05dur --mtbf 6h --checkpoint-seconds 20 -o plan.toml",
    "cosanneal plan --steps 20000 --cooldown 0.2 --step-seconds 0.3   # stable run + branches vs cosine runs",
    "cosanneal plan --branches runs/wsd --cosine runs/cos-5000 --cosine runs/cos-10000",
)


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to the CLI app."""

    @app.command("plan", epilog=EXAMPLES)
    def plan_command(
        steps: Annotated[
            str | None,
            typer.Option(
                "--steps",
                metavar="BUDGET",
                help="The budget, the run length: updates ('35100') or epochs ('90ep'). Required.",
                show_default=False,
            ),
        ] = None,
        total: Annotated[str | None, typer.Option("--total", hidden=True)] = None,
        steps_per_epoch: Annotated[
            float | None, typer.Option("--steps-per-epoch", help="Optimizer steps per epoch (for 'ep').")
        ] = None,
        cycles: Annotated[int | None, typer.Option("--cycles", help="Number of cycles (default 1).")] = None,
        cycle_mult: Annotated[
            float | None,
            typer.Option("--cycle-mult", help="Cycle length multiplier; alone, the planner picks --cycles."),
        ] = None,
        warmup: Annotated[str, typer.Option("--warmup", help="Warmup: steps, '2ep' or '0.05dur'.")] = "0",
        peak: Annotated[float, typer.Option("--peak", help="Peak LR of the first cycle.")] = 0.1,
        min_ratio: Annotated[
            float, typer.Option("--min-ratio", help="Floor as a fraction of each peak.")
        ] = 0.0,
        peak_decay: Annotated[
            float, typer.Option("--peak-decay", help="Each restart's peak is this times the previous one.")
        ] = 1.0,
        min_cycle: Annotated[
            str | None,
            typer.Option(
                "--min-cycle", help="Shortest cycle when the planner picks --cycles (default 1 epoch)."
            ),
        ] = None,
        step_seconds: Annotated[
            float | None, typer.Option("--step-seconds", help="Seconds per optimizer step.")
        ] = None,
        measure: Annotated[
            Path | None,
            typer.Option("--measure", help="Training config: time real steps of it to get --step-seconds."),
        ] = None,
        measure_steps: Annotated[
            int, typer.Option("--measure-steps", min=1, help="Steps --measure times (after 3 untimed).")
        ] = 20,
        price_per_hour: Annotated[
            float | None, typer.Option("--price-per-hour", help="Machine price per hour (for the cost).")
        ] = None,
        mtbf: Annotated[
            str | None, typer.Option("--mtbf", help="Mean time between preemptions: '6h', '30m', '3600s'.")
        ] = None,
        checkpoint_seconds: Annotated[
            str | None, typer.Option("--checkpoint-seconds", help="Cost of one checkpoint (with --mtbf).")
        ] = None,
        restart_seconds: Annotated[
            str | None,
            typer.Option("--restart-seconds", help="Cost of a restart (default: --checkpoint-seconds)."),
        ] = None,
        output: Annotated[
            Path | None, typer.Option("-o", "--output", help="Write the plan as a [schedule] TOML file.")
        ] = None,
        cooldown: Annotated[
            str | None,
            typer.Option(
                "--cooldown",
                help="Plan one stable run + cooldown branches at 1/4, 1/2, 3/4 and 1 of --steps instead: "
                "each cooldown in updates (200) or as a fraction of its branch (0.2).",
            ),
        ] = None,
        branches: Annotated[
            Path | None,
            typer.Option(
                "--branches",
                metavar="RUN",
                help="The same table from a run and its `cosanneal branch` branches, with their final val_loss.",
            ),
        ] = None,
        cosine: Annotated[
            list[Path] | None,
            typer.Option(
                "--cosine", metavar="RUN", help="With --branches: a cosine run to compare (repeat)."
            ),
        ] = None,
    ) -> None:
        """Plan warmup + cosine (+ warm restarts) so the last cycle ends exactly at the budget.

        Prints the cycles (start, end, length, peak, wall time, cost) and, with --mtbf, the Young/Daly
        checkpoint interval; -o writes a [schedule] table that `cosanneal train` accepts.
        """
        from cosanneal.analysis.plan import plan
        from cosanneal.errors import ConfigError
        from cosanneal.io import atomic_write_text

        budget = renamed(steps, total, old="--total", new="--steps")
        if cosine and branches is None:
            raise ConfigError(
                "--cosine compares runs with the branches of --branches RUN; pass --branches too"
            )
        if branches is not None:
            _print_branch_plan(_measured(branches, list(cosine or []), step_seconds), branches)
            return
        if cooldown is not None:
            from cosanneal.analysis.plan import branch_plan

            if budget is None:
                raise UsageError("plan --cooldown needs the budget: --steps N (the longest branch's total)")
            try:
                length = float(cooldown)
            except ValueError:
                raise ConfigError(
                    f"--cooldown: {cooldown!r} is not a length; pass updates (200) or a fraction (0.2)"
                ) from None
            updates = plan(budget, steps_per_epoch=steps_per_epoch).total_steps
            value: float | int = int(length) if length >= 1 and length.is_integer() else length
            _print_branch_plan(branch_plan(updates, cooldown=value, step_seconds=step_seconds), None)
            return
        if budget is None:
            raise UsageError(
                "plan needs the budget: --steps N (updates) or --steps 90ep (with --steps-per-epoch)"
            )

        if measure is not None and step_seconds is not None:
            raise ConfigError("--measure and --step-seconds both give the step time; pass one of them")
        if measure is not None:
            from cosanneal.jobs.config import load_config
            from cosanneal.jobs.plan import measure_step_seconds

            timing = measure_step_seconds(load_config(measure), steps=measure_steps)
            step_seconds = timing.step_seconds
            if steps_per_epoch is None:
                steps_per_epoch = float(timing.steps_per_epoch)
            typer.echo(
                f"measured {measure}: median {step_seconds:.4g} s per step over {len(timing.samples)} steps "
                f"on {timing.device}; {timing.steps_per_epoch} steps per epoch"
            )
        if steps_per_epoch is not None and not (math.isfinite(steps_per_epoch) and steps_per_epoch > 0):
            raise ConfigError(f"--steps-per-epoch must be > 0, got {steps_per_epoch:g}")
        p = plan(
            budget,
            cycles=cycles,
            cycle_mult=cycle_mult,
            warmup=warmup,
            peak=peak,
            min_ratio=min_ratio,
            peak_decay=peak_decay,
            min_cycle=min_cycle,
            steps_per_epoch=steps_per_epoch,
            step_seconds=step_seconds,
            price_per_hour=price_per_hour,
            mtbf=mtbf,
            checkpoint_seconds=checkpoint_seconds,
            restart_seconds=restart_seconds,
        )
        _print_plan(p)
        if output is not None:
            try:
                atomic_write_text(output, p.to_toml())
            except OSError as exc:
                raise ConfigError(f"--output: cannot write {output}: {exc.strerror or exc}") from None
            typer.echo(
                f"wrote {output} ([schedule] for `cosanneal train`; the budget is {p.total_steps} updates)"
            )
