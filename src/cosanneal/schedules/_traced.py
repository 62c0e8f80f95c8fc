r"""Every schedule's closed form, written once against an abstract array namespace (for the adapters).

The framework adapters (:mod:`cosanneal.keras`, :mod:`cosanneal.jax`) must compute the learning rate
with their own tensor ops from the step tensor, inside compiled graphs (``jax.jit``, a Keras train
step), without calling numpy on a tensor and without host callbacks. This module holds that closed
form once, framework-free: :func:`compile_schedule` turns any cosanneal schedule into a
:class:`Traced` program, which evaluates ``lr(n)`` for an integer step tensor ``n`` with the
operations of an :class:`ArrayOps` object (``keras.ops``, ``jax.numpy`` or numpy). Nothing here
imports a framework.

How the result stays exact:

* Steps are integers (the optimizer's update count). Every boundary of a schedule (the end of the
  warmup, each restart, a milestone, a join boundary, a phase end) is compared as an *integer*: the
  step ``n`` is at or past a boundary ``b`` exactly when ``n >= ceil(b)``, with ``ceil(b)`` worked
  out once on the host with exact rational arithmetic. So a restart happens at exactly the same
  integer step as in the numpy core, in int32 as in int64.
* The cycle index of a :class:`~cosanneal.schedules.cosine.Cosine` is never found by a float
  comparison: fixed-length cycles of a whole (or dyadic: ``x.5``, ``x.25``...) number of steps use
  integer division; cycles that grow by ``cycle_mult`` use the closed-form index
  ``i ~ log1p(v (m - 1) / c) / log m``, corrected against the restart steps the core computes once
  in 60-digit decimal arithmetic (a short constant vector of integers, never a table of LR values).
* Only the values inside a cycle (cosines, powers, ramps) are computed in floating point, in the
  widest precision the backend offers: float64 when ``ops.wide`` (numpy, torch, TensorFlow, jax
  with ``jax_enable_x64``), else float32. In float32 they agree with the float64 core to a few
  units of float32 rounding of the peak.

A configuration whose boundaries cannot be placed exactly with the precision at hand raises
:class:`UntraceableScheduleError` when the program is built (never a silent approximation): fixed
cycles or decay intervals of a fractional, non-dyadic length (``step_size=7.3``) that repeat
without end need float64; ``cycle_mult`` so close to 1 that more than :data:`TABLE_LIMIT` restarts
fall in the step range cannot be tabulated; and a schedule kind without a closed form here (one
registered outside cosanneal) is refused by name.

Example:
    >>> import numpy as np
    >>> from cosanneal.schedules import Cosine
    >>> s = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=1.5, max_cycles=None)
    >>> program = compile_schedule(s, wide=False)
    >>> steps = np.array([0, 9, 10, 24, 25, 46, 47], dtype=np.int32)
    >>> lr = program(NumpyOps(wide=False), steps)
    >>> lr.dtype, bool(np.allclose(lr, s(steps), rtol=1e-6, atol=1e-7))
    (dtype('float32'), True)
    >>> s.restarts(50), [round(float(v), 4) for v in lr[[1, 2, 4]]]
    ([10, 25, 47.5], [0.0245, 1.0, 1.0])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules.base import Schedule, from_dict
from cosanneal.schedules.baselines import Constant, Cyclic, Exponential, Linear, MultiStep, Polynomial, Step
from cosanneal.schedules.compat.hf_presets import HfCosineCycles
from cosanneal.schedules.compat.optax_presets import OptaxCosine
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.join import Join
from cosanneal.schedules.onecycle import OneCycle
from cosanneal.schedules.wsd import WarmupStableDecay

__all__ = [
    "TABLE_LIMIT",
    "ArrayOps",
    "NumpyOps",
    "Programs",
    "Traced",
    "UntraceableScheduleError",
    "compile_schedule",
    "refused_kinds",
    "traceable_kinds",
]

#: The most restart steps a traced :class:`~cosanneal.schedules.cosine.Cosine` keeps as constants.
TABLE_LIMIT = 65536
_INT_MAX = {False: 2**31 - 1, True: 2**53}  # largest step handled: int32 / int64 arithmetic (steps < 2**53)
_DEC = Context(prec=60)  # the precision the core sums cycle lengths in
_MAX_ROUNDS = 6  # correction rounds allowed after the closed-form cycle-index estimate

T = Any  # a tensor of the backend at hand


class UntraceableScheduleError(ScheduleError):
    """A schedule cannot be computed exactly with a framework's tensor ops in the precision at hand."""


