r"""Warmup-stable-decay (WSD, "trapezoidal"), as Hugging Face's ``get_wsd_schedule`` computes it.

With ``W, S, D`` the warmup, stable and decay lengths, ``P = peak_lr`` and ``r = min_lr_ratio``, every
value is ``P (f (1 - r) + r)`` for a shape factor ``f`` in ``[0, 1]``:

* warmup, ``t < W``, ``p = t / W``: ``f = p`` (linear), ``(1 - cos \pi p) / 2`` (cosine) or
  ``1 - \sqrt{1 - p}`` (1-sqrt); the warmup therefore starts at ``r P``, not at 0;
* stable, ``W <= t < W + S``: ``P``;
* decay, ``p = (t - W - S) / D``: ``f = 1 - p`` (linear), ``(1 + cos \pi p) / 2`` (cosine) or
  ``1 - \sqrt{p}`` (1-sqrt);
* from ``W + S + D`` on: the floor ``r P``, held forever.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cosanneal.schedules import _validate as v
from cosanneal.schedules import durations
from cosanneal.schedules.base import FloatArray, Schedule, check_step, register

#: The warmup and decay shapes (also the shapes of a replan's or a branch's cooldown).
SHAPES = ("linear", "cosine", "1-sqrt")


def _warmup_factor_scalar(shape: str, p: float) -> float:
    if shape == "linear":
        return p
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * p))
    return 1.0 - math.sqrt(1.0 - p)


def _warmup_factor_vector(shape: str, p: FloatArray) -> FloatArray:
    if shape == "linear":
        return p
    if shape == "cosine":
        return 0.5 * (1.0 - np.cos(math.pi * p))
    return 1.0 - np.sqrt(1.0 - p)


def _decay_factor_scalar(shape: str, p: float) -> float:
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - math.sqrt(p)


def _decay_factor_vector(shape: str, p: FloatArray) -> FloatArray:
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + np.cos(math.pi * p))
    return 1.0 - np.sqrt(p)


@register("wsd")
@dataclasses.dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Warmup, a constant stable phase, then a decay to ``min_lr_ratio * peak_lr``, held after.

    Equal to ``transformers.get_wsd_schedule`` (with its default ``num_cycles=0.5``) at every step.

    Args:
        peak_lr: LR of the stable phase (> 0).
        warmup_steps: warmup length in whole steps (>= 0) or a duration (``"1ep"``, ``"0.05dur"``).
        stable_steps: stable length in whole steps (>= 0) or a duration.
        decay_steps: decay length in whole steps (>= 0) or a duration.
        min_lr_ratio: the floor as a fraction of ``peak_lr`` (0..1); the warmup starts there too.
        warmup_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.

    Example:
        >>> s = WarmupStableDecay(1.0, warmup_steps=10, stable_steps=80, decay_steps=10, min_lr_ratio=0.1)
        >>> [round(s(t), 6) for t in (0, 5, 10, 89, 95, 100, 10**9)]
        [0.1, 0.55, 1.0, 1.0, 0.55, 0.1, 0.1]
        >>> s.horizon
        100.0
    """

    peak_lr: float
    warmup_steps: int | str
    stable_steps: int | str
    decay_steps: int | str
    min_lr_ratio: float = 0.0
    warmup_shape: str = "linear"
    decay_shape: str = "cosine"

    duration_fields = ("warmup_steps", "stable_steps", "decay_steps")
    integer_duration_fields = ("warmup_steps", "stable_steps", "decay_steps")

    def __post_init__(self) -> None:
        v.number("peak_lr", self.peak_lr, gt=0.0)
        v.number("min_lr_ratio", self.min_lr_ratio, ge=0.0, le=1.0)
        v.choice("warmup_shape", self.warmup_shape, SHAPES)
        v.choice("decay_shape", self.decay_shape, SHAPES)
        for name in self.duration_fields:
            value = durations.parse(name, getattr(self, name))
            if not durations.is_unbound(value):
                value = v.integer(name, value)
            object.__setattr__(self, name, value)

    # ---- introspection ----------------------------------------------------------------------
    @property
    def peak(self) -> float:
        """``peak_lr``."""
        return float(self.peak_lr)

    @property
    def floor(self) -> float:
        """``min_lr_ratio * peak_lr``, the LR held after the decay."""
        return float(self.peak_lr) * float(self.min_lr_ratio)

    @property
    def decay_start(self) -> float:
        """First step of the decay: ``warmup_steps + stable_steps``."""
        self.require_bound()
        return float(int(self.warmup_steps) + int(self.stable_steps))

    @property
    def horizon(self) -> float:
        """End of the decay: ``warmup_steps + stable_steps + decay_steps``."""
        return self.decay_start + float(int(self.decay_steps))

    def phase(self, t: float) -> str:
        """``"warmup"``, ``"anneal"`` (stable and decay) or ``"hold"`` at step ``t``.

        Example:
            >>> s = WarmupStableDecay(1.0, warmup_steps=10, stable_steps=80, decay_steps=10)
            >>> s.phase(9), s.phase(10), s.phase(95), s.phase(100)
            ('warmup', 'anneal', 'anneal', 'hold')
        """
        self.require_bound()
        t = check_step(t)
        if t < int(self.warmup_steps):
            return "warmup"
        return "hold" if t >= self.horizon else "anneal"

    # ---- evaluation -------------------------------------------------------------------------
    def _scalar(self, t: float) -> float:
        peak, r = float(self.peak_lr), float(self.min_lr_ratio)
        warmup, decay_start = int(self.warmup_steps), self.decay_start
        if t < warmup:
            f = _warmup_factor_scalar(self.warmup_shape, t / warmup)
        elif t < decay_start:
            return peak
        elif t < self.horizon:
            f = _decay_factor_scalar(self.decay_shape, (t - decay_start) / int(self.decay_steps))
        else:
            return peak * r
        return peak * (f * (1.0 - r) + r)

    def _vector(self, t: FloatArray) -> FloatArray:
        peak, r = float(self.peak_lr), float(self.min_lr_ratio)
        warmup, decay_start, end = int(self.warmup_steps), self.decay_start, self.horizon
        out = np.full(t.shape, peak * r)
        out[(t >= warmup) & (t < decay_start)] = peak
        in_warmup = t < warmup
        if in_warmup.any():
            f = _warmup_factor_vector(self.warmup_shape, t[in_warmup] / warmup)
            out[in_warmup] = peak * (f * (1.0 - r) + r)
        in_decay = (t >= decay_start) & (t < end)
        if in_decay.any():
            f = _decay_factor_vector(self.decay_shape, (t[in_decay] - decay_start) / int(self.decay_steps))
            out[in_decay] = peak * (f * (1.0 - r) + r)
        return out
