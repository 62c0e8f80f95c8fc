r"""Lint a schedule against a run budget: the mistakes that waste a training run, found before it starts.

:func:`lint` binds the schedule's durations to the run (``total_steps`` optimizer updates, steps
``0 .. total_steps - 1``) and returns one :class:`LintWarning` per problem. Every message is one
sentence with the numbers and, where there is one, the value that fixes it.

===== ============================================================================================
code  what it means
===== ============================================================================================
CA001 the initial warmup is as long as the run (or longer): the LR never leaves the warmup.
CA002 the last cycle is cut short by the end of the budget (a restart whose decay never finishes:
      more than 1% of the cycle's drop from peak to floor is still ahead when the run ends);
      for :class:`~cosanneal.schedules.cosine.Cosine` it suggests a ``cycle_steps`` (same
      multiplier) and a ``cycle_mult`` (same first cycle) that end the last cycle exactly at the
      budget: with ``n`` cycles and ``D`` steps after the warmup, ``c = D (m - 1) / (m^n - 1)``
      (``c = D / n`` when ``m = 1``), and ``m`` solves ``c (1 + m + ... + m^{n-1}) = D``; both are
      computed by :mod:`cosanneal.schedules.cycles` (as ``cosanneal plan`` computes them) and printed
      in full, so the value written into a config ends the run exactly there.
CA003 the floor is never reached: the first decay (or the whole schedule) ends after the run with
      more than 1% of its drop still ahead.
CA004 restart cycles shorter than 10 steps.
CA005 ``peak_decay > 1``: every restart peaks higher than the one before (any other schedule: every
      one of at least two restarts in the run peaks higher than the cycle before it).
CA006 the LR jumps at the warmup hand-off: the step ``s(W-1) -> s(W)`` is more than twice the
      local slope (the steps just before and after) in linear *and* in log scale, and more than 1%
      of the peak. Typical cause: timm's ``warmup_prefix=False`` with a long warmup, or a warmup
      that ends below/above the peak of the decay that follows.
CA007 with ``dtype`` given: after the warmup, some steps have an update ``lr * typical_grad`` too
      small to change a typical weight (``typical_weight``) **in the precision the optimizer updates
      the weights in**: ``w - lr * g`` rounds back to ``w`` and those updates are lost. With ``p``
      significand bits (fp16 11, bf16 8, fp32 24) half an ulp of ``w`` is
      ``h = 2^(floor(log2 w) - p)``; an update is lost when it is at most ``h (1 + 2^-p)`` (PyTorch's
      half-precision kernels round ``lr * g`` to ``p`` bits before adding it, and a tie rounds to
      even), so the LR must stay ``> h (1 + 2^-p) / typical_grad``. The advice is the next
      4-significant-digit decimal above that, so following it clears the warning. ``dtype`` names the training
      precision: ``"fp16"``, ``"bf16"`` (or ``"float16"``, ``"bfloat16"``, ``"amp-fp16"``,
      ``"amp-bf16"``) mean autocast / AMP, whose master weights are fp32: the LR multiplies fp32
      updates and never underflows in half precision, so only the fp32 limit applies (about
      ``4.7e-7`` with the defaults). ``"pure-fp16"``, ``"pure-bf16"`` (or ``"pure-float16"``,
      ``"pure-bfloat16"``) mean weights stored and updated in half precision with no fp32 copy
      (``model.half()`` training): there the limit is about ``0.0038`` (fp16) or ``0.031`` (bf16).
      The assumed magnitudes are a gradient element of ``1e-3`` (SGD; an Adam-family update is
      normalised, about ``lr`` itself: pass ``typical_grad=1``) and a weight of ``1e-2``.
CA008 the LR is exactly 0 at some step after the warmup (any dtype): those updates do nothing.
CA009 the schedule ends (holds its final LR) more than 10% of the run before the budget.
===== ============================================================================================

Cosine schedules are analysed exactly from their cycle geometry (:meth:`Cosine.cycle_start`, ...);
any other :class:`~cosanneal.schedules.base.Schedule` from its public API only (``__call__``,
``phase``, ``cycle``, ``restarts``, ``horizon``, ``peak``). Peaks, floors and restarts come from
:func:`~cosanneal.schedules.cycles.peak_lr`, :func:`~cosanneal.schedules.cycles.floor_lr` and
:func:`~cosanneal.schedules.cycles.restart_steps` for every schedule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterator
from decimal import ROUND_CEILING, Decimal
from itertools import pairwise

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules.base import FloatArray, Schedule, as_number
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.cycles import fit_cycle_mult, fit_cycle_steps, floor_lr, peak_lr, restart_steps

__all__ = ["DTYPES", "DTYPE_SMALLEST_NORMAL", "PRECISION_BITS", "LintWarning", "Segment", "lint", "timeline"]

#: The ``dtype`` names ``lint`` accepts -> the precision the optimizer updates the weights in. The
#: training precisions (``fp16``/``bf16``: autocast, AMP) keep fp32 master weights; ``pure-*`` do not.
DTYPES: dict[str, str] = {
    "fp16": "fp32",
    "float16": "fp32",
    "amp-fp16": "fp32",
    "bf16": "fp32",
    "bfloat16": "fp32",
    "amp-bf16": "fp32",
    "fp32": "fp32",
    "float32": "fp32",
    "pure-fp16": "fp16",
    "pure-float16": "fp16",
    "pure-bf16": "bf16",
    "pure-bfloat16": "bf16",
}
#: Significand bits (with the implicit leading one) of each weight precision: half an ulp of 1.0 is 2^-bits.
PRECISION_BITS: dict[str, int] = {"fp16": 11, "bf16": 8, "fp32": 24}
#: How each ``dtype`` name is described in a CA007 message.
_UPDATES = {
    "fp32": "the optimizer updates fp32 weights",
    "fp16": "fp16 weights without an fp32 master copy",
    "bf16": "bf16 weights without an fp32 master copy",
}
#: Smallest positive normal number of each precision name (the names the CLI's ``--dtype`` offers).
DTYPE_SMALLEST_NORMAL: dict[str, float] = {
    "fp16": 6.103515625e-05,
    "float16": 6.103515625e-05,
    "bf16": 1.1754943508222875e-38,
    "bfloat16": 1.1754943508222875e-38,
    "fp32": 1.1754943508222875e-38,
    "float32": 1.1754943508222875e-38,
}
#: Cycles shorter than this many steps are flagged (CA004).
MIN_CYCLE_STEPS = 10
#: A hold longer than this fraction of the run is flagged (CA009).
MAX_HOLD_FRACTION = 0.1
_JUMP_FACTOR = 2.0  # a hand-off step larger than this times the local slope is a jump (CA006)
_JUMP_MIN = 0.01  # ... and larger than this fraction of the peak
_NEARLY_DONE = 0.01  # a cycle cut with less than this fraction of its drop left is not reported
_CHUNK = 1 << 20  # steps evaluated at once when scanning a run
_GRID = 4096  # probe points for the phase timeline of schedules other than Cosine


@dataclasses.dataclass(frozen=True)
class LintWarning:
    """One problem found by :func:`lint`.

    Attributes:
        code: stable short id (``"CA001"`` ... ``"CA009"``; see the module docs).
        message: one sentence with the numbers and the fix.
        step: the step the problem concerns (where there is one).
    """

    code: str
    message: str
    step: int | float | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of whole steps ``start .. end - 1`` with one phase and one cycle index."""

    start: int
    end: int
    phase: str
    cycle: int


