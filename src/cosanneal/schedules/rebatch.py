r"""Rebatch: a schedule re-bound in samples after the global batch changed, with its LR scaled.

A job resumed at another world size that keeps its per-rank batch trains with a global batch ``r``
times the old one (``r = B' / B``). The schedule is defined in updates of the old global batch, so
from the switch at update ``d`` on, update ``u`` trains at the schedule position

.. math:: p(u) = d + (u - d)\,r \qquad (u \ge d), \qquad p(u) = u \qquad (u < d)

(the same sample count: ``u - d`` new updates hold ``(u - d) r`` old ones), and its LR is scaled by
``f`` (the linear rule ``f = r``, the square-root rule ``f = sqrt(r)``):

.. math:: \mathrm{lr}(u) = f \cdot s(p(u)) \quad (u \ge d), \qquad \mathrm{lr}(u) = s(u) \quad (u < d).

Fractional positions are evaluated with the closed form of ``s`` (every schedule takes float steps).
Several switches chain by nesting: ``Rebatch(Rebatch(s, d1, r1, f1), d2, r2, f2)``. The Keras and jax
adapters' traced form refuses it (its positions are fractional); the PyTorch adapter runs it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules._traced import UntraceableScheduleError, _compiles
from cosanneal.schedules.base import (
    CycleInfo,
    FloatArray,
    Schedule,
    as_number,
    check_step,
    from_dict,
    register,
)

R = TypeVar("R", bound="Rebatch")

__all__ = ["Rebatch", "base_schedule", "rebatch_factors", "rebound"]


def _positive(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ScheduleError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@register("rebatch")
@dataclasses.dataclass(frozen=True)
class Rebatch(Schedule):
    """``schedule`` re-bound in samples from update ``at`` on, its LR times ``lr_factor``.

    Formula: ``p(u) = u`` for ``u < at``, ``p(u) = at + (u - at) * ratio`` after;
    ``lr(u) = schedule(u)`` before ``at`` and ``lr_factor * schedule(p(u))`` from ``at`` on.

    Args:
        schedule: the schedule before the switch (bound; a mapping with a ``kind`` key is built).
        at: the update count at the switch (the first update trained with the new global batch).
        ratio: new global batch over the old one, ``r > 0``.
        lr_factor: the LR's factor from the switch on (``r``, ``sqrt(r)`` or 1), ``> 0``.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> b = Rebatch(s, at=40, ratio=0.5, lr_factor=0.5)
        >>> b(39) == s(39), b(40) == 0.5 * s(40), b(60) == 0.5 * s(50), b.position(60)
        (True, True, True, 50.0)
        >>> from_dict(b.to_dict()) == b, b.fingerprint() != s.fingerprint()
        (True, True)
    """

    schedule: Schedule
    at: int
    ratio: float
    lr_factor: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise ScheduleError(f"schedule must be a schedule, got {self.schedule!r}")
        at: Any = self.at
        if isinstance(at, float) and at.is_integer():
            at = int(at)
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ScheduleError(f"at must be a whole number of updates >= 0, got {self.at!r}")
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "ratio", _positive("ratio", self.ratio))
        object.__setattr__(self, "lr_factor", _positive("lr_factor", self.lr_factor))

    @classmethod
    def from_fields(cls: type[R], fields: Mapping[str, Any]) -> R:
        """Build from a parameter mapping whose ``schedule`` may be a mapping with a ``kind`` key.

        Example:
            >>> Rebatch.from_fields({"schedule": {"kind": "constant", "lr": 0.1}, "at": 3, "ratio": 2.0})(9)
            0.1
        """
        inner = fields.get("schedule")
        if isinstance(inner, Mapping):
            try:
                inner = from_dict(inner)
            except ScheduleError as exc:
                raise ScheduleError(f"schedule: {exc}") from exc
            fields = {**fields, "schedule": inner}
        return super().from_fields(fields)

    # ---- durations --------------------------------------------------------------------------
    def unbound_fields(self) -> dict[str, str]:
        """The inner schedule's parameters not in steps yet (``schedule.<name>``)."""
        return {f"schedule.{k}": v for k, v in self.schedule.unbound_fields().items()}

    def bind(
        self: R,
        total_steps: float | None = None,
        steps_per_epoch: float | None = None,
        *,
        samples_per_update: float | None = None,
        tokens_per_update: float | None = None,
    ) -> R:
        """Return this schedule with the inner schedule's durations bound (see :meth:`Schedule.bind`)."""
        inner = self.schedule.bind(
            total_steps,
            steps_per_epoch,
            samples_per_update=samples_per_update,
            tokens_per_update=tokens_per_update,
        )
        return self if inner is self.schedule else dataclasses.replace(self, schedule=inner)

    # ---- positions ----------------------------------------------------------------------------
    def position(self, t: float) -> float:
        """The inner schedule's step that update ``t`` trains at: ``t`` before ``at``, then ``at + (t - at) r``."""
        t = check_step(t)
        return t if t < self.at else self.at + (t - self.at) * self.ratio

    def update_of(self, p: float) -> float:
        """The update at which the inner schedule reaches position ``p`` (the inverse of :meth:`position`).

        Example:
            >>> from cosanneal import Constant
            >>> b = Rebatch(Constant(0.1), at=10, ratio=2.0)
            >>> b.update_of(30.0), b.position(20)
            (20.0, 30.0)
        """
        return p if p <= self.at else self.at + (p - self.at) / self.ratio

    # ---- evaluation -------------------------------------------------------------------------
    def _scalar(self, t: float) -> float:
        if t < self.at:
            return self.schedule._scalar(t)
        return self.lr_factor * self.schedule._scalar(self.at + (t - self.at) * self.ratio)

    def _vector(self, t: FloatArray) -> FloatArray:
        after = t >= self.at
        pos = np.where(after, self.at + (t - self.at) * self.ratio, t)
        out = self.schedule._vector(pos)
        return np.where(after, self.lr_factor * out, out)

    # ---- introspection ----------------------------------------------------------------------
    @property
    def peak(self) -> float:
        """The inner peak times ``max(1, lr_factor)`` (an upper bound of every LR given)."""
        return self.schedule.peak * max(1.0, self.lr_factor)

    @property
    def horizon(self) -> float | None:
        """The update from which the LR never changes: the inner horizon mapped back (at least ``at``)."""
        inner = self.schedule.horizon
        if inner is None:
            return None
        if inner <= self.at:
            return float(self.at) if self.lr_factor != 1.0 else inner
        end = self.update_of(inner)
        while self.position(end) < inner:
            end = math.nextafter(end, math.inf)
        return end

    def phase(self, t: float) -> str:
        """The inner schedule's phase at :meth:`position` ``(t)``."""
        return self.schedule.phase(self.position(t))

    def cycle(self, t: float) -> CycleInfo:
        """The inner cycle at :meth:`position` ``(t)``, its start and end mapped back to updates.

        Example:
            >>> from cosanneal import Cosine
            >>> Rebatch(Cosine(1.0, cycle_steps=10, max_cycles=None), at=10, ratio=2.0).cycle(12)
            CycleInfo(index=1, start=10, length=5)
        """
        info = self.schedule.cycle(self.position(t))
        start = self.update_of(float(info.start))
        length = float(info.length)
        end = math.inf if math.isinf(length) else self.update_of(float(info.start) + length)
        return CycleInfo(info.index, as_number(start), as_number(end - start))

    def restarts(self, until: float) -> list[int | float]:
        """The inner schedule's restarts, moved to the updates that reach them."""
        inner = self.schedule.restarts(self.position(until))
        out = (as_number(self.update_of(float(r))) for r in inner)
        return [r for r in out if r < until]


