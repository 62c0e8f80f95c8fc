"""The progress of ``cosanneal train``: a rich bar on a terminal, plain log lines everywhere else.

Both show the same fields: updates done, the training loss (the mean of the last :data:`LOSS_WINDOW`
updates' losses), the last validation metric, the LR, the cycle and phase of the schedule, the speed
(updates per second this session) and the time left::

    update 120/800 (15%) loss 2.314 val_ppl 7.1 lr 2.9e-03 cycle 0 warmup 3.1 updates/s eta 3m40s

On a terminal (``rich.console.Console.is_terminal``, or a notebook) a bar with the count and the time
left (``eta 1:23``) is redrawn at most every :data:`BAR_SECONDS`, the fields on the line under it. When the stream is not a terminal (a SLURM log, CI, ``| tee``) a line
like the one above is written every ``every_seconds`` instead (``telemetry.progress_seconds``); the
first update and the close always write one, so even a short job logs where it started and ended.

The loss is read only when a line or the bar is drawn (one host-device copy of the last few losses then,
never one per update).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import torch

from cosanneal.schedules import Schedule

__all__ = ["BAR_SECONDS", "LOSS_WINDOW", "Progress", "Snapshot", "clock_duration", "log_duration"]

#: The loss shown is the mean of the last this many updates' training losses (fewer at the start).
LOSS_WINDOW = 50
#: The bar is redrawn at most this often (seconds).
BAR_SECONDS = 0.2

Clock = Callable[[], float]


def log_duration(seconds: float) -> str:
    """A duration for a log line: ``45s``, ``3m40s``, ``2h05m`` (rounded to the second / minute).

    Example:
        >>> log_duration(45.4), log_duration(220), log_duration(7500), log_duration(0)
        ('45s', '3m40s', '2h05m', '0s')
    """
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    m = round(seconds / 60)
    return f"{m // 60}h{m % 60:02d}m"


def clock_duration(seconds: float) -> str:
    """A duration as a clock for the bar: ``0:45``, ``1:23``, ``2:05:00``.

    Example:
        >>> clock_duration(45), clock_duration(83), clock_duration(7500)
        ('0:45', '1:23', '2:05:00')
    """
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one progress line or bar shows.

    Attributes:
        done: updates done.
        total: updates in the run.
        loss: mean training loss of the last :data:`LOSS_WINDOW` updates (``None``: none seen).
        metric: ``(name, value)`` of the last validation metric (``None``: not evaluated yet).
        lr: the LR of the first param group at the last update.
        cycle: the schedule's cycle index at that update.
        phase: the schedule's phase there (``warmup``, ``anneal`` or ``hold``).
        rate: updates per second since this session's first update (``None`` before a second one).
        eta: seconds left at that rate (``None`` when the rate is unknown).
    """

    done: int
    total: int
    loss: float | None
    metric: tuple[str, float] | None
    lr: float
    cycle: int
    phase: str
    rate: float | None
    eta: float | None

    def fields(self, lr_format: str = ".1e") -> list[str]:
        """The fields after the update count, in order (loss, metric, lr, cycle, phase, speed)."""
        out = []
        if self.loss is not None:
            out.append(f"loss {self.loss:.4g}")
        if self.metric is not None:
            out.append(f"{self.metric[0]} {self.metric[1]:.4g}")
        out += [f"lr {self.lr:{lr_format}}", f"cycle {self.cycle}", self.phase]
        if self.rate is not None:
            out.append(f"{self.rate:.3g} updates/s")
        return out

    def line(self) -> str:
        """The plain log line.

        Example:
            >>> Snapshot(120, 800, 2.3141, ("val_ppl", 7.1), 2.9e-3, 0, "warmup", 3.1, 220.0).line()
            'update 120/800 (15%) loss 2.314 val_ppl 7.1 lr 2.9e-03 cycle 0 warmup 3.1 updates/s eta 3m40s'
        """
        percent = math.floor(100 * self.done / self.total) if self.total > 0 else 100
        parts = [f"update {self.done}/{self.total} ({percent}%)", *self.fields()]
        if self.eta is not None:
            parts.append(f"eta {log_duration(self.eta)}")
        return " ".join(parts)

    def bar_info(self) -> str:
        """The line under the bar (the count and the time left are on the bar's row).

        Example:
            >>> Snapshot(120, 800, 2.3141, ("val_ppl", 7.1), 2.9e-3, 0, "warmup", 3.1, 83.0).bar_info()
            'loss 2.314  val_ppl 7.1  lr 2.900e-03  cycle 0  warmup  3.1 updates/s'
        """
        return "  ".join(self.fields(".3e"))

    def bar_eta(self) -> str:
        """The time left, labelled, for the bar's row (``""`` while unknown).

        Example:
            >>> Snapshot(120, 800, 2.3141, None, 2.9e-3, 0, "warmup", 3.1, 83.0).bar_eta()
            'eta 1:23'
        """
        return "" if self.eta is None else f"eta {clock_duration(self.eta)}"