class ArrayOps(Protocol):
    """The tensor operations a :class:`Traced` program uses; one implementation per framework.

    ``wide`` selects the compute precision: float64 values and int64 steps when true, float32 and
    int32 when false. Constants made by :meth:`const`/:meth:`iconst` carry those dtypes; arithmetic
    operators (``+ - * / >= <``) of the backend's tensors are used as well.
    """

    wide: bool

    def const(self, value: float) -> T:
        """A float scalar in the compute dtype."""

    def iconst(self, value: int) -> T:
        """An integer scalar in the step dtype."""

    def table(self, values: Sequence[float]) -> T:
        """A float vector constant."""

    def itable(self, values: Sequence[int]) -> T:
        """An integer vector constant."""

    def to_float(self, x: T) -> T:
        """Cast to the compute float dtype."""

    def to_int(self, x: T) -> T:
        """Cast to the step integer dtype (floats are truncated; booleans give 0/1)."""

    def cos(self, x: T) -> T:
        """Cosine."""

    def sin(self, x: T) -> T:
        """Sine."""

    def log1p(self, x: T) -> T:
        """``log(1 + x)``."""

    def exp(self, x: T) -> T:
        """``e ** x``."""

    def sqrt(self, x: T) -> T:
        """Square root."""

    def floor(self, x: T) -> T:
        """Floor of a float tensor (a float tensor)."""

    def power(self, x: T, y: T) -> T:
        """``x ** y`` elementwise (floats)."""

    def minimum(self, a: T, b: T) -> T:
        """Elementwise minimum."""

    def maximum(self, a: T, b: T) -> T:
        """Elementwise maximum."""

    def where(self, cond: T, a: T, b: T) -> T:
        """``a`` where ``cond`` else ``b``."""

    def take(self, table: T, index: T) -> T:
        """``table[index]`` elementwise (a gather)."""

    def floor_divide(self, a: T, b: T) -> T:
        """Integer floor division."""

    def mod(self, a: T, b: T) -> T:
        """Float remainder with the sign of ``b``, exact (as IEEE ``fmod`` for positive operands)."""

    def logical_and(self, a: T, b: T) -> T:
        """Elementwise and of booleans."""

    def logical_or(self, a: T, b: T) -> T:
        """Elementwise or of booleans."""

    def logical_not(self, a: T) -> T:
        """Elementwise not of booleans."""


class NumpyOps:
    """:class:`ArrayOps` over numpy, in float64/int64 (``wide``) or float32/int32: for tests and docs.

    Example:
        >>> import numpy as np
        >>> from cosanneal.schedules import Step
        >>> ops = NumpyOps(wide=True)
        >>> compile_schedule(Step(1.0, step_size=2.5, gamma=0.5), wide=True)(ops, np.arange(6)).tolist()
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, wide: bool = True) -> None:
        self.wide = wide
        self._float: Any = np.float64 if wide else np.float32
        self._int: Any = np.int64 if wide else np.int32

    def const(self, value: float) -> T:
        """A float scalar in the compute dtype."""
        return self._float(value)

    def iconst(self, value: int) -> T:
        """An integer scalar in the step dtype."""
        return self._int(value)

    def table(self, values: Sequence[float]) -> T:
        """A float vector constant."""
        return np.asarray(values, dtype=self._float)

    def itable(self, values: Sequence[int]) -> T:
        """An integer vector constant."""
        return np.asarray(values, dtype=self._int)

    def to_float(self, x: T) -> T:
        """Cast to the compute float dtype."""
        return np.asarray(x).astype(self._float)

    def to_int(self, x: T) -> T:
        """Cast to the step integer dtype."""
        return np.asarray(x).astype(self._int)

    def cos(self, x: T) -> T:
        """Cosine."""
        return np.cos(x)

    def sin(self, x: T) -> T:
        """Sine."""
        return np.sin(x)

    def log1p(self, x: T) -> T:
        """``log(1 + x)``."""
        return np.log1p(x)

    def exp(self, x: T) -> T:
        """``e ** x``."""
        return np.exp(x)

    def sqrt(self, x: T) -> T:
        """Square root."""
        return np.sqrt(x)

    def floor(self, x: T) -> T:
        """Floor."""
        return np.floor(x)

    def power(self, x: T, y: T) -> T:
        """``x ** y``."""
        return np.power(x, y)

    def minimum(self, a: T, b: T) -> T:
        """Elementwise minimum."""
        return np.minimum(a, b)

    def maximum(self, a: T, b: T) -> T:
        """Elementwise maximum."""
        return np.maximum(a, b)

    def where(self, cond: T, a: T, b: T) -> T:
        """``a`` where ``cond`` else ``b`` (keeping the compute dtype)."""
        out: Any = np.where(cond, a, b)
        return out.astype(np.result_type(a, b))

    def take(self, table: T, index: T) -> T:
        """``table[index]``."""
        return np.take(table, index)

    def floor_divide(self, a: T, b: T) -> T:
        """Integer floor division."""
        return np.floor_divide(a, b)

    def mod(self, a: T, b: T) -> T:
        """Float remainder (exact)."""
        return np.mod(a, b)

    def logical_and(self, a: T, b: T) -> T:
        """And."""
        return np.logical_and(a, b)

    def logical_or(self, a: T, b: T) -> T:
        """Or."""
        return np.logical_or(a, b)

    def logical_not(self, a: T) -> T:
        """Not."""
        return np.logical_not(a)


# ---- integer steps with an exact fractional offset -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Step:
    """The step ``t = n - sub``: an integer tensor ``n`` and a host constant ``sub`` in ``[0, 1)``.

    Adapters pass whole steps (``sub = 0``); a join boundary at a fractional step makes its pieces'
    local steps fractional, which ``sub`` carries exactly (as a :class:`~fractions.Fraction`).
    """

    n: T
    sub: Fraction


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def _exact(x: float) -> Fraction:
    """The exact rational value of a float (or int)."""
    return Fraction(x)


def _decimal(value: Any) -> Decimal:
    """The decimal the user wrote (``repr`` round-trips a float as its shortest decimal)."""
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


class _Ctx:
    """Comparisons and shifts of :class:`_Step` values with host constants, in one backend."""

    def __init__(self, ops: ArrayOps) -> None:
        self.ops = ops
        self.int_max = _INT_MAX[bool(ops.wide)]

    def _clamp(self, k: int) -> int:
        return max(-self.int_max, min(self.int_max, k))

    def ge(self, s: _Step, b: float | Fraction) -> T:
        """``t >= b``, exactly: ``n >= ceil(b + sub)``."""
        threshold = _ceil(Fraction(b) + s.sub)
        if threshold > self.int_max:
            return s.n > self.ops.iconst(self.int_max)  # never true
        return s.n >= self.ops.iconst(self._clamp(threshold))

    def lt(self, s: _Step, b: float | Fraction) -> T:
        """``t < b``, exactly."""
        return self.ops.logical_not(self.ge(s, b))

    def le(self, s: _Step, b: float | Fraction) -> T:
        """``t <= b``, exactly: ``n <= floor(b + sub)``."""
        threshold = _floor(Fraction(b) + s.sub)
        if threshold >= self.int_max:
            return s.n <= self.ops.iconst(self.int_max)  # always true
        return s.n <= self.ops.iconst(self._clamp(threshold))

    def shift(self, s: _Step, b: float | Fraction) -> _Step:
        """The local step ``max(t - b, 0)`` (pieces and cycles are evaluated from their own step 0)."""
        total = s.sub + Fraction(b)
        k = _floor(total)
        sub = total - k
        n = s.n - self.ops.iconst(self._clamp(k)) if k else s.n
        return _Step(self.ops.maximum(n, self.ops.iconst(_ceil(sub))), sub)

    def value(self, s: _Step) -> T:
        """``t`` as a float tensor."""
        x = self.ops.to_float(s.n)
        return x - self.ops.const(float(s.sub)) if s.sub else x

    def remaining(self, s: _Step, b: float) -> T:
        """``max(b - t, 0)`` as a float tensor, without cancellation: ``(floor(b + sub) - n) + frac``."""
        total = Fraction(b) + s.sub
        whole = _floor(total)
        left = self.ops.to_float(self.ops.iconst(self._clamp(whole)) - s.n)
        if total != whole:
            left = left + self.ops.const(float(total - whole))
        return self.ops.maximum(left, self.ops.const(0.0))

    def value_upto(self, s: _Step, b: float) -> T:
        """``min(t, b)`` as a float tensor, clamped in integers first (no rounding of huge steps)."""
        top = _ceil(Fraction(b) + s.sub)
        n = s.n if top > self.int_max else self.ops.minimum(s.n, self.ops.iconst(top))
        return self.ops.minimum(self.value(_Step(n, s.sub)), self.ops.const(float(b)))


class _Form:
    """One schedule's closed form: ``value(ctx, step)`` is the LR tensor at ``step``."""

    def value(self, ctx: _Ctx, s: _Step) -> T:
        raise NotImplementedError