@_compiles(Rebatch, refuses=True)
def _untraceable(s: Rebatch, wide: bool, sub: Fraction) -> Any:
    """A graph framework's traced form: refused with the reason (fractional positions after the switch)."""
    raise UntraceableScheduleError(
        f"a rebatch schedule (a job resumed at another world size, at update {s.at}) evaluates its schedule "
        "at fractional steps, which a Keras or jax graph cannot place exactly; trace its inner schedule "
        "(rebatch.base_schedule) or run it through the PyTorch adapter"
    )


def rebound(schedule: Schedule, at: int, ratio: float, lr_factor: float) -> Schedule:
    """``schedule`` after a world-size change at update ``at``: a :class:`Rebatch`, or itself unchanged.

    A change that keeps the global batch and the LR (``ratio = lr_factor = 1``, the ``accumulate``
    rule) leaves the schedule as it is; the trainer and ``verify`` both build the schedule this way.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> rebound(s, 40, 1.0, 1.0) is s, type(rebound(s, 40, 0.5, 0.5)).__name__
        (True, 'Rebatch')
    """
    if ratio == 1.0 and lr_factor == 1.0:
        return schedule
    return Rebatch(schedule, at, ratio, lr_factor)


def base_schedule(schedule: Schedule) -> Schedule:
    """The schedule under every :class:`Rebatch` layer (the one the config bound).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=10)
        >>> base_schedule(Rebatch(Rebatch(s, 2, 2.0), 4, 0.5)) == s
        True
    """
    while isinstance(schedule, Rebatch):
        schedule = schedule.schedule
    return schedule


def rebatch_factors(schedule: Schedule) -> tuple[float, float]:
    """``(ratio, lr_factor)`` of every :class:`Rebatch` layer multiplied: the run's batch and LR factors now.

    Example:
        >>> from cosanneal import Cosine
        >>> rebatch_factors(Rebatch(Rebatch(Cosine(1.0, cycle_steps=10), 2, 2.0, 2.0), 4, 0.5, 0.5))
        (1.0, 1.0)
    """
    ratio, factor = 1.0, 1.0
    while isinstance(schedule, Rebatch):
        ratio, factor = ratio * schedule.ratio, factor * schedule.lr_factor
        schedule = schedule.schedule
    return ratio, factor