# ---- formatting ---------------------------------------------------------------------------------
def _g(x: float) -> str:
    """A number for a message: whole numbers as ints, others with 4 significant digits."""
    value = as_number(float(x))
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


# ---- timeline -----------------------------------------------------------------------------------
def _ceil_step(x: float) -> int:
    return math.ceil(x - 1e-9)


def _segments_from_starts(starts: set[int], n: int, label: Callable[[int], tuple[str, int]]) -> list[Segment]:
    points = sorted(s for s in starts if 0 <= s < n)
    out: list[Segment] = []
    for k, start in enumerate(points):
        end = points[k + 1] if k + 1 < len(points) else n
        phase, cycle = label(start)
        if out and (out[-1].phase, out[-1].cycle) == (phase, cycle):
            out[-1] = dataclasses.replace(out[-1], end=end)
        else:
            out.append(Segment(start, end, phase, cycle))
    return out


def _cosine_starts(s: Cosine, n: int) -> set[int]:
    starts = {0}
    if int(s.warmup_steps):
        starts.add(int(s.warmup_steps))
    cw = int(s.cycle_warmup_steps)
    for r in restart_steps(s, n):
        starts.add(_ceil_step(float(r)))
        if cw:
            starts.add(_ceil_step(float(r) + cw))
    if s.horizon is not None:
        starts.add(_ceil_step(s.horizon))
    return starts


