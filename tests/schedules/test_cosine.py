"""The Cosine schedule: golden values, exact boundaries, properties, validation, introspection."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import numpy as np
import pytest
from cosine_reference import reference_lr
from hypothesis import assume, given
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError, from_dict

# ---------------------------------------------------------------------------------------------
# golden values (hand-checkable: cos(pi/2) = 0, cos(pi/3) = 1/2, cos(2pi/3) = -1/2)
# ---------------------------------------------------------------------------------------------


def test_golden_single_decay() -> None:
    s = Cosine(peak_lr=1.0, cycle_steps=6)
    assert s(0) == 1.0
    assert s(2) == pytest.approx(0.75, abs=1e-15)  # cos(pi/3) = 1/2
    assert s(3) == pytest.approx(0.5, abs=1e-15)
    assert s(4) == pytest.approx(0.25, abs=1e-15)
    assert s(6) == 0.0
    assert s(7) == 0.0 and s(10**9) == 0.0


def test_golden_warmup_floor_and_hold() -> None:
    s = Cosine(peak_lr=0.1, warmup_steps=10, warmup_start_lr=0.01, cycle_steps=100, min_lr=0.001)
    assert s(0) == 0.01
    assert s(5) == pytest.approx(0.055, rel=1e-15)
    assert s(10) == 0.1
    assert s(60) == pytest.approx(0.001 + 0.5 * 0.099, rel=1e-15)
    assert s(110) == 0.001 and s(10**9) == 0.001


def test_golden_sgdr_table() -> None:
    """Warm restarts T_0=10, T_mult=2: restarts at 10, 30, 70; peaks decay by half."""
    s = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=2, peak_decay=0.5, max_cycles=None)
    table = {0: 1.0, 5: 0.5, 10: 0.5, 20: 0.25, 30: 0.25, 50: 0.125, 70: 0.125}
    for t, lr in table.items():
        assert s(t) == pytest.approx(lr, rel=1e-15), t
    assert s.restarts(100) == [10, 30, 70]


def test_golden_warmup_shapes() -> None:
    lin = Cosine(1.0, warmup_steps=4, warmup_start_lr=0.0, cycle_steps=10)
    cos = Cosine(1.0, warmup_steps=4, warmup_start_lr=0.0, warmup_shape="cosine", cycle_steps=10)
    exp = Cosine(1.0, warmup_steps=4, warmup_start_lr=1e-4, warmup_shape="exponential", cycle_steps=10)
    assert lin(1) == 0.25 and lin(2) == 0.5
    assert cos(2) == pytest.approx(0.5, abs=1e-15)
    assert cos(1) == pytest.approx((1 - math.cos(math.pi / 4)) / 2, rel=1e-15)
    assert exp(2) == pytest.approx(1e-2, rel=1e-13)  # geometric midpoint of 1e-4 and 1
    assert exp(1) == pytest.approx(1e-3, rel=1e-13)


def test_golden_k_decay_and_min_ratio() -> None:
    s = Cosine(peak_lr=2.0, cycle_steps=100, k=2.0, min_ratio=0.1)
    # p = 0.5 -> p**2 = 0.25 -> cos(pi/4)
    assert s(50) == pytest.approx(0.2 + 0.9 * (1 + math.cos(math.pi / 4)), rel=1e-15)
    assert s(100) == pytest.approx(0.2, rel=1e-15)


def test_cycle_warmup_inside_restart() -> None:
    s = Cosine(1.0, cycle_steps=100, cycle_warmup_steps=10, max_cycles=2, min_lr=0.1)
    assert s(100) == 0.1  # restart starts from the floor
    assert s(105) == pytest.approx(0.55, rel=1e-15)
    assert s(110) == 1.0  # peak after the cycle warmup
    assert s(155) == pytest.approx(0.55, rel=1e-15)  # half-way through the 90-step decay
    assert s(200) == 0.1
    assert s.phase(105) == "warmup" and s.phase(150) == "anneal" and s.phase(200) == "hold"


def test_timm_overlaid_warmup_hands_off_mid_curve() -> None:
    s = Cosine(1.0, warmup_steps=10, cycle_steps=100, warmup_prefix=False)
    assert s(9) == pytest.approx(0.9, rel=1e-15)
    assert s(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)), rel=1e-15)
    assert s.horizon == 100


def test_amplitude_decay_keeps_floor_absolute() -> None:
    s = Cosine(1.0, cycle_steps=10, min_lr=0.2, peak_decay=0.5, peak_decay_mode="amplitude", max_cycles=3)
    assert [s.cycle_peak(i) for i in range(3)] == pytest.approx([1.0, 0.6, 0.4], rel=1e-15)
    assert s(10) == pytest.approx(0.6, rel=1e-15) and s(20) == pytest.approx(0.4, rel=1e-15)
    assert s(30) == 0.2


# ---------------------------------------------------------------------------------------------
# exact boundaries, up to 10**9 steps
# ---------------------------------------------------------------------------------------------


def _walk_restarts(s: Cosine, integer_until: int) -> int:
    """Check the LR just before and at every whole-step restart; return how many were checked."""
    checked = 0
    for i, start in enumerate(s.restarts(integer_until * 2), start=1):
        if isinstance(start, float):
            continue
        peak = s.cycle_peak(i)
        assert s(start) == peak, (i, start)
        assert s.cycle(start).index == i
        assert s.cycle(start - 1).index == i - 1
        before = s(start - 1)
        assert before < peak
        # one step before a restart the LR is within one step of the previous cycle's floor
        length = s.cycle_length(i - 1)
        slope = (s.cycle_peak(i - 1) - s.cycle_floor(i - 1)) * (math.pi / length) ** 2 / 2
        assert before - s.cycle_floor(i - 1) <= slope * 1.000001
        vec = s(np.array([start - 1, start], dtype=np.int64))
        assert vec[0] == before and vec[1] == peak
        checked += 1
        if start > integer_until:
            break
    return checked


def test_boundaries_mult_1_5_up_to_1e9() -> None:
    # c = 2**20: boundaries 2c(1.5**i - 1) are whole steps for i <= 21 and reach past 10**9
    s = Cosine(1.0, cycle_steps=2**20, cycle_mult=1.5, peak_decay=0.9, max_cycles=None)
    assert _walk_restarts(s, 10**9) >= 10
    assert s.restarts(2 * 10**9)[-1] > 10**9


def test_boundaries_mult_0_8_up_to_1e9() -> None:
    # c = 5**12: boundaries 5c(1 - 0.8**i) are whole steps for i <= 13, the last above 10**9
    s = Cosine(1.0, cycle_steps=5**12, cycle_mult=0.8, max_cycles=14, min_ratio=0.01)
    assert _walk_restarts(s, 2 * 10**9) == 13
    assert s.restarts(2 * 10**9)[-1] == 5**13 - 4**13


def test_boundaries_mult_1_at_1e9() -> None:
    s = Cosine(1.0, warmup_steps=7, cycle_steps=1000, max_cycles=None)
    t = 7 + 10**9  # exactly the 10**6-th restart
    assert s(t) == 1.0 and s.cycle(t) == (10**6, t, 1000)
    assert s(t - 1) == pytest.approx((1 + math.cos(math.pi * 999 / 1000)) / 2, rel=1e-12)


@pytest.mark.parametrize("mult", [1.5, 0.8, 2.0, 1.1, 0.95])
def test_boundaries_match_exact_rational_walk(mult: float) -> None:
    cfg: dict[str, Any] = {"peak_lr": 1.0, "cycle_steps": 100, "cycle_mult": mult, "max_cycles": 12}
    s = Cosine(**cfg)
    end = int(s.horizon or 0)
    near = [b + d for b in s.restarts(end) for d in (-2, -1, -0.5, 0, 0.5, 1, 2)]
    ts = np.unique(np.concatenate([np.arange(0, min(end + 50, 20_000)), near, [end - 1, end, end + 1]]))
    vec = s(ts)
    ref = np.array([reference_lr(cfg, float(t)) for t in ts])
    np.testing.assert_allclose(vec, ref, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

lengths = st.one_of(st.integers(1, 500), st.floats(0.5, 500, allow_nan=False))


@st.composite
def cosines(draw: Any) -> dict[str, Any]:
    peak = draw(st.floats(1e-6, 10.0))
    cfg: dict[str, Any] = {"peak_lr": peak, "cycle_steps": draw(lengths)}
    if draw(st.booleans()):
        cfg["min_ratio"] = draw(st.floats(0.0, 1.0))
    else:
        cfg["min_lr"] = draw(st.floats(0.0, 1.0)) * peak
    cfg["warmup_steps"] = draw(st.integers(0, 50))
    cfg["warmup_start_lr"] = draw(st.floats(1e-3, 1.0)) * peak
    cfg["warmup_shape"] = draw(st.sampled_from(["linear", "cosine", "exponential"]))
    cfg["cycle_mult"] = draw(st.sampled_from([1.0, 2.0, 1.5, 0.8, 1.25, 3.0]))
    cfg["peak_decay"] = draw(st.sampled_from([1.0, 0.5, 0.9]))
    cfg["max_cycles"] = draw(st.sampled_from([1, 2, 5, None] if cfg["cycle_mult"] >= 1 else [1, 2, 5]))
    cfg["k"] = draw(st.sampled_from([1.0, 0.5, 2.0]))
    shortest = min(
        cfg["cycle_steps"] * cfg["cycle_mult"] ** i for i in range(1, (cfg["max_cycles"] or 2) + 1)
    )
    cfg["cycle_warmup_steps"] = draw(st.integers(0, max(0, min(10, math.ceil(shortest) - 2))))
    if cfg["cycle_warmup_steps"] >= shortest:
        cfg["cycle_warmup_steps"] = 0
    if cfg["warmup_shape"] == "exponential" and cfg.get("min_ratio", 1) == 0 and cfg.get("min_lr", 1) == 0:
        cfg["cycle_warmup_steps"] = 0
    return cfg


def _build(cfg: dict[str, Any]) -> Cosine:
    try:
        return Cosine(**cfg)
    except ScheduleError:
        assume(False)
        raise


steps = st.one_of(st.integers(0, 20_000), st.floats(0, 20_000, allow_nan=False))


@given(cosines(), st.lists(steps, min_size=1, max_size=40))
def test_vectorised_equals_scalar_bit_for_bit(cfg: dict[str, Any], ts: list[float]) -> None:
    s = _build(cfg)
    vec = s(np.array(ts, dtype=np.float64))
    assert vec.shape == (len(ts),)
    assert [s(t) for t in ts] == vec.tolist()


@given(cosines(), steps)
def test_matches_reference(cfg: dict[str, Any], t: float) -> None:
    s = _build(cfg)
    assert s(t) == pytest.approx(reference_lr(cfg, t), rel=1e-9, abs=1e-12 * cfg["peak_lr"])


@given(cosines(), st.lists(steps, min_size=1, max_size=40))
def test_bounds(cfg: dict[str, Any], ts: list[float]) -> None:
    s = _build(cfg)
    lrs = s(np.array(ts))
    lowest = min(cfg.get("min_lr", 0.0), cfg["warmup_start_lr"])
    if cfg.get("min_ratio") is not None:
        lowest = min(lowest, cfg["min_ratio"] * s.cycle_peak((cfg["max_cycles"] or 50) - 1))
    assert np.all(lrs >= lowest * (1 - 1e-12))
    assert np.all(lrs <= cfg["peak_lr"] * (1 + 1e-12))


@given(cosines(), st.integers(0, 4), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_monotone_non_increasing_within_an_anneal(
    cfg: dict[str, Any], cycle: int, a: float, b: float
) -> None:
    s = _build(cfg)
    if cfg["max_cycles"] is not None:
        cycle = min(cycle, cfg["max_cycles"] - 1)
    # the anneal part of the cycle: after the initial or the per-restart warmup, before the next start
    begin = s.cycle_start(cycle) + (cfg["warmup_steps"] if cycle == 0 else cfg["cycle_warmup_steps"])
    end = s.cycle_start(cycle + 1)
    lo, hi = sorted((a, b))
    t, u = begin + lo * (end - begin), begin + hi * (end - begin)
    # a float sum like start + warmup can land an ulp before the boundary it means: start past it
    past = np.nextafter(np.nextafter(begin, end), end)
    t, u = max(t, past), max(u, past)
    if u >= end:  # keep both strictly inside the cycle
        u = np.nextafter(end, begin)
        t = min(t, u)
    assert s.phase(t) == "anneal" and s.phase(u) == "anneal"
    assert s(t) >= s(u)


@given(cosines(), st.integers(0, 5000))
def test_continuous_except_at_restarts(cfg: dict[str, Any], t: int) -> None:
    s = _build(cfg)
    x = t + 0.5
    boundaries = [*s.restarts(x + 1), cfg["warmup_steps"]]
    assume(all(abs(x - b) > 1e-3 for b in boundaries))
    h = 1e-9
    assert abs(s(x + h) - s(x)) <= 1e-5 * cfg["peak_lr"]


@given(cosines())
def test_restart_count(cfg: dict[str, Any]) -> None:
    s = _build(cfg)
    if cfg["max_cycles"] is None:
        restarts = s.restarts(50_000)
        assert restarts == sorted(restarts) and all(r < 50_000 for r in restarts)
        assert len(restarts) >= 1 or s.cycle_start(1) >= 50_000
    else:
        assert len(s.restarts(math.inf)) == cfg["max_cycles"] - 1


@given(
    st.floats(1e-4, 1.0),
    st.integers(1, 300),
    st.integers(0, 20),
    st.lists(st.integers(0, 10**6), max_size=30),
)
def test_periodic_when_mult_and_decay_are_one(peak: float, c: int, w: int, ts: list[int]) -> None:
    s = Cosine(peak, warmup_steps=w, cycle_steps=c, max_cycles=None, min_ratio=0.1)
    t = np.array(ts, dtype=np.int64) + w
    np.testing.assert_array_equal(s(t), s(t + c))


@given(cosines(), st.integers(0, 10**6))
def test_never_climbs_back_after_the_end(cfg: dict[str, Any], extra: int) -> None:
    assume(cfg["max_cycles"] is not None)
    s = _build(cfg)
    end = s.horizon
    assert end is not None
    floor = s.cycle_floor(cfg["max_cycles"] - 1)
    assert s(end) == floor and s(end + extra) == floor and s.phase(end + extra) == "hold"


# ---------------------------------------------------------------------------------------------
# values, serialisation, identity
# ---------------------------------------------------------------------------------------------


@given(cosines())
def test_dict_round_trip_and_fingerprint(cfg: dict[str, Any]) -> None:
    s = _build(cfg)
    again = from_dict(s.to_dict())
    assert again == s and hash(again) == hash(s)
    assert again.fingerprint() == s.fingerprint()
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s) is s


def test_fingerprint_is_stable_and_value_based() -> None:
    a = Cosine(0.1, cycle_steps=100, warmup_steps=5)
    b = Cosine(peak_lr=0.1, warmup_steps=5.0, cycle_steps=100.0)  # type: ignore[arg-type]
    assert a == b and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != Cosine(0.1, cycle_steps=101, warmup_steps=5).fingerprint()
    # canonical form leaves defaults out, so new defaulted parameters never change old fingerprints
    assert a.canonical() == {"kind": "cosine", "peak_lr": 0.1, "warmup_steps": 5, "cycle_steps": 100}
    # pinned: a fingerprint must never change for the same canonical config
    assert a.fingerprint() == "55a8a698eea6db80"


def test_array_shapes_are_kept() -> None:
    s = Cosine(1.0, cycle_steps=10)
    grid = np.arange(12).reshape(3, 4)
    out = s(grid)
    assert out.shape == (3, 4) and out.dtype == np.float64
    assert s(np.float32(5.0)) == 0.5 and isinstance(s(np.int64(5)), float)
    assert s([0, 5, 10]).tolist() == [1.0, 0.5, 0.0]


def test_ten_million_steps_vectorised() -> None:
    s = Cosine(1.0, warmup_steps=100, cycle_steps=1000, cycle_mult=2, peak_decay=0.8, max_cycles=None)
    ts = np.arange(10**7)
    lrs = s(ts)
    idx = np.array([0, 99, 100, 1099, 1100, 3100, 9_999_999])
    assert lrs[idx].tolist() == [s(int(i)) for i in idx]


# ---------------------------------------------------------------------------------------------
# introspection
# ---------------------------------------------------------------------------------------------


def test_phase_cycle_restarts() -> None:
    s = Cosine(1.0, warmup_steps=10, cycle_steps=100, cycle_mult=1.5, max_cycles=3)
    assert s.phase(0) == "warmup" and s.phase(10) == "anneal" and s.phase(s.horizon) == "hold"
    assert s.cycle(0) == (0, 0, 110)
    assert s.cycle(110) == (1, 110, 150)
    assert s.cycle(400) == (2, 260, 225)
    assert s.cycle(500) == (3, 485, math.inf)
    assert s.restarts(10**9) == [110, 260] and s.restarts(260) == [110]
    assert s.horizon == 485


def test_fractional_boundaries() -> None:
    s = Cosine(1.0, cycle_steps=100, cycle_mult=1.5, max_cycles=None)
    assert s.restarts(1000)[:4] == [100, 250, 475, 812.5]
    assert s.cycle(812).index == 3 and s.cycle(813).index == 4
    assert s(812.5) == 1.0


# ---------------------------------------------------------------------------------------------
# validation: one line naming the parameter, the value and what is allowed
# ---------------------------------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    ({"cycle_steps": 0}, "cycle_steps must be > 0, got 0"),
    ({"cycle_steps": -5}, "cycle_steps must be > 0, got -5"),
    ({"cycle_steps": float("nan")}, "cycle_steps must be a finite number"),
    ({"cycle_steps": True}, "cycle_steps must be a number, got True"),
    ({"peak_lr": -0.1}, "peak_lr must be > 0, got -0.1"),
    ({"peak_lr": float("inf")}, "peak_lr must be a finite number, got inf"),
    ({"min_lr": 0.5}, "min_lr must be <= peak_lr (0.1), got 0.5"),
    ({"min_lr": -1e-3}, "min_lr must be >= 0, got -0.001"),
    ({"min_ratio": 1.5}, "min_ratio must be <= 1, got 1.5"),
    ({"min_ratio": 0.1, "min_lr": 0.01}, "give min_lr or min_ratio, not both"),
    ({"warmup_steps": 2.5}, "warmup_steps must be an integer >= 0, got 2.5"),
    ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
    ({"warmup_steps": "ten"}, "warmup_steps must be a number or a duration"),
    (
        {"warmup_shape": "quadratic"},
        "warmup_shape must be one of linear, cosine, exponential; got 'quadratic'",
    ),
    ({"warmup_shape": "exponential", "warmup_steps": 5}, "warmup_start_lr must be > 0 for warmup_shape"),
    ({"warmup_start_lr": 1.0}, "warmup_start_lr must be <= peak_lr"),
    (
        {"warmup_shape": "exponential", "warmup_steps": 5, "warmup_start_lr": 5e-324},
        "peak_lr / warmup_start_lr is finite",
    ),
    (
        {"warmup_shape": "exponential", "cycle_warmup_steps": 2, "max_cycles": 2, "min_lr": 5e-324},
        "needs a floor > 0",
    ),
    ({"cycle_mult": 0}, "cycle_mult must be > 0, got 0"),
    ({"cycle_mult": 0.5, "max_cycles": None}, "cycle_mult=0.5 < 1 shrinks the cycles towards nothing"),
    ({"peak_decay": 0}, "peak_decay must be > 0, got 0"),
    ({"max_cycles": 0}, "max_cycles must be an integer >= 1, got 0"),
    ({"k": -1}, "k must be > 0, got -1"),
    ({"cycle_warmup_steps": 100, "max_cycles": 3}, "cycle_warmup_steps must be < the shortest restart cycle"),
    ({"warmup_steps": 100, "warmup_prefix": False}, "warmup_steps (100) must be < cycle_steps"),
    ({"warmup_prefix": "no"}, "warmup_prefix must be true or false"),
    ({"peak_decay_mode": "both"}, "peak_decay_mode must be one of peak, amplitude"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_validation_messages(changes: dict[str, Any], message: str) -> None:
    cfg: dict[str, Any] = {"peak_lr": 0.1, "cycle_steps": 100, **changes}
    with pytest.raises(ScheduleError) as info:
        Cosine(**cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_cycle_steps() -> None:
    with pytest.raises(ScheduleError, match="cycle_steps is required"):
        Cosine(0.1)


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), True])
def test_bad_steps_are_rejected(bad: Any) -> None:
    s = Cosine(1.0, cycle_steps=10)
    with pytest.raises(ScheduleError, match=r"steps? must be"):
        s(bad)
    if not isinstance(bad, bool):
        with pytest.raises(ScheduleError, match="step must be"):
            s(np.array([1.0, bad]))


def test_from_dict_errors() -> None:
    with pytest.raises(ScheduleError, match="unknown parameter 'peak' for kind 'cosine'"):
        from_dict({"kind": "cosine", "peak": 0.1, "cycle_steps": 10})
    with pytest.raises(ScheduleError, match="kind must be one of"):
        from_dict({"kind": "cosinus"})
    with pytest.raises(ScheduleError, match="needs a 'kind' key"):
        from_dict({"peak_lr": 0.1})
