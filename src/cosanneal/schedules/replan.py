r"""Replan: a run's schedule changed at update ``d`` to reach a new total, without a jump in the LR.

A job planned for ``T`` updates on schedule ``s`` is given a new total ``N`` after ``d`` updates. The
replanned schedule :class:`Replanned` follows ``s`` before the switch and a new tail ``a`` from it on:

.. math:: \mathrm{lr}(u) = s(u) \quad (u < d), \qquad \mathrm{lr}(u) = a(u) \quad (u \ge d),

where ``a`` is built by one of three modes, each continuous at the switch (``a(d) = s(d)``):

* ``stretch`` (:func:`stretch`) — the rest of the current cycle, which ends at ``E``, is re-timed to end
  at ``N``: update ``u`` trains at the position ``d + (u - d) (E - d) / (N - d)`` of ``s`` (a
  :class:`~cosanneal.schedules.rebatch.Rebatch` with ``lr_factor = 1``). Shrinks as well as stretches.
* ``cycles`` (:func:`add_cycles`) — the current cycle runs to its end ``E`` unchanged, then ``K``
  more cycles fill ``[E, N)``: their lengths follow the schedule's own ``cycle_mult`` rule scaled to
  sum to ``N - E`` (whole updates, the last one taking the remainder), their peaks and floors the
  schedule's own (``peak_decay``, ``min_lr`` / ``min_ratio``, ``cycle_warmup_steps``, ``k``).
* ``cooldown`` (:func:`cooldown`) — the LR holds ``s(d)`` until ``N - L`` and then decays to the floor
  ``F`` over the last ``L`` updates with the shape ``linear``, ``cosine`` or ``1-sqrt``:
  :math:`a(u) = s(d)\,(f(p)(1 - r) + r)` with ``r = F / s(d)``, ``p = (u - (N - L)) / L`` and
  ``f`` the shape's factor (:class:`~cosanneal.schedules.wsd.WarmupStableDecay`).

:func:`continuity` measures the hand-off: the relative jump ``|a(d) - s(d)| / s(d)``, which
:func:`replan` refuses above :data:`MAX_JUMP` (``1e-12``).

Example:
    >>> from cosanneal import Cosine
    >>> s = Cosine(1.0, cycle_steps=100)
    >>> r = replan(s, at=40, total=160, mode="stretch")
    >>> r(39) == s(39), r(40) == s(40), r.horizon, r(100) == s(70)
    (True, True, 160.0, True)
    >>> c = replan(s, at=40, total=200, mode="cooldown", cooldown_steps=50, shape="1-sqrt")
    >>> c(40) == s(40), c(149) == s(40), c(200) == s(100)
    (True, True, True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules._traced import UntraceableScheduleError, _compiles
from cosanneal.schedules.base import CycleInfo, FloatArray, Schedule, check_step, from_dict, register
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.join import Join
from cosanneal.schedules.rebatch import Rebatch, rebound
from cosanneal.schedules.wsd import SHAPES, WarmupStableDecay

R = TypeVar("R", bound="Replanned")

__all__ = [
    "CHANGE_EVENTS",
    "MAX_JUMP",
    "MODES",
    "SHAPES",
    "ReplanError",
    "Replanned",
    "add_cycles",
    "apply_changes",
    "continuity",
    "plan_origin",
    "cooldown",
    "map_plans",
    "replan",
    "stretch",
]

#: The largest relative LR jump at the switch a replan accepts.
MAX_JUMP = 1e-12
#: The replan modes.
MODES = ("stretch", "cycles", "cooldown")


class ReplanError(ScheduleError):
    """A replan that cannot continue the run's schedule (its message names the option and the fix)."""


