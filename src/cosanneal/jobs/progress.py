"""The progress bar of ``cosanneal train``: LR, cycle and phase next to the updates done."""

from __future__ import annotations

import time

from cosanneal.schedules import Schedule


class Progress:
    """A rich progress bar with LR, cycle and phase; updated a few times a second, not every step."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self._last = 0.0
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, info="")
        self._progress.start()

    def update(self, done: int, lr: float, schedule: Schedule, step: int) -> None:
        """Show ``done`` updates, the LR and where in the schedule update ``step`` was."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        info = f"lr {lr:.3e}  cycle {schedule.cycle(step).index}  {schedule.phase(step)}"
        self._progress.update(self._task, completed=done, info=info)

    def close(self) -> None:
        """Stop the bar (its last state stays on the terminal)."""
        if self.enabled:
            self._progress.stop()


__all__ = ["Progress"]
