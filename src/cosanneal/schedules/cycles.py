r"""Cycle facts of a schedule, in one place: how cycles fit a budget, where they end, peak and floor.

**Cycle geometry** (SGDR's warm restarts). With a first cycle of ``T0`` steps (``cycle_steps``) and a
multiplier ``m`` (``cycle_mult``), cycle ``i`` lasts ``T0 m^i`` steps and ``n`` cycles span

.. math:: S_n = T_0 (1 + m + \dots + m^{n-1}) = T_0 \frac{m^n - 1}{m - 1}
   \quad (S_n = T_0\, n \text{ when } m = 1)

steps (:func:`cycle_span`). Fitting ``n`` cycles into ``D`` steps inverts it: the first cycle is
``T0 = D (m - 1) / (m^n - 1)`` (:func:`first_cycle_steps`), or, with ``T0`` fixed, ``m`` is the root
of ``S_n(m) = D`` (:func:`fit_cycle_mult`; ``S_n`` increases with ``m``, so bisection finds it).
``m^n - 1`` is computed as ``expm1(n log m)`` when :math:`m^n` is near 1: written ``m**n - 1`` it
cancels there (with ``m = 1 + 1e-12`` only about 4 of the 16 digits survive).

:class:`~cosanneal.schedules.cosine.Cosine` sums its cycle boundaries in 60-digit decimal arithmetic
from the float64 values as written and rounds them once, so the formula's float64 value may end the
last cycle an ulp or a few from the budget. :func:`fit_cycle_steps` and :func:`fit_cycle_mult` try the
float64 values within 16 ulps of the formula's and keep the closest one whose last cycle ends exactly at
the budget; when none does (about 5% of inputs), the largest value that ends *before* it (never after:
exactly at the budget when any float64 value reaches it, else as close before it as float64 allows).

**Schedule facts.** :func:`peak_lr` and :func:`floor_lr` (of the schedule or of one cycle),
:func:`restart_steps` and :func:`is_cycle_end` answer for any schedule: a ``Cosine`` from its closed
form (exact), any other schedule from its public API (``peak``, ``horizon``, ``phase``, ``cycle``,
``restarts`` and its values on a grid of steps). Lint, plan, diagnose and the checkpoint policy ask
these functions rather than reading a schedule's fields.

Example:
    >>> cycle_span(100, 2.0, 3), first_cycle_steps(700, 2.0, 3)
    (700.0, 100.0)
    >>> s = Cosine(1.0, min_ratio=0.5, cycle_steps=100, cycle_mult=2, peak_decay=0.5, max_cycles=3)
    >>> peak_lr(s), peak_lr(s, cycle=2), floor_lr(s, cycle=0), floor_lr(s)
    (1.0, 0.25, 0.5, 0.125)
    >>> restart_steps(s), [t for t in range(800) if is_cycle_end(t, s)]
    ([100, 300], [99, 299, 699])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules.base import CycleInfo, FloatArray, Schedule
from cosanneal.schedules.cosine import Cosine

__all__ = [
    "MAX_CYCLES",
    "choose_cycles",
    "cycle_span",
    "first_cycle_steps",
    "fit_cycle_mult",
    "fit_cycle_steps",
    "floor_lr",
    "is_cycle_end",
    "peak_lr",
    "restart_steps",
    "shortest_cycle",
]

#: :func:`choose_cycles` never picks more cycles than this.
MAX_CYCLES = 100_000
_ULP_WINDOW = 16  # float64 values tried on each side of the formula's value
_CYCLE_GRID = 4096  # steps probed per cycle of a schedule other than Cosine
_RUN_GRID = 10**6  # steps probed for the floor of a schedule other than Cosine
_BISECTIONS = 200


# ---- cycle geometry -----------------------------------------------------------------------------
def _mult(mult: float) -> float:
    return v.number("cycle_mult", mult, gt=0.0)


def _cycles(cycles: int, ge: int = 0) -> int:
    return v.integer("cycles", cycles, ge=ge)


def _grow(m: float, n: int) -> float | None:
    """:math:`m^n - 1` without cancellation, or ``None`` when :math:`m^n` overflows.

    ``m**n - 1`` when :math:`m^n` is at least 1.5 or at most 0.5 (the subtraction loses at most a bit;
    ``m**n`` is exact for ``m = 2``), else ``expm1(n log m)`` (``m`` near 1).
    """
    try:
        power = m**n
    except OverflowError:
        return None
    if abs(power - 1.0) >= 0.5:
        return None if math.isinf(power) else power - 1.0
    return math.expm1(n * math.log(m))


def cycle_span(first: float, mult: float, cycles: int) -> float:
    r"""Steps spanned by ``cycles`` cycles: :math:`T_0 (m^n - 1) / (m - 1)`, or :math:`T_0\, n` for ``m = 1``.

    :math:`m^n - 1` is computed without cancellation for ``m`` near 1 (``expm1(n log m)``); ``inf``
    when :math:`m^n` overflows.

    Args:
        first: the first cycle's length ``T0`` in steps.
        mult: the multiplier ``m > 0``.
        cycles: the number of cycles ``n >= 0``.

    Example:
        >>> cycle_span(10, 2, 3), cycle_span(100, 1, 4), cycle_span(400, 0.5, 3)
        (70.0, 400.0, 700.0)
    """
    m, n = _mult(mult), _cycles(cycles)
    if m == 1.0 or n == 0:
        return float(first) * n
    grow = _grow(m, n)
    return math.inf if grow is None else float(first) * grow / (m - 1.0)


def first_cycle_steps(span: float, mult: float, cycles: int) -> float:
    r"""The first cycle ``T0`` with which ``cycles`` cycles span ``span`` steps: :math:`D (m - 1) / (m^n - 1)`.

    ``D / n`` for ``m = 1``; ``0.0`` when :math:`m^n` overflows (the limit). This is the formula;
    :func:`fit_cycle_steps` adjusts it so that a :class:`Cosine` ends exactly at the budget.

    Example:
        >>> first_cycle_steps(1000, 1.0, 4), first_cycle_steps(34320, 2.0, 3)
        (250.0, 4902.857142857143)
    """
    m, n = _mult(mult), _cycles(cycles, ge=1)
    if m == 1.0:
        return float(span) / n
    grow = _grow(m, n)
    return 0.0 if grow is None else float(span) * (m - 1.0) / grow


def shortest_cycle(first: float, mult: float, cycles: int) -> float:
    """The shortest of ``cycles`` cycles: the first (``T0``) when ``m >= 1``, else the last (``T0 m^(n-1)``).

    Example:
        >>> shortest_cycle(100, 2.0, 3), shortest_cycle(100, 0.5, 3)
        (100.0, 25.0)
    """
    m, n = _mult(mult), _cycles(cycles, ge=1)
    return float(first) if m >= 1.0 else float(first) * m ** (n - 1)


def _horizon(origin: int, first: float, mult: float, cycles: int) -> float:
    """Where a :class:`Cosine` with these cycles ends (its own decimal arithmetic)."""
    horizon = Cosine(1.0, warmup_steps=origin, cycle_steps=first, cycle_mult=mult, max_cycles=cycles).horizon
    assert horizon is not None  # max_cycles is set
    return horizon


def _snap(x0: float, end_of: Callable[[float], float], target: float) -> float:
    """A float64 near ``x0`` whose end is ``target``, else the largest one ending before it.

    ``end_of`` must not decrease as ``x`` grows (a longer cycle or a larger multiplier never ends
    sooner). The values within 16 ulps of ``x0`` are tried first, in the order ``x0, x0 + 1 ulp,
    x0 - 1 ulp, x0 + 2 ulps, ...``, and the first exact hit wins. Without one, the search widens
    (doubling steps) until one value ends at or before ``target`` and another after it, and bisects
    between them for the largest value that does not end after ``target``: exactly at it when any
    float64 does, else as close before it as a float64 gets.
    """
    below: float | None = None  # the largest value tried that ends before the target
    above: float | None = None  # the smallest value tried that ends after it
    lo = hi = x = x0
    for k in range(2 * _ULP_WINDOW + 1):
        if k % 2:
            hi = x = math.nextafter(hi, math.inf)
        elif k:
            lo = x = math.nextafter(lo, -math.inf)
        err = end_of(x) - target
        if err == 0.0:
            return x
        if err < 0 and (below is None or x > below):
            below = x
        if err > 0 and (above is None or x < above):
            above = x
    step = 2 * _ULP_WINDOW * math.ulp(x0)
    while below is None:  # every value tried ends after the target: look further down
        x = lo - step if lo - step > 0.0 else 0.5 * lo
        if end_of(x) <= target:
            below = x
        else:
            above, lo, step = x, x, 2.0 * step
    while above is None:  # every value tried ends before it: look further up
        x = hi + step
        if end_of(x) > target:
            above = x
        else:
            below, hi, step = x, x, 2.0 * step
    while True:  # end_of(below) <= target < end_of(above)
        mid = below + 0.5 * (above - below)
        if not below < mid < above:
            return below
        if end_of(mid) <= target:
            below = mid
        else:
            above = mid


def fit_cycle_steps(span: float, cycle_mult: float, cycles: int, *, origin: float = 0.0) -> float:
    r"""The first cycle length ``c`` that makes ``cycles`` cycles end exactly ``span`` steps after ``origin``.

    :math:`c = D (m - 1) / (m^n - 1)` (``D / n`` for ``m = 1``, :func:`first_cycle_steps`); of the
    float64 values within 16 ulps of it, the closest with which a :class:`Cosine` starting its first
    cycle at ``origin`` ends its last cycle exactly at ``origin + span``, else the one ending closest
    before it (see the module docs). A formula value that is not a finite number > 0 is returned as is.

    Args:
        span: ``D``, the steps the cycles fill.
        cycle_mult: ``m > 0``.
        cycles: ``n >= 1``.
        origin: the step where the first cycle starts (the warmup length, a whole number).

    Example:
        >>> c = fit_cycle_steps(34320, 2.0, 3, origin=780)
        >>> c, Cosine(0.1, warmup_steps=780, cycle_steps=c, cycle_mult=2.0, max_cycles=3).horizon
        (4902.857142857143, 35100.0)
    """
    m, n = _mult(cycle_mult), _cycles(cycles, ge=1)
    start = v.integer("origin", origin)
    c0 = first_cycle_steps(span, m, n)
    if not (math.isfinite(c0) and c0 > 0):
        return c0
    return _snap(c0, lambda c: _horizon(start, c, m, n), start + float(span))


def fit_cycle_mult(span: float, first: float, cycles: int, *, origin: float = 0.0) -> float | None:
    r"""The multiplier ``m`` with which ``cycles`` cycles from a first cycle of ``first`` steps span ``span``.

    ``m`` solves :math:`T_0 (m^n - 1) / (m - 1) = D` (bisection on :func:`cycle_span`, which increases
    with ``m``), then is adjusted within 16 ulps as :func:`fit_cycle_steps` is, so a :class:`Cosine`
    with it ends exactly at ``origin + span`` (or closest before).

    Returns:
        ``m``, or ``None`` when no ``m > 0`` exists: fewer than 2 cycles, or ``span <= first``.

    Example:
        >>> fit_cycle_mult(700, 100, 3), fit_cycle_mult(175, 100, 3), fit_cycle_mult(100, 100, 3)
        (2.0, 0.5, None)
    """
    n, t0, d = _cycles(cycles), float(first), float(span)
    start = v.integer("origin", origin)
    if n < 2 or not d > t0:
        return None
    if d == t0 * n:
        m0 = 1.0
    else:
        lo, hi = (1.0, 2.0) if d > t0 * n else (0.0, 1.0)
        while cycle_span(t0, hi, n) < d:
            lo, hi = hi, 2.0 * hi
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            got = cycle_span(t0, mid, n)
            if mid in (lo, hi) or got == d:  # converged, or an exact root (the first one met)
                lo = hi = mid if got == d else hi
                break
            lo, hi = (mid, hi) if got < d else (lo, mid)
        m0 = min((hi, lo), key=lambda m: abs(cycle_span(t0, m, n) - d)) if lo > 0.0 else hi
    return _snap(m0, lambda m: _horizon(start, t0, m, n), start + d)


def choose_cycles(span: float, mult: float, min_cycle: float) -> int:
    """The largest ``n >= 1`` (at most :data:`MAX_CYCLES`) whose shortest cycle lasts ``min_cycle`` steps.

    The ``n`` cycles fill ``span`` steps (:func:`first_cycle_steps`); the shortest is the first when
    ``m > 1``, the last when ``m < 1`` (:func:`shortest_cycle`). With ``m = 1`` every ``n`` with
    ``span / n >= min_cycle`` fits, so that is ``floor(span / min_cycle)``.

    Example:
        >>> choose_cycles(35100, 2.0, 390), choose_cycles(100, 2.0, 10), choose_cycles(5, 2.0, 10)
        (6, 3, 1)
    """
    m = _mult(mult)
    n = 1
    while n < MAX_CYCLES:
        if not shortest_cycle(first_cycle_steps(span, m, n + 1), m, n + 1) >= min_cycle:
            break
        n += 1
    return n


# ---- schedule facts -----------------------------------------------------------------------------
def _index(cycle: int) -> int:
    return v.integer("cycle", cycle)


def _cosine_cycle(s: Cosine, i: int) -> int | None:
    """``i`` checked against ``max_cycles``: ``None`` for the final hold (cycle ``max_cycles``)."""
    last = s.max_cycles
    if last is None or i < last:
        return i
    if i == last:
        return None
    raise ScheduleError(f"cycle {i} does not exist: max_cycles={last}, and cycle {last} is the final hold")


def _locate(s: Schedule, i: int) -> CycleInfo:
    """Cycle ``i`` of ``s`` as its own :meth:`Schedule.cycle` numbers them (walked from step 0)."""
    info = s.cycle(0.0)
    while info.index < i:
        nxt = float(info.start) + float(info.length)
        if not math.isfinite(nxt) or nxt <= float(info.start):
            raise ScheduleError(f"cycle {i} does not exist: the schedule's last cycle is {info.index}")
        info = s.cycle(nxt)
    if info.index != i:
        raise ScheduleError(
            f"cycle {i} does not exist: the schedule's cycles skip from below it to {info.index}"
        )
    return info


def _grid(start: float, end: float, points: int) -> FloatArray:
    """Whole steps ``start, start + 1, ... < end`` (or ``points`` evenly spread), and the step just before ``end``."""
    if end - start <= points:
        steps = np.arange(start, end, dtype=np.float64)
    else:
        steps = np.linspace(start, end, points, endpoint=False)
    last = math.nextafter(end, start) if end > start else start
    return np.append(steps, last)


def _annealed(s: Schedule, steps: FloatArray) -> FloatArray:
    """The LR at ``steps`` outside warmups (all of them if every one is a warmup step)."""
    lr = np.asarray(s(steps), dtype=np.float64)
    keep = np.array([s.phase(float(t)) != "warmup" for t in steps])
    return lr[keep] if keep.any() else lr


def _cycle_values(s: Schedule, i: int) -> FloatArray:
    """LRs of a schedule other than Cosine over its cycle ``i``, warmup steps left out."""
    info = _locate(s, i)
    start, end = float(info.start), float(info.start) + float(info.length)
    if not math.isfinite(end):
        horizon = s.horizon
        if horizon is not None and horizon <= start:
            return np.array([s(start)], dtype=np.float64)  # the final hold
        end = start + _RUN_GRID if horizon is None else float(horizon)
    return _annealed(s, _grid(start, end, _CYCLE_GRID))


def peak_lr(schedule: Schedule, cycle: int | None = None) -> float:
    r"""The highest LR of ``schedule``, or of its cycle ``cycle`` (numbered as :meth:`Schedule.cycle` does).

    For a :class:`Cosine`: cycle ``i`` peaks at :math:`P_i = \max(\mathrm{peak\_lr}\, d^i, \mathrm{min\_lr})`
    (:math:`F + (\mathrm{peak\_lr} - F) d^i` with ``peak_decay_mode="amplitude"``), the final hold
    (cycle ``max_cycles``) at its floor, and the whole schedule at :attr:`Cosine.peak` (``peak_lr``,
    or the last peak when ``peak_decay > 1``). For any other schedule: :attr:`Schedule.peak`, and for
    a cycle the largest LR on a grid of at most 4097 of its steps (whole steps when it is shorter),
    warmup steps left out.

    Raises:
        ScheduleError: ``cycle`` is not a cycle of the schedule.

    Example:
        >>> s = Cosine(1.0, cycle_steps=10, peak_decay=0.5, max_cycles=3)
        >>> peak_lr(s), [peak_lr(s, cycle=i) for i in range(4)]
        (1.0, [1.0, 0.5, 0.25, 0.0])
    """
    if cycle is None:
        return float(schedule.peak)
    i = _index(cycle)
    if isinstance(schedule, Cosine):
        j = _cosine_cycle(schedule, i)
        return schedule.cycle_peak(j) if j is not None else floor_lr(schedule, i)
    return float(np.max(_cycle_values(schedule, i)))


def floor_lr(schedule: Schedule, cycle: int | None = None) -> float:
    r"""The LR ``schedule`` anneals down to: the lowest of the whole schedule, or of its cycle ``cycle``.

    Warmups are left out: the floor is what the decay ends at, not a warmup's start. For a
    :class:`Cosine`: cycle ``i`` ends at :math:`F_i` (``min_lr``, or ``min_ratio`` times that cycle's
    peak), the final hold holds the last cycle's floor, and the whole schedule's floor is the lowest
    :math:`F_i` (the last cycle's with ``min_ratio`` and decaying peaks, 0 if those restart forever).
    For any other schedule: the lowest LR on a grid of its steps outside warmups: at most 4097 per
    cycle; for the whole schedule the whole steps from the end of its initial warmup to its horizon
    (an even grid of 10**6 points beyond that many; the first 10**6 steps without a horizon).

    Raises:
        ScheduleError: ``cycle`` is not a cycle of the schedule.

    Example:
        >>> s = Cosine(1.0, min_ratio=0.1, cycle_steps=10, peak_decay=0.5, max_cycles=3)
        >>> floor_lr(s), [floor_lr(s, cycle=i) for i in range(4)]
        (0.025, [0.1, 0.05, 0.025, 0.025])
        >>> from cosanneal.schedules.baselines import Polynomial
        >>> floor_lr(Polynomial(1.0, total_steps=100, end_lr=0.01))
        0.01
    """
    if isinstance(schedule, Cosine):
        if cycle is not None:
            j = _cosine_cycle(schedule, _index(cycle))
            return schedule.cycle_floor(j if j is not None else int(schedule.max_cycles or 1) - 1)
        falling = schedule.min_ratio is not None and schedule.peak_decay_mode == "peak"
        if not falling or float(schedule.peak_decay) >= 1.0:
            return schedule.cycle_floor(0)
        return 0.0 if schedule.max_cycles is None else schedule.cycle_floor(schedule.max_cycles - 1)
    if cycle is not None:
        return float(np.min(_cycle_values(schedule, _index(cycle))))
    horizon = schedule.horizon
    start = float(_warmup_end(schedule, horizon))
    end = float(start + _RUN_GRID) if horizon is None else max(float(horizon), start)
    steps = _grid(start, end, _RUN_GRID)
    if horizon is not None:
        steps = np.append(steps, float(horizon))
    return float(np.min(np.asarray(schedule(steps), dtype=np.float64)))


def _warmup_end(s: Schedule, horizon: float | None) -> int:
    """The first whole step after the initial warmup (found by bisection: the warmup is a prefix)."""
    if s.phase(0.0) != "warmup":
        return 0
    limit = 2**53 if horizon is None else math.ceil(horizon)
    lo, hi = 0, 1  # phase(lo) is a warmup step
    while hi < limit and s.phase(float(hi)) == "warmup":
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if s.phase(float(mid)) == "warmup" else (lo, mid)
    return hi


def restart_steps(schedule: Schedule, until: float | None = None) -> list[int | float]:
    """The steps before ``until`` where ``schedule`` restarts (its LR jumps back up to a new cycle).

    Args:
        schedule: a bound schedule.
        until: the first step not reported; ``None``: the schedule's horizon (every restart).

    Raises:
        ScheduleError: ``until`` is ``None`` and the schedule restarts forever (no horizon), or
            ``until`` is not a number >= 0.

    Example:
        >>> restart_steps(Cosine(1.0, cycle_steps=10, cycle_mult=2, max_cycles=3))
        [10, 30]
        >>> restart_steps(Cosine(1.0, cycle_steps=10, max_cycles=None), 35)
        [10, 20, 30]
    """
    if until is None:
        horizon = schedule.horizon
        if horizon is None:
            raise ScheduleError(
                "the schedule restarts forever (no horizon); pass until=<step> to restart_steps"
            )
        return schedule.restarts(horizon)
    if until != math.inf:
        v.number("until", until, ge=0.0)
    return schedule.restarts(until)


def is_cycle_end(step: int, schedule: Schedule) -> bool:
    r"""Whether update ``step`` (0-based) is the last one of a cycle: the LR's low point before a restart.

    True when a restart ``r`` of the schedule falls in :math:`(step, step + 1]`, i.e. the next update
    ``step + 1`` starts a new cycle, or when the schedule's finite horizon falls there (the end of the
    final cycle). The check is :math:`O(1)` in the number of past cycles: ``schedule.cycle(step + 1)``
    narrows it down before :func:`restart_steps` confirms it.

    Example:
        >>> s = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=2.0, max_cycles=3)
        >>> [t for t in range(100) if is_cycle_end(t, s)]
        [9, 29, 69]
    """
    nxt = step + 1
    info = schedule.cycle(nxt)
    start = float(info.start)
    if info.index == 0 or not (step < start <= nxt):
        return False
    horizon = schedule.horizon
    if horizon is not None and step < float(horizon) <= nxt:
        return True
    return any(step < float(r) <= nxt for r in restart_steps(schedule, step + 2))