Compiler = Callable[[Any, bool, Fraction], _Form]
_COMPILERS: dict[type[Schedule], Compiler] = {}


#: Kinds whose "compiler" only refuses them with their own reason (never a traced form).
_REFUSED: set[type[Schedule]] = set()


def _compiles(cls: type[Schedule], *, refuses: bool = False) -> Callable[[Compiler], Compiler]:
    """Register ``fn`` as the translation of ``cls``; ``refuses``: it raises the reason it cannot."""

    def wrap(fn: Compiler) -> Compiler:
        _COMPILERS[cls] = fn
        if refuses:
            _REFUSED.add(cls)
        return fn

    return wrap


def traceable_kinds() -> list[str]:
    """The schedule kinds :func:`compile_schedule` translates, sorted.

    Example:
        >>> "cosine" in traceable_kinds() and "join" in traceable_kinds()
        True
    """
    return sorted(cls.kind for cls in _COMPILERS if cls not in _REFUSED)


def refused_kinds() -> list[str]:
    """The kinds a graph cannot hold, each refused with its own reason (e.g. ``rebatch``), sorted.

    Example:
        >>> import cosanneal.schedules  # registers every kind
        >>> refused_kinds()
        ['rebatch', 'replan']
    """
    return sorted(cls.kind for cls in _REFUSED)


def _compile(schedule: Schedule, wide: bool, sub: Fraction) -> _Form:
    compiler = _COMPILERS.get(type(schedule))
    if compiler is None:
        raise UntraceableScheduleError(
            f"schedule kind {schedule.kind or type(schedule).__name__!r} has no traced closed form, so it cannot "
            f"run inside a Keras or jax graph; use one of {', '.join(traceable_kinds())} "
            "(or a join of them), or write the framework's schedule for it by hand"
        )
    return compiler(schedule, wide, sub)


# ---- exact division of a step by a constant length ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Division:
    """``t = k L + u`` for a constant length ``L = P / Q`` and ``u`` in ``[0, L)``, in integers.

    ``rem`` is an integer tensor with ``u = rem / Q - sub``; ``Q`` is 1 for whole lengths and a
    power of two for dyadic ones.
    """

    k: T
    rem: T
    q: int
    sub: Fraction

    def u(self, ctx: _Ctx) -> T:
        u = ctx.ops.to_float(self.rem)
        if self.q != 1:
            u = u / ctx.ops.const(float(self.q))
        return u - ctx.ops.const(float(self.sub)) if self.sub else u

    def u_below(self, ctx: _Ctx, w: float) -> T:
        """``u < w``, exactly."""
        return self.rem < ctx.ops.iconst(ctx._clamp(_ceil(self.q * (Fraction(w) + self.sub))))

    def u_at_most(self, ctx: _Ctx, w: float) -> T:
        """``u <= w``, exactly."""
        return self.rem <= ctx.ops.iconst(ctx._clamp(_floor(self.q * (Fraction(w) + self.sub))))


def _divisible(length: float, sub: Fraction, wide: bool) -> bool:
    """Whether :func:`_divide` places every multiple of ``length`` exactly in int32/int64."""
    frac = _exact(length)
    p, q = frac.numerator, frac.denominator
    if q == 1:
        return True
    return sub == 0 and p * q <= _INT_MAX[wide]


