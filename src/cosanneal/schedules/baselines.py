r"""Baseline schedules, for comparison and for composition with :class:`~cosanneal.schedules.join.Join`.

Each is a closed form of the step ``t`` (no recursion on the previous LR), so it resumes exactly and
evaluates an array of steps in one call:

* :class:`Constant`: ``lr``;
* :class:`Step`: ``lr * gamma ** floor(t / step_size)`` (PyTorch ``StepLR``);
* :class:`MultiStep`: ``lr * gamma ** #{m in milestones : m <= t}`` (PyTorch ``MultiStepLR``);
* :class:`Exponential`: ``max(lr * gamma ** t, min_lr)`` (PyTorch ``ExponentialLR``);
* :class:`Polynomial`: ``(lr - end_lr) (1 - min(t, T) / T) ** power + end_lr`` (PyTorch ``PolynomialLR``,
  Hugging Face ``get_polynomial_decay_schedule_with_warmup``);
* :class:`Linear`: ``start_lr + (end_lr - start_lr) min(t, T) / T`` (PyTorch ``LinearLR``);
* :class:`Cyclic`: triangular cycles between ``base_lr`` and ``max_lr`` (PyTorch ``CyclicLR``).

The scalar and the array path use the same floating-point operations (powers through
``numpy.power`` on both), so ``s(t) == s(np.array([t]))[0]`` bit for bit.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules import durations
from cosanneal.schedules.base import (
    CycleInfo,
    FloatArray,
    Schedule,
    as_number,
    check_step,
    power,
    power_fixed,
    register,
)

M = TypeVar("M", bound="MultiStep")

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


# ---- sequences of step positions (milestones, join boundaries) ---------------------------------
def _unit(value: Any) -> tuple[str, float]:
    """The unit (``"st"``, ``"ep"``, ``"dur"``, ``"sp"`` or ``"tok"``) and amount of a parsed position."""
    if not durations.is_unbound(value):
        return "st", float(value)
    unit, amount = durations.split(str(value))
    return unit, float(amount)


def parse_points(name: str, values: Any, *, allow_empty: bool = False) -> tuple[Any, ...]:
    """Validate a sequence of step positions (numbers or durations) and return it as a tuple.

    Each entry is a number ``> 0`` or a duration string (``"500st"``, ``"3ep"``, ``"0.5dur"``, ``"2e6sp"``,
    ``"5e7tok"``); entries
    of the same unit must be strictly increasing (entries of different units are compared once bound).

    Args:
        name: the parameter's name, for error messages (``milestones``, ``boundaries``).
        values: a list or tuple of positions.
        allow_empty: accept an empty sequence.

    Returns:
        The positions as a tuple; step strings and whole floats become ints (``30.0`` -> ``30``).

    Raises:
        ScheduleError: not a sequence, empty, an entry is not a positive length, or out of order.

    Example:
        >>> parse_points("milestones", [30.0, "60st", "2ep", 90.5])
        (30, 60, '2ep', 90.5)
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ScheduleError(f"{name} must be a list of steps, got {values!r}")
    if not values and not allow_empty:
        raise ScheduleError(f"{name} must hold at least one step, got {values!r}")
    out: list[Any] = []
    last: dict[str, tuple[float, Any]] = {}
    for i, raw in enumerate(values):
        label = f"{name}[{i}]"
        value = durations.parse(label, raw)
        if not durations.is_unbound(value):
            value = as_number(v.number(label, value, gt=0.0))
        unit, amount = _unit(value)
        if unit != "st" and amount <= 0.0:
            raise ScheduleError(f"{label} must be > 0, got {raw!r}")
        if unit in last and not amount > last[unit][0]:
            raise ScheduleError(
                f"{name} must be strictly increasing; {label}={raw!r} follows {last[unit][1]!r}"
            )
        last[unit] = (amount, raw)
        out.append(value)
    return tuple(out)


def unbound_points(name: str, values: Sequence[Any]) -> dict[str, str]:
    """The entries of a position sequence still given in epochs or as a fraction of the run."""
    return {f"{name}[{i}]": value for i, value in enumerate(values) if durations.is_unbound(value)}


