"""A deliberately naive reference for the Cosine schedule, used only by tests.

It walks the cycles one by one with exact rational arithmetic (``fractions.Fraction`` of the numbers as
written), so it shares no code and no floating-point shortcut with the implementation under test.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any


def _frac(x: float) -> Fraction:
    return Fraction(repr(float(x))) if not isinstance(x, int) else Fraction(x)


def locate(cfg: dict[str, Any], t: float) -> tuple[int, Fraction, Fraction]:
    """Return (cycle index, local offset, cycle length) of step ``t`` by walking the cycles."""
    origin = Fraction(cfg.get("warmup_steps", 0)) if cfg.get("warmup_prefix", True) else Fraction(0)
    x = Fraction(float(t)) - origin  # the step exactly as the float it is
    if x < 0:
        x = Fraction(0)
    length = _frac(cfg["cycle_steps"])
    mult = _frac(cfg.get("cycle_mult", 1.0))
    max_cycles = cfg.get("max_cycles", 1)
    start = Fraction(0)
    i = 0
    while True:
        # a cycle's first step is its exact start rounded once to float64 (as documented)
        rounded_start = Fraction(float(start + origin)) - origin
        if max_cycles is not None and i >= max_cycles:
            return i, x - rounded_start, Fraction(-1)
        if x + origin < Fraction(float(start + length + origin)):
            return i, x - rounded_start, length
        start += length
        length *= mult
        i += 1


def reference_lr(cfg: dict[str, Any], t: float) -> float:
    """LR at step ``t`` from the definition in docs/schedules.md, computed the slow way."""
    peak = float(cfg["peak_lr"])
    warmup = int(cfg.get("warmup_steps", 0))
    start_lr = float(cfg.get("warmup_start_lr", 0.0))
    shape = cfg.get("warmup_shape", "linear")
    decay = float(cfg.get("peak_decay", 1.0))
    min_lr = float(cfg.get("min_lr", 0.0))
    ratio = cfg.get("min_ratio")
    k = float(cfg.get("k", 1.0))
    cw = int(cfg.get("cycle_warmup_steps", 0))
    max_cycles = cfg.get("max_cycles", 1)

    def ramp(frac: float, lo: float, hi: float) -> float:
        if shape == "linear":
            return lo + (hi - lo) * frac
        if shape == "cosine":
            return lo + (hi - lo) * (1 - math.cos(math.pi * frac)) / 2
        return lo * (hi / lo) ** frac

    def top(i: int) -> float:
        # a decayed peak never drops below an absolute floor
        return peak * decay**i if ratio is not None else max(peak * decay**i, min_lr)

    def bottom(i: int) -> float:
        return ratio * top(i) if ratio is not None else min_lr

    if t < warmup:
        return ramp(t / warmup, start_lr, peak)
    i, u, length = locate(cfg, t)
    if length < 0:
        return bottom(max_cycles - 1)
    w = cw if i > 0 else 0
    if u < w:
        return ramp(float(u) / w, bottom(i), top(i))
    p = float((u - w) / (length - w)) ** k
    return bottom(i) + (top(i) - bottom(i)) * (1 + math.cos(math.pi * p)) / 2
