"""Early stopping that compares metrics at cycle ends only, so a warm restart's spike never stops a run.

With warm restarts (SGDR) the LR jumps back to a peak at every restart and the validation loss
jumps up with it; a per-evaluation patience sees "no improvement" right there and stops a run that
was about to beat its best. :class:`RestartAwareEarlyStopping` only compares *cycle-end* values:
the last evaluation before each restart.

Which evaluations are cycle ends: ``step`` is the number of optimizer updates done when the metric
was measured, so the evaluation belongs to the cycle of the last update, ``c = cycle(step - 1)``
(``cycle(0)`` for ``step = 0``). It is a cycle end

* at once, when ``step >= start_c + length_c`` (the evaluation sits right at or after the cycle's
  end, the usual "evaluate every cycle_steps" case);
* or when a later evaluation falls in a later cycle (the pending one was the last before the restart);
* in the final hold phase (no restart can follow), every evaluation;
* or when the caller says so with :meth:`RestartAwareEarlyStopping.cycle_end`.

A cycle-end value ``v`` improves on the best ``b`` when ``v < b - min_delta`` (``mode="min"``) or
``v > b + min_delta`` (``mode="max"``); a non-finite value never improves. After
``patience_cycles`` cycle ends in a row without improvement, :attr:`should_stop` becomes true.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal

from cosanneal.errors import StateError
from cosanneal.schedules.base import Schedule

__all__ = ["STATE_VERSION", "RestartAwareEarlyStopping"]

#: Version of :meth:`RestartAwareEarlyStopping.state_dict`.
STATE_VERSION = 1


def _json_float(value: float | None) -> float | str | None:
    return value if value is None or math.isfinite(value) else str(value)


class RestartAwareEarlyStopping:
    """Stop after ``patience_cycles`` cycle ends without improvement of ``metric``.

    Args:
        metric: the key read from the ``metrics`` mapping given to :meth:`update`.
        mode: ``"min"`` (lower is better) or ``"max"``.
        patience_cycles: cycle ends in a row without improvement that stop the run (>= 1).
        min_delta: the smallest change that counts as an improvement (>= 0).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, cycle_steps=100, max_cycles=None)  # restarts at 100, 200, ...
        >>> stop = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
        >>> curve = {50: 1.0, 100: 0.5, 150: 2.0, 200: 0.6, 250: 3.0, 300: 0.55}  # spikes at 150, 250
        >>> for step, loss in curve.items():
        ...     _ = stop.update(step, {"val_loss": loss}, s)
        >>> stop.best, stop.best_step, stop.bad_cycles, stop.should_stop
        (0.5, 100, 2, True)
        >>> stop.reason
        'val_loss did not improve on 0.5 (step 100) for 2 cycle ends (last 0.55 at step 300)'
    """

    def __init__(
        self,
        metric: str,
        mode: Literal["min", "max"] = "min",
        patience_cycles: int = 2,
        min_delta: float = 0.0,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty metric name, got {metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if isinstance(patience_cycles, bool) or not isinstance(patience_cycles, int) or patience_cycles < 1:
            raise ValueError(f"patience_cycles must be an integer >= 1, got {patience_cycles!r}")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, numbers.Real)
            or not 0.0 <= float(min_delta) < math.inf
        ):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.metric: str = metric
        self.mode: Literal["min", "max"] = mode
        self.patience_cycles: int = patience_cycles
        self.min_delta: float = float(min_delta)
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_cycles: int = 0
        self.should_stop: bool = False
        self.reason: str | None = None
        #: Every cycle end compared: ``{"step", "cycle", "value", "improved"}``.
        self.cycle_ends: list[dict[str, Any]] = []
        self._pending: tuple[int, int, float] | None = None  # (step, cycle, value) awaiting a restart

    # ---- recording --------------------------------------------------------------------------
    def update(self, step: int, metrics: Mapping[str, Any], schedule: Schedule | None = None) -> bool:
        """Record an evaluation taken after ``step`` updates; return :attr:`should_stop`.

        Args:
            step: optimizer updates done when the metrics were measured (>= 0).
            metrics: a mapping holding :attr:`metric` (other keys are ignored).
            schedule: the schedule in use, to find cycle ends; ``None``: only :meth:`cycle_end`
                calls are compared.

        Raises:
            KeyError: ``metrics`` lacks :attr:`metric`.
        """
        if self.metric not in metrics:
            keys = ", ".join(sorted(map(str, metrics))) or "none"
            raise KeyError(f"metric {self.metric!r} is not in the metrics given (keys: {keys})")
        value = float(metrics[self.metric])
        step = _check_step(step)
        if schedule is None:
            return self.should_stop
        last = max(step - 1, 0)
        info = schedule.cycle(last)
        pending = self._pending
        if pending is not None and pending[1] < info.index:
            self._compare(pending[0], pending[1], pending[2])
        if schedule.phase(last) == "hold" or (step > 0 and step >= info.start + info.length):
            self._compare(step, info.index, value)
        else:
            self._pending = (step, info.index, value)
        return self.should_stop

    def cycle_end(self, step: int, value: float, cycle: int | None = None) -> bool:
        """Compare ``value`` as a cycle end now (for loops that know their restarts); return :attr:`should_stop`.

        A value still pending from :meth:`update` is dropped: this call is the cycle's end.
        """
        index = cycle if cycle is not None else len(self.cycle_ends)
        self._compare(_check_step(step), index, float(value))
        return self.should_stop

    def _compare(self, step: int, cycle: int, value: float) -> None:
        self._pending = None
        best = self.best
        if best is None:
            improved = math.isfinite(value)
        elif self.mode == "min":
            improved = value < best - self.min_delta
        else:
            improved = value > best + self.min_delta
        self.cycle_ends.append(
            {"step": step, "cycle": cycle, "value": _json_float(value), "improved": improved}
        )
        if improved:
            self.best = value
            self.best_step = step
            self.bad_cycles = 0
            return
        self.bad_cycles += 1
        if self.bad_cycles >= self.patience_cycles and not self.should_stop:
            self.should_stop = True
            ref = "no finite value yet" if best is None else f"{best!r} (step {self.best_step})"
            self.reason = (
                f"{self.metric} did not improve on {ref} for {self.bad_cycles} cycle ends "
                f"(last {value!r} at step {step})"
            )

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: best value and step, bad-cycle count, decision, history, pending value."""
        pending = self._pending
        return {
            "version": STATE_VERSION,
            "metric": self.metric,
            "mode": self.mode,
            "best": self.best,
            "best_step": self.best_step,
            "bad_cycles": self.bad_cycles,
            "should_stop": self.should_stop,
            "reason": self.reason,
            "cycle_ends": [dict(c) for c in self.cycle_ends],
            "pending": None if pending is None else [pending[0], pending[1], _json_float(pending[2])],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            StateError: a different version, metric or mode, or a malformed state.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else type(state).__name__
            raise StateError(f"early-stopping state version must be {STATE_VERSION}, got {got!r}")
        for key in ("metric", "mode"):
            if state.get(key) != getattr(self, key):
                raise StateError(
                    f"early-stopping state was saved for {key}={state.get(key)!r}, this one has "
                    f"{key}={getattr(self, key)!r}"
                )
        try:
            best = None if state["best"] is None else float(state["best"])
            best_step = None if state["best_step"] is None else int(state["best_step"])
            bad, stop = int(state["bad_cycles"]), bool(state["should_stop"])
            reason = None if state["reason"] is None else str(state["reason"])
            ends = [dict(c) for c in state["cycle_ends"]]
            raw = state["pending"]
            pending = None if raw is None else (int(raw[0]), int(raw[1]), float(raw[2]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateError(f"early-stopping state is malformed: {exc!r}") from exc
        self.best = best
        self.best_step = best_step
        self.bad_cycles = bad
        self.should_stop = stop
        self.reason = reason
        self.cycle_ends = ends
        self._pending = pending

    def __repr__(self) -> str:
        return (
            f"RestartAwareEarlyStopping({self.metric!r}, mode={self.mode!r}, best={self.best!r}, "
            f"bad_cycles={self.bad_cycles}/{self.patience_cycles}, should_stop={self.should_stop})"
        )


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an integer >= 0 (updates done), got {step!r}")
    return int(step)
