"""``cosanneal demo``: one real job end to end, interrupted on purpose, and what each step proved.

The default example is a byte-level GPT on the Python standard library's own sources
(``zoo/configs/pysource_gpt.toml``: warmup + cosine, perplexity as its metric). The demo

1. trains it in a child process (``cosanneal train``) and sends that process a real ``SIGTERM``
   once 40% of the updates are done, as a cluster does before it preempts a job;
2. resumes it here from the checkpoint written on the signal, to the end of the budget;
3. verifies the run store's LR trace against the schedule's closed form (every update present,
   each LR equal to the formula);
4. writes the HTML report next to the run.

A demo run that was interrupted some other way (Ctrl-C, ``kill -9``) resumes when the same command
is run again, without interrupting itself a second time; a finished one is moved aside and the demo
starts over. ``--example digits`` is the fast CNN-on-digits job (warmup + SGDR), run straight through.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from cosanneal.errors import CosannealError

#: The built-in demo jobs: example name -> config in ``cosanneal/zoo/configs``.
EXAMPLES = {"gpt": "pysource_gpt.toml", "digits": "digits_sgdr.toml"}

#: The share of the budget after which the demo interrupts its own training process.
INTERRUPT_AT = 0.4


class DemoError(CosannealError, RuntimeError):
    """A demo step did not do what it should (the message says which)."""


@dataclasses.dataclass
class DemoStep:
    """One step of the demo and what it proved."""

    what: str
    proved: str


@dataclasses.dataclass
class DemoResult:
    """The training result, the steps and what they proved, and the report written."""

    result: Any
    steps: list[DemoStep]
    report: Path | None


def config_path(example: str) -> Path:
    """The config file of a built-in demo job.

    Example:
        >>> config_path("gpt").name
        'pysource_gpt.toml'
    """
    if example not in EXAMPLES:
        raise DemoError(f"--example: must be one of {', '.join(EXAMPLES)}, got {example!r}")
    return Path(str(files("cosanneal.zoo").joinpath(f"configs/{EXAMPLES[example]}")))


def _progress(run_dir: Path) -> tuple[int, int | None]:
    """Updates recorded so far and the run's total (None until the params are written)."""
    from cosanneal import runs

    if not (run_dir / "run.db").is_file():
        return 0, None
    try:
        run = runs.open(run_dir)
    except Exception:  # being created
        return 0, None
    try:
        total = run.params.get("total_steps")
        try:
            steps, _ = run.scalar("lr", 0)
        except KeyError:
            return 0, total
        return (int(steps.max()) + 1 if len(steps) else 0), total
    finally:
        run.close()