def _divide(ctx: _Ctx, s: _Step, length: float) -> _Division:
    """``floor(t / length)`` and the remainder for a length :func:`_divisible` accepts."""
    ops = ctx.ops
    frac = _exact(length)
    p, q = frac.numerator, frac.denominator
    if q == 1:
        pc = ops.iconst(ctx._clamp(p))
        k = ops.floor_divide(s.n - ops.iconst(_ceil(s.sub)), pc)
        return _Division(k, s.n - k * pc, 1, s.sub)
    pc, qc = ops.iconst(p), ops.iconst(q)
    a = ops.floor_divide(s.n, pc)
    r = s.n - a * pc
    b = ops.floor_divide(r * qc, pc)
    return _Division(a * qc + b, r * qc - b * pc, q, Fraction(0))


def _divide_float(ctx: _Ctx, x: T, length: float) -> tuple[T, T]:
    """``(floor(x / length), x mod length)`` as numpy's ``divmod`` computes them (float64 only)."""
    ops = ctx.ops
    c = ops.const(length)
    r = ops.mod(x, c)
    return ops.floor((x - r) / c + ops.const(0.5)), r


def _pow(ctx: _Ctx, base: float, y: T) -> T:
    """``base ** y`` for a host constant ``base > 0``, as accurately as the compute precision allows.

    In float32 the rounding of ``base`` itself would be multiplied by ``y`` (``0.99999 ** 230000`` is
    off by 0.7%); for a base near 1 the power is ``exp(y * log(base))`` with the logarithm taken in
    float64 on the host.
    """
    ops = ctx.ops
    if ops.wide or base <= 0.0 or float(np.float32(base)) == base or abs(math.log(base)) >= 1.0:
        return ops.power(ops.const(base), y)
    return ops.exp(y * ops.const(math.log(base)))


def _needs_float64(kind: str, name: str, value: Any, detail: str) -> UntraceableScheduleError:
    return UntraceableScheduleError(
        f"kind {kind!r}: {name}={value!r} is not a whole (or dyadic, like 2.5) number of steps and {detail}, "
        "so its boundaries cannot be placed exactly in float32/int32; compute in float64 "
        "(jax.config.update('jax_enable_x64', True), or Keras on the torch or tensorflow backend) "
        f"or give a whole-step {name}"
    )


# ---- the cosine family ----------------------------------------------------------------------------
def _warmup_curve(ops: ArrayOps, shape: str, frac: T, start: T, end: T) -> T:
    if shape == "linear":
        return start + (end - start) * frac
    if shape == "cosine":
        return start + (end - start) * 0.5 * (1.0 - ops.cos(math.pi * frac))
    return start * ops.power(end / start, frac)