def _probe_starts(s: Schedule, n: int) -> set[int]:
    """Steps where ``(phase, cycle)`` changes, found on a grid and refined by bisection."""

    def key(t: int) -> Hashable:
        return (s.phase(t), s.cycle(t).index)

    grid = sorted({int(x) for x in np.linspace(0, n - 1, min(n, _GRID))})
    starts = {0}
    for r in restart_steps(s, n):
        starts.add(_ceil_step(float(r)))
    keys = [key(t) for t in grid]

    def refine(lo: int, klo: Hashable, hi: int, khi: Hashable) -> None:
        if hi - lo == 1:
            starts.add(hi)
            return
        mid = (lo + hi) // 2
        kmid = key(mid)
        if kmid != klo:
            refine(lo, klo, mid, kmid)
        if kmid != khi:
            refine(mid, kmid, hi, khi)

    for (a, b), (ka, kb) in zip(pairwise(grid), pairwise(keys), strict=True):
        if ka != kb:
            refine(a, ka, b, kb)
    return starts


def timeline(schedule: Schedule, total_steps: int) -> list[Segment]:
    """Split the run ``0 .. total_steps - 1`` into segments of constant phase and cycle.

    For a :class:`Cosine` the segment starts are exact (warmup end, restarts, restart warmups, the
    final hold). For other schedules they are found by probing ``phase``/``cycle`` on a grid of at
    most 4096 steps and bisecting every change, so a phase shorter than the grid spacing may be missed.

    Args:
        schedule: a bound schedule.
        total_steps: number of steps in the run (>= 1).

    Returns:
        Consecutive segments covering ``[0, total_steps)``.

    Example:
        >>> s = Cosine(0.1, warmup_steps=10, cycle_steps=40, max_cycles=2)
        >>> [(g.start, g.end, g.phase, g.cycle) for g in timeline(s, 100)]
        [(0, 10, 'warmup', 0), (10, 50, 'anneal', 0), (50, 90, 'anneal', 1), (90, 100, 'hold', 2)]
    """
    n = int(total_steps)
    starts = _cosine_starts(schedule, n) if isinstance(schedule, Cosine) else _probe_starts(schedule, n)

    def label(t: int) -> tuple[str, int]:
        return schedule.phase(t), schedule.cycle(t).index

    return _segments_from_starts(starts, n, label)


# ---- scanning a run -----------------------------------------------------------------------------
@dataclasses.dataclass
class _Scan:
    """Statistics of the LR over steps ``start .. stop - 1``, gathered in chunks."""

    lowest: float = math.inf
    zeros: int = 0
    first_zero: int | None = None
    under: int = 0
    first_under: int | None = None
    lowest_under: float = math.inf


def _chunks(start: int, stop: int) -> Iterator[FloatArray]:
    for a in range(start, stop, _CHUNK):
        yield np.arange(a, min(stop, a + _CHUNK), dtype=np.float64)


def _scan(s: Schedule, start: int, stop: int, threshold: float) -> _Scan:
    out = _Scan()
    for steps in _chunks(start, stop):
        lr = np.asarray(s(steps), dtype=np.float64)
        out.lowest = min(out.lowest, float(lr.min()))
        zero = lr == 0.0
        if zero.any():
            out.zeros += int(zero.sum())
            if out.first_zero is None:
                out.first_zero = int(steps[np.argmax(zero)])
        low = (lr > 0.0) & (lr <= threshold)
        if low.any():
            out.under += int(low.sum())
            out.lowest_under = min(out.lowest_under, float(lr[low].min()))
            if out.first_under is None:
                out.first_under = int(steps[np.argmax(low)])
    return out


# ---- fitting cycles to a budget -----------------------------------------------------------------
def _exact(x: float) -> str:
    """A fitted value in full (``repr``): written into a config, it is the same float64."""
    value = as_number(float(x))
    return str(value) if isinstance(value, int) else repr(value)


