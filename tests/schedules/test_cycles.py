"""cosanneal.schedules.cycles: cycle geometry, budget fits, peaks, floors, restarts and cycle ends."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import ScheduleError
from cosanneal.analysis.plan import plan
from cosanneal.runtime import ckpt_policy
from cosanneal.schedules import cycles
from cosanneal.schedules.baselines import Constant, Cyclic, Exponential, Linear, Polynomial
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.cycles import (
    choose_cycles,
    cycle_span,
    first_cycle_steps,
    fit_cycle_mult,
    fit_cycle_steps,
    floor_lr,
    is_cycle_end,
    peak_lr,
    restart_steps,
    shortest_cycle,
)
from cosanneal.schedules.join import Join
from cosanneal.schedules.lint import lint
from cosanneal.schedules.onecycle import OneCycle
from cosanneal.schedules.wsd import WarmupStableDecay

MULTS = st.one_of(
    st.sampled_from([1.0, 2.0, 1.5, 0.8, 0.5, 3.0]),
    st.floats(0.3, 3.0),
    st.floats(1.0, 1.0 + 1e-6),
    st.floats(1.0 - 1e-6, 1.0),
)


def _ends_at(target: float, horizon: float | None) -> None:
    """Exactly at the budget, else at most 4 ulps before it, never after."""
    assert horizon is not None
    assert horizon <= target
    assert target - horizon <= 4 * math.ulp(target)


# ---- lint and plan agree ------------------------------------------------------------------------
# Before cycles.py, lint advised c = D (m - 1) / (m**n - 1) printed to 6 digits while plan fitted
# D (m - 1) / expm1(n log m) to the float64 that ends exactly: for the first case lint said 328.571
# (ends at 2499.997), for m = 1 + 1e-9 it said 14285.7 (ends 0.0997 steps early; its unrounded
# 14285.714285714286 ends 3e-4 steps *after* the budget), for m = 1 + 1e-12 it said 25000.0 (ends
# 1.5e-7 steps after the budget; the fit is 24999.9999999625): m**n - 1 cancels near m = 1.
@pytest.mark.parametrize(
    ("warmup", "first", "mult", "budget"),
    [(200, 400, 2.0, 2500), (0, 15_000, 1.0 + 1e-9, 100_000), (50, 30_000, 1.0 + 1e-12, 100_050)],
)
def test_lint_advice_is_the_plan_fit_and_ends_exactly(
    warmup: int, first: int, mult: float, budget: int
) -> None:
    s = Cosine(1.0, warmup_steps=warmup, cycle_steps=first, cycle_mult=mult, max_cycles=None)
    (w,) = [w for w in lint(s, budget) if w.code == "CA002"]
    n = int(re.search(r"would end (\d+) cycles", w.message).group(1))  # type: ignore[union-attr]
    advised = float(re.search(r"cycle_steps=([0-9.e+-]+)", w.message).group(1))  # type: ignore[union-attr]
    planned = plan(budget, cycles=n, cycle_mult=mult, warmup=warmup).schedule
    assert advised == planned.cycle_steps == fit_cycle_steps(budget - warmup, mult, n, origin=warmup)
    _ends_at(
        budget, Cosine(1.0, warmup_steps=warmup, cycle_steps=advised, cycle_mult=mult, max_cycles=n).horizon
    )
    m = float(re.search(r"cycle_mult=([0-9.e+-]+)", w.message).group(1))  # type: ignore[union-attr]
    _ends_at(budget, Cosine(1.0, warmup_steps=warmup, cycle_steps=first, cycle_mult=m, max_cycles=n).horizon)


# ---- geometry -----------------------------------------------------------------------------------
def test_cycle_span_golden() -> None:
    assert cycle_span(10, 2, 3) == 70.0
    assert cycle_span(100, 1, 4) == 400.0
    assert cycle_span(400, 0.5, 3) == 700.0
    assert cycle_span(100, 1.5, 0) == 0.0
    assert cycle_span(1.0, 1e10, 100) == math.inf  # m**n overflows
    assert cycle_span(1.0, 1.0 + 2**-40, 3) == pytest.approx(3 + 3 * 2**-40, rel=1e-15)


@given(first=st.floats(1.0, 1e6), mult=MULTS, n=st.integers(1, 60))
def test_cycle_span_is_the_exact_sum(first: float, mult: float, n: int) -> None:
    exact = sum(Fraction(first) * Fraction(mult) ** i for i in range(n))
    assert cycle_span(first, mult, n) == pytest.approx(float(exact), rel=1e-12)


@given(span=st.floats(1.0, 1e9), mult=MULTS, n=st.integers(1, 60))
def test_first_cycle_steps_inverts_the_span(span: float, mult: float, n: int) -> None:
    c = first_cycle_steps(span, mult, n)
    assert cycle_span(c, mult, n) == pytest.approx(span, rel=1e-12)
    assert shortest_cycle(c, mult, n) == pytest.approx(c * min(1.0, mult ** (n - 1)), rel=1e-15)


def test_first_cycle_steps_overflow_is_zero() -> None:
    assert first_cycle_steps(1000, 1e10, 100) == 0.0


@settings(max_examples=60)
@given(total=st.integers(2, 10**7), warmup=st.integers(0, 1000), n=st.integers(1, 10), mult=MULTS)
def test_fit_cycle_steps_ends_at_the_budget(total: int, warmup: int, n: int, mult: float) -> None:
    c = fit_cycle_steps(total, mult, n, origin=warmup)
    assert c == pytest.approx(first_cycle_steps(total, mult, n), rel=1e-14)
    _ends_at(
        warmup + total, Cosine(1.0, warmup_steps=warmup, cycle_steps=c, cycle_mult=mult, max_cycles=n).horizon
    )


@settings(max_examples=60)
@given(
    first=st.integers(10, 10_000),
    ratio=st.floats(1.01, 50.0),
    n=st.integers(2, 10),
    warmup=st.integers(0, 500),
)
def test_fit_cycle_mult_ends_at_the_budget(first: int, ratio: float, n: int, warmup: int) -> None:
    span = round(first * ratio)
    if span <= first:
        return
    m = fit_cycle_mult(span, first, n, origin=warmup)
    assert m is not None and m > 0
    assert cycle_span(first, m, n) == pytest.approx(span, rel=1e-12)

    def end(mult: float) -> float:
        horizon = Cosine(1.0, warmup_steps=warmup, cycle_steps=first, cycle_mult=mult, max_cycles=n).horizon
        assert horizon is not None
        return horizon

    # never after the budget; exactly on it, or the next float64 multiplier would end after it
    assert end(m) <= warmup + span
    assert end(m) == warmup + span or end(math.nextafter(m, math.inf)) > warmup + span
    assert end(m) == pytest.approx(warmup + span, rel=1e-13)


def test_fit_cycle_mult_golden_and_impossible() -> None:
    assert fit_cycle_mult(700, 100, 3) == 2.0
    assert fit_cycle_mult(175, 100, 3) == 0.5
    assert fit_cycle_mult(300, 100, 3) == 1.0
    assert fit_cycle_mult(100, 100, 3) is None  # the first cycle alone fills the span
    # a tiny multiplier: 16 ulps of m move the end by less than an ulp, and every one of them ended
    # after the budget; the widened search finds the largest m that does not
    m = fit_cycle_mult(5036, 4959, 4)
    assert m is not None
    end = Cosine(1.0, cycle_steps=4959, cycle_mult=m, max_cycles=4).horizon
    assert end is not None and end <= 5036 and end == pytest.approx(5036, rel=1e-15)
    assert fit_cycle_mult(500, 100, 1) is None  # one cycle: no multiplier to choose


@given(
    span=st.integers(10, 10**7), mult=st.floats(0.3, 3.0).filter(lambda m: m != 1.0), low=st.integers(1, 500)
)
def test_choose_cycles_is_the_largest_that_fits(span: int, mult: float, low: int) -> None:
    n = choose_cycles(span, mult, low)
    assert n >= 1
    if n > 1:
        assert shortest_cycle(first_cycle_steps(span, mult, n), mult, n) >= low
    assert n <= cycles.MAX_CYCLES
    if n < cycles.MAX_CYCLES:  # else capped: the search stops there
        assert not shortest_cycle(first_cycle_steps(span, mult, n + 1), mult, n + 1) >= low


def test_geometry_refuses_bad_arguments() -> None:
    with pytest.raises(ScheduleError, match="cycle_mult must be > 0, got 0"):
        cycle_span(10, 0, 3)
    with pytest.raises(ScheduleError, match="cycles must be"):
        first_cycle_steps(10, 2.0, 0)


# ---- peaks and floors ---------------------------------------------------------------------------
def test_cosine_peaks_and_floors() -> None:
    s = Cosine(1.0, min_ratio=0.5, cycle_steps=10, cycle_mult=2, peak_decay=0.5, max_cycles=3)
    assert [peak_lr(s, cycle=i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]  # cycle 3: the hold
    assert [floor_lr(s, cycle=i) for i in range(4)] == [0.5, 0.25, 0.125, 0.125]
    assert (peak_lr(s), floor_lr(s)) == (1.0, 0.125)
    assert floor_lr(Cosine(1.0, min_lr=0.2, cycle_steps=5, peak_decay=0.5, max_cycles=None)) == 0.2
    assert floor_lr(Cosine(1.0, min_ratio=0.1, cycle_steps=5, peak_decay=0.5, max_cycles=None)) == 0.0
    rising = Cosine(0.1, min_ratio=0.1, cycle_steps=5, peak_decay=2.0, max_cycles=3)
    assert peak_lr(rising) == pytest.approx(0.4) and floor_lr(rising) == pytest.approx(0.01)
    amp = Cosine(1.0, min_lr=0.2, cycle_steps=5, peak_decay=0.5, peak_decay_mode="amplitude", max_cycles=3)
    assert peak_lr(amp, 1) == pytest.approx(0.6) and floor_lr(amp, 2) == 0.2
    warm = Cosine(1.0, min_lr=0.1, warmup_steps=5, warmup_start_lr=0.0, cycle_steps=10)
    assert floor_lr(warm) == floor_lr(warm, 0) == 0.1  # a warmup's start is not the floor
    with pytest.raises(ScheduleError, match="cycle 4 does not exist: max_cycles=3"):
        peak_lr(s, cycle=4)


@given(
    peak=st.floats(0.01, 10.0),
    ratio=st.one_of(st.none(), st.floats(0.0, 1.0)),
    decay=st.floats(0.3, 1.5),
    last=st.one_of(st.none(), st.integers(1, 6)),
)
def test_cosine_floor_is_the_lowest_cycle_floor(
    peak: float, ratio: float | None, decay: float, last: int | None
) -> None:
    s = Cosine(peak, min_ratio=ratio, cycle_steps=7, peak_decay=decay, max_cycles=last)
    shown = range(last) if last is not None else range(60)
    lowest = min(floor_lr(s, i) for i in shown)
    if last is None and ratio and decay < 1.0:
        assert floor_lr(s) == 0.0  # floors fall towards 0 forever
    else:
        assert floor_lr(s) == lowest
    assert all(peak_lr(s, i) >= floor_lr(s, i) for i in shown)


def test_cosine_floor_matches_the_torch_adapters() -> None:
    torch_scheduler = pytest.importorskip("cosanneal.torch.scheduler")
    for s in (
        Cosine(1.0, cycle_steps=5, min_ratio=0.1, peak_decay=0.5, max_cycles=3),
        Cosine(1.0, cycle_steps=5, min_ratio=0.1, peak_decay=0.5, max_cycles=None),
        Cosine(1.0, cycle_steps=5, min_lr=0.2, peak_decay=0.5, max_cycles=None),
    ):
        assert floor_lr(s) == torch_scheduler.schedule_floor(s)


def test_other_schedules_peaks_and_floors() -> None:
    assert (
        peak_lr(Polynomial(1.0, total_steps=100, end_lr=0.01)),
        floor_lr(Polynomial(1.0, 100, end_lr=0.01)),
    ) == (
        1.0,
        0.01,
    )
    assert floor_lr(Linear(0.5, 0.1, total_steps=10)) == 0.1
    assert floor_lr(Exponential(1.0, gamma=0.5, min_lr=0.1)) == 0.1
    assert floor_lr(Constant(0.3)) == peak_lr(Constant(0.3)) == 0.3
    one = OneCycle(max_lr=1.0, total_steps=100)
    assert floor_lr(one) == pytest.approx(one(99)) and peak_lr(one) == 1.0
    wsd = WarmupStableDecay(1.0, warmup_steps=10, stable_steps=80, decay_steps=10, min_lr_ratio=0.1)
    assert floor_lr(wsd) == pytest.approx(0.1)  # the warmup from 0 is left out
    tri = Cyclic(0.1, 1.0, step_size_up=10, step_size_down=5)
    assert [peak_lr(tri, i) for i in range(3)] == [1.0, 1.0, 1.0]
    assert floor_lr(tri, 2) == pytest.approx(0.1, abs=1e-12)


def test_join_cycles_match_its_cosine_pieces() -> None:
    a = Cosine(1.0, min_lr=0.1, cycle_steps=100)
    b = Cosine(0.5, min_lr=0.05, cycle_steps=200)
    joined = Join([a, b], [100])
    assert peak_lr(joined, 0) == pytest.approx(1.0)
    assert floor_lr(joined, 0) == pytest.approx(0.1, abs=1e-9)
    assert peak_lr(joined, 1) == pytest.approx(0.5) and floor_lr(joined, 1) == pytest.approx(0.05, abs=1e-9)
    assert floor_lr(joined) == pytest.approx(0.05)
    with pytest.raises(ScheduleError, match="cycle 9 does not exist"):
        peak_lr(joined, 9)


def test_lint_ca005_for_any_schedule_with_rising_restarts() -> None:
    def piece(p: float) -> Cosine:
        return Cosine(p, cycle_steps=100)

    rising = Join([piece(0.1), piece(0.2), piece(0.4)], [100, 200])
    (w,) = [w for w in lint(rising, 300) if w.code == "CA005"]
    assert w.step == 200 and "peaks at 0.4, 4x the first cycle's peak of 0.1" in w.message
    assert "CA005" not in {w.code for w in lint(Join([piece(0.1)] * 3, [100, 200]), 300)}
    assert "CA005" not in {w.code for w in lint(Join([piece(0.1), piece(0.2)], [100]), 200)}  # one re-warm


# ---- restarts and cycle ends --------------------------------------------------------------------
def test_restart_steps() -> None:
    s = Cosine(1.0, cycle_steps=10, cycle_mult=2, max_cycles=4)
    assert restart_steps(s) == [10, 30, 70] == s.restarts(10**9)
    assert restart_steps(s, 30) == [10]
    with pytest.raises(ScheduleError, match="restarts forever"):
        restart_steps(Cosine(1.0, cycle_steps=10, max_cycles=None))
    with pytest.raises(ScheduleError, match="until must be >= 0"):
        restart_steps(s, -1)


@given(first=st.integers(1, 50), mult=st.sampled_from([1.0, 1.5, 2.0, 0.8]), last=st.integers(1, 6))
def test_is_cycle_end_everywhere_agrees(first: int, mult: float, last: int) -> None:
    s = Cosine(1.0, cycle_steps=first, cycle_mult=mult, max_cycles=last)
    ends = [*s.restarts(10**9), s.horizon]
    expected = [t for t in range(400) if any(t < float(r) <= t + 1 for r in ends)]
    assert [t for t in range(400) if is_cycle_end(t, s)] == expected
    assert [t for t in range(400) if ckpt_policy.is_cycle_end(t, SimpleNamespace(schedule=s))] == expected


def test_runtime_names_still_import() -> None:
    from cosanneal.runtime import is_cycle_end as runtime_is_cycle_end
    from cosanneal.runtime.ckpt_policy import is_cycle_end as policy_is_cycle_end

    s = Cosine(1.0, cycle_steps=10, max_cycles=3)
    assert [t for t in range(40) if runtime_is_cycle_end(t, s)] == [9, 19, 29]
    assert [t for t in range(40) if policy_is_cycle_end(t, s)] == [9, 19, 29]
    assert cycles.is_cycle_end(9, s) and not cycles.is_cycle_end(10, s)