class _CosineForm(_Form):
    """:class:`~cosanneal.schedules.cosine.Cosine`; see the module docstring for the location strategy."""

    def __init__(self, s: Cosine, wide: bool, sub: Fraction) -> None:
        self.s = s
        self.wide = wide
        self.warmup = int(s.warmup_steps)
        self.origin = s.origin
        self.c = float(s.cycle_steps)
        self.m = float(s.cycle_mult)
        self.cw = int(s.cycle_warmup_steps)
        self.last = s.max_cycles
        self.hold = s.cycle_floor(self.last - 1) if self.last is not None else None
        self.sub = sub  # the origin is a whole step: the local step keeps the caller's offset
        self.how = self._strategy()

    def _strategy(self) -> str:
        s, limit = self.s, _INT_MAX[self.wide]
        if self.last == 1:
            return "single"
        if self.m == 1.0 and _divisible(self.c, self.sub, self.wide):
            return "divide"
        if self._tabulate(limit):
            return "table"
        if self.m == 1.0 and self.wide:
            return "float"
        if self.m == 1.0:
            raise _needs_float64(
                "cosine",
                "cycle_steps",
                s.cycle_steps,
                f"cycle_mult=1 repeats it {'forever' if self.last is None else f'{self.last} times'}",
            )
        raise UntraceableScheduleError(
            f"kind 'cosine': cycle_mult={s.cycle_mult!r} restarts more than {TABLE_LIMIT} times before step "
            f"{limit}, more restart steps than a traced schedule keeps; set max_cycles (<= {TABLE_LIMIT}) "
            "or a cycle_mult further from 1"
        )

    def _tabulate(self, limit: int) -> bool:
        """Build the restart steps (cycle starts as the core computes them) and the estimator."""
        s, origin = self.s, Fraction(int(self.origin))
        starts = self._starts(limit)
        if starts is None:
            return False
        thresholds: list[int] = []
        offsets: list[float] = [float(-self.sub)]
        for start in starts:
            local = _exact(start) - origin
            threshold = _ceil(local + self.sub)
            if threshold > limit:
                break
            thresholds.append(threshold)
            offsets.append(float(threshold - self.sub - local))
        if len(thresholds) > TABLE_LIMIT:
            return False
        n = len(thresholds)
        lengths: list[float] = []
        length, m_dec = _decimal(s.cycle_steps), _decimal(s.cycle_mult)  # as the core sums them
        for _ in range(n + 1):  # cycle n too: the cycle running past the end of the step range
            lengths.append(float(length) if self.m != 1.0 else self.c)
            length = _DEC.multiply(length, m_dec)
        if n == self.last:
            lengths[n] = float(self.cw + 1)  # the final hold: never used
        self.thresholds = thresholds
        self.offsets = offsets
        self.lengths = lengths
        self.rounds = self._rounds(np.asarray(thresholds, dtype=np.int64))
        return True

    def _starts(self, limit: int) -> list[float] | None:
        """Absolute starts of cycles 1, 2, ... up to past ``limit`` (``None``: more than the table holds).

        They are the core's own cycle starts (60-digit decimal sums rounded once to float64), read
        after one call that extends its table past ``limit`` (linear, where one ``cycle_start`` per
        cycle would copy the table each time).
        """
        s, c, m, last = self.s, self.c, self.m, self.last
        room = limit + 2.0 - self.origin
        if m == 1.0:
            count = math.floor(room / c) + 1
        elif m > 1.0:
            count = math.floor(math.log1p(room * (m - 1.0) / c) / math.log(m)) + 2
        else:
            count = TABLE_LIMIT + 2  # shrinking cycles: max_cycles bounds them
        if last is not None:
            count = min(count, last)
        if count > TABLE_LIMIT + 1:
            return None
        if m == 1.0:
            return [s.cycle_start(i) for i in range(1, count + 1)]
        s._extend(self.origin + room)  # the core's table now holds every start <= that, and one more
        bounds: list[float] = s._bounds  # type: ignore[attr-defined]
        return bounds[1:] if last is None else bounds[1 : last + 1]

    def _estimate(self, v: Any, xp: Any, one: Any) -> Any:
        """Closed-form cycle index of the local step ``v`` (floats): ``xp`` is numpy or an ArrayOps."""
        if self.m == 1.0:
            return v * (one * (1.0 / self.c))
        a = one * ((self.m - 1.0) / self.c)
        arg = xp.maximum(v * a, one * -0.9999999)
        return xp.log1p(arg) * (one * (1.0 / math.log(self.m)))

    def _rounds(self, thresholds: np.ndarray) -> int:
        """Correction rounds the estimate needs: its worst error at every restart step, plus one."""
        n = len(thresholds)
        if not n:
            return 0
        dtype: Any = np.float64 if self.wide else np.float32
        base = _ceil(self.sub)
        points = np.unique(np.maximum(np.concatenate([thresholds - 1, thresholds, [base]]), base))
        v = points.astype(dtype) - dtype(float(self.sub))
        one = dtype(1.0)
        with np.errstate(all="ignore"):
            est = np.clip(np.floor(self._estimate(v, np, one)), 0, n)
        truth = np.searchsorted(thresholds, points, side="right")
        worst = int(np.max(np.abs(est.astype(np.int64) - truth)))
        if worst + 1 > _MAX_ROUNDS:
            raise UntraceableScheduleError(
                f"kind 'cosine': the closed-form cycle index of cycle_steps={self.s.cycle_steps!r}, "
                f"cycle_mult={self.s.cycle_mult!r} is off by {worst} cycles in "
                f"{'float64' if self.wide else 'float32'} (cycles shorter than a step); compute in float64 "
                "or use fewer, longer cycles"
            )
        return worst + 1

    # ---- evaluation ---------------------------------------------------------------------------
    def _locate(self, ctx: _Ctx, v: _Step) -> tuple[T, T, T, T, T]:
        """``(i, u, length, in_cycle_warmup, held)`` at the local step ``v`` (from the origin)."""
        ops = ctx.ops
        c = ops.const(self.c)
        if self.how == "single":
            held = ctx.ge(v, self.c)
            return None, ctx.value(v), c, None, held
        if self.how == "divide":
            div = _divide(ctx, v, self.c)
            i = div.k
            in_cw = div.u_below(ctx, self.cw) if self.cw else None
            u, length = div.u(ctx), c
        elif self.how == "table":
            i, u, length, in_cw = self._locate_table(ctx, v)
        else:
            i, u, length, in_cw = self._locate_float(ctx, v)
        held = i >= ops.iconst(self.last) if self.last is not None else None
        return i, u, length, in_cw, held

    def _locate_table(self, ctx: _Ctx, v: _Step) -> tuple[T, T, T, T]:
        ops, n = ctx.ops, len(self.thresholds)
        guards = ops.itable([-ctx.int_max, *self.thresholds, ctx.int_max])
        one = ops.const(1.0)
        est = ops.floor(self._estimate(ctx.value(v), ops, one))
        i = ops.to_int(ops.minimum(ops.maximum(est, ops.const(0.0)), ops.const(float(n))))
        top = ops.iconst(n)
        for _ in range(self.rounds):
            i = ops.minimum(i + ops.to_int(v.n >= ops.take(guards, i + ops.iconst(1))), top)
            i = i - ops.to_int(v.n < ops.take(guards, i))
        starts = ops.itable([0, *self.thresholds])
        a = v.n - ops.take(starts, i)
        u = ops.to_float(a) + ops.take(ops.table(self.offsets), i)
        in_cw = a < ops.iconst(self.cw) if self.cw else None
        return i, ops.maximum(u, ops.const(0.0)), ops.take(ops.table(self.lengths), i), in_cw

    def _locate_float(self, ctx: _Ctx, v: _Step) -> tuple[T, T, T, T]:
        """The core's own float64 operations (fixed fractional cycles, wide backends only)."""
        ops = ctx.ops
        c, origin = ops.const(self.c), ops.const(self.origin)
        x = ctx.value(v) + origin
        fi, _ = _divide_float(ctx, x - origin, self.c)
        fi = ops.maximum(fi, ops.const(0.0))
        fi = fi + ops.to_float(origin + (fi + 1.0) * c <= x)
        fi = fi - ops.to_float(ops.logical_and(fi > 0.0, origin + fi * c > x))
        u = x - (fi * c + origin)
        in_cw = u < ops.const(float(self.cw)) if self.cw else None
        return ops.to_int(fi), u, c, in_cw

    def _peaks(self, ctx: _Ctx, i: T) -> tuple[T, T]:
        s, ops = self.s, ctx.ops
        if i is None or float(s.peak_decay) == 1.0:
            return ops.const(s.cycle_peak(0)), ops.const(s.cycle_floor(0))
        if self.last is not None:
            i = ops.minimum(i, ops.iconst(self.last - 1))
        decay = _pow(ctx, float(s.peak_decay), ops.to_float(i))
        peak = ops.const(float(s.peak_lr))
        if s.peak_decay_mode == "amplitude":
            base = ops.const(s.cycle_floor(0))  # the fixed floor (min_lr, or min_ratio * peak_lr)
            return base + (peak - base) * decay, base
        top = ops.maximum(peak * decay, ops.const(s.cycle_floor_fixed_part()))
        if s.min_ratio is not None:
            return top, ops.const(float(s.min_ratio)) * top
        return top, ops.const(float(s.min_lr))

    def value(self, ctx: _Ctx, s: _Step) -> T:
        ops, sched = ctx.ops, self.s
        v = ctx.shift(s, self.origin)
        i, u, length, in_cw, held = self._locate(ctx, v)
        top, bottom = self._peaks(ctx, i)
        if self.cw and i is not None:
            cw = ops.where(i > ops.iconst(0), ops.const(float(self.cw)), ops.const(0.0))
            p = (u - cw) / (length - cw)
        else:
            p = u / length
        if float(sched.k) != 1.0:
            p = ops.power(ops.maximum(p, ops.const(0.0)), ops.const(float(sched.k)))
        out = bottom + 0.5 * (top - bottom) * (1.0 + ops.cos(p * math.pi))
        if self.cw and i is not None:
            ramp = _warmup_curve(ops, sched.warmup_shape, u / float(self.cw), bottom, top)
            out = ops.where(ops.logical_and(i > ops.iconst(0), in_cw), ramp, out)
        if held is not None and self.hold is not None:
            out = ops.where(held, ops.const(self.hold), out)
        if self.warmup:
            frac = ctx.value(s) / float(self.warmup)
            ramp = _warmup_curve(
                ops,
                sched.warmup_shape,
                frac,
                ops.const(float(sched.warmup_start_lr)),
                ops.const(float(sched.peak_lr)),
            )
            out = ops.where(ctx.lt(s, self.warmup), ramp, out)
        return out


