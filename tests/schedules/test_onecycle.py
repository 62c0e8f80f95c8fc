"""OneCycle: golden values, properties (bounds, monotone phases, scalar == vector), serialisation."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cosanneal import ScheduleError, from_dict
from cosanneal.schedules.onecycle import OneCycle

# ---------------------------------------------------------------------------------------------
# golden values (hand-checkable)
# ---------------------------------------------------------------------------------------------


def test_golden_linear_two_phase() -> None:
    # T = 11, pct_start = 0.5: rise over [0, 4.5], fall over [4.5, 10]
    s = OneCycle(1.0, total_steps=11, pct_start=0.5, anneal_strategy="linear", div_factor=10.0)
    assert s(0) == 0.1 and s(4.5) == 1.0
    assert s(2.25) == pytest.approx(0.55, rel=1e-15)
    assert s(7.25) == pytest.approx((1.0 + 1e-5) / 2, rel=1e-15)
    assert s(10) == pytest.approx(1e-5, rel=1e-12)
    assert s.momentum(0) == 0.95 and s.momentum(4.5) == 0.85 and s.momentum(10) == pytest.approx(0.95)


def test_golden_cos_three_phase() -> None:
    # T = 21, pct_start = 0.25: q = 5.25; ends 4.25, 8.5, 20
    s = OneCycle(1.0, total_steps=21, pct_start=0.25, three_phase=True, div_factor=4.0, final_div_factor=2.0)
    assert s(0) == 0.25 and s(4.25) == 1.0 and s(8.5) == 0.25
    assert s(4.25 / 2) == pytest.approx(0.625, rel=1e-15)  # cos(pi/2) = 0: the midpoint
    assert s(20) == pytest.approx(0.125, rel=1e-15)
    assert s.momentum(8.5) == 0.95 and s.momentum(15) == 0.95  # the last phase keeps max_momentum


def test_holds_the_final_value_from_the_last_step() -> None:
    s = OneCycle(0.1, total_steps=100)
    assert s.horizon == 99
    assert s(99) == s(100) == s(10**12) == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)
    assert s.momentum(10**12) == s.momentum(99)
    assert s.phase(98) == "anneal" and s.phase(99) == "hold"


def test_tiny_rise_starts_in_the_second_phase_as_torch_does() -> None:
    """pct_start * T < 1: the rise ends before step 0, so step 0 is already on the way down."""
    s = OneCycle(1.0, total_steps=10, pct_start=0.05)  # q = 0.5, first phase ends at -0.5
    p = 0.5 / 9.5
    assert s(0) == pytest.approx(0.04 / 1e4 + (1.0 - 0.04 / 1e4) / 2 * (math.cos(math.pi * p) + 1), rel=1e-15)
    assert s.phase(0) == "anneal"


def test_total_steps_as_a_duration() -> None:
    s = OneCycle(0.1, total_steps="1dur")
    with pytest.raises(ScheduleError, match="not in steps yet"):
        s(0)
    assert s.bind(total_steps=200) == OneCycle(0.1, total_steps=200)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

configs = st.builds(
    dict,
    max_lr=st.floats(1e-6, 10.0),
    total_steps=st.integers(1, 5000),
    pct_start=st.floats(0.0, 1.0),
    anneal_strategy=st.sampled_from(["cos", "linear"]),
    div_factor=st.floats(1.0, 1e4),
    final_div_factor=st.floats(1.0, 1e5),
    three_phase=st.booleans(),
    base_momentum=st.floats(0.0, 0.9),
    max_momentum=st.floats(0.9, 0.999),
)


def _make(cfg: dict[str, Any]) -> OneCycle:
    if cfg["three_phase"]:
        cfg = {**cfg, "pct_start": cfg["pct_start"] / 2}
    assume(float(cfg["pct_start"] * cfg["total_steps"]) != 1.0)
    return OneCycle(**cfg)


@given(configs, st.lists(st.floats(0.0, 1e7, allow_nan=False), min_size=1, max_size=30))
def test_scalar_equals_vector_bit_for_bit(cfg: dict[str, Any], steps: list[float]) -> None:
    s = _make(cfg)
    arr = np.asarray(steps)
    assert [s(t) for t in steps] == s(arr).tolist()
    assert [s.momentum(t) for t in steps] == s.momentum(arr).tolist()


@given(configs)
def test_bounds_and_monotone_phases(cfg: dict[str, Any]) -> None:
    s = _make(cfg)
    t = np.arange(s.total_steps + 3, dtype=np.float64)
    lr, mom = s(t), s.momentum(t)
    lo, hi = min(s.initial_lr, s.final_lr), s.peak
    tol = 1e-12 * hi
    assert (lr >= lo - tol).all() and (lr <= hi + tol).all()
    assert (mom >= cfg["base_momentum"] - 1e-12).all() and (mom <= cfg["max_momentum"] + 1e-12).all()
    ends = [ph.end for ph in s._phases]  # type: ignore[attr-defined]
    rise = t <= ends[0]
    assert (np.diff(lr[rise]) >= -tol).all()  # rising while the LR climbs to max_lr
    fall_end = ends[1] if s.three_phase else ends[-1]
    falling = (t > ends[0]) & (t <= fall_end)
    assert (np.diff(lr[falling]) <= tol).all()
    if s.three_phase:
        last = t > ends[1]
        assert (np.diff(lr[last]) <= tol).all()
    assert (lr[t >= s.horizon] == lr[-1]).all()  # held after the last step


@given(configs)
def test_round_trip(cfg: dict[str, Any]) -> None:
    s = _make(cfg)
    again = from_dict(s.to_dict())
    assert again == s and again.fingerprint() == s.fingerprint()
    assert pickle.loads(pickle.dumps(s)) == s
    assert again(s.horizon / 2) == s(s.horizon / 2)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_lr": 0.0, "total_steps": 10}, "max_lr must be > 0, got 0.0"),
        ({"max_lr": 0.1, "total_steps": 0}, "total_steps must be an integer >= 1, got 0"),
        ({"max_lr": 0.1, "total_steps": 10.5}, "total_steps must be an integer >= 1, got 10.5"),
        ({"max_lr": 0.1, "total_steps": 10, "pct_start": -0.1}, "pct_start must be >= 0"),
        (
            {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "cosine"},
            "anneal_strategy must be one of cos",
        ),
        ({"max_lr": 0.1, "total_steps": 10, "div_factor": 0}, "div_factor must be > 0, got 0"),
        ({"max_lr": 0.1, "total_steps": 10, "final_div_factor": -1.0}, "final_div_factor must be > 0"),
        ({"max_lr": 0.1, "total_steps": 10, "three_phase": "yes"}, "three_phase must be true or false"),
        (
            {"max_lr": 0.1, "total_steps": 10, "pct_start": 0.6, "three_phase": True},
            "pct_start must be <= 0.5",
        ),
        ({"max_lr": 0.1, "total_steps": 20, "pct_start": 0.05}, "must not be exactly 1"),
        ({"max_lr": 0.1, "total_steps": 10, "base_momentum": -0.1}, "base_momentum must be >= 0"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        OneCycle(**kwargs)


def test_bad_steps_are_refused() -> None:
    s = OneCycle(0.1, total_steps=10)
    with pytest.raises(ScheduleError, match="step must be a finite number >= 0"):
        s.momentum(-1)
    with pytest.raises(ScheduleError, match="step must be a finite number >= 0"):
        s.momentum([0.0, math.nan])