def _mean_loss(losses: collections.deque[Any]) -> float | None:
    """The mean of the recorded losses (tensors are copied to the host once, together)."""
    if not losses:
        return None
    tensors = [v.detach().reshape(()) for v in losses if isinstance(v, torch.Tensor)]
    total = sum(float(v) for v in losses if not isinstance(v, torch.Tensor))
    if tensors:
        total += float(torch.stack(tensors).cpu().double().sum())
    return total / len(losses)


def _bar(console: Any) -> Any:
    """A rich progress display: ``train ━━━━╺━━━ 120/800 eta 1:23``, the fields on the line below.

    The fields have a line of their own so that an 80-column terminal shows the whole count and bar.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Bar(RichProgress):
        def get_renderables(self) -> Any:
            yield self.make_tasks_table(self.tasks)
            for task in self.tasks:
                yield Text(str(task.fields.get("info", "")), overflow="fold")

    return Bar(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
        console=console,
        transient=False,
    )


class Progress:
    """The progress of a training job on ``stream``: a rich bar on a terminal, else a line every few seconds.

    Args:
        enabled: show anything at all (``--no-progress``: nothing).
        total: updates in the run.
        every_seconds: seconds between two log lines when ``stream`` is not a terminal
            (``telemetry.progress_seconds``); the first update and :meth:`close` always write one.
        metric: the validation metric to show (``checkpoint.best_metric``); when the evaluation does
            not report it, ``val_loss`` or its first metric is shown.
        stream: where to write (default: ``sys.stderr``).
        clock: seconds on a monotonic clock (tests pass a fake one).
        terminal: draw the bar (True) or write lines (False); default: whether rich sees a terminal
            (or a notebook) on ``stream``.

    Example:
        >>> import io
        >>> from cosanneal import Cosine
        >>> out, now = io.StringIO(), [0.0]
        >>> p = Progress(True, 10, every_seconds=30, stream=out, clock=lambda: now[0], terminal=False)
        >>> sched = Cosine(0.1, warmup_steps=2, cycle_steps=8)
        >>> for step in range(10):
        ...     now[0] += 1.0
        ...     p.update(step + 1, sched(step), sched, step, loss=10.0 - step, metrics={"val_loss": 1.5})
        >>> p.close()
        >>> print(out.getvalue(), end="")
        update 1/10 (10%) loss 10 val_loss 1.5 lr 0.0e+00 cycle 0 warmup
        update 10/10 (100%) loss 5.5 val_loss 1.5 lr 3.8e-03 cycle 0 anneal 1 updates/s eta 0s
    """

    def __init__(
        self,
        enabled: bool,
        total: int,
        *,
        every_seconds: float = 30.0,
        metric: str = "val_loss",
        stream: TextIO | None = None,
        clock: Clock = time.monotonic,
        terminal: bool | None = None,
    ) -> None:
        self.enabled = enabled
        self.total = total
        self.every_seconds = every_seconds
        self.metric = metric
        self.clock = clock
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self._losses: collections.deque[Any] = collections.deque(maxlen=LOSS_WINDOW)
        self._metrics: Mapping[str, float] = {}
        self._state: tuple[int, float, Schedule, int] | None = None  # done, lr, schedule, step
        self._origin: tuple[float, int] | None = None  # (time, done) at this session's first update
        self._last_draw = -math.inf
        self._last_line: str | None = None
        self._last_key: tuple[int, tuple[str, float] | None] | None = None  # (done, metric) drawn last
        self._closed = False
        self.terminal = False
        if not enabled:
            return
        from rich.console import Console

        console = Console(file=self.stream)
        self.terminal = (console.is_terminal or console.is_jupyter) if terminal is None else terminal
        if self.terminal:
            self._progress = _bar(console)
            self._task = self._progress.add_task("train", total=total, info="", eta="")
            self._progress.start()

    # ---- what is shown ---------------------------------------------------------------------
    def _metric(self) -> tuple[str, float] | None:
        metrics = self._metrics
        for name in (self.metric, "val_loss"):
            if name in metrics:
                return name, float(metrics[name])
        if metrics:
            name = next(iter(metrics))
            return name, float(metrics[name])
        return None

    def snapshot(self) -> Snapshot | None:
        """What would be shown now (``None`` before the first update)."""
        if self._state is None or self._origin is None:
            return None
        done, lr, schedule, step = self._state
        t0, done0 = self._origin
        elapsed = self.clock() - t0
        rate = (done - done0) / elapsed if done > done0 and elapsed > 0 else None
        eta = max(0, self.total - done) / rate if rate else None
        return Snapshot(
            done=done,
            total=self.total,
            loss=_mean_loss(self._losses),
            metric=self._metric(),
            lr=lr,
            cycle=int(schedule.cycle(step).index),
            phase=schedule.phase(step),
            rate=rate,
            eta=eta,
        )

    def _draw(self) -> None:
        snap = self.snapshot()
        if snap is None:
            return
        if self.terminal:
            self._progress.update(self._task, completed=snap.done, info=snap.bar_info(), eta=snap.bar_eta())
            return
        line, key = snap.line(), (snap.done, snap.metric)
        if line == self._last_line or (self._closed and key == self._last_key):
            return  # the close repeats a line only when it shows something new (the last evaluation)
        self._last_line, self._last_key = line, key
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop the training
            self.stream.write(line + "\n")
            self.stream.flush()

    # ---- the loop's calls ------------------------------------------------------------------
    def update(
        self,
        done: int,
        lr: float,
        schedule: Schedule,
        step: int,
        *,
        loss: Any = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record update ``step`` (``done`` updates now, at LR ``lr``); draw when it is time to.

        Args:
            done: updates done, this one included.
            lr: the LR of the first param group at this update.
            schedule: the schedule the LR came from (for the cycle and phase of ``step``).
            step: the update's schedule step.
            loss: its training loss (a float or a tensor; read only when drawn).
            metrics: the last validation metrics (``{"val_loss": ...}``), if any.
        """
        if not self.enabled or self._closed:
            return
        now = self.clock()
        if loss is not None:
            self._losses.append(loss)
        if metrics is not None:
            self._metrics = metrics
        self._state = (done, lr, schedule, step)
        first = self._origin is None
        if first:
            self._origin = (now, done)
        if not self.terminal and done >= self.total:
            return  # the last update's line is the close's, with the final evaluation in it
        if not first and now - self._last_draw < (BAR_SECONDS if self.terminal else self.every_seconds):
            return
        self._last_draw = now
        self._draw()

    def set_total(self, total: int) -> None:
        """A new run length (a resume at another world size re-bound it): the percent, eta and bar follow."""
        self.total = total
        if self.enabled and self.terminal:  # the rich bar was started with the old length
            self._progress.update(self._task, total=total)

    def close(self, metrics: Mapping[str, float] | None = None) -> None:
        """Draw the final state (with the last evaluation's ``metrics``) and stop the bar."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if metrics is not None:
            self._metrics = metrics
        self._draw()
        if self.terminal:
            self._progress.stop()
