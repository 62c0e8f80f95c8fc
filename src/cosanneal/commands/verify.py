"""``cosanneal verify SOURCE``: check that a job used the LR it was configured for.

Exit codes: 0 the trace matches the schedule, 1 it does not (diagnoses printed; also when steps are
missing too), 2 bad input, 3 the trace is incomplete (steps missing; every step present matches).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

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


def register(app: typer.Typer) -> None:
    """Add the ``verify`` command to ``app``."""

    @app.command("verify")
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
                "--schedule", help="Schedule spec file (default for a run directory: its own schedule)."
            ),
        ] = None,
        sets: Annotated[
            list[str] | None,
            typer.Option("--set", metavar="KEY=VALUE", help="Override a spec value (repeatable)."),
        ] = None,
        steps_per_epoch: Annotated[
            float | None,
            typer.Option("--steps-per-epoch", min=0.0, help="Optimizer updates per epoch ('3ep' durations)."),
        ] = None,
        total_steps: Annotated[
            int | None,
            typer.Option("--total-steps", min=1, help="Run length in updates ('0.9dur' durations)."),
        ] = None,
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
        """Compare the LR a job really used with its schedule, and explain the difference."""
        import json

        from cosanneal.analysis.trace_sources import read_trace
        from cosanneal.analysis.verify import format_verdict, verify
        from cosanneal.errors import ScheduleError, SpecError
        from cosanneal.schedules.spec import load_spec

        trace = read_trace(source, tag=tag, group=group, tracking_uri=tracking_uri)
        scale = 1.0
        if schedule is not None or sets:
            spec = load_spec(schedule, sets or ())
            origin = str(schedule) if schedule is not None else "--set"
        elif trace.schedule is not None:
            spec, scale, origin = trace.schedule, trace.scale, "the run's stored schedule"
        else:
            raise SpecError(f"{source}: no schedule stored with this trace; pass --schedule SPEC")
        for name, value in spec.unbound_fields().items():
            if value.endswith("ep") and steps_per_epoch is None:
                raise SpecError(f"{origin}: {name}={value!r} is in epochs; pass --steps-per-epoch N")
            if value.endswith("dur") and total_steps is None:
                raise SpecError(f"{origin}: {name}={value!r} is a fraction of the run; pass --total-steps N")
        try:
            bound = spec.bind(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        except ScheduleError as exc:
            raise SpecError(f"{origin}: {exc}") from None
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
                **verdict.to_dict(),
            }
            typer.echo(json.dumps(payload, indent=2))
        else:
            typer.echo(format_verdict(verdict, trace.source))
        raise typer.Exit(EXIT_CODES[verdict.status])