def _fit_advice(s: Cosine, n_cycles: int, budget: int) -> str:
    span = budget - s.origin
    c = fit_cycle_steps(span, float(s.cycle_mult), n_cycles, origin=s.origin)
    advice = f"cycle_steps={_exact(c)}"
    m = fit_cycle_mult(span, float(s.cycle_steps), n_cycles, origin=s.origin)
    if m is not None:
        advice += f" or cycle_mult={_exact(m)}"
    cycles = "cycle" if n_cycles == 1 else "cycles"
    return f"{advice} would end {n_cycles} {cycles} exactly at step {budget}"


# ---- the checks ---------------------------------------------------------------------------------
def _warmup_end(segments: list[Segment]) -> int:
    first = segments[0]
    return first.end if first.phase == "warmup" and first.start == 0 else 0


def _check_handoff(s: Schedule, warmup: int, n: int) -> LintWarning | None:
    if warmup < 2 or warmup + 1 >= n:
        return None
    v = np.asarray(s(np.arange(warmup - 2, warmup + 2, dtype=np.float64)), dtype=np.float64)
    jump = v[2] - v[1]
    slope = max(abs(v[1] - v[0]), abs(v[3] - v[2]))
    if abs(jump) <= _JUMP_FACTOR * slope or abs(jump) <= _JUMP_MIN * peak_lr(s):
        return None
    if (v > 0).all():
        logs = np.log(v)
        if abs(logs[2] - logs[1]) <= _JUMP_FACTOR * max(abs(logs[1] - logs[0]), abs(logs[3] - logs[2])):
            return None
    direction = "drops" if jump < 0 else "jumps"
    hint = (
        "use warmup_prefix=true or a shorter warmup"
        if isinstance(s, Cosine) and not s.warmup_prefix
        else "make the warmup end at the peak of the decay that follows"
    )
    return LintWarning(
        "CA006",
        f"at the warmup hand-off the LR {direction} from {_g(v[1])} (step {warmup - 1}) to {_g(v[2])} "
        f"(step {warmup}), {abs(jump) / max(slope, 1e-300):.3g}x the local slope of {_g(slope)} per step; "
        f"{hint}",
        warmup,
    )


def _half_ulp(weight: float, precision: str) -> float:
    """Half an ulp of ``weight`` in ``precision``: ``2^(floor(log2 |weight|) - bits)`` (exact)."""
    return math.ldexp(1.0, math.frexp(abs(weight))[1] - 1 - PRECISION_BITS[precision])


def _above(x: float, digits: int = 4) -> str:
    """The smallest decimal of ``digits`` significant digits that is **greater** than ``x``.

    Its float is greater than ``x`` too (``x`` is a float, and rounding to the nearest float keeps the
    order), so an LR set to it clears a check for ``lr <= x``.

    Example:
        >>> _above(0.06103515625), _above(0.0038146972656), _above(0.03125), _above(2.0), _above(4.6566e-7)
        ('0.06104', '0.003815', '0.03126', '2.001', '4.657e-07')
    """
    exact = Decimal(x)  # the float's exact binary value
    quantum = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    up = exact.quantize(quantum, rounding=ROUND_CEILING)
    if up == exact:
        up += quantum
    return f"{float(up):.{digits}g}"  # the same decimal (4 digits round-trip through a float), e.g. 4.657e-07


def _lost_below(weight: float, precision: str) -> float:
    """The largest update lost on ``weight``: half an ulp, times ``1 + 2^-bits`` for the update's own rounding.

    An update ``u`` is rounded to the precision first (PyTorch's half-precision kernels do), so any
    ``u <= h (1 + 2^-bits)`` becomes ``h`` (half an ulp ``h``, a tie rounding to even), and ``w - h``
    may round back to ``w``.
    """
    return _half_ulp(weight, precision) * (1.0 + 2.0 ** -PRECISION_BITS[precision])


def _dtype_threshold(dtype: str, typical_grad: float, typical_weight: float) -> float:
    """The LR at and below which an update ``lr * typical_grad`` on ``typical_weight`` may be lost."""
    return _lost_below(typical_weight, DTYPES[dtype]) / typical_grad


