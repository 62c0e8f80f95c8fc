r"""The cosine family: warmup, cosine decay, warm restarts (SGDR), decaying peaks, floors, k-decay.

One :class:`Cosine` value describes the whole family. With ``W = warmup_steps``, ``c = cycle_steps``,
``m = cycle_mult``, ``d = peak_decay`` and origin ``O = W`` (or ``O = 0`` when ``warmup_prefix`` is
false, timm's overlaid warmup):

* warmup, ``t < W``: from ``warmup_start_lr`` to ``peak_lr`` (linear, cosine or exponential);
* cycle ``i`` starts at ``O + B_i`` with ``B_i = c (m^i - 1) / (m - 1)`` (``B_i = i c`` when ``m = 1``)
  and lasts ``L_i = c m^i`` steps; its peak is ``P_i = peak_lr d^i`` and its floor ``F_i`` is
  ``min_lr`` or ``min_ratio P_i``;
* inside a cycle, after ``cycle_warmup_steps`` (``w``, cycles ``i >= 1`` only) of warmup from ``F_i``
  to ``P_i``, progress ``p = (u - w) / (L_i - w)`` for local step ``u`` gives

  .. math:: \mathrm{lr} = F_i + \tfrac12 (P_i - F_i)\,(1 + \cos(\pi p^k));

* after ``max_cycles`` cycles the LR holds the last floor forever (``max_cycles=None``: endless).

Cycle boundaries are computed once with 60-digit decimal arithmetic from the numbers as written
(``1.5``, ``0.8``), so a boundary that is a whole step is exactly that step, for any step count.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from decimal import Context, Decimal
from typing import Any

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

_WARMUP_SHAPES = ("linear", "cosine", "exponential")
_DECAY_MODES = ("peak", "amplitude")
_DEC = Context(prec=60)
_TABLE_LIMIT = 2.0**62  # boundaries beyond this are never needed (steps are < 2**53)
_TABLE_LOCK = threading.Lock()
_PEAK_TABLE_LIMIT = 4096  # below this many cycles, per-cycle peaks are looked up rather than computed


def _decimal(value: Any) -> Decimal:
    """The decimal the user wrote: ``repr`` round-trips floats as their shortest decimal."""
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def _warmup_curve(shape: str, frac: Any, start: Any, end: Any, xp: Any) -> Any:
    """Warmup value at fraction ``frac`` in [0, 1) from ``start`` to ``end`` (``xp``: math or numpy)."""
    if shape == "linear":
        return start + (end - start) * frac
    if shape == "cosine":
        return start + (end - start) * 0.5 * (1.0 - xp.cos(math.pi * frac))
    if xp is math:
        return start * power(end / start, frac)
    return start * np.power(end / start, frac)


@register("cosine")
@dataclasses.dataclass(frozen=True)
class Cosine(Schedule):
    """Warmup + cosine decay + warm restarts with any cycle multiplier, decaying peaks and a floor.

    Args:
        peak_lr: LR at the top of the first cycle (> 0).
        min_lr: absolute floor (0 <= min_lr <= peak_lr). Exclusive with ``min_ratio``.
        min_ratio: floor as a fraction of each cycle's peak (0..1).
        warmup_steps: initial warmup length in whole steps, or a duration (``"2ep"``, ``"0.05dur"``).
        warmup_start_lr: LR at step 0 of the warmup.
        warmup_shape: ``"linear"``, ``"cosine"`` or ``"exponential"`` (needs a start LR > 0).
        cycle_steps: length of the first decay (warmup excluded), > 0; may be fractional or a duration.
        cycle_mult: each cycle is ``cycle_mult`` times the previous one (any float > 0).
        peak_decay: each restart's peak is ``peak_decay`` times the previous one.
        peak_decay_mode: ``"peak"`` decays the peak itself; ``"amplitude"`` decays the height above a
            fixed floor (Keras' ``m_mul``): ``P_i = F + (peak_lr - F) d^i``.
        cycle_warmup_steps: warmup from the floor at the start of every restart (cycles >= 1), inside
            the cycle's length.
        max_cycles: number of cycles before holding the floor; ``None`` restarts forever.
        k: k-decay exponent applied to the progress (``p -> p**k``).
        warmup_prefix: ``True`` (default): cycles start after the warmup. ``False``: the warmup
            overlays the start of the first cycle (timm's ``warmup_prefix=False``).

    Example:
        >>> s = Cosine(peak_lr=0.1, warmup_steps=10, cycle_steps=100, min_lr=0.001)
        >>> s(0), s(10), round(s(60), 6), s(110), s(10**9)
        (0.0, 0.1, 0.0505, 0.001, 0.001)
        >>> sgdr = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=2, max_cycles=None)
        >>> sgdr.restarts(100)
        [10, 30, 70]
        >>> sgdr(29) < sgdr(30) == 1.0
        True
    """

    peak_lr: float
    min_lr: float = 0.0
    min_ratio: float | None = None
    warmup_steps: int | str = 0
    warmup_start_lr: float = 0.0
    warmup_shape: str = "linear"
    cycle_steps: float | str = dataclasses.field(default=None)  # type: ignore[assignment]
    cycle_mult: float = 1.0
    peak_decay: float = 1.0
    peak_decay_mode: str = "peak"
    cycle_warmup_steps: int | str = 0
    max_cycles: int | None = 1
    k: float = 1.0
    warmup_prefix: bool = True

    duration_fields = ("warmup_steps", "cycle_steps", "cycle_warmup_steps")
    integer_duration_fields = ("warmup_steps", "cycle_warmup_steps")

    # ---- construction -----------------------------------------------------------------------
    def __post_init__(self) -> None:
        peak = v.number("peak_lr", self.peak_lr, gt=0.0)
        min_lr = v.number("min_lr", self.min_lr, ge=0.0)
        if min_lr > peak:
            raise ScheduleError(f"min_lr must be <= peak_lr ({self.peak_lr!r}), got {self.min_lr!r}")
        if self.min_ratio is not None:
            v.number("min_ratio", self.min_ratio, ge=0.0, le=1.0)
            if min_lr != 0.0:
                raise ScheduleError(
                    f"give min_lr or min_ratio, not both (min_lr={self.min_lr!r}, min_ratio={self.min_ratio!r})"
                )
        start = v.number("warmup_start_lr", self.warmup_start_lr, ge=0.0)
        if start > peak:
            raise ScheduleError(
                f"warmup_start_lr must be <= peak_lr ({self.peak_lr!r}), got {self.warmup_start_lr!r}"
            )
        v.choice("warmup_shape", self.warmup_shape, _WARMUP_SHAPES)
        v.choice("peak_decay_mode", self.peak_decay_mode, _DECAY_MODES)
        v.number("cycle_mult", self.cycle_mult, gt=0.0)
        v.number("peak_decay", self.peak_decay, gt=0.0)
        v.number("k", self.k, gt=0.0)
        v.flag("warmup_prefix", self.warmup_prefix)
        if self.max_cycles is not None:
            object.__setattr__(self, "max_cycles", v.integer("max_cycles", self.max_cycles, ge=1))
        if self.cycle_steps is None:
            raise ScheduleError("cycle_steps is required (length of the first decay in steps, > 0)")
        if float(self.cycle_mult) < 1.0 and self.max_cycles is None:
            raise ScheduleError(
                f"cycle_mult={self.cycle_mult!r} < 1 shrinks the cycles towards nothing; set max_cycles"
            )
        for name in self.duration_fields:
            value = durations.parse(name, getattr(self, name))
            if not durations.is_unbound(value):
                if name in self.integer_duration_fields:
                    value = v.integer(name, value)
                else:
                    v.number(name, value, gt=0.0)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_fast", None)
        if self.unbound_fields():
            return
        self._check_lengths()
        self._check_exponential()
        object.__setattr__(self, "_bounds", [self.origin])
        object.__setattr__(self, "_lengths", [])
        object.__setattr__(self, "_dec_next", (Decimal(int(self.origin)), _decimal(self.cycle_steps)))
        object.__setattr__(self, "_fast", self._fast_constants())

    def _fast_constants(self) -> tuple[Any, ...] | None:
        """Plain constants for :meth:`_scalar`'s fast path, or ``None`` when it does not apply.

        The fast path covers fixed-length cycles (``cycle_mult == 1``) with a constant peak and floor
        (``peak_decay == 1``), ``k == 1`` and no restart warmup; it does the same float operations
        as the general path, so results are bit-identical.
        """
        if not (
            self.cycle_mult == 1
            and float(self.peak_decay) == 1.0
            and self.k == 1
            and (int(self.cycle_warmup_steps) == 0 or self.max_cycles == 1)
        ):
            return None
        linear = self.warmup_shape == "linear"
        return (
            int(self.warmup_steps),
            linear,
            float(self.warmup_start_lr),
            float(self.peak_lr),
            self.origin,
            float(self.cycle_steps),
            self.max_cycles,
            self.cycle_peak(0),
            self.cycle_floor(0),
        )

    def _check_lengths(self) -> None:
        warmup, cw = int(self.warmup_steps), int(self.cycle_warmup_steps)
        c, m = float(self.cycle_steps), float(self.cycle_mult)
        if not self.warmup_prefix and warmup >= c:
            raise ScheduleError(
                f"warmup_steps ({warmup}) must be < cycle_steps ({self.cycle_steps!r}) when warmup_prefix is false"
            )
        if cw and self.max_cycles != 1:
            last = self.max_cycles
            shortest = c * m if m >= 1.0 or last is None else c * m ** (last - 1)
            if cw >= shortest:
                raise ScheduleError(
                    f"cycle_warmup_steps must be < the shortest restart cycle ({shortest:g} steps), got {cw}"
                )

    def _check_exponential(self) -> None:
        if self.warmup_shape != "exponential":
            return
        # the ramp is start * (end / start) ** frac: end / start must be a finite number
        peak, start = float(self.peak_lr), float(self.warmup_start_lr)
        if int(self.warmup_steps) and not (start > 0.0 and math.isfinite(peak / start)):
            raise ScheduleError(
                "warmup_start_lr must be > 0 for warmup_shape='exponential' (and large enough that "
                f"peak_lr / warmup_start_lr is finite), got {self.warmup_start_lr!r}"
            )
        if int(self.cycle_warmup_steps) and self.max_cycles != 1:
            last = self.max_cycles if self.max_cycles is not None else 64
            floors = [self.cycle_floor(i) for i in range(1, last)]
            if any(
                f <= 0.0 or not math.isfinite(self.cycle_peak(i) / f) for i, f in enumerate(floors, start=1)
            ):
                raise ScheduleError(
                    "cycle_warmup_steps with warmup_shape='exponential' needs a floor > 0 (min_lr or min_ratio), "
                    f"got {self.min_lr!r}"
                )

    # ---- cycle geometry ---------------------------------------------------------------------
    @property
    def origin(self) -> float:
        """Step where the first cycle starts: ``warmup_steps``, or 0 when ``warmup_prefix`` is false."""
        return float(self.warmup_steps) if self.warmup_prefix else 0.0

    def _extend(self, x: float) -> None:
        """Grow the table of absolute cycle starts (m != 1) until it covers step ``x`` or the last cycle.

        Starts are summed in 60-digit decimal arithmetic and rounded once to float64, so a start
        that is a whole step is exactly that step.
        """
        bounds: list[float] = self._bounds  # type: ignore[attr-defined]
        if bounds[-1] > x or (self.max_cycles is not None and len(bounds) > self.max_cycles):
            return
        with _TABLE_LOCK:
            b_dec, l_dec = self._dec_next  # type: ignore[attr-defined]
            m_dec = _decimal(self.cycle_mult)
            new_bounds, new_lengths = list(bounds), list(self._lengths)  # type: ignore[attr-defined]
            while new_bounds[-1] <= x and new_bounds[-1] < _TABLE_LIMIT:
                if self.max_cycles is not None and len(new_bounds) > self.max_cycles:
                    break
                new_lengths.append(float(l_dec))
                b_dec = _DEC.add(b_dec, l_dec)
                l_dec = _DEC.multiply(l_dec, m_dec)
                new_bounds.append(float(b_dec))
            object.__setattr__(self, "_dec_next", (b_dec, l_dec))
            object.__setattr__(self, "_lengths", new_lengths)
            object.__setattr__(self, "_bounds", new_bounds)

    def _locate_scalar(self, x: float) -> tuple[int, float, float]:
        """Cycle index, local step and cycle length at absolute step ``x >= origin``.

        With ``m = 1`` cycle ``i`` starts at ``origin + i * c`` (float64), located by floor division
        and corrected against exactly those starts, so ``cycle_start``, ``horizon`` and evaluation
        always agree.
        """
        c, origin = float(self.cycle_steps), self.origin
        if self.cycle_mult == 1:
            i = max(int((x - origin) // c), 0)
            if origin + (i + 1) * c <= x:
                i += 1
            elif i and origin + i * c > x:
                i -= 1
            return i, x - (origin + i * c), c
        self._extend(x)
        bounds: list[float] = self._bounds  # type: ignore[attr-defined]
        i = bisect.bisect_right(bounds, x) - 1
        lengths: list[float] = self._lengths  # type: ignore[attr-defined]
        if i >= len(lengths):  # past the last cycle: hold
            return i, x - bounds[i], math.inf
        return i, x - bounds[i], lengths[i]

    def _locate_vector(self, x: FloatArray) -> tuple[np.ndarray, FloatArray, Any]:
        c, origin = float(self.cycle_steps), self.origin
        if self.cycle_mult == 1:
            i = np.floor_divide(x - origin, c)
            np.maximum(i, 0.0, out=i)
            i += origin + (i + 1.0) * c <= x
            i -= (i > 0) & (origin + i * c > x)
            u = i * c
            u += origin
            np.subtract(x, u, out=u)
            return i.astype(np.int64), u, c
        if x.size:
            self._extend(float(x.max()))
        bounds = np.asarray(self._bounds)  # type: ignore[attr-defined]
        lengths = np.append(np.asarray(self._lengths, dtype=np.float64), math.inf)  # type: ignore[attr-defined]
        i = np.searchsorted(bounds, x, side="right") - 1
        return i, x - bounds[i], lengths[np.minimum(i, len(lengths) - 1)]

    def cycle_peak(self, i: int) -> float:
        """Peak LR of cycle ``i``: ``max(peak_lr * peak_decay**i, min_lr)`` (or the amplitude form).

        A peak that decays below an absolute floor is held at the floor, so the LR never rises
        inside a cycle.
        """
        decay = power(float(self.peak_decay), float(i))
        if self.peak_decay_mode == "amplitude":
            base = self._fixed_floor()
            return base + (float(self.peak_lr) - base) * decay
        return max(float(self.peak_lr) * decay, self.cycle_floor_fixed_part())

    def cycle_floor_fixed_part(self) -> float:
        """The absolute floor a decayed peak never drops below (``min_lr``; 0 with ``min_ratio``)."""
        return 0.0 if self.min_ratio is not None else float(self.min_lr)

    def _fixed_floor(self) -> float:
        if self.min_ratio is not None:
            return float(self.min_ratio) * float(self.peak_lr)
        return float(self.min_lr)

    def cycle_floor(self, i: int) -> float:
        """Floor of cycle ``i``: ``min_lr``, or ``min_ratio`` times that cycle's peak."""
        if self.min_ratio is not None and self.peak_decay_mode == "peak":
            return float(self.min_ratio) * self.cycle_peak(i)
        return self._fixed_floor()

    @property
    def last_cycle(self) -> int | None:
        """Index of the last cycle, or ``None`` for endless restarts."""
        return None if self.max_cycles is None else self.max_cycles - 1

    # ---- evaluation -------------------------------------------------------------------------
    def _scalar(self, t: float) -> float:
        fast = self._fast  # type: ignore[attr-defined]
        if fast is not None:
            warmup, linear, start, peak, origin, c, last, top, bottom = fast
            if t >= warmup:
                i = max(int((t - origin) // c), 0)
                if origin + (i + 1) * c <= t:
                    i += 1
                elif i and origin + i * c > t:
                    i -= 1
                if last is not None and i >= last:
                    return bottom  # type: ignore[no-any-return]
                p = (t - (origin + i * c)) / c
                return bottom + 0.5 * (top - bottom) * (1.0 + math.cos(math.pi * p))  # type: ignore[no-any-return]
            if linear:
                return start + (peak - start) * (t / warmup)  # type: ignore[no-any-return]
        warmup = int(self.warmup_steps)
        peak = float(self.peak_lr)
        if t < warmup:
            return float(
                _warmup_curve(self.warmup_shape, t / warmup, float(self.warmup_start_lr), peak, math)
            )
        i, u, length = self._locate_scalar(t)
        if self.max_cycles is not None and i >= self.max_cycles:
            return self.cycle_floor(self.max_cycles - 1)
        top, bottom = self.cycle_peak(i), self.cycle_floor(i)
        cw = int(self.cycle_warmup_steps) if i else 0
        if u < cw:
            return float(_warmup_curve(self.warmup_shape, u / cw, bottom, top, math))
        p = (u - cw) / (length - cw)
        if self.k != 1:
            p = power_fixed(p, float(self.k))
        return bottom + 0.5 * (top - bottom) * (1.0 + math.cos(math.pi * p))

    def _vector(self, t: FloatArray) -> FloatArray:
        warmup, origin, last = int(self.warmup_steps), self.origin, self.max_cycles
        x = np.maximum(t, origin) if origin else t
        held: np.ndarray | None
        i: np.ndarray | None
        if last == 1:  # a single decay: no cycle lookup at all
            i, u, length = None, x - origin, float(self.cycle_steps)
            held = x >= origin + length
        else:
            i, u, length = self._locate_vector(x)
            held = None
            if last is not None:
                held = i >= last
                i = np.minimum(i, last - 1)
        top: Any
        bottom: Any
        if i is None or float(self.peak_decay) == 1.0:
            top, bottom = self.cycle_peak(0), self.cycle_floor(0)
        elif i.size and int(i.max()) < _PEAK_TABLE_LIMIT:  # few cycles: look the peaks and floors up
            n = int(i.max()) + 1
            top = np.array([self.cycle_peak(j) for j in range(n)])[i]
            bottom = np.array([self.cycle_floor(j) for j in range(n)])[i]
        else:
            decay = np.power(float(self.peak_decay), i.astype(np.float64))
            if self.peak_decay_mode == "amplitude":
                bottom = self._fixed_floor()
                top = bottom + (float(self.peak_lr) - bottom) * decay
            else:
                top = np.maximum(float(self.peak_lr) * decay, self.cycle_floor_fixed_part())
                bottom = float(self.min_ratio) * top if self.min_ratio is not None else self._fixed_floor()
        cw_steps = int(self.cycle_warmup_steps) if i is not None else 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if cw_steps:
                assert i is not None
                cw = np.where(i > 0, float(cw_steps), 0.0)
                p = u - cw
                p /= length - cw
            else:
                p = u / length
            if self.k != 1:
                np.maximum(p, 0.0, out=p)
                np.power(p, float(self.k), out=p)
            np.multiply(p, math.pi, out=p)
            np.cos(p, out=p)
            p += 1.0
            p *= 0.5 * (top - bottom)
            p += bottom
            out = p
            if cw_steps:
                in_cw = u < cw
                if in_cw.any():
                    lo = bottom[in_cw] if isinstance(bottom, np.ndarray) else bottom
                    hi = top[in_cw] if isinstance(top, np.ndarray) else top
                    out[in_cw] = _warmup_curve(self.warmup_shape, u[in_cw] / cw_steps, lo, hi, np)
        if held is not None and last is not None and held.any():
            out[held] = self.cycle_floor(last - 1)
        if warmup:
            in_w = t < warmup
            if in_w.any():
                frac = t[in_w] / warmup
                out[in_w] = _warmup_curve(
                    self.warmup_shape, frac, float(self.warmup_start_lr), float(self.peak_lr), np
                )
        return out

    # ---- introspection ----------------------------------------------------------------------
    @property
    def peak(self) -> float:
        """Largest LR the schedule gives: ``peak_lr``, or a later peak when ``peak_decay > 1``."""
        if float(self.peak_decay) <= 1.0:
            return float(self.peak_lr)
        if self.max_cycles is None:
            return math.inf
        return self.cycle_peak(self.max_cycles - 1)

    @property
    def horizon(self) -> float | None:
        """First step of the final hold (end of the last cycle), or ``None`` for endless restarts."""
        self.require_bound()
        if self.max_cycles is None:
            return None
        return self.cycle_start(self.max_cycles)

    def cycle_start(self, i: int) -> float:
        """Absolute step where cycle ``i >= 1`` starts (cycle 0 starts at step 0)."""
        if i == 0:
            return 0.0
        c = float(self.cycle_steps)
        if self.cycle_mult == 1:
            return self.origin + i * c
        bounds: list[float] = self._bounds  # type: ignore[attr-defined]
        while len(bounds) <= i:
            before = len(bounds)
            self._extend(bounds[-1])
            bounds = self._bounds  # type: ignore[attr-defined]
            if len(bounds) == before:
                raise ScheduleError(f"cycle {i} does not exist (max_cycles={self.max_cycles})")
        return bounds[i]

    def cycle_length(self, i: int) -> float:
        """Length in steps of cycle ``i``, counting the initial warmup in cycle 0."""
        if self.max_cycles is not None and i >= self.max_cycles:
            return math.inf
        return self.cycle_start(i + 1) - self.cycle_start(i)

    def phase(self, t: float) -> str:
        """``"warmup"`` (initial or per-restart warmup), ``"anneal"`` or ``"hold"`` at step ``t``.

        Example:
            >>> s = Cosine(1.0, warmup_steps=5, cycle_steps=10)
            >>> s.phase(0), s.phase(5), s.phase(15)
            ('warmup', 'anneal', 'hold')
        """
        self.require_bound()
        t = check_step(t)
        if t < int(self.warmup_steps):
            return "warmup"
        i, u, _ = self._locate_scalar(max(t, self.origin))
        if self.max_cycles is not None and i >= self.max_cycles:
            return "hold"
        if i and u < int(self.cycle_warmup_steps):
            return "warmup"
        return "anneal"

    def cycle(self, t: float) -> CycleInfo:
        """``(index, start, length)`` of the cycle holding step ``t``; the final hold has length inf.

        Example:
            >>> Cosine(1.0, cycle_steps=10, cycle_mult=1.5, max_cycles=3).cycle(12)
            CycleInfo(index=1, start=10, length=15)
        """
        self.require_bound()
        t = check_step(t)
        i, _, _ = self._locate_scalar(max(t, self.origin))
        if self.max_cycles is not None and i >= self.max_cycles:
            return CycleInfo(self.max_cycles, as_number(self.cycle_start(self.max_cycles)), math.inf)
        return CycleInfo(i, as_number(self.cycle_start(i)), as_number(self.cycle_length(i)))

    def restarts(self, until: float) -> list[int | float]:
        """Steps before ``until`` where a new cycle starts.

        Example:
            >>> Cosine(1.0, cycle_steps=100, cycle_mult=0.8, max_cycles=4).restarts(10**9)
            [100, 180, 244]
        """
        self.require_bound()
        out: list[int | float] = []
        i = 1
        while self.max_cycles is None or i < self.max_cycles:
            start = self.cycle_start(i)
            if start >= until:
                break
            out.append(as_number(start))
            i += 1
        return out
