r"""The one-cycle policy (Smith & Topin), step for step as PyTorch's ``OneCycleLR`` computes it.

With ``T = total_steps``, ``q = pct_start * T``, ``a = max_lr / div_factor`` (initial LR),
``M = max_lr`` and ``z = a / final_div_factor`` (final LR), the curve is a chain of phases, each
interpolating from a start value to an end value over ``[s_k, e_k]``:

* two phases: ``a -> M`` ending at ``e_1 = q - 1``, then ``M -> z`` ending at ``e_2 = T - 1``;
* three phases: ``a -> M`` ending at ``q - 1``, ``M -> a`` ending at ``2q - 2``, ``a -> z`` ending
  at ``T - 1``.

Step ``t`` belongs to the first phase with ``t <= e_k`` (else the last one), which starts where the
previous one ended (``s_1 = 0``), and with ``p = (t - s_k) / (e_k - s_k)``:

.. math:: \mathrm{cos}: \; y = y_1 + \tfrac12 (y_0 - y_1)(1 + \cos \pi p), \qquad
          \mathrm{linear}: \; y = y_0 + (y_1 - y_0) p.

Momentum follows the same phases from ``max_momentum`` to ``base_momentum`` and back (three phases:
``max -> base -> max -> max``). PyTorch refuses steps past ``T``; from step ``T - 1`` on, the last
step of training, this schedule holds the final value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, overload

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules import durations
from cosanneal.schedules.base import FloatArray, Schedule, check_step, check_steps, register

_STRATEGIES = ("cos", "linear")


class _Phase(NamedTuple):
    start: float  # step where the phase starts (the previous phase's end)
    end: float  # last step of the phase
    lr: tuple[float, float]  # (start value, end value)
    momentum: tuple[float, float]


def _anneal_scalar(strategy: str, y0: float, y1: float, p: float) -> float:
    if strategy == "cos":
        return y1 + (y0 - y1) / 2.0 * (math.cos(math.pi * p) + 1.0)
    return (y1 - y0) * p + y0


def _anneal_vector(strategy: str, y0: float, y1: float, p: FloatArray) -> FloatArray:
    if strategy == "cos":
        return y1 + (y0 - y1) / 2.0 * (np.cos(math.pi * p) + 1.0)
    return (y1 - y0) * p + y0


@register("onecycle")
@dataclasses.dataclass(frozen=True)
class OneCycle(Schedule):
    """One-cycle LR (and momentum) policy, equal to ``torch.optim.lr_scheduler.OneCycleLR``.

    Args:
        max_lr: the top of the cycle (> 0).
        total_steps: number of optimizer steps in the cycle (an integer >= 1, or a duration such as
            ``"1dur"``).
        pct_start: fraction of the cycle spent rising to ``max_lr`` (0..1; <= 0.5 with ``three_phase``).
        anneal_strategy: ``"cos"`` or ``"linear"`` interpolation inside each phase.
        div_factor: initial LR is ``max_lr / div_factor`` (> 0).
        final_div_factor: final LR is ``max_lr / div_factor / final_div_factor`` (> 0).
        three_phase: add a phase that comes back down to the initial LR before the final annealing.
        base_momentum: momentum at the LR peak.
        max_momentum: momentum at the start and the end.

    Example:
        >>> s = OneCycle(max_lr=1.0, total_steps=11, pct_start=0.5, anneal_strategy="linear", div_factor=10)
        >>> [round(s(t), 6) for t in (0, 2, 4.5, 10)]
        [0.1, 0.5, 1.0, 1e-05]
        >>> s(10) == s(10**9), s.final_lr
        (True, 1e-05)
        >>> float(s.momentum(4.5)), float(s.momentum(10))
        (0.85, 0.95)
    """

    max_lr: float
    total_steps: int | str
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    duration_fields = ("total_steps",)
    integer_duration_fields = ("total_steps",)

    def __post_init__(self) -> None:
        v.number("max_lr", self.max_lr, gt=0.0)
        v.number("pct_start", self.pct_start, ge=0.0, le=1.0)
        v.choice("anneal_strategy", self.anneal_strategy, _STRATEGIES)
        v.number("div_factor", self.div_factor, gt=0.0)
        v.number("final_div_factor", self.final_div_factor, gt=0.0)
        v.flag("three_phase", self.three_phase)
        v.number("base_momentum", self.base_momentum, ge=0.0)
        v.number("max_momentum", self.max_momentum, ge=0.0)
        if self.three_phase and float(self.pct_start) > 0.5:
            raise ScheduleError(f"pct_start must be <= 0.5 when three_phase is true, got {self.pct_start!r}")
        total = durations.parse("total_steps", self.total_steps)
        if not durations.is_unbound(total):
            total = v.integer("total_steps", total, ge=1)
        object.__setattr__(self, "total_steps", total)
        if durations.is_unbound(total):
            return
        rise = float(self.pct_start * total)
        if rise == 1.0:
            raise ScheduleError(
                f"pct_start * total_steps must not be exactly 1 (the warmup phase would last 0 steps), "
                f"got pct_start={self.pct_start!r} with total_steps={total}"
            )
        object.__setattr__(self, "_phases", self._build_phases(rise, total))

    def _build_phases(self, rise: float, total: int) -> tuple[_Phase, ...]:
        a, top, z = self.initial_lr, float(self.max_lr), self.final_lr
        lo, hi = float(self.base_momentum), float(self.max_momentum)
        ends: list[tuple[float, tuple[float, float], tuple[float, float]]]
        if self.three_phase:
            ends = [
                (rise - 1.0, (a, top), (hi, lo)),
                (2.0 * rise - 2.0, (top, a), (lo, hi)),
                (float(total - 1), (a, z), (hi, hi)),
            ]
        else:
            ends = [(rise - 1.0, (a, top), (hi, lo)), (float(total - 1), (top, z), (lo, hi))]
        phases, start = [], 0.0
        for end, lr, mom in ends:
            phases.append(_Phase(start, end, lr, mom))
            start = end
        return tuple(phases)

    # ---- derived values ---------------------------------------------------------------------
    @property
    def initial_lr(self) -> float:
        """LR at step 0 of the rise: ``max_lr / div_factor``."""
        return float(self.max_lr) / float(self.div_factor)

    @property
    def final_lr(self) -> float:
        """LR at the last step: ``max_lr / div_factor / final_div_factor``."""
        return self.initial_lr / float(self.final_div_factor)

    @property
    def peak(self) -> float:
        """``max_lr`` (or the initial/final LR if a factor < 1 puts them above it)."""
        return max(float(self.max_lr), self.initial_lr, self.final_lr)

    @property
    def horizon(self) -> float:
        """``total_steps - 1``: the last step of the cycle, from which the final LR is held."""
        self.require_bound()
        return float(int(self.total_steps) - 1)

    # ---- evaluation -------------------------------------------------------------------------
    def _curve_scalar(self, t: float, which: int) -> float:
        phases: tuple[_Phase, ...] = self._phases  # type: ignore[attr-defined]
        t = min(t, float(int(self.total_steps) - 1))
        for k, ph in enumerate(phases):
            if t <= ph.end or k == len(phases) - 1:
                y0, y1 = ph.lr if which == 0 else ph.momentum
                return _anneal_scalar(self.anneal_strategy, y0, y1, (t - ph.start) / (ph.end - ph.start))
        raise AssertionError("unreachable: the last phase always matches")

    def _curve_vector(self, t: FloatArray, which: int) -> FloatArray:
        phases: tuple[_Phase, ...] = self._phases  # type: ignore[attr-defined]
        t = np.minimum(t, float(int(self.total_steps) - 1))
        out = np.empty_like(t)
        left = np.ones(t.shape, dtype=bool)
        for k, ph in enumerate(phases):
            sel = left if k == len(phases) - 1 else left & (t <= ph.end)
            if sel.any():
                y0, y1 = ph.lr if which == 0 else ph.momentum
                out[sel] = _anneal_vector(
                    self.anneal_strategy, y0, y1, (t[sel] - ph.start) / (ph.end - ph.start)
                )
            left = left & ~sel
        return out

    def _scalar(self, t: float) -> float:
        return self._curve_scalar(t, 0)

    def _vector(self, t: FloatArray) -> FloatArray:
        return self._curve_vector(t, 0)

    @overload
    def momentum(self, t: float) -> float: ...

    @overload
    def momentum(self, t: np.ndarray | list[float]) -> FloatArray: ...

    def momentum(self, t: Any) -> Any:
        """Momentum (or Adam's beta1) at step ``t``, as ``OneCycleLR(cycle_momentum=True)`` sets it.

        Example:
            >>> s = OneCycle(max_lr=0.1, total_steps=100)
            >>> float(s.momentum(0)), round(float(s.momentum(29)), 12), float(s.momentum(99))
            (0.95, 0.85, 0.95)
            >>> s.momentum([0, 29]).tolist() == [s.momentum(0), s.momentum(29)]
            True
        """
        self.require_bound()
        if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
            return self._curve_scalar(check_step(float(t)), 1)
        return self._curve_vector(check_steps(t), 1)

    # ---- introspection ----------------------------------------------------------------------
    def phase(self, t: float) -> str:
        """``"warmup"`` while the LR rises, ``"hold"`` from step ``total_steps - 1``, else ``"anneal"``.

        Example:
            >>> s = OneCycle(max_lr=0.1, total_steps=100)
            >>> s.phase(0), s.phase(29), s.phase(30), s.phase(99)
            ('warmup', 'warmup', 'anneal', 'hold')
        """
        self.require_bound()
        t = check_step(t)
        if t >= self.horizon:
            return "hold"
        first: _Phase = self._phases[0]  # type: ignore[attr-defined]
        return "warmup" if t <= first.end else "anneal"