def bind_points(
    name: str,
    values: Sequence[Any],
    *,
    total_steps: float | None,
    steps_per_epoch: float | None,
    samples_per_update: float | None = None,
    tokens_per_update: float | None = None,
) -> tuple[Any, ...]:
    """Resolve every epoch, fraction, sample or token position of a sequence to steps (see :meth:`Schedule.bind`)."""
    return tuple(
        durations.resolve(
            f"{name}[{i}]",
            value,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            samples_per_update=samples_per_update,
            tokens_per_update=tokens_per_update,
        )
        for i, value in enumerate(values)
    )


def _lengths(schedule: Schedule) -> None:
    """Parse the duration fields of ``schedule`` (``None`` passes) and check that each is > 0."""
    for name in schedule.duration_fields:
        raw = getattr(schedule, name)
        value = durations.parse(name, raw)
        if value is None:
            continue
        if not durations.is_unbound(value):
            v.number(name, value, gt=0.0)
        elif _unit(value)[1] <= 0.0:
            raise ScheduleError(f"{name} must be > 0, got {raw!r}")
        object.__setattr__(schedule, name, value)


# ---- schedules ---------------------------------------------------------------------------------
class _Settling(Schedule):
    """A schedule without restarts: one cycle up to its horizon, then the hold as a cycle of its own."""

    def cycle(self, t: float) -> CycleInfo:
        """``(0, 0, horizon)`` before the horizon; ``(1, horizon, inf)`` in the final hold.

        A schedule that never changes (horizon 0) or never settles (horizon ``None``) is one endless
        cycle ``(0, 0, inf)``, the same convention as :class:`~cosanneal.schedules.cosine.Cosine`.
        """
        self.require_bound()
        t = check_step(t)
        end = self.horizon
        if end is None or end == 0.0:
            return CycleInfo(0, 0, math.inf)
        if t >= end:
            return CycleInfo(1, as_number(float(end)), math.inf)
        return CycleInfo(0, 0, as_number(float(end)))


@register("constant")
@dataclasses.dataclass(frozen=True)
class Constant(_Settling):
    """The same LR at every step; its phase is ``"hold"`` everywhere.

    Formula: ``lr(t) = lr``. PyTorch equivalent: no scheduler (or ``ConstantLR`` with ``factor=1``).

    Args:
        lr: the learning rate (>= 0; 0 freezes training, e.g. as a piece of a join).

    Example:
        >>> s = Constant(0.01)
        >>> s(0), s(10**9), s.phase(5), s.horizon
        (0.01, 0.01, 'hold', 0.0)
    """

    lr: float

    def __post_init__(self) -> None:
        v.number("lr", self.lr, ge=0.0)

    def _scalar(self, t: float) -> float:
        return float(self.lr)

    def _vector(self, t: FloatArray) -> FloatArray:
        return np.full(t.shape, float(self.lr))

    @property
    def peak(self) -> float:
        """``lr``."""
        return float(self.lr)

    @property
    def horizon(self) -> float:
        """0: the LR never changes."""
        return 0.0