@_compiles(Cosine)
def _cosine(s: Cosine, wide: bool, sub: Fraction) -> _Form:
    return _CosineForm(s, wide, sub)


# ---- baselines ------------------------------------------------------------------------------------
class _Lambda(_Form):
    def __init__(self, fn: Callable[[_Ctx, _Step], T]) -> None:
        self.fn = fn

    def value(self, ctx: _Ctx, s: _Step) -> T:
        return self.fn(ctx, s)


@_compiles(Constant)
def _constant(s: Constant, wide: bool, sub: Fraction) -> _Form:
    return _Lambda(lambda ctx, st: ctx.ops.to_float(st.n) * 0.0 + ctx.ops.const(float(s.lr)))


@_compiles(Step)
def _step(s: Step, wide: bool, sub: Fraction) -> _Form:
    size, gamma, lr = float(s.step_size), float(s.gamma), float(s.lr)
    if gamma == 1.0:
        return _constant(Constant(lr), wide, sub)
    exact = _divisible(size, sub, wide)
    if not exact and not wide:
        raise _needs_float64("step", "step_size", s.step_size, "the LR decays at every multiple of it")

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        k = ops.to_float(_divide(ctx, st, size).k) if exact else _divide_float(ctx, ctx.value(st), size)[0]
        return ops.const(lr) * _pow(ctx, gamma, k)

    return _Lambda(value)


@_compiles(MultiStep)
def _multistep(s: MultiStep, wide: bool, sub: Fraction) -> _Form:
    points, gamma, lr = [float(m) for m in s.milestones], float(s.gamma), float(s.lr)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        count = ops.to_float(st.n) * 0.0
        for point in points:
            count = count + ops.to_float(ctx.ge(st, point))
        return ops.const(lr) * _pow(ctx, gamma, count)

    return _Lambda(value)


@_compiles(Exponential)
def _exponential(s: Exponential, wide: bool, sub: Fraction) -> _Form:
    lr, gamma, floor = float(s.lr), float(s.gamma), float(s.min_lr)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        out = _pow(ctx, gamma, ctx.value(st)) * ops.const(lr)
        return ops.maximum(out, ops.const(floor))

    return _Lambda(value)


@_compiles(Polynomial)
def _polynomial(s: Polynomial, wide: bool, sub: Fraction) -> _Form:
    total, lr, end, power = float(s.total_steps), float(s.lr), float(s.end_lr), float(s.power)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        rest = ctx.remaining(st, total) / total  # 1 - min(t, T) / T, without cancellation
        if power != 1.0:
            rest = ops.power(ops.maximum(rest, ops.const(0.0)), ops.const(power))
        return ops.minimum(rest * (lr - end) + end, ops.const(lr))

    return _Lambda(value)


@_compiles(Linear)
def _linear(s: Linear, wide: bool, sub: Fraction) -> _Form:
    start, end, total = float(s.start_lr), float(s.end_lr), float(s.total_steps)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        out = ctx.value_upto(st, total) / total * (end - start) + start
        return ops.minimum(ops.maximum(out, ops.const(min(start, end))), ops.const(max(start, end)))

    return _Lambda(value)