def _check_dtype(
    s: Schedule, scan: _Scan, dtype: str, typical_grad: float, typical_weight: float, warmup: int, n: int
) -> LintWarning | None:
    if not scan.under or scan.first_under is None:
        return None
    precision = DTYPES[dtype]
    lost = _lost_below(typical_weight, precision)
    floor = _above(_dtype_threshold(dtype, typical_grad, typical_weight))
    master = "" if precision == "fp32" else " or keep fp32 master weights (AMP)"
    if float(floor) > peak_lr(s):
        fix = f"even the peak LR {_g(peak_lr(s))} is below {floor}{master.replace(' or', ';', 1)}"
    else:
        instead = " in place of min_ratio" if isinstance(s, Cosine) and s.min_ratio is not None else ""
        fix = f"keep the LR >= {floor} (min_lr={floor}{instead}){master}"
    return LintWarning(
        "CA007",
        f"under {dtype} ({_UPDATES[precision]}), an update of lr x a typical gradient of {typical_grad:g} is "
        f"at most {lost:.3g} (half an ulp of a typical {precision} weight of {typical_weight:g}, with the "
        f"update's own rounding) at {scan.under} of the {n - warmup} steps after the warmup (first at step "
        f"{scan.first_under}, lowest LR {_g(scan.lowest_under)}), so those updates round away; {fix}",
        scan.first_under,
    )


def _check_zero(scan: _Scan, warmup: int, n: int) -> LintWarning | None:
    if not scan.zeros or scan.first_zero is None:
        return None
    return LintWarning(
        "CA008",
        f"the LR is exactly 0 at {scan.zeros} steps after the warmup (first at step {scan.first_zero}, "
        f"{_pct(scan.zeros / n)} of the run), and those updates do nothing; set a floor (min_lr) > 0 "
        "or end the schedule at the budget",
        scan.first_zero,
    )


def _check_hold(s: Schedule, n: int, advice: str | None) -> LintWarning | None:
    end = s.horizon
    if end is None or end >= n or (n - end) <= MAX_HOLD_FRACTION * n:
        return None
    fix = advice if advice is not None else f"make the schedule end at step {n}"
    return LintWarning(
        "CA009",
        f"the schedule ends at step {_g(end)} and holds {_g(s(end))} for the last {_g(n - end)} steps "
        f"({_pct((n - end) / n)} of the run); {fix}",
        as_number(float(end)),
    )


def _unfinished(s: Schedule, n: int, top: float, bottom: float) -> bool:
    """True when the cycle cut at step ``n`` still has more than 1% of its drop ahead (or is warming up)."""
    if s.phase(n) == "warmup":
        return True
    return s(n) - bottom > _NEARLY_DONE * (top - bottom)


def _cosine_checks(s: Cosine, n: int) -> list[LintWarning]:
    out: list[LintWarning] = []
    last = s.max_cycles
    idx = s.cycle(n - 1).index
    in_hold = last is not None and idx >= last
    started = last if in_hold and last is not None else idx + 1
    c, m = float(s.cycle_steps), float(s.cycle_mult)
    if not in_hold:
        end = s.cycle_start(idx + 1)
        if end > n and _unfinished(s, n, peak_lr(s, idx), floor_lr(s, idx)):
            start = s.cycle_start(idx) if idx else s.origin
            length = end - start
            ran = (n - start) / length
            if idx == 0:
                out.append(
                    LintWarning(
                        "CA003",
                        f"the first decay ends at step {_g(end)}, after the run ends at step {n}, so the LR "
                        f"only falls to {_g(s(n - 1))} and never reaches the floor {_g(floor_lr(s, 0))} "
                        f"({_pct(ran)} of the decay runs); {_fit_advice(s, last or 1, n)}",
                        as_number(float(end)),
                    )
                )
            else:
                out.append(
                    LintWarning(
                        "CA002",
                        f"restart {idx} at step {_g(start)} begins a {_g(length)}-step cycle of which only "
                        f"{_g(n - start)} steps ({_pct(ran)}) run before the budget ends at step {n}; "
                        f"{_fit_advice(s, idx + 1, n)}",
                        as_number(float(start)),
                    )
                )
    if last != 1 and started > 0:
        lengths = [(i, c if i == 0 else s.cycle_length(i)) for i in _short_candidates(m, started)]
        short = [(i, length) for i, length in lengths if length < MIN_CYCLE_STEPS]
        if short:
            i, length = min(short, key=lambda item: item[1])
            out.append(
                LintWarning(
                    "CA004",
                    f"cycle {i} lasts only {_g(length)} steps (restart cycles shorter than {MIN_CYCLE_STEPS} "
                    f"steps restart before the optimizer settles); raise cycle_steps"
                    + (" or cycle_mult" if m < 1 else ""),
                    as_number(float(s.cycle_start(i))),
                )
            )
    if float(s.peak_decay) > 1.0:
        top = min(started, last or started) - 1
        out.append(
            LintWarning(
                "CA005",
                f"peak_decay={_g(float(s.peak_decay))} > 1 raises the peak at every restart: cycle {top} "
                f"peaks at {_g(peak_lr(s, top))}, {peak_lr(s, top) / peak_lr(s, 0):.3g}x peak_lr; "
                "use peak_decay <= 1",
                as_number(float(s.cycle_start(top))),
            )
        )
    return out