@register("step")
@dataclasses.dataclass(frozen=True)
class Step(_Settling):
    """Decay by ``gamma`` every ``step_size`` steps.

    Formula: ``lr(t) = lr * gamma ** floor(t / step_size)``. PyTorch equivalent:
    ``StepLR(optimizer, step_size, gamma)`` with the optimizer's LR set to ``lr``.

    Args:
        lr: the LR before the first decay (> 0).
        step_size: steps between decays (> 0, may be fractional) or a duration (``"30ep"``).
        gamma: factor applied at each decay, ``0 < gamma <= 1``.

    Example:
        >>> s = Step(0.1, step_size=30, gamma=0.5)
        >>> s(0), s(29), s(30), s(65)
        (0.1, 0.1, 0.05, 0.025)
    """

    lr: float
    step_size: float | str
    gamma: float = 0.1

    duration_fields = ("step_size",)

    def __post_init__(self) -> None:
        v.number("lr", self.lr, gt=0.0)
        v.number("gamma", self.gamma, gt=0.0, le=1.0)
        _lengths(self)

    def _scalar(self, t: float) -> float:
        return float(self.lr) * power(float(self.gamma), t // float(self.step_size))

    def _vector(self, t: FloatArray) -> FloatArray:
        k = np.floor_divide(t, float(self.step_size))
        last = float(k.max()) if k.size else 0.0
        if last < k.size:  # fewer decays than steps: one power per decay, then a lookup
            levels: FloatArray = np.power(float(self.gamma), np.arange(last + 1.0))
            return float(self.lr) * levels[k.astype(np.intp)]
        return float(self.lr) * np.power(float(self.gamma), k)

    @property
    def peak(self) -> float:
        """``lr``."""
        return float(self.lr)

    @property
    def horizon(self) -> float | None:
        """0 when ``gamma == 1`` (constant), else ``None``: the LR keeps decaying."""
        return 0.0 if float(self.gamma) == 1.0 else None


@register("multistep")
@dataclasses.dataclass(frozen=True)
class MultiStep(_Settling):
    """Decay by ``gamma`` at each milestone.

    Formula: ``lr(t) = lr * gamma ** n(t)`` with ``n(t)`` the number of milestones ``<= t``. PyTorch
    equivalent: ``MultiStepLR(optimizer, milestones, gamma)``.

    Args:
        lr: the LR before the first milestone (> 0).
        milestones: strictly increasing steps ``> 0`` (numbers or durations such as ``"30ep"``).
        gamma: factor applied at each milestone (> 0; above 1 the LR grows, which stays bounded).

    Example:
        >>> s = MultiStep(1.0, milestones=[10, 25], gamma=0.5)
        >>> s(9), s(10), s(24.5), s(25), s.horizon
        (1.0, 0.5, 0.5, 0.25, 25.0)
    """

    lr: float
    milestones: tuple[float | str, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        v.number("lr", self.lr, gt=0.0)
        v.number("gamma", self.gamma, gt=0.0)
        object.__setattr__(self, "milestones", parse_points("milestones", self.milestones))

    @functools.cached_property
    def _levels(self) -> FloatArray:
        """The LR after ``k`` milestones, for ``k = 0 .. len(milestones)``."""
        levels: FloatArray = np.power(float(self.gamma), np.arange(len(self.milestones) + 1.0))
        return float(self.lr) * levels

    @functools.cached_property
    def _points(self) -> tuple[float, ...]:
        return tuple(float(m) for m in self.milestones)

    @functools.cached_property
    def _point_array(self) -> FloatArray:
        return np.array(self._points)

    def _scalar(self, t: float) -> float:
        return float(self._levels[bisect.bisect_right(self._points, t)])

    def _vector(self, t: FloatArray) -> FloatArray:
        return self._levels[np.searchsorted(self._point_array, t, side="right")]

    @property
    def peak(self) -> float:
        """``lr``, or the last level when ``gamma > 1``."""
        return max(float(self.lr), float(self._levels[-1]))

    @property
    def horizon(self) -> float:
        """The last milestone (0 when ``gamma == 1``)."""
        self.require_bound()
        return 0.0 if float(self.gamma) == 1.0 else float(self.milestones[-1])

    def unbound_fields(self) -> dict[str, str]:
        """Milestones still given in epochs, as a fraction of the run, in samples or tokens (``milestones[i]``)."""
        return unbound_points("milestones", self.milestones)

    def bind(
        self: M,
        total_steps: float | None = None,
        steps_per_epoch: float | None = None,
        *,
        samples_per_update: float | None = None,
        tokens_per_update: float | None = None,
    ) -> M:
        """Return this schedule with every milestone resolved to steps (the formulas of :meth:`Schedule.bind`).

        Example:
            >>> MultiStep(0.1, ["1ep", "0.5dur"]).bind(total_steps=1000, steps_per_epoch=100).milestones
            (100, 500)
            >>> MultiStep(0.1, ["1e6sp", "3e6sp"]).bind(samples_per_update=1024).milestones
            (977, 2930)
        """
        resolved = bind_points(
            "milestones",
            self.milestones,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            samples_per_update=samples_per_update,
            tokens_per_update=tokens_per_update,
        )
        return self if resolved == self.milestones else dataclasses.replace(self, milestones=resolved)


@register("exponential")
@dataclasses.dataclass(frozen=True)
class Exponential(_Settling):
    """Multiply the LR by ``gamma`` every step, down to an optional floor.

    Formula: ``lr(t) = max(lr * gamma ** t, min_lr)``. PyTorch equivalent (``min_lr = 0``):
    ``ExponentialLR(optimizer, gamma)``.

    Args:
        lr: the LR at step 0 (> 0).
        gamma: factor per step, ``0 < gamma <= 1``.
        min_lr: floor, ``0 <= min_lr <= lr``.

    Example:
        >>> s = Exponential(1.0, gamma=0.5, min_lr=0.1)
        >>> s(0), s(1), s(2.5) == 0.5**2.5, s(4), s.horizon
        (1.0, 0.5, True, 0.1, 3.321928094887362)
    """

    lr: float
    gamma: float
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        lr = v.number("lr", self.lr, gt=0.0)
        v.number("gamma", self.gamma, gt=0.0, le=1.0)
        if v.number("min_lr", self.min_lr, ge=0.0) > lr:
            raise ScheduleError(f"min_lr must be <= lr ({self.lr!r}), got {self.min_lr!r}")

    def _scalar(self, t: float) -> float:
        return max(float(self.lr) * power(float(self.gamma), t), float(self.min_lr))

    def _vector(self, t: FloatArray) -> FloatArray:
        out = np.power(float(self.gamma), t)
        out *= float(self.lr)
        return np.maximum(out, float(self.min_lr), out=out)

    @property
    def peak(self) -> float:
        """``lr``."""
        return float(self.lr)

    @functools.cached_property
    def horizon(self) -> float | None:  # type: ignore[override]
        """First step where the LR reaches ``min_lr``; ``None`` when ``min_lr`` is 0."""
        lr, gamma, floor = float(self.lr), float(self.gamma), float(self.min_lr)
        if gamma == 1.0 or floor == lr:
            return 0.0
        if floor == 0.0:
            return None
        h = math.log(floor / lr) / math.log(gamma)
        for _ in range(64):  # settle on the first float step whose LR is the floor
            if self._scalar(h) > floor:
                h = math.nextafter(h, math.inf)
            elif h > 0.0 and self._scalar(math.nextafter(h, 0.0)) <= floor:
                h = math.nextafter(h, 0.0)
            else:
                break
        return h


@register("polynomial")
@dataclasses.dataclass(frozen=True)
class Polynomial(_Settling):
    """Polynomial decay from ``lr`` to ``end_lr`` over ``total_steps``, then hold ``end_lr``.

    Formula: ``lr(t) = (lr - end_lr) * (1 - min(t, T) / T) ** power + end_lr`` with ``T = total_steps``.
    PyTorch equivalent (``end_lr = 0``): ``PolynomialLR(optimizer, total_iters=T, power=power)``; Hugging
    Face: ``get_polynomial_decay_schedule_with_warmup(optimizer, 0, T, lr_end=end_lr, power=power)``.

    Args:
        lr: the LR at step 0 (> 0).
        total_steps: decay length ``T`` (> 0) or a duration (``"1dur"``).
        power: exponent of the decay (> 0; 1 is linear).
        end_lr: the LR held from ``T`` on, ``0 <= end_lr <= lr``.

    Example:
        >>> s = Polynomial(1.0, total_steps=10, power=2.0, end_lr=0.1)
        >>> s(0), round(s(5), 12), s(10), s(99)
        (1.0, 0.325, 0.1, 0.1)
    """

    lr: float
    total_steps: float | str
    power: float = 1.0
    end_lr: float = 0.0

    duration_fields = ("total_steps",)

    def __post_init__(self) -> None:
        lr = v.number("lr", self.lr, gt=0.0)
        v.number("power", self.power, gt=0.0)
        if v.number("end_lr", self.end_lr, ge=0.0) > lr:
            raise ScheduleError(f"end_lr must be <= lr ({self.lr!r}), got {self.end_lr!r}")
        _lengths(self)

    def _scalar(self, t: float) -> float:
        total, lr, end = float(self.total_steps), float(self.lr), float(self.end_lr)
        rest = 1.0 - min(t, total) / total
        if float(self.power) != 1.0:
            rest = power_fixed(rest, float(self.power))
        return min((lr - end) * rest + end, lr)

    def _vector(self, t: FloatArray) -> FloatArray:
        total, lr, end = float(self.total_steps), float(self.lr), float(self.end_lr)
        rest = np.minimum(t, total)
        rest /= total
        np.subtract(1.0, rest, out=rest)
        if float(self.power) != 1.0:
            np.power(rest, float(self.power), out=rest)
        rest *= lr - end
        rest += end
        return np.minimum(rest, lr, out=rest)

    @property
    def peak(self) -> float:
        """``lr``."""
        return float(self.lr)

    @property
    def horizon(self) -> float:
        """``total_steps`` (0 when ``end_lr == lr``)."""
        self.require_bound()
        return 0.0 if float(self.end_lr) == float(self.lr) else float(self.total_steps)


@register("linear")
@dataclasses.dataclass(frozen=True)
class Linear(_Settling):
    """Linear ramp from ``start_lr`` to ``end_lr`` over ``total_steps``, then hold ``end_lr``.

    Formula: ``lr(t) = start_lr + (end_lr - start_lr) * min(t, T) / T`` with ``T = total_steps``.
    PyTorch equivalent: ``LinearLR(optimizer, start_factor, end_factor, total_iters=T)`` with
    ``start_lr = base_lr * start_factor`` and ``end_lr = base_lr * end_factor``. A rising ramp is a
    linear warmup: its phase is ``"warmup"``; a falling one is ``"anneal"``; after ``T``, ``"hold"``.

    Args:
        start_lr: the LR at step 0 (>= 0).
        end_lr: the LR from step ``T`` on (>= 0).
        total_steps: ramp length ``T`` (> 0) or a duration (``"2ep"``, ``"0.05dur"``).

    Example:
        >>> warmup = Linear(0.0, 0.1, total_steps=100)
        >>> warmup(0), warmup(50), warmup(100), warmup(500), warmup.phase(50)
        (0.0, 0.05, 0.1, 0.1, 'warmup')
    """

    start_lr: float
    end_lr: float
    total_steps: float | str

    duration_fields = ("total_steps",)

    def __post_init__(self) -> None:
        v.number("start_lr", self.start_lr, ge=0.0)
        v.number("end_lr", self.end_lr, ge=0.0)
        _lengths(self)

    def _scalar(self, t: float) -> float:
        start, end, total = float(self.start_lr), float(self.end_lr), float(self.total_steps)
        lr = start + (end - start) * (min(t, total) / total)
        return min(max(lr, min(start, end)), max(start, end))

    def _vector(self, t: FloatArray) -> FloatArray:
        start, end, total = float(self.start_lr), float(self.end_lr), float(self.total_steps)
        out = np.minimum(t, total)
        out /= total
        out *= end - start
        out += start
        return np.clip(out, min(start, end), max(start, end), out=out)

    @property
    def peak(self) -> float:
        """``max(start_lr, end_lr)``."""
        return max(float(self.start_lr), float(self.end_lr))

    @property
    def horizon(self) -> float:
        """``total_steps`` (0 when ``start_lr == end_lr``)."""
        self.require_bound()
        return 0.0 if float(self.start_lr) == float(self.end_lr) else float(self.total_steps)

    def phase(self, t: float) -> str:
        """``"warmup"`` on a rising ramp, ``"anneal"`` on a falling one, then ``"hold"``."""
        self.require_bound()
        if check_step(t) >= self.horizon:
            return "hold"
        return "warmup" if float(self.end_lr) > float(self.start_lr) else "anneal"


@register("cyclic")
@dataclasses.dataclass(frozen=True)
class Cyclic(Schedule):
    r"""Cyclical LR (Smith, 2017): triangular cycles between ``base_lr`` and ``max_lr``.

    With ``U = step_size_up``, ``D = step_size_down`` (``U`` when ``None``), ``C = U + D``, the cycle
    index ``k = floor(t / C)`` and the step inside the cycle ``u = t - k C``:

    .. math:: \mathrm{lr}(t) = b + (M - b)\, s(u)\, f, \quad s(u) = u / U \text{ if } u \le U
              \text{ else } (C - u) / D

    where ``f = 1`` (``"triangular"``), ``f = 2 ** -k`` (``"triangular2"``: the height halves each
    cycle) or ``f = gamma ** t`` (``"exp_range"``). This is PyTorch's
    ``CyclicLR(optimizer, base_lr, max_lr, step_size_up, step_size_down, mode, gamma)`` with its default
    ``scale_mode`` for each mode, at every step (within rounding; here the cycle bottoms and tops are
    exactly ``base_lr`` and ``max_lr``, where PyTorch may be an ulp off). The phase is ``"anneal"`` everywhere (the up-slope is part
    of the cycle, not a warmup); each cycle start is reported by :meth:`restarts`, where the LR turns
    back up. :attr:`peak` is ``max_lr``, reached in the first cycle except in ``"exp_range"`` with
    ``gamma < 1``, where it is an upper bound.

    Args:
        base_lr: the bottom of every cycle (>= 0).
        max_lr: the top of the first cycle (>= base_lr).
        step_size_up: steps from bottom to top (> 0) or a duration.
        step_size_down: steps from top to bottom (> 0), ``None`` for ``step_size_up``, or a duration.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: the per-step amplitude factor of ``"exp_range"``, ``0 < gamma <= 1``; other modes require
            the default 1.0.

    Example:
        >>> s = Cyclic(0.1, 1.0, step_size_up=10, mode="triangular2")
        >>> s(0), s(10), round(s(15), 12), s(20), s(30), s.restarts(60)
        (0.1, 1.0, 0.55, 0.1, 0.55, [20, 40])
    """

    base_lr: float
    max_lr: float
    step_size_up: float | str
    step_size_down: float | str | None = None
    mode: str = "triangular"
    gamma: float = 1.0

    duration_fields = ("step_size_up", "step_size_down")

    def __post_init__(self) -> None:
        base = v.number("base_lr", self.base_lr, ge=0.0)
        if v.number("max_lr", self.max_lr, ge=0.0) < base:
            raise ScheduleError(f"max_lr must be >= base_lr ({self.base_lr!r}), got {self.max_lr!r}")
        v.choice("mode", self.mode, _CYCLIC_MODES)
        v.number("gamma", self.gamma, gt=0.0, le=1.0)
        if self.mode != "exp_range" and float(self.gamma) != 1.0:
            raise ScheduleError(f"gamma applies only to mode='exp_range'; got gamma={self.gamma!r}")
        _lengths(self)

    @property
    def _sizes(self) -> tuple[float, float]:
        """``(U, D)``: the rising and falling lengths in steps."""
        up = float(self.step_size_up)
        return up, up if self.step_size_down is None else float(self.step_size_down)

    def _scalar(self, t: float) -> float:
        up, down = self._sizes
        k, u = divmod(t, up + down)
        scale = u / up if u <= up else (up + down - u) / down
        if self.mode == "triangular2":
            scale *= math.ldexp(1.0, -int(k))  # 2 ** -k, exactly
        elif self.mode == "exp_range":
            scale *= power(float(self.gamma), t)
        top, base = float(self.max_lr), float(self.base_lr)
        return top if scale == 1.0 else base + (top - base) * scale

    def _vector(self, t: FloatArray) -> FloatArray:
        up, down = self._sizes
        k, u = np.divmod(t, up + down)
        scale = np.where(u <= up, u / up, (up + down - u) / down)
        if self.mode == "triangular2":
            scale *= np.ldexp(1.0, -k.astype(np.int64))
        elif self.mode == "exp_range":
            scale *= np.power(float(self.gamma), t)
        top, base = float(self.max_lr), float(self.base_lr)
        out = (top - base) * scale
        out += base
        out[scale == 1.0] = top
        return out

    @property
    def peak(self) -> float:
        """``max_lr``."""
        return float(self.max_lr)

    def phase(self, t: float) -> str:
        """``"anneal"`` at every step (the LR cycles forever)."""
        self.require_bound()
        check_step(t)
        return "anneal"

    def cycle(self, t: float) -> CycleInfo:
        """``(index, start, length)`` of the triangle holding step ``t``.

        Example:
            >>> Cyclic(0.1, 1.0, step_size_up=10, step_size_down=5).cycle(40)
            CycleInfo(index=2, start=30, length=15)
        """
        self.require_bound()
        total = sum(self._sizes)
        index = int(check_step(t) // total)
        return CycleInfo(index, as_number(index * total), as_number(total))

    def restarts(self, until: float) -> list[int | float]:
        """Cycle starts before ``until`` (where the LR turns back up from ``base_lr``); ``until`` finite."""
        self.require_bound()
        if not math.isfinite(until):
            raise ScheduleError(
                f"until must be a finite step for a schedule that cycles forever, got {until!r}"
            )
        total = sum(self._sizes)
        out: list[int | float] = []
        k = 1
        while k * total < until:
            out.append(as_number(k * total))
            k += 1
        return out
