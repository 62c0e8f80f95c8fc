"""WarmupStableDecay: golden values, properties (bounds, monotone stages, scalar == vector), serialisation."""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import ScheduleError, from_dict
from cosanneal.schedules.wsd import WarmupStableDecay

SHAPES = ["linear", "cosine", "1-sqrt"]

# ---------------------------------------------------------------------------------------------
# golden values (hand-checkable)
# ---------------------------------------------------------------------------------------------


def test_golden_linear_with_floor() -> None:
    s = WarmupStableDecay(1.0, 10, 80, 10, min_lr_ratio=0.1, decay_shape="linear")
    assert s(0) == 0.1  # the warmup starts at the floor, as in transformers
    assert s(5) == pytest.approx(0.55, rel=1e-15)
    assert s(10) == s(50) == s(89) == 1.0
    assert s(95) == pytest.approx(0.55, rel=1e-15)
    assert s(100) == s(10**9) == 0.1


def test_golden_shapes() -> None:
    # warmup 4 steps, decay 4 steps, no floor
    cos = WarmupStableDecay(1.0, 4, 2, 4, warmup_shape="cosine", decay_shape="cosine")
    sqrt = WarmupStableDecay(1.0, 4, 2, 4, warmup_shape="1-sqrt", decay_shape="1-sqrt")
    assert cos(2) == pytest.approx(0.5, abs=1e-15) and cos(8) == pytest.approx(0.5, abs=1e-15)
    assert cos(1) == pytest.approx((1 - math.cos(math.pi / 4)) / 2, rel=1e-15)
    assert sqrt(3) == 0.5  # 1 - sqrt(1 - 3/4)
    assert sqrt(7) == 0.5  # 1 - sqrt(1/4) at decay progress 1/4
    assert sqrt(10) == 0.0


def test_zero_lengths() -> None:
    s = WarmupStableDecay(2.0, 0, 0, 5, min_lr_ratio=0.5)
    assert s(0) == 2.0 and s(5) == 1.0 and s.phase(0) == "anneal"
    empty = WarmupStableDecay(2.0, 0, 0, 0, min_lr_ratio=0.25)
    assert empty(0) == 0.5 and empty.horizon == 0.0


def test_durations_bind() -> None:
    s = WarmupStableDecay(0.1, "1ep", "0.8dur", "0.1dur")
    with pytest.raises(ScheduleError, match="not in steps yet"):
        s(0)
    b = s.bind(total_steps=1000, steps_per_epoch=100)
    assert (b.warmup_steps, b.stable_steps, b.decay_steps) == (100, 800, 100)
    assert WarmupStableDecay(0.1, "10st", "5", 3).warmup_steps == 10


def test_introspection() -> None:
    s = WarmupStableDecay(1.0, 10, 80, 10, min_lr_ratio=0.2)
    assert (s.phase(0), s.phase(10), s.phase(95), s.phase(100)) == ("warmup", "anneal", "anneal", "hold")
    assert s.horizon == 100 and s.decay_start == 90 and s.peak == 1.0 and s.floor == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

configs = st.builds(
    dict,
    peak_lr=st.floats(1e-6, 10.0),
    warmup_steps=st.integers(0, 300),
    stable_steps=st.integers(0, 300),
    decay_steps=st.integers(0, 300),
    min_lr_ratio=st.floats(0.0, 1.0),
    warmup_shape=st.sampled_from(SHAPES),
    decay_shape=st.sampled_from(SHAPES),
)


@given(configs, st.lists(st.floats(0.0, 2000.0, allow_nan=False), min_size=1, max_size=30))
def test_scalar_equals_vector_bit_for_bit(cfg: dict[str, Any], steps: list[float]) -> None:
    s = WarmupStableDecay(**cfg)
    assert [s(t) for t in steps] == s(np.asarray(steps)).tolist()


@given(configs)
def test_bounds_and_monotone_stages(cfg: dict[str, Any]) -> None:
    s = WarmupStableDecay(**cfg)
    t = np.arange(0.0, s.horizon + 5, 0.5)
    lr = s(t)
    peak, floor = s.peak, s.floor
    tol = 1e-12 * peak
    assert (lr >= floor - tol).all() and (lr <= peak + tol).all()
    warm = t < s.warmup_steps
    assert (np.diff(lr[warm]) >= -tol).all()
    assert (lr[(t >= s.warmup_steps) & (t < s.decay_start)] == peak).all()
    decay = t >= s.decay_start
    assert (np.diff(lr[decay]) <= tol).all()
    assert (lr[t >= s.horizon] == peak * cfg["min_lr_ratio"]).all()  # the floor, held


@given(configs)
def test_round_trip(cfg: dict[str, Any]) -> None:
    s = WarmupStableDecay(**cfg)
    again = from_dict(s.to_dict())
    assert again == s and again.fingerprint() == s.fingerprint()
    assert pickle.loads(pickle.dumps(s)) == s


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"peak_lr": -1.0}, "peak_lr must be > 0, got -1.0"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        ({"stable_steps": 2.5}, "stable_steps must be an integer >= 0, got 2.5"),
        ({"decay_steps": "ten"}, "decay_steps must be a number or a duration"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio must be <= 1, got 1.5"),
        ({"warmup_shape": "exponential"}, "warmup_shape must be one of linear, cosine, 1-sqrt"),
        ({"decay_shape": "sqrt"}, "decay_shape must be one of linear, cosine, 1-sqrt"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"peak_lr": 0.1, "warmup_steps": 1, "stable_steps": 2, "decay_steps": 3}
    with pytest.raises(ScheduleError, match=message):
        WarmupStableDecay(**{**base, **kwargs})