def interrupt_child(
    config: Path, run_dir: Path, sets: Sequence[str], *, fresh: bool, progress: bool, at: float = INTERRUPT_AT
) -> DemoStep:
    """Train in a child ``cosanneal train`` process and SIGTERM it once ``at`` of the budget is done.

    Raises:
        DemoError: the child failed, finished before the signal, or did not exit with 143.
    """
    cmd = [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", str(run_dir)]
    cmd += ["--progress" if progress else "--no-progress", *(a for s in sets for a in ("--set", s))]
    if fresh:
        cmd.append("--fresh")
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        while True:
            if child.poll() is not None:
                raise DemoError(
                    f"the training process exited with {child.returncode} before the interruption"
                )
            done, total = _progress(run_dir)
            if total is not None and done >= max(1, round(at * total)):
                break
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if code != 143:
        raise DemoError(f"the training process exited with {code} on SIGTERM, not 143 (checkpoint and exit)")
    from cosanneal.runtime.checkpoints import Checkpoints

    latest = Checkpoints(run_dir / "checkpoints").latest
    if latest is None:
        raise DemoError("SIGTERM left no checkpoint to resume from")
    return DemoStep(
        f"trained in a child process; SIGTERM at update {done} of {total}",
        f"exit 143 after writing checkpoint step-{latest.step:09d} on the signal (the run store durable up to it)",
    )


def verify_run(run_dir: Path) -> DemoStep:
    """Check the run store's LR trace against the stored schedule (as ``cosanneal verify RUN`` does).

    Raises:
        DemoError: the trace does not match or has holes.
    """
    from cosanneal.analysis.trace_sources import read_trace
    from cosanneal.analysis.verify import format_verdict, verify

    trace = read_trace(str(run_dir))
    if trace.schedule is None:
        raise DemoError(f"{run_dir}: the run store holds no schedule")
    bound = trace.schedule.bind()
    verdict = verify(
        trace.steps, trace.lrs, bound, max(1e-9, trace.resolution), scale=trace.scale,
        stride=trace.stride, last_step=trace.last_step,
    )  # fmt: skip
    if verdict.status != "match":
        raise DemoError(f"verify: {format_verdict(verdict, str(run_dir)).splitlines()[0]}")
    return DemoStep(
        f"cosanneal verify {run_dir}",
        f"all {verdict.steps} updates present once; every LR equals the closed form "
        f"(max relative error {verdict.max_rel_error:.1e})",
    )


def run_demo(
    example: str,
    run_dir: Path,
    sets: Sequence[str] = (),
    *,
    fresh: bool = False,
    progress: bool = True,
    interrupt: bool | None = None,
    log: Callable[[str], None] = print,
    resume_hint: str | None = None,
) -> DemoResult:
    """Run a built-in demo job: interrupt, resume, verify, report (see the module docstring).

    Args:
        example: ``gpt`` (default of the CLI) or ``digits``.
        run_dir: where the run goes.
        sets: ``key=value`` overrides of the example's config.
        fresh: start over (an existing run is moved aside); a finished run always starts over.
        progress: show progress bars.
        interrupt: interrupt the training process once (default: for ``gpt``, on a new run).
        log: where one-line messages go.
        resume_hint: the command that resumes the demo, quoted in messages.
    """
    from cosanneal.analysis.report import build_report
    from cosanneal.jobs.config import load_config
    from cosanneal.jobs.trainer import Trainer

    path = config_path(example)
    cfg = load_config(path, list(sets))
    steps: list[DemoStep] = []
    started = not (run_dir / "run.db").is_file()
    fresh = fresh or _finished(run_dir)
    if interrupt is None:
        interrupt = example == "gpt" and (fresh or started)
    if interrupt:
        steps.append(interrupt_child(path, run_dir, sets, fresh=fresh, progress=progress))
        fresh = False
    result = Trainer(cfg, run_dir, fresh=fresh, log=log, progress=progress, resume_hint=resume_hint).run()
    if result.status != "finished":
        return DemoResult(result, steps, None)
    resumed = _resumed_from(run_dir)
    steps.append(
        DemoStep(
            f"resumed from update {resumed} to {result.steps}"
            if resumed is not None
            else f"trained {result.steps} updates",
            _rows_line(run_dir, result.steps),
        )
    )
    steps.append(verify_run(run_dir))
    report = build_report([run_dir], run_dir / "report.html", title=f"cosanneal demo: {cfg.name}")
    metric = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.final_metrics.items()))
    steps.append(
        DemoStep(f"report {report.html}", f"final {metric}; LR, losses, restarts and checkpoints plotted")
    )
    return DemoResult(result, steps, report.html)


def _resumed_from(run_dir: Path) -> int | None:
    from cosanneal import runs

    run = runs.open(run_dir)
    try:
        resumed = run.events("resumed")
        return int(resumed[-1]["from_step"]) if resumed else None
    finally:
        run.close()


def _rows_line(run_dir: Path, updates: int) -> str:
    import numpy as np

    from cosanneal import runs

    run = runs.open(run_dir)
    try:
        steps, _ = run.scalar("lr", 0)
    finally:
        run.close()
    if len(steps) != updates or not np.array_equal(steps, np.arange(updates)):
        raise DemoError(f"the run store holds {len(steps)} LR rows for {updates} updates")
    return f"one LR row per update, {updates} of {updates}: nothing lost or recorded twice across the interruption"


def _finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that reached its end (finished or early-stopped)."""
    if not (run_dir / "run.db").is_file():
        return False
    from cosanneal import runs

    try:
        run = runs.open(run_dir)
    except Exception:  # not a readable run store: let the trainer say what is wrong with it
        return False
    try:
        return bool(run.events("run_finished") or run.events("early_stop"))
    finally:
        run.close()


__all__ = ["EXAMPLES", "DemoResult", "DemoStep", "config_path", "interrupt_child", "run_demo", "verify_run"]