def _short_candidates(m: float, started: int) -> list[int]:
    """Cycle indices that may be the shortest among the first ``started`` cycles."""
    if m == 1.0 or started <= 2:
        return [0, 1][:started]
    if m > 1.0:
        return [0]
    return [started - 1]


def _generic_checks(s: Schedule, n: int, lowest: float) -> list[LintWarning]:
    out: list[LintWarning] = []
    restarts = [float(r) for r in restart_steps(s, n)]
    end = s.horizon
    if restarts:
        last = restarts[-1]
        later = [float(r) for r in restart_steps(s, 2.0 * n + 1.0) if float(r) >= n]
        nxt = later[0] if later else (end if end is not None and end > n else None)
        if nxt is not None and nxt > n and _unfinished(s, n, s(last), s(max(nxt - 1e-6, float(n)))):
            length = nxt - last
            out.append(
                LintWarning(
                    "CA002",
                    f"restart {len(restarts)} at step {_g(last)} begins a {_g(length)}-step cycle of which "
                    f"only {_g(n - last)} steps ({_pct((n - last) / length)}) run before the budget ends at "
                    f"step {n}; make the cycles end at step {n}",
                    as_number(last),
                )
            )
        gaps = [(b - a, k + 1, a) for k, (a, b) in enumerate(pairwise(restarts))]
        short = [g for g in gaps if g[0] < MIN_CYCLE_STEPS]
        if short:
            length, k, at = min(short)
            out.append(
                LintWarning(
                    "CA004",
                    f"restart {k} at step {_g(at)} begins a cycle of only {_g(length)} steps (restart cycles "
                    f"shorter than {MIN_CYCLE_STEPS} steps restart before the optimizer settles); lengthen "
                    "the cycles",
                    as_number(at),
                )
            )
    if end is not None and end > n and not out:
        final = s(end)
        if lowest > final + 1e-12 * abs(peak_lr(s)):
            out.append(
                LintWarning(
                    "CA003",
                    f"the schedule reaches its final LR {_g(final)} at step {_g(end)}, after the run ends at "
                    f"step {n}, so the LR only falls to {_g(s(n - 1))}; make the schedule end at step {n}",
                    as_number(float(end)),
                )
            )
    rising = _rising_restart(s, restarts)
    if rising is not None:
        out.append(rising)
    return out


def _rising_restart(s: Schedule, restarts: list[float]) -> LintWarning | None:
    """CA005 for any schedule: each of at least two restarts peaks higher than the cycle before it."""
    if len(restarts) < 2:
        return None
    cycles = [s.cycle(0).index, *(s.cycle(r).index for r in restarts)]
    peaks = [peak_lr(s, i) for i in cycles]
    if not all(b > a * (1.0 + 1e-9) for a, b in pairwise(peaks)):
        return None
    return LintWarning(
        "CA005",
        f"every restart peaks higher than the cycle before it: the restart at step {_g(restarts[-1])} peaks "
        f"at {_g(peaks[-1])}, {peaks[-1] / peaks[0]:.3g}x the first cycle's peak of {_g(peaks[0])}; make "
        "each restart peak at or below the one before",
        as_number(restarts[-1]),
    )


