r"""Hugging Face presets: ``transformers`` cosine and WSD schedules as cosanneal schedules.

Each function takes the ``transformers.get_*_schedule*`` function's own parameter names (plus
``base_lr``, the optimizer's ``lr``) and returns a schedule equal to ``base_lr * lr_lambda(t)`` at
every step ``t < num_training_steps``, to 1e-12 relative (1e-15 absolute near zero). Past
``num_training_steps`` the half-cosine schedules hold their floor where ``transformers`` climbs back
up; see ``docs/compat.md``.

A cosine with ``num_cycles != 0.5`` is a periodic wave, not a decay with restarts, so those presets
return :class:`HfCosineCycles` (kind ``"hf_cosine_cycles"``) instead of a
:class:`~cosanneal.Cosine`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules.base import FloatArray, Schedule, check_step, register
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.wsd import WarmupStableDecay

__all__ = [
    "HfCosineCycles",
    "hf_cosine_with_hard_restarts",
    "hf_cosine_with_min_lr",
    "hf_cosine_with_warmup",
    "hf_wsd",
]


@register("hf_cosine_cycles")
@dataclasses.dataclass(frozen=True)
class HfCosineCycles(Schedule):
    r"""Hugging Face's warmup + cosine wave with any ``num_cycles`` and a floor ratio.

    With ``P = peak_lr``, ``W = num_warmup_steps``, ``L = max(1, num_training_steps - W)``,
    ``c = num_cycles`` and ``r = min_lr_rate``:

    .. math::
        \mathrm{lr}(t) = \begin{cases}
            P\, t / W, & t < W \\
            P \max\bigl(0,\ \tfrac12 (1 + \cos(2 \pi c\, p)) (1 - r) + r\bigr),
                \quad p = \min(t - W, L) / L, & t \ge W
        \end{cases}

    so from ``W + L`` (``num_training_steps``) on the LR holds the value it reached there, where
    ``transformers`` keeps oscillating. ``c = 0.5`` is a plain half cosine (use
    :class:`~cosanneal.Cosine`); ``c = 1`` goes down to the floor and back up to ``P``.

    Args:
        peak_lr: the optimizer's initial LR (> 0).
        num_warmup_steps: linear warmup from 0, in whole steps (>= 0).
        num_training_steps: the horizon in whole steps (>= ``num_warmup_steps``).
        num_cycles: number of cosine waves over the decay (> 0).
        min_lr_rate: the floor as a fraction of ``peak_lr`` (0..1).

    Example:
        >>> s = HfCosineCycles(1.0, num_warmup_steps=0, num_training_steps=100, num_cycles=1.0)
        >>> s(0), s(50), round(s(75), 12), s(100), s(10**6)
        (1.0, 0.0, 0.5, 1.0, 1.0)
    """

    peak_lr: float
    num_warmup_steps: int
    num_training_steps: int
    num_cycles: float = 0.5
    min_lr_rate: float = 0.0

    def __post_init__(self) -> None:
        v.number("peak_lr", self.peak_lr, gt=0.0)
        v.number("num_cycles", self.num_cycles, gt=0.0)
        v.number("min_lr_rate", self.min_lr_rate, ge=0.0, le=1.0)
        warmup, total = _steps(self.num_warmup_steps, self.num_training_steps)
        object.__setattr__(self, "num_warmup_steps", warmup)
        object.__setattr__(self, "num_training_steps", total)

    @property
    def _decay_length(self) -> int:
        return max(1, self.num_training_steps - self.num_warmup_steps)

    def _wave(self, p: float) -> float:
        r = float(self.min_lr_rate)
        factor = 0.5 * (1.0 + math.cos(math.pi * float(self.num_cycles) * 2.0 * p))
        return float(self.peak_lr) * max(0.0, factor * (1.0 - r) + r)

    def _scalar(self, t: float) -> float:
        warmup, length = self.num_warmup_steps, self._decay_length
        if t < warmup:
            return float(self.peak_lr) * (t / max(1, warmup))
        return self._wave(min(t - warmup, length) / length)

    def _vector(self, t: FloatArray) -> FloatArray:
        warmup, length, r = self.num_warmup_steps, self._decay_length, float(self.min_lr_rate)
        p = np.minimum(t - warmup, float(length)) / length
        factor = 0.5 * (1.0 + np.cos(math.pi * float(self.num_cycles) * 2.0 * p))
        out: FloatArray = float(self.peak_lr) * np.maximum(0.0, factor * (1.0 - r) + r)
        if warmup:
            in_w = t < warmup
            out[in_w] = float(self.peak_lr) * (t[in_w] / max(1, warmup))
        return out

    @property
    def peak(self) -> float:
        """``peak_lr``."""
        return float(self.peak_lr)

    @property
    def horizon(self) -> float:
        """``num_warmup_steps + max(1, num_training_steps - num_warmup_steps)``."""
        return float(self.num_warmup_steps + self._decay_length)

    def phase(self, t: float) -> str:
        """``"warmup"`` before ``num_warmup_steps``, ``"hold"`` from the horizon on, else ``"anneal"``."""
        t = check_step(t)
        if t < self.num_warmup_steps:
            return "warmup"
        return "hold" if t >= self.horizon else "anneal"


def _steps(num_warmup_steps: int, num_training_steps: int) -> tuple[int, int]:
    warmup = v.integer("num_warmup_steps", num_warmup_steps)
    total = v.integer("num_training_steps", num_training_steps)
    if total < warmup:
        raise ScheduleError(
            f"num_training_steps must be >= num_warmup_steps ({warmup}), got {num_training_steps!r}"
        )
    return warmup, total


def hf_cosine_with_warmup(
    base_lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5
) -> Cosine | HfCosineCycles:
    """``get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles)``.

    Linear warmup from 0 to ``base_lr``, then ``base_lr (1 + cos(2 pi num_cycles p)) / 2`` with
    ``p = (t - num_warmup_steps) / (num_training_steps - num_warmup_steps)``. With the default
    ``num_cycles=0.5`` this is a :class:`~cosanneal.Cosine` that holds 0 after
    ``num_training_steps`` (``transformers`` climbs back up); otherwise an :class:`HfCosineCycles`.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        num_warmup_steps: warmup length (an integer >= 0).
        num_training_steps: the horizon (an integer >= ``num_warmup_steps``).
        num_cycles: number of cosine waves (> 0; 0.5 is a half cosine down to 0).

    Example:
        >>> s = hf_cosine_with_warmup(1.0, num_warmup_steps=10, num_training_steps=110)
        >>> s(5), s(10), round(s(60), 12), s(110), s(160)
        (0.5, 1.0, 0.5, 0.0, 0.0)
    """
    v.number("base_lr", base_lr, gt=0.0)
    warmup, total = _steps(num_warmup_steps, num_training_steps)
    if v.number("num_cycles", num_cycles, gt=0.0) != 0.5:
        return HfCosineCycles(base_lr, warmup, total, num_cycles=num_cycles)
    return Cosine(peak_lr=base_lr, warmup_steps=warmup, cycle_steps=max(1, total - warmup))


def hf_cosine_with_min_lr(
    base_lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> Cosine | HfCosineCycles:
    """``get_cosine_with_min_lr_schedule_with_warmup(optimizer, ..., min_lr=..., min_lr_rate=...)``.

    Like :func:`hf_cosine_with_warmup`, but the cosine ends at ``min_lr`` (or
    ``min_lr_rate * base_lr``); the warmup still starts from 0. Give exactly one of the two.

    Args:
        base_lr: the optimizer's initial LR (> 0); ``transformers`` turns ``min_lr`` into
            ``min_lr_rate = min_lr / base_lr``.
        num_warmup_steps: warmup length (an integer >= 0).
        num_training_steps: the horizon (an integer >= ``num_warmup_steps``).
        num_cycles: number of cosine waves (> 0).
        min_lr: absolute floor (0 <= min_lr <= base_lr).
        min_lr_rate: floor as a fraction of ``base_lr`` (0..1).

    Example:
        >>> s = hf_cosine_with_min_lr(1.0, num_warmup_steps=0, num_training_steps=100, min_lr_rate=0.1)
        >>> s(0), round(s(50), 12), s(100), s(200)
        (1.0, 0.55, 0.1, 0.1)
    """
    base = v.number("base_lr", base_lr, gt=0.0)
    if (min_lr is None) == (min_lr_rate is None):
        raise ScheduleError(
            f"give exactly one of min_lr or min_lr_rate, got min_lr={min_lr!r}, min_lr_rate={min_lr_rate!r}"
        )
    if min_lr is not None:
        if v.number("min_lr", min_lr, ge=0.0) > base:
            raise ScheduleError(f"min_lr must be <= base_lr ({base_lr!r}), got {min_lr!r}")
        rate = float(min_lr) / base
    else:
        rate = v.number("min_lr_rate", min_lr_rate, ge=0.0, le=1.0)
    warmup, total = _steps(num_warmup_steps, num_training_steps)
    if v.number("num_cycles", num_cycles, gt=0.0) != 0.5:
        return HfCosineCycles(base_lr, warmup, total, num_cycles=num_cycles, min_lr_rate=rate)
    return Cosine(peak_lr=base_lr, min_ratio=rate, warmup_steps=warmup, cycle_steps=max(1, total - warmup))


def hf_cosine_with_hard_restarts(
    base_lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1
) -> Cosine:
    """``get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, ..., num_cycles)``.

    Linear warmup from 0, then ``num_cycles`` equal half cosines from ``base_lr`` to 0, each
    ``(num_training_steps - num_warmup_steps) / num_cycles`` steps long (a fraction allowed), then 0.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        num_warmup_steps: warmup length (an integer >= 0).
        num_training_steps: the horizon (an integer >= ``num_warmup_steps``).
        num_cycles: number of cycles (an integer >= 1).

    Returns:
        ``Cosine(base_lr, warmup_steps=num_warmup_steps, cycle_steps=L / num_cycles,
        max_cycles=num_cycles)`` with ``L = max(1, num_training_steps - num_warmup_steps)``.

    Example:
        >>> s = hf_cosine_with_hard_restarts(1.0, num_warmup_steps=0, num_training_steps=90, num_cycles=3)
        >>> s.restarts(90), s(29) < s(30) == 1.0, s(90)
        ([30, 60], True, 0.0)
    """
    v.number("base_lr", base_lr, gt=0.0)
    warmup, total = _steps(num_warmup_steps, num_training_steps)
    cycles = v.integer("num_cycles", num_cycles, ge=1)
    length = max(1, total - warmup)
    cycle_steps = length // cycles if length % cycles == 0 else length / cycles
    return Cosine(peak_lr=base_lr, warmup_steps=warmup, cycle_steps=cycle_steps, max_cycles=cycles)


def hf_wsd(
    base_lr: float,
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    min_lr_ratio: float = 0.0,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
) -> WarmupStableDecay:
    """``get_wsd_schedule(optimizer, num_warmup_steps, num_decay_steps, num_stable_steps=..., ...)``.

    Note the order: ``transformers`` takes ``num_decay_steps`` before ``num_stable_steps``; pass
    them by name when migrating. Its ``num_cycles`` (for ``decay_type="cosine"``) is fixed at its
    default 0.5; compute ``num_stable_steps = num_training_steps - num_warmup_steps -
    num_decay_steps`` if you used ``num_training_steps``.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        num_warmup_steps: warmup length (an integer >= 0), starting from ``min_lr_ratio * base_lr``.
        num_stable_steps: stable length at ``base_lr`` (an integer >= 0).
        num_decay_steps: decay length (an integer >= 0), ending at ``min_lr_ratio * base_lr``.
        min_lr_ratio: the floor as a fraction of ``base_lr`` (0..1).
        warmup_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
        decay_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Returns:
        ``WarmupStableDecay(base_lr, num_warmup_steps, num_stable_steps, num_decay_steps,
        min_lr_ratio, warmup_shape=warmup_type, decay_shape=decay_type)``.

    Example:
        >>> s = hf_wsd(1.0, num_warmup_steps=10, num_stable_steps=80, num_decay_steps=10, decay_type="linear")
        >>> s(5), s(50), s(95), s(100)
        (0.5, 1.0, 0.5, 0.0)
    """
    v.number("base_lr", base_lr, gt=0.0)
    warmup = v.integer("num_warmup_steps", num_warmup_steps)
    stable = v.integer("num_stable_steps", num_stable_steps)
    decay = v.integer("num_decay_steps", num_decay_steps)
    v.number("min_lr_ratio", min_lr_ratio, ge=0.0, le=1.0)
    shapes = ("linear", "cosine", "1-sqrt")
    return WarmupStableDecay(
        peak_lr=base_lr,
        warmup_steps=warmup,
        stable_steps=stable,
        decay_steps=decay,
        min_lr_ratio=min_lr_ratio,
        warmup_shape=v.choice("warmup_type", warmup_type, shapes),
        decay_shape=v.choice("decay_type", decay_type, shapes),
    )