@_compiles(Cyclic)
def _cyclic(s: Cyclic, wide: bool, sub: Fraction) -> _Form:
    up, down = s._sizes
    total = up + down
    top, base, gamma = float(s.max_lr), float(s.base_lr), float(s.gamma)
    exact = _divisible(total, sub, wide)
    if not exact and not wide:
        raise _needs_float64("cyclic", "step_size_up + step_size_down", total, "the triangles repeat forever")

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        if exact:
            div = _divide(ctx, st, total)
            k, u, rising = div.k, div.u(ctx), div.u_at_most(ctx, up)
            kf = ops.to_float(k)
        else:
            kf, u = _divide_float(ctx, ctx.value(st), total)
            rising = u <= ops.const(up)
        scale = ops.where(rising, u / up, (total - u) / down)
        if s.mode == "triangular2":
            scale = scale * ops.power(ops.const(0.5), kf)
        elif s.mode == "exp_range":
            scale = scale * _pow(ctx, gamma, ctx.value(st))
        out = (top - base) * scale + base
        return ops.where(scale == 1.0, ops.const(top), out)

    return _Lambda(value)


# ---- composition and the other families ---------------------------------------------------------
class _JoinForm(_Form):
    def __init__(self, s: Join, wide: bool, sub: Fraction) -> None:
        self.starts = [Fraction(0), *(_exact(float(b)) for b in s.boundaries)]
        self.pieces = []
        for piece, start in zip(s.schedules, self.starts, strict=True):
            total = sub + start
            self.pieces.append(_compile(piece, wide, total - _floor(total)))

    def value(self, ctx: _Ctx, s: _Step) -> T:
        out = self.pieces[0].value(ctx, s)
        for piece, start in zip(self.pieces[1:], self.starts[1:], strict=True):
            out = ctx.ops.where(ctx.ge(s, start), piece.value(ctx, ctx.shift(s, start)), out)
        return out


@_compiles(Join)
def _join(s: Join, wide: bool, sub: Fraction) -> _Form:
    return _JoinForm(s, wide, sub)


@_compiles(OneCycle)
def _onecycle(s: OneCycle, wide: bool, sub: Fraction) -> _Form:
    phases = s._phases  # type: ignore[attr-defined]
    last = float(int(s.total_steps) - 1)
    strategy = s.anneal_strategy

    def anneal(ctx: _Ctx, y0: float, y1: float, p: T) -> T:
        if strategy == "cos":
            return y1 + (y0 - y1) / 2.0 * (ctx.ops.cos(math.pi * p) + 1.0)
        return (y1 - y0) * p + y0

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        t = ops.minimum(ctx.value(st), ops.const(last))
        out = None
        for k in range(len(phases) - 1, -1, -1):
            ph = phases[k]
            y0, y1 = ph.lr
            if ph.end == ph.start:
                phase_value = ops.const(y1) + t * 0.0
            else:
                phase_value = anneal(ctx, y0, y1, (t - ph.start) / (ph.end - ph.start))
            if out is None:  # the last phase: everything the earlier ones leave
                out = phase_value
            elif last > ph.end:  # min(t, T - 1) <= end  <=>  t <= end, when T - 1 > end
                out = ops.where(ctx.le(st, ph.end), phase_value, out)
            else:
                out = phase_value
        return out

    return _Lambda(value)


@_compiles(WarmupStableDecay)
def _wsd(s: WarmupStableDecay, wide: bool, sub: Fraction) -> _Form:
    peak, r = float(s.peak_lr), float(s.min_lr_ratio)
    warmup, stable, decay = int(s.warmup_steps), int(s.stable_steps), int(s.decay_steps)

    def warmup_factor(ctx: _Ctx, st: _Step, p: T) -> T:
        ops = ctx.ops
        if s.warmup_shape == "linear":
            return p
        if s.warmup_shape == "cosine":
            return 0.5 * (1.0 - ops.cos(math.pi * p))
        return 1.0 - ops.sqrt(ctx.remaining(st, warmup) / float(warmup))  # 1 - p, without cancellation

    def decay_factor(ops: ArrayOps, p: T) -> T:
        if s.decay_shape == "linear":
            return 1.0 - p
        if s.decay_shape == "cosine":
            return 0.5 * (1.0 + ops.cos(math.pi * p))
        return 1.0 - ops.sqrt(p)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        out = ops.to_float(st.n) * 0.0 + ops.const(peak * r)
        decay_start = warmup + stable
        if decay:
            p = ops.minimum(ctx.value(ctx.shift(st, decay_start)) / float(decay), ops.const(1.0))
            decaying = ops.logical_and(ctx.ge(st, decay_start), ctx.lt(st, decay_start + decay))
            out = ops.where(decaying, peak * (decay_factor(ops, p) * (1.0 - r) + r), out)
        if stable:
            steady = ops.logical_and(ctx.ge(st, warmup), ctx.lt(st, decay_start))
            out = ops.where(steady, ops.const(peak), out)
        if warmup:
            p = ops.minimum(ctx.value(st) / float(warmup), ops.const(1.0))
            out = ops.where(ctx.lt(st, warmup), peak * (warmup_factor(ctx, st, p) * (1.0 - r) + r), out)
        return out

    return _Lambda(value)


@_compiles(OptaxCosine)
def _optax_cosine(s: OptaxCosine, wide: bool, sub: Fraction) -> _Form:
    warmup = s.warmup_steps
    init, peak, end, exponent = (
        float(s.init_value),
        float(s.peak_value),
        float(s.end_value),
        float(s.exponent),
    )
    length = float(s.decay_steps) - warmup

    total = float(s.decay_steps)

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        if exponent != 1.0 and not ops.wide:
            # c = (1 + cos(pi u / L)) / 2 = sin(pi (L - u) / 2L)^2: in float32 the power of the
            # cancelling 1 + cos would lose ~1e-3 relative near the end; L - u = decay_steps - t is exact
            rest = ctx.remaining(st, total)
            c = ops.power(ops.sin(rest * (math.pi / 2.0 / length)), ops.const(2.0 * exponent))
        else:
            u = ctx.value_upto(ctx.shift(st, warmup), length)
            c = 0.5 * (1.0 + ops.cos(math.pi * (u / length)))
            if exponent != 1.0:
                c = ops.power(c, ops.const(exponent))
        out = end + (peak - end) * c
        if warmup:
            ramp = init + (peak - init) * (ctx.value(st) / float(warmup))
            out = ops.where(ctx.lt(st, warmup), ramp, out)
        return out

    return _Lambda(value)