def _whole(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ReplanError(f"{name} must be a whole number of updates >= {low}, got {value!r}")
    return value


@register("replan")
@dataclasses.dataclass(frozen=True)
class Replanned(Schedule):
    """``before`` up to update ``at``, ``after`` from it on: a run's schedule after a replan.

    Formula: ``lr(u) = before(u)`` for ``u < at``, ``after(u)`` for ``u >= at`` (``after`` in the
    run's own update counts).

    Args:
        before: the schedule the run followed up to the switch (bound).
        at: the update count at the switch (the first update on the new plan).
        after: the new plan, in absolute updates (bound; it agrees with ``before`` before ``at``).
        total: the run's new length in updates.
        mode: how the new plan was made: ``stretch``, ``cycles`` or ``cooldown``.

    Example:
        >>> from cosanneal import Constant
        >>> r = Replanned(Constant(0.1), at=5, after=Constant(0.2), total=9, mode="cooldown")
        >>> r(4), r(5), from_dict(r.to_dict()) == r
        (0.1, 0.2, True)
    """

    before: Schedule
    at: int
    after: Schedule
    total: int
    mode: str = "stretch"

    def __post_init__(self) -> None:
        for name in ("before", "after"):
            if not isinstance(getattr(self, name), Schedule):
                raise ScheduleError(f"{name} must be a schedule, got {getattr(self, name)!r}")
        object.__setattr__(self, "at", _whole("at", self.at, low=0))
        object.__setattr__(self, "total", _whole("total", self.total, low=1))
        if self.mode not in MODES:
            raise ScheduleError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def from_fields(cls: type[R], fields: Mapping[str, Any]) -> R:
        """Build from a parameter mapping whose ``before`` and ``after`` may be mappings with a ``kind``.

        Example:
            >>> c = {"kind": "constant", "lr": 0.1}
            >>> Replanned.from_fields({"before": c, "after": c, "at": 3, "total": 9})(5)
            0.1
        """
        built = dict(fields)
        for name in ("before", "after"):
            inner = built.get(name)
            if isinstance(inner, Mapping):
                try:
                    built[name] = from_dict(inner)
                except ScheduleError as exc:
                    raise ScheduleError(f"{name}: {exc}") from exc
        return super().from_fields(built)

    # ---- evaluation -------------------------------------------------------------------------
    def _scalar(self, t: float) -> float:
        return self.before._scalar(t) if t < self.at else self.after._scalar(t)

    def _vector(self, t: FloatArray) -> FloatArray:
        early = t < self.at
        out = np.empty_like(t)
        if early.any():
            out[early] = self.before._vector(t[early])
        if (~early).any():
            out[~early] = self.after._vector(t[~early])
        return out

    # ---- introspection ----------------------------------------------------------------------
    @property
    def peak(self) -> float:
        """The larger peak of the two plans (an upper bound of every LR given)."""
        return max(self.before.peak, self.after.peak)

    @property
    def horizon(self) -> float | None:
        """The new plan's horizon (at least the switch)."""
        end = self.after.horizon
        return None if end is None else max(float(end), float(self.at))

    def phase(self, t: float) -> str:
        """The phase of the plan in force at ``t``."""
        t = check_step(t)
        return (self.before if t < self.at else self.after).phase(t)

    def cycle(self, t: float) -> CycleInfo:
        """The cycle of the plan in force at ``t`` (the new plan's cycle from the switch on).

        Example:
            >>> from cosanneal import Cosine
            >>> replan(Cosine(1.0, cycle_steps=100), at=40, total=160, mode="stretch").cycle(100)
            CycleInfo(index=0, start=0, length=160)
        """
        t = check_step(t)
        return (self.before if t < self.at else self.after).cycle(t)

    def restarts(self, until: float) -> list[int | float]:
        """The old plan's restarts before the switch, the new plan's from it on."""
        early = [r for r in self.before.restarts(min(until, float(self.at))) if r < self.at]
        return early + [r for r in self.after.restarts(until) if r >= self.at]


@_compiles(Replanned, refuses=True)
def _untraceable(s: Replanned, wide: bool, sub: Fraction) -> Any:
    """A graph framework's traced form: refused (a replanned run is trained by the PyTorch adapter)."""
    raise UntraceableScheduleError(
        f"a replanned schedule (changed at update {s.at}) is not traced for Keras or jax; trace its "
        "new plan (Replanned.after) or run it through the PyTorch adapter"
    )


def plan_origin(schedule: Schedule) -> Schedule:
    """The schedule under every :class:`Replanned` and re-batching layer: the one the config bound.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> plan_origin(Rebatch(replan(s, at=40, total=160, mode="stretch"), 50, 2.0)) == s
        True
    """
    while isinstance(schedule, (Replanned, Rebatch)):
        schedule = schedule.before if isinstance(schedule, Replanned) else schedule.schedule
    return schedule


def continuity(before: Schedule, after: Schedule, at: int) -> float:
    """The relative LR jump at the switch: ``|after(at) - before(at)| / |before(at)|`` (0 when both are 0).

    Example:
        >>> from cosanneal import Constant
        >>> continuity(Constant(0.1), Constant(0.1), 5), continuity(Constant(0.1), Constant(0.2), 5)
        (0.0, 1.0)
    """
    old, new = float(before(at)), float(after(at))
    if old == new:
        return 0.0
    return abs(new - old) / abs(old) if old else math.inf


# ---- the modes ------------------------------------------------------------------------------
def _cycle_end(schedule: Schedule, at: int) -> float:
    info = schedule.cycle(at)
    return float(info.start) + float(info.length)


def _check_total(at: int, total: int) -> None:
    if total <= at:
        raise ReplanError(
            f"total: the run has done {at} updates, so a new total of {total} leaves nothing to train; "
            f"pass --total larger than {at}"
        )


def stretch(schedule: Schedule, at: int, total: int) -> Schedule:
    """The rest of the current cycle re-timed to end at ``total`` (see the module docstring).

    Raises:
        ReplanError: the cycle has no end (a constant LR, endless holds) or has ended already.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> a = stretch(s, 50, 150)
        >>> a(50) == s(50), a(100) == s(75), a(150) == s(100)
        (True, True, True)
    """
    _check_total(at, total)
    end = _cycle_end(schedule, at)
    if math.isinf(end):
        raise ReplanError(
            f"mode stretch: the LR at update {at} is in a phase without an end (a constant or a final hold), "
            "so there is no cycle to stretch; use --mode cooldown"
        )
    if end <= at:
        raise ReplanError(f"mode stretch: the cycle at update {at} has ended; use --mode cooldown or cycles")
    return Rebatch(schedule, at, (end - at) / (total - at), 1.0)


def _base_cosine(schedule: Schedule) -> tuple[Cosine, float, float]:
    """The Cosine under re-batching and replans, with the re-batching's (ratio, lr_factor)."""
    ratio, factor, inner = 1.0, 1.0, schedule
    while isinstance(inner, (Replanned, Rebatch)):
        if isinstance(inner, Rebatch):
            ratio, factor = ratio * inner.ratio, factor * inner.lr_factor
            inner = inner.schedule
        else:
            inner = inner.before
    if not isinstance(inner, Cosine):
        raise ReplanError(
            f"mode cycles: the run's schedule is {inner.kind!r}, not a cosine with restarts, so it has no "
            "cycle rule to follow; use --mode stretch or cooldown"
        )
    return inner, ratio, factor


def _lengths(rule: list[float], span: int) -> list[int]:
    """``rule``'s lengths scaled to sum to ``span``, as whole updates (the last takes the remainder)."""
    scale = span / sum(rule)
    out = [max(1, round(x * scale)) for x in rule[:-1]]
    last = span - sum(out)
    if last < 1:
        raise ReplanError(f"cycles: {len(rule)} cycles do not fit in {span} updates; pass fewer --cycles")
    return [*out, last]


def add_cycles(schedule: Schedule, at: int, total: int, cycles: int | None = None) -> Schedule:
    """The current cycle kept to its end ``E``, then ``cycles`` more fill ``[E, total)`` (module docstring).

    ``cycles=None`` takes as many as the schedule's own ``cycle_mult`` rule fits best (at least one).

    Raises:
        ReplanError: the schedule is not a cosine, the current cycle ends after ``total``, or the
            cycles do not fit.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100, cycle_mult=2.0, peak_decay=0.5)
        >>> a = add_cycles(s, 40, 400)
        >>> a(40) == s(40), a.restarts(400), a(100), a.horizon
        (True, [100], 0.5, 400.0)
    """
    _check_total(at, total)
    base, ratio, factor = _base_cosine(schedule)
    info = schedule.cycle(at)
    end = float(info.start) + float(info.length)
    if math.isinf(end) or end >= total:
        where = "never ends" if math.isinf(end) else f"ends at update {end:g}"
        raise ReplanError(
            f"mode cycles: the cycle at update {at} {where}, not before the new total {total}; "
            "use --mode stretch or cooldown"
        )
    start = math.ceil(end)
    span = total - start
    first = info.index + 1
    if cycles is not None:
        cycles = _whole("cycles", cycles, low=1)
    rule: list[float] = []
    while cycles is None or len(rule) < cycles:
        length = float(base.cycle_steps) * base.cycle_mult ** (first + len(rule)) / ratio
        if cycles is None and rule and sum(rule) + length / 2 > span:
            break
        rule.append(length)
        if cycles is None and sum(rule) >= span:
            break
    warm = int(base.cycle_warmup_steps)
    pieces: list[Schedule] = [schedule]
    bounds: list[int] = []
    for j, length in enumerate(_lengths(rule, span)):
        g = first + j
        floor = factor * base.cycle_floor(g)
        peak = factor * base.cycle_peak(g)
        w = min(warm, length - 1)
        pieces.append(
            Cosine(
                peak_lr=peak,
                min_lr=min(floor, peak),
                warmup_steps=w,
                warmup_start_lr=min(floor, peak),
                cycle_steps=length - w,
                k=base.k,
            )
        )
        bounds.append(start)
        start += length
    return Join(tuple(pieces), tuple(bounds))


def cooldown(
    schedule: Schedule,
    at: int,
    total: int,
    length: int | None = None,
    *,
    shape: str = "linear",
    floor: float | None = None,
) -> Schedule:
    """Hold ``schedule(at)`` until ``total - length``, then decay to ``floor`` by ``total`` (module docstring).

    Args:
        schedule: the run's schedule so far.
        at: the switch (updates done).
        total: the new total.
        length: the cooldown's length in updates (default: ``total - at``, a decay from now).
        shape: ``linear``, ``cosine`` or ``1-sqrt``.
        floor: the LR at the end (default: the old plan's final LR, or 0 when it has none).

    Raises:
        ReplanError: a length longer than what is left, a floor above the LR now, a bad shape.

    Example:
        >>> from cosanneal import Constant
        >>> a = cooldown(Constant(0.1), 10, 30, 10, shape="linear", floor=0.0)
        >>> a(10), a(19), a(25), a(30)
        (0.1, 0.1, 0.05, 0.0)
    """
    _check_total(at, total)
    if shape not in SHAPES:
        raise ReplanError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    left = total - at
    length = left if length is None else _whole("cooldown", length, low=1)
    if length > left:
        raise ReplanError(
            f"cooldown: {length} updates do not fit in the {left} left between update {at} and the new total "
            f"{total}; pass --cooldown {left} or less, or a larger --total"
        )
    now = float(schedule(at))
    if floor is None:
        end = schedule.horizon
        floor = float(schedule(end)) if end is not None else 0.0
        floor = min(floor, now)
    if (
        isinstance(floor, bool)
        or not isinstance(floor, (int, float))
        or not math.isfinite(floor)
        or floor < 0
    ):
        raise ReplanError(f"floor must be a finite LR >= 0, got {floor!r}")
    if now <= 0:
        raise ReplanError(f"cooldown: the LR at update {at} is {now:g}; there is nothing to cool down from")
    if floor > now:
        raise ReplanError(
            f"floor: {floor:g} is above the LR at update {at} ({now:g}), so the cooldown would raise the LR; "
            f"pass --floor {now:g} or less"
        )
    tail = WarmupStableDecay(
        now,
        warmup_steps=0,
        stable_steps=left - length,
        decay_steps=length,
        min_lr_ratio=floor / now,
        decay_shape=shape,
    )
    return tail if at == 0 else Join((schedule, tail), (at,))


def replan(
    schedule: Schedule,
    *,
    at: int,
    total: int,
    mode: str,
    cycles: int | None = None,
    cooldown_steps: int | None = None,
    shape: str = "linear",
    floor: float | None = None,
) -> Replanned:
    """The run's schedule replanned at update ``at`` for a new ``total`` by ``mode`` (module docstring).

    Raises:
        ReplanError: the mode cannot continue this schedule, or the new plan would jump the LR at the
            switch by more than :data:`MAX_JUMP` relative.

    Example:
        >>> from cosanneal import Cosine
        >>> r = replan(Cosine(1.0, cycle_steps=100), at=30, total=300, mode="cycles")
        >>> r.total, r.mode, r.restarts(300)
        (300, 'cycles', [100, 200])
    """
    schedule.require_bound()
    at = _whole("at", at, low=0)
    total = _whole("total", total, low=1)
    if mode == "stretch":
        after = stretch(schedule, at, total)
    elif mode == "cycles":
        after = add_cycles(schedule, at, total, cycles)
    elif mode == "cooldown":
        after = cooldown(schedule, at, total, cooldown_steps, shape=shape, floor=floor)
    else:
        raise ReplanError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    jump = continuity(schedule, after, at)
    if jump > MAX_JUMP:
        raise ReplanError(
            f"mode {mode}: the new plan's LR at update {at} is {float(after(at)):.10g}, the run's is "
            f"{float(schedule(at)):.10g} (a relative jump of {jump:.3g} > {MAX_JUMP:g}); pick another --mode"
        )
    return Replanned(schedule, at, after, total, mode)


def map_plans(schedule: Schedule, change: Callable[[Schedule], Schedule]) -> Schedule:
    """``schedule`` with ``change`` applied to every plain schedule inside replans, re-batchings and joins.

    (The non-finite guard lowers the peak of a replanned run's schedule, old and new plan alike.)

    Example:
        >>> from cosanneal import Constant
        >>> r = replan(Constant(1.0), at=10, total=20, mode="cooldown", floor=0.0)
        >>> lowered = map_plans(r, lambda s: Constant(s.lr / 2) if isinstance(s, Constant) else s)
        >>> lowered(5), r(5)
        (0.5, 1.0)
    """
    if isinstance(schedule, Replanned):
        return dataclasses.replace(
            schedule, before=map_plans(schedule.before, change), after=map_plans(schedule.after, change)
        )
    if isinstance(schedule, Rebatch):
        return dataclasses.replace(schedule, schedule=map_plans(schedule.schedule, change))
    if isinstance(schedule, Join):
        return dataclasses.replace(
            schedule, schedules=tuple(map_plans(p, change) for p in schedule.schedules)
        )
    return change(schedule)


#: The run events that change the schedule a run follows, in the order they apply at one step.
CHANGE_EVENTS = ("world_size_changed", "schedule_replanned")


def apply_changes(schedule: Schedule, events: Sequence[Mapping[str, Any]]) -> Schedule:
    """The schedule a run followed after the schedule changes its events record, in step order.

    * ``world_size_changed`` (ratio ``r``, LR factor ``f`` at step ``d``): from ``d`` on the LR is
      ``f * s(d + (u - d) r)`` (:func:`~cosanneal.schedules.rebatch.rebound`).
    * ``schedule_replanned``: names the fingerprint of the schedule it changed and holds the new one;
      an event that follows the schedule so far replaces it, a repeat of a request already applied
      (a session killed after its switch, resumed before it, records the switch again) is skipped.

    At one step a world-size change applies before a replan (the order a resume takes them).

    Raises:
        ScheduleError: a replan that does not follow the schedule so far (the run's config changed
            under it; the message names the step and both fingerprints), or a bad event field.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, cycle_steps=100)
        >>> new = replan(s, at=40, total=200, mode="stretch")
        >>> e = {"kind": "schedule_replanned", "step": 40, "request": "a",
        ...      "fingerprint_before": s.fingerprint(), "schedule": new.to_dict()}
        >>> apply_changes(s, [e, e]) == new
        True
    """
    order = {kind: i for i, kind in enumerate(CHANGE_EVENTS)}
    changes = sorted(
        (e for e in events if e.get("kind") in order), key=lambda e: (int(e["step"]), order[e["kind"]])
    )
    seen: set[str] = set()
    for event in changes:
        if event["kind"] == "world_size_changed":
            schedule = rebound(
                schedule, int(event["step"]), event.get("ratio", 1.0), event.get("lr_factor", 1.0)
            )
            continue
        request = str(event.get("request"))
        if request in seen:
            continue
        if event.get("fingerprint_before") != schedule.fingerprint():
            raise ScheduleError(
                f"schedule_replanned at update {event['step']}: it changed a schedule with fingerprint "
                f"{event.get('fingerprint_before')}, but the run's schedule up to there is "
                f"{schedule.fingerprint()}; the run's config was changed after it began"
            )
        schedule = from_dict(event["schedule"])
        seen.add(request)
    return schedule
