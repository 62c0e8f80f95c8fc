"""``cosanneal replan RUN --total N [--mode stretch|cycles|cooldown]``: change a run's horizon safely.

Checks the new plan against the run's schedule where the switch can happen (the running job's next
update, and the newest checkpoint a stopped job resumes from), prints the hand-off and the lint of
the new plan, and leaves the request in the run directory (:mod:`cosanneal.jobs.replan`): a running
job takes it within a second, a stopped one when ``cosanneal train`` resumes it.

Exit codes: 0 written (or checked, with ``--dry-run``); 2 bad input (a plan that would jump the LR, a
mode that cannot continue the schedule, a finished run), as one ``error:`` line, and nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cosanneal.commands.options import examples

__all__ = ["register"]

EXAMPLES = examples(
    "cosanneal replan runs/gpt --total 3000",
    "cosanneal replan runs/gpt --total 3000 --mode cycles --cycles 2",
    "cosanneal replan runs/gpt --total 2000 --mode cooldown --cooldown 0.2 --shape 1-sqrt --dry-run",
)


def _summary(plan: Any, new: Any, lints: list[Any], written: Path | None) -> list[str]:
    at = new.at
    old_lr, new_lr = float(new.before(at)), float(new(at))
    jump = 0.0 if old_lr == new_lr else abs(new_lr - old_lr) / abs(old_lr)
    restarts = [r for r in new.restarts(new.total) if r >= at]
    lines = [
        f"replan ({new.mode}) at update {at}: {plan.total} -> {new.total} updates",
        f"hand-off: LR {old_lr:.10g} before, {new_lr:.10g} after (relative jump {jump:.3g})",
        f"new plan: ends at update {new.horizon:g}, final LR {float(new(new.total)):.6g}"
        + (f", restarts at {', '.join(f'{r:g}' for r in restarts)}" if restarts else ", no restart"),
    ]
    if len(plan.switches) > 1:
        lines.append(
            f"checked at updates {', '.join(map(str, plan.switches))} (a running job switches at the update it "
            "takes the request, a stopped one where it resumes)"
        )
    lines += [f"lint {w.code}: {w.message}" for w in lints] or ["lint: no warnings"]
    if written is None:
        lines.append("dry run: nothing written")
    else:
        lines.append(
            f"wrote {written}: a running job takes it within a second; a stopped one when `cosanneal train` "
            "resumes it"
        )
    return lines


def register(app: typer.Typer) -> None:
    """Add ``replan`` to the CLI."""

    @app.command("replan", epilog=EXAMPLES)
    def replan_command(
        run: Annotated[Path, typer.Argument(metavar="RUN", help="The run directory.", show_default=False)],
        total: Annotated[
            int, typer.Option("--total", min=1, help="The run's new length in updates.", show_default=False)
        ],
        mode: Annotated[
            str,
            typer.Option(
                "--mode",
                help="stretch: re-time the rest of the current cycle to end at --total; cycles: keep it, then "
                "add cycles by the schedule's own rule; cooldown: hold the LR, then decay over --cooldown.",
            ),
        ] = "stretch",
        cycles: Annotated[
            int | None,
            typer.Option("--cycles", min=1, help="cycles: how many to add (default: what the rule fits)."),
        ] = None,
        cooldown: Annotated[
            str | None,
            typer.Option(
                "--cooldown",
                help="cooldown: its length, in updates (200) or as a fraction of --total (0.2); "
                "default: from the switch to the end.",
            ),
        ] = None,
        shape: Annotated[str, typer.Option("--shape", help="cooldown: linear, cosine or 1-sqrt.")] = "linear",
        floor: Annotated[
            float | None,
            typer.Option("--floor", help="cooldown: the final LR (default: the old plan's final LR)."),
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check and print the new plan; write nothing.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the new plan as JSON.")] = False,
    ) -> None:
        """Give a run a new total: check the hand-off and the new plan, then leave the request for the job."""
        import json

        from cosanneal.errors import ConfigError
        from cosanneal.jobs.replan import REQUEST, ReplanRequest, request_replan, run_plan
        from cosanneal.schedules import lint

        request = ReplanRequest(
            total=total, mode=mode, cycles=cycles, cooldown=cooldown, shape=shape, floor=floor
        )
        plan = run_plan(run)
        at = plan.checkpoint if plan.checkpoint is not None else plan.next_update
        if plan.finished and plan.schedule.phase(at) == "hold":
            raise ConfigError(
                f"RUN: {run} finished its {plan.total} updates and holds its final LR, so a replan cannot "
                f"continue it without a jump; train a cooldown from one of its checkpoints with "
                f"`cosanneal branch {run} --at STEP`"
            )
        new = request_replan(run, request, schedule=plan.schedule, at=plan.switches, write=not dry_run)
        lints = lint(new, new.total, steps_per_epoch=plan.steps_per_epoch)
        written = None if dry_run else run / REQUEST
        if as_json:
            payload = {
                "request": request.to_dict(),
                "at": new.at,
                "switches": plan.switches,
                "total_before": plan.total,
                "total": new.total,
                "lr_before": float(new.before(new.at)),
                "lr_after": float(new(new.at)),
                "schedule": new.to_dict(),
                "lint": [{"code": w.code, "message": w.message} for w in lints],
                "written": None if written is None else str(written),
            }
            typer.echo(json.dumps(payload, indent=2))
            return
        for line in _summary(plan, new, lints, written):
            typer.echo(line)
        if plan.finished and written is not None:
            typer.echo("the run had finished (max_steps): run `cosanneal train` on it again to continue it")