@_compiles(HfCosineCycles)
def _hf_cosine_cycles(s: HfCosineCycles, wide: bool, sub: Fraction) -> _Form:
    warmup, peak, r = s.num_warmup_steps, float(s.peak_lr), float(s.min_lr_rate)
    length = max(1, s.num_training_steps - warmup)
    angle = math.pi * float(s.num_cycles) * 2.0

    def value(ctx: _Ctx, st: _Step) -> T:
        ops = ctx.ops
        p = ctx.value_upto(ctx.shift(st, warmup), float(length)) / float(length)
        factor = 0.5 * (1.0 + ops.cos(angle * p))
        out = peak * ops.maximum(ops.const(0.0), factor * (1.0 - r) + r)
        if warmup:
            out = ops.where(ctx.lt(st, warmup), peak * (ctx.value(st) / float(max(1, warmup))), out)
        return out

    return _Lambda(value)


# ---- the public entry point ---------------------------------------------------------------------
class Traced:
    r"""A schedule compiled to tensor operations: ``program(ops, n)`` is ``lr(n)`` for integer steps ``n``.

    The program gives the core's value at every step ``n >= 0`` (boundaries exactly, values to the
    compute precision) and NaN at a negative step (a traced function cannot raise). ``n`` must be an
    integer tensor; the result has ``n``'s shape and the compute float dtype.

    Attributes:
        schedule: the cosanneal schedule it computes.
        wide: ``True`` for float64/int64 programs, ``False`` for float32/int32 ones.
    """

    def __init__(self, schedule: Schedule, wide: bool) -> None:
        schedule.require_bound()
        self.schedule = schedule
        self.wide = wide
        self._form = _compile(schedule, wide, Fraction(0))

    def __call__(self, ops: ArrayOps, n: T) -> T:
        """Evaluate at the integer step tensor ``n`` (already in the step dtype of ``ops``)."""
        if bool(ops.wide) != self.wide:
            raise ValueError(f"this program was compiled for wide={self.wide}, got ops.wide={ops.wide}")
        ctx = _Ctx(ops)
        with np.errstate(all="ignore"):  # NumpyOps: lanes another branch replaces may overflow
            out = self._form.value(ctx, _Step(n, Fraction(0)))
            return ops.where(n < ops.iconst(0), ops.const(math.nan), out)


def compile_schedule(schedule: Schedule, *, wide: bool) -> Traced:
    """Compile ``schedule`` into a :class:`Traced` program for float64/int64 (``wide``) or float32/int32.

    Args:
        schedule: any bound cosanneal schedule of a kind in :func:`traceable_kinds`.
        wide: whether the backend computes in float64 with int64 steps.

    Returns:
        The program; building it does all host-side work (restart steps, exact thresholds) once.

    Raises:
        ScheduleError: a length still needs :meth:`~cosanneal.schedules.base.Schedule.bind`.
        UntraceableScheduleError: the kind has no closed form here, or its boundaries cannot be
            placed exactly in this precision (the message says what to change).

    Example:
        >>> import numpy as np
        >>> from cosanneal.schedules import Step
        >>> compile_schedule(Step(1.0, step_size=7.3), wide=False)
        Traceback (most recent call last):
        ...
        cosanneal.schedules._traced.UntraceableScheduleError: kind 'step': step_size=7.3 is not a whole \
(or dyadic, like 2.5) number of steps and the LR decays at every multiple of it, so its boundaries cannot be \
placed exactly in float32/int32; compute in float64 (jax.config.update('jax_enable_x64', True), or Keras on \
the torch or tensorflow backend) or give a whole-step step_size
    """
    return Traced(schedule, wide)


class Programs:
    """A schedule and its compiled programs, one per precision, each compiled on first use.

    What the framework adapters (``cosanneal.jax``, ``cosanneal.keras``) share: the schedule (a
    :class:`~cosanneal.Schedule` or its ``to_dict()``) is checked once, and ``programs(wide)`` returns
    the float64/int64 (``wide``) or float32/int32 program, compiling it the first time.

    Raises:
        ScheduleError: ``schedule`` is neither a schedule nor its ``to_dict()``.

    Example:
        >>> from cosanneal.schedules import Cosine
        >>> programs = Programs({"kind": "cosine", "peak_lr": 1.0, "cycle_steps": 4})
        >>> programs(True) is programs(True), programs.schedule == Cosine(1.0, cycle_steps=4)
        (True, True)
    """

    def __init__(self, schedule: Schedule | Mapping[str, Any]) -> None:
        if isinstance(schedule, Mapping):
            schedule = from_dict(schedule)
        if not isinstance(schedule, Schedule):
            raise ScheduleError(f"schedule must be a cosanneal Schedule (or its to_dict()), got {schedule!r}")
        self.schedule: Schedule = schedule
        self._compiled: dict[bool, Traced] = {}

    @property
    def compiled(self) -> tuple[bool, ...]:
        """The precisions compiled so far (``True``: float64/int64), in the order they were compiled."""
        return tuple(self._compiled)

    def __call__(self, wide: bool) -> Traced:
        """The program for ``wide`` (float64/int64) or not (float32/int32)."""
        program = self._compiled.get(wide)
        if program is None:
            program = self._compiled[wide] = compile_schedule(self.schedule, wide=wide)
        return program