def lint(
    schedule: Schedule,
    total_steps: int,
    steps_per_epoch: float | None = None,
    dtype: str | None = None,
    *,
    typical_grad: float = 1e-3,
    typical_weight: float = 1e-2,
    samples_per_update: float | None = None,
    tokens_per_update: float | None = None,
) -> list[LintWarning]:
    """Check a schedule against a run of ``total_steps`` updates; return the problems found.

    Durations (``"3ep"``, ``"0.05dur"``, ``"2e6sp"``, ``"5e7tok"``) are bound first with
    ``total_steps``, ``steps_per_epoch``, ``samples_per_update`` and ``tokens_per_update``. The run
    covers steps ``0 .. total_steps - 1``; a cycle "ends at the budget" when its end step equals
    ``total_steps``. The codes are listed in the module documentation.
    Cost: one vectorised pass over the run (about 0.1 s per million steps).

    Args:
        schedule: the schedule to check (bound or not).
        total_steps: number of optimizer updates in the run (an integer >= 1).
        steps_per_epoch: optimizer updates per epoch, to bind ``"Nep"`` durations.
        dtype: the training precision, a key of :data:`DTYPES`: ``"fp16"``/``"bf16"`` (autocast/AMP,
            fp32 master weights), ``"fp32"``, or ``"pure-fp16"``/``"pure-bf16"`` (weights updated in half
            precision, no fp32 copy); enables the lost-update check (CA007).
        typical_grad: the assumed magnitude of an update per unit LR for CA007: a gradient element for
            SGD (default ``1e-3``), about 1 for Adam-family optimizers.
        typical_weight: the assumed magnitude of a weight for CA007 (default ``1e-2``).
        samples_per_update: training samples per update (the global batch), to bind ``"Nsp"`` durations.
        tokens_per_update: tokens per update, to bind ``"Ntok"`` durations.

    Returns:
        The warnings, in code order; empty when the schedule is clean.

    Raises:
        ScheduleError: ``total_steps``, ``dtype``, ``typical_grad`` or ``typical_weight`` is invalid, or
            a duration cannot be bound.

    Example:
        >>> sgdr = Cosine(0.1, warmup_steps=200, cycle_steps=400, cycle_mult=2, max_cycles=3)
        >>> lint(sgdr, 3000)
        []
        >>> [w.code for w in lint(sgdr, 2500)]
        ['CA002']
        >>> print(lint(sgdr, 2500)[0].message)  # doctest: +NORMALIZE_WHITESPACE
        restart 2 at step 1400 begins a 1600-step cycle of which only 1100 steps (68.8%) run before the
        budget ends at step 2500; cycle_steps=328.57142857142856 or cycle_mult=1.7360679774997898 would
        end 3 cycles exactly at step 2500
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise ScheduleError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ScheduleError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    for name, value in (("typical_grad", typical_grad), ("typical_weight", typical_weight)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 < value < math.inf):
            raise ScheduleError(f"{name} must be a number > 0, got {value!r}")
    n = int(total_steps)
    s = schedule.bind(
        total_steps=n,
        steps_per_epoch=steps_per_epoch,
        samples_per_update=samples_per_update,
        tokens_per_update=tokens_per_update,
    )
    segments = timeline(s, n)
    warmup = _warmup_end(segments)
    if warmup >= n:
        return [
            LintWarning(
                "CA001",
                f"the warmup lasts {_warmup_length(s, n)} steps, as long as or longer than the run of {n} "
                f"steps, so the LR never leaves the warmup; shorten warmup_steps to about {max(n // 20, 1)} "
                "(5% of the run)",
                0,
            )
        ]
    threshold = _dtype_threshold(dtype, typical_grad, typical_weight) if dtype is not None else 0.0
    scan = _scan(s, warmup, n, threshold)
    lowest = min(scan.lowest, _scan(s, 0, warmup, 0.0).lowest) if warmup else scan.lowest
    out: list[LintWarning] = []
    if isinstance(s, Cosine):
        out += _cosine_checks(s, n)
        advice = _fit_advice(s, s.max_cycles, n) if s.max_cycles is not None else None
    else:
        out += _generic_checks(s, n, lowest)
        advice = None
    optional = [
        _check_handoff(s, warmup, n),
        _check_dtype(s, scan, dtype, typical_grad, typical_weight, warmup, n) if dtype is not None else None,
        _check_zero(scan, warmup, n),
        _check_hold(s, n, advice),
    ]
    out += [w for w in optional if w is not None]
    return sorted(out, key=lambda w: w.code)


def _warmup_length(s: Schedule, n: int) -> str:
    """The configured warmup length (Cosine), or "at least" the run length when it is not known."""
    if isinstance(s, Cosine):
        return _g(float(s.warmup_steps))
    return f"at least {n}"
