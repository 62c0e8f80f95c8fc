"""``cosanneal verify SOURCE``: check that a job used the LR it was configured for.

Exit codes: 0 the trace matches the schedule, 1 it does not (diagnoses printed; also when steps are
missing too), 2 bad input, 3 the trace is incomplete (steps missing; every step present matches).

A run directory's schedule changes are applied to the schedule it is checked against, in step order
(:func:`~cosanneal.schedules.replan.apply_changes`): its ``world_size_changed`` events (a resume at
another world size that scaled the LR) and its ``schedule_replanned`` events (``cosanneal replan``). A
change that was not recorded still fails.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cosanneal.commands.options import SetOpt, StepsPerEpochOpt, examples, renamed
from cosanneal.commands.schedules_input import is_training_config, load_bound

__all__ = ["EXIT_CODES", "register"]

#: Exit status of ``cosanneal verify`` per verdict status (2 is bad input, from the CLI's ``main``).
EXIT_CODES = {"match": 0, "mismatch": 1, "incomplete": 3}


class VerifyFormat(StrEnum):
    """Output formats of ``verify``."""

    text = "text"
    json = "json"


class LrRead(StrEnum):
    """Where the loop read the LR it logged (see ``docs/verify.md``)."""

    before_optimizer_step = "before-optimizer-step"
    after_scheduler_step = "after-scheduler-step"


EXAMPLES = examples(
    "cosanneal verify runs/demo                    # a cosanneal run against its own schedule",
    "cosanneal verify tb_logs/ --schedule examples/schedules/sgdr.toml --steps 3000",
    "cosanneal verify lr.csv --schedule my_job.toml --lr-read after-scheduler-step --format json",
)


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""

    @app.command("verify", epilog=EXAMPLES)
    def verify_command(
        source: Annotated[
            str,
            typer.Argument(
                help="Run directory, TensorBoard log directory, .csv/.jsonl of (step, lr), or mlflow:<run_id>."
            ),
        ],
        schedule: Annotated[
            Path | None,
            typer.Option(
                "--schedule",
                metavar="SPEC",
                help="Schedule spec or training config (default for a run directory: its own schedule).",
                show_default=False,
            ),
        ] = None,
        sets: SetOpt = None,
        steps_per_epoch: StepsPerEpochOpt = None,
        steps: Annotated[
            int | None,
            typer.Option(
                "--steps",
                min=1,
                metavar="N",
                help="Run length in updates ('0.9dur' durations).",
                show_default=False,
            ),
        ] = None,
        total_steps: Annotated[int | None, typer.Option("--total-steps", hidden=True)] = None,
        tolerance: Annotated[
            float | None,
            typer.Option(
                "--tolerance",
                min=0.0,
                help="Relative tolerance (default 1e-9; 2^-23 for float32 TensorBoard logs).",
            ),
        ] = None,
        tag: Annotated[
            str | None, typer.Option("--tag", help="Series to read: tag, column or metric key.")
        ] = None,
        group: Annotated[int, typer.Option("--group", min=0, help="Param group.")] = 0,
        tracking_uri: Annotated[
            str | None, typer.Option("--tracking-uri", help="MLflow tracking URI for mlflow:<run_id>.")
        ] = None,
        fmt: Annotated[VerifyFormat, typer.Option("--format", help="Output format.")] = VerifyFormat.text,
        lr_read: Annotated[
            LrRead,
            typer.Option(
                "--lr-read",
                help="Where the loop read the LR it logged: just before optimizer.step() (docs/verify.md; "
                "cosanneal's telemetry) or after scheduler.step().",
            ),
        ] = LrRead.before_optimizer_step,
        first_step: Annotated[
            int,
            typer.Option(
                "--first-step",
                min=0,
                help="The run's first update; earlier steps are not expected in the trace.",
            ),
        ] = 0,
    ) -> None:
        """Compare the LR a job really used with its schedule, and explain the difference.

        SOURCE is a run directory (its own schedule is the reference), a TensorBoard log directory,
        a .csv/.jsonl of (step, lr) or mlflow:<run_id>; the schedule can also be a training config.
        Exit 0 match, 1 mismatch, 3 incomplete trace, 2 bad input.
        """
        import json

        from cosanneal.analysis.trace_sources import read_trace
        from cosanneal.analysis.verify import format_verdict, verify
        from cosanneal.errors import ScheduleError, SpecError
        from cosanneal.schedules.replan import apply_changes
        from cosanneal.schedules.spec import load_spec, read_mapping

        steps = renamed(steps, total_steps, old="--total-steps", new="--steps")
        trace = read_trace(source, tag=tag, group=group, tracking_uri=tracking_uri)
        scale = 1.0
        if schedule is not None and is_training_config(read_mapping(schedule)):
            config_run = load_bound(schedule, sets, steps, steps_per_epoch)
            spec, origin = config_run.schedule, str(schedule)
            steps_per_epoch = config_run.steps_per_epoch
        elif schedule is not None or sets:
            spec = load_spec(schedule, sets or ())
            origin = str(schedule) if schedule is not None else "--set"
        elif trace.schedule is not None:
            spec, scale, origin = trace.schedule, trace.scale, "the run's stored schedule"
        else:
            raise SpecError(f"{source}: no schedule stored with this trace; pass --schedule SPEC")
        for name, value in spec.unbound_fields().items():
            if value.endswith("ep") and steps_per_epoch is None:
                raise SpecError(f"{origin}: {name}={value!r} is in epochs; pass --steps-per-epoch N")
            if value.endswith("dur") and steps is None:
                raise SpecError(f"{origin}: {name}={value!r} is a fraction of the run; pass --steps N")
        try:
            bound = spec.bind(total_steps=steps, steps_per_epoch=steps_per_epoch)
        except ScheduleError as exc:
            raise SpecError(f"{origin}: {exc}") from None
        changes = _schedule_changes(source)
        try:
            bound = apply_changes(bound, changes)
        except ScheduleError as exc:
            raise SpecError(f"{source}: {exc}") from None
        tol = 1e-9 if tolerance is None else tolerance
        if tolerance is None and trace.resolution > tol:
            tol = trace.resolution  # float32 values cannot match closer than their own rounding
        verdict = verify(
            trace.steps,
            trace.lrs,
            bound,
            tol,
            scale=scale,
            steps_per_epoch=steps_per_epoch if steps_per_epoch is not None else trace.steps_per_epoch,
            lr_read=lr_read.value,
            stride=trace.stride,
            first_step=first_step,
            last_step=trace.last_step,
        )
        if fmt is VerifyFormat.json:
            payload = {
                "source": trace.source,
                "schedule": bound.to_dict(),
                "scale": scale,
                "world_size_changes": [e for e in changes if e["kind"] == "world_size_changed"],
                "replans": [
                    {k: v for k, v in e.items() if k != "schedule"}
                    for e in changes
                    if e["kind"] == "schedule_replanned"
                ],
                **verdict.to_dict(),
            }
            typer.echo(json.dumps(payload, indent=2))
        else:
            typer.echo(format_verdict(verdict, trace.source))
            for e in changes:
                if e["kind"] == "schedule_replanned":
                    typer.echo(
                        f"replanned at update {e['step']} ({e.get('mode')}): {e.get('total_steps_before')} -> "
                        f"{e.get('total_steps')} updates, schedule {e.get('fingerprint_before')} -> "
                        f"{e.get('fingerprint_after')}; expected LR from the new plan from there"
                    )
                    continue
                typer.echo(
                    f"world size {e.get('from_world_size')} -> {e.get('to_world_size')} at update {e['step']} "
                    f"({e.get('rule')}): expected LR x {float(e.get('lr_factor', 1.0)):.6g} from there, the "
                    f"schedule advancing {float(e.get('ratio', 1.0)):.6g} steps per update"
                )
        raise typer.Exit(EXIT_CODES[verdict.status])


def _schedule_changes(source: str) -> list[dict[str, Any]]:
    """The schedule-changing events of a run directory (world-size changes, replans; none for other sources)."""
    from cosanneal import runs

    path = Path(source)
    if not (path.is_dir() and (path / "run.db").exists()):
        return []
    from cosanneal.schedules.replan import CHANGE_EVENTS

    with runs.open(path) as run:
        events = [e for e in run.events() if e.get("kind") in CHANGE_EVENTS]
    return [{k: v for k, v in e.items() if k != "wall"} for e in events]
