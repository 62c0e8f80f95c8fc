r"""optax presets: ``warmup_cosine_decay_schedule`` and ``sgdr_schedule`` as cosanneal schedules.

The presets take optax's own parameter names and give the same learning rate as optax 0.2
(computed with ``jax_enable_x64``) at every step. optax computes in float32 by default, so a default
optax run differs from these values by float32 rounding (about 1e-7 relative).

Where the curve is a :class:`~cosanneal.Cosine` (``exponent == 1``, ``init_value`` and
``end_value`` at most ``peak_value``), the presets return one. Otherwise they return
:class:`OptaxCosine` (kind ``"optax_cosine"``), which raises the cosine *value* to ``exponent`` as
optax does; this is not k-decay (``Cosine.k`` raises the *progress* to a power).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules.base import FloatArray, Schedule, check_step, power_fixed, register
from cosanneal.schedules.cosine import Cosine

__all__ = ["OptaxCosine", "optax_sgdr", "optax_warmup_cosine_decay"]

_WCD_KEYS = ("init_value", "peak_value", "warmup_steps", "decay_steps", "end_value", "exponent")


@register("optax_cosine")
@dataclasses.dataclass(frozen=True)
class OptaxCosine(Schedule):
    r"""optax's warmup + cosine decay with a power on the cosine value.

    With ``I = init_value``, ``P = peak_value``, ``E = end_value``, ``W = warmup_steps``,
    ``T = decay_steps - W`` (optax's ``decay_steps`` *includes* the warmup) and ``e = exponent``:

    .. math::
        \mathrm{lr}(t) = \begin{cases}
            I + (P - I)\, t / W, & t < W \\
            E + (P - E) \bigl[\tfrac12 (1 + \cos(\pi \min(t - W, T) / T))\bigr]^{e}, & t \ge W
        \end{cases}

    so the LR holds ``end_value`` from ``decay_steps`` on. ``init_value`` may exceed
    ``peak_value`` and ``end_value`` may exceed it too, as in optax.

    Args:
        init_value: LR at step 0 (>= 0).
        peak_value: LR at the end of the warmup (> 0).
        warmup_steps: length of the linear warmup in whole steps (>= 0).
        decay_steps: total length, warmup included (> ``warmup_steps``).
        end_value: LR at and after ``decay_steps`` (>= 0).
        exponent: power applied to the cosine factor (> 0).

    Example:
        >>> s = OptaxCosine(0.0, 1.0, warmup_steps=10, decay_steps=110, exponent=2.0)
        >>> s(5), s(10), round(s(60), 12), s(110), s(10**9)
        (0.5, 1.0, 0.25, 0.0, 0.0)
    """

    init_value: float
    peak_value: float
    warmup_steps: int
    decay_steps: float
    end_value: float = 0.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        v.number("init_value", self.init_value, ge=0.0)
        v.number("peak_value", self.peak_value, gt=0.0)
        v.number("end_value", self.end_value, ge=0.0)
        v.number("exponent", self.exponent, gt=0.0)
        warmup = v.integer("warmup_steps", self.warmup_steps)
        object.__setattr__(self, "warmup_steps", warmup)
        total = v.number("decay_steps", self.decay_steps, gt=0.0)
        if not total > warmup:
            raise ScheduleError(
                f"decay_steps must be > warmup_steps ({warmup}) because it includes the warmup, "
                f"got {self.decay_steps!r}"
            )

    def _scalar(self, t: float) -> float:
        warmup = self.warmup_steps
        init, peak, end = float(self.init_value), float(self.peak_value), float(self.end_value)
        if t < warmup:
            return init + (peak - init) * (t / warmup)
        length = float(self.decay_steps) - warmup
        u = min(t - warmup, length)
        c = 0.5 * (1.0 + math.cos(math.pi * (u / length)))
        return end + (peak - end) * power_fixed(c, float(self.exponent))

    def _vector(self, t: FloatArray) -> FloatArray:
        warmup = self.warmup_steps
        init, peak, end = float(self.init_value), float(self.peak_value), float(self.end_value)
        length = float(self.decay_steps) - warmup
        u = np.minimum(t - warmup, length)
        c = 0.5 * (1.0 + np.cos(math.pi * (u / length)))
        out: FloatArray = end + (peak - end) * np.power(c, float(self.exponent))
        if warmup:
            in_w = t < warmup
            out[in_w] = init + (peak - init) * (t[in_w] / warmup)
        return out

    @property
    def peak(self) -> float:
        """The largest LR: ``max(init_value, peak_value, end_value)`` (``init_value`` only with a warmup)."""
        top = max(float(self.peak_value), float(self.end_value))
        return max(top, float(self.init_value)) if self.warmup_steps else top

    @property
    def horizon(self) -> float:
        """``decay_steps``: from there on the LR holds ``end_value``."""
        return float(self.decay_steps)

    def phase(self, t: float) -> str:
        """``"warmup"`` before ``warmup_steps``, ``"anneal"`` until ``decay_steps``, then ``"hold"``."""
        t = check_step(t)
        if t < self.warmup_steps:
            return "warmup"
        return "hold" if t >= float(self.decay_steps) else "anneal"


def optax_warmup_cosine_decay(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: float,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Cosine | OptaxCosine:
    r"""``optax.warmup_cosine_decay_schedule`` as a cosanneal schedule.

    A linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then a cosine
    decay to ``end_value`` that ends at ``decay_steps`` -- optax's ``decay_steps`` *includes* the
    warmup, so the cosine lasts ``decay_steps - warmup_steps`` steps:

    .. math:: \mathrm{lr}(t) = E + (P - E)\bigl[\tfrac12(1 + \cos(\pi \min(t - W, T) / T))\bigr]^{e},
        \quad T = \mathrm{decay\_steps} - W

    Args:
        init_value: LR at step 0 (>= 0). Unused when ``warmup_steps`` is 0, as in optax.
        peak_value: LR at the end of the warmup (> 0).
        warmup_steps: warmup length in whole steps (>= 0).
        decay_steps: total length including the warmup (> ``warmup_steps``).
        end_value: final LR, held from ``decay_steps`` on (>= 0).
        exponent: power on the cosine factor (> 0); 1 is the plain cosine.

    Returns:
        ``Cosine(peak_lr=peak_value, min_lr=end_value, warmup_steps, warmup_start_lr=init_value,
        cycle_steps=decay_steps - warmup_steps)`` when that is the same curve, else an
        :class:`OptaxCosine`.

    Example:
        >>> s = optax_warmup_cosine_decay(0.0, 1.0, warmup_steps=10, decay_steps=110, end_value=0.1)
        >>> type(s).__name__, s.cycle_steps
        ('Cosine', 100)
        >>> s(5), s(10), round(s(60), 12), s(110)
        (0.5, 1.0, 0.55, 0.1)
        >>> type(optax_warmup_cosine_decay(0.0, 1.0, 10, 110, exponent=2.0)).__name__
        'OptaxCosine'
    """
    general = OptaxCosine(
        init_value=init_value,
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        end_value=end_value,
        exponent=exponent,
    )
    peak, init, end = float(peak_value), float(init_value), float(end_value)
    if float(exponent) != 1.0 or end > peak or (general.warmup_steps and init > peak):
        return general
    length = decay_steps - general.warmup_steps
    return Cosine(
        peak_lr=peak_value,
        min_lr=end_value,
        warmup_steps=general.warmup_steps,
        warmup_start_lr=init_value if general.warmup_steps else 0.0,
        cycle_steps=length,
    )


def _piece(index: int, kwargs: Any) -> tuple[Cosine | OptaxCosine, float]:
    """Piece ``index`` of an sgdr list and its ``decay_steps`` (the piece's total length)."""
    if not isinstance(kwargs, Mapping):
        raise ScheduleError(
            f"cosine_kwargs[{index}] must be a dict of warmup_cosine_decay arguments, got {kwargs!r}"
        )
    unknown = [k for k in kwargs if k not in _WCD_KEYS]
    if unknown:
        raise ScheduleError(
            f"cosine_kwargs[{index}] has unknown argument {unknown[0]!r}; allowed: {', '.join(_WCD_KEYS)}"
        )
    missing = [k for k in _WCD_KEYS[:4] if k not in kwargs]
    if missing:
        raise ScheduleError(f"cosine_kwargs[{index}] needs {missing[0]!r}")
    try:
        piece = optax_warmup_cosine_decay(**kwargs)
    except ScheduleError as exc:
        raise ScheduleError(f"cosine_kwargs[{index}]: {exc}") from None
    return piece, kwargs["decay_steps"]


def optax_sgdr(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    r"""``optax.sgdr_schedule``: warmup-cosine-decay pieces joined end to end.

    Piece ``j`` is :func:`optax_warmup_cosine_decay` ``(**cosine_kwargs[j])``; it starts at
    ``b_j = sum_{i<j} decay_steps_i`` and sees the local step ``t - b_j``. After the last piece
    the LR holds the last ``end_value`` (optax keeps evaluating the last piece, which holds).

    Args:
        cosine_kwargs: one dict of ``warmup_cosine_decay_schedule`` arguments per cycle.

    Returns:
        A :class:`~cosanneal.schedules.join.Join` of the pieces (the piece itself when there is one).

    Example:
        >>> s = optax_sgdr([dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=10)] * 3)
        >>> s(0), s(5), s(10), s(25), s(10**6)
        (1.0, 0.5, 1.0, 0.5, 0.0)
    """
    from cosanneal.schedules.join import Join

    if isinstance(cosine_kwargs, (str, bytes, Mapping)):
        raise ScheduleError(f"cosine_kwargs must be a list of dicts, got {cosine_kwargs!r}")
    pieces = [_piece(j, kwargs) for j, kwargs in enumerate(cosine_kwargs)]
    if not pieces:
        raise ScheduleError("cosine_kwargs must hold at least one dict, got an empty list")
    if len(pieces) == 1:
        return pieces[0][0]
    bounds: list[float] = []
    total: float = 0
    for _, length in pieces[:-1]:
        total += length  # the same running sum optax computes
        bounds.append(total)
    return Join(schedules=tuple(p for p, _ in pieces), boundaries=tuple(bounds))
