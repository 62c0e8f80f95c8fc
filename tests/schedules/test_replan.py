"""Replan math: continuity at the switch (exact), the new plan ends at the new total, refusals name the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import Constant, Cosine, WarmupStableDecay
from cosanneal.schedules import from_dict, lint
from cosanneal.schedules.rebatch import Rebatch
from cosanneal.schedules.replan import (
    MAX_JUMP,
    ReplanError,
    Replanned,
    continuity,
    plan_origin,
    replan,
)

cosines = st.builds(
    Cosine,
    peak_lr=st.floats(1e-5, 10.0),
    min_ratio=st.one_of(st.none(), st.floats(0.0, 0.5)),
    warmup_steps=st.integers(0, 50),
    cycle_steps=st.integers(20, 2000),
    cycle_mult=st.sampled_from([1.0, 1.5, 2.0]),
    peak_decay=st.sampled_from([1.0, 0.7]),
    cycle_warmup_steps=st.integers(0, 5),
    max_cycles=st.sampled_from([1, 2, 3, None]),
    k=st.sampled_from([1.0, 2.0]),
)


def _jump(old: float, new: float) -> float:
    return 0.0 if old == new else abs(new - old) / abs(old)


@settings(max_examples=150, deadline=None)
@given(s=cosines, frac=st.floats(0.0, 0.95), grow=st.floats(0.2, 4.0))
def test_stretch_is_continuous_and_ends_the_cycle_at_the_new_total(
    s: Cosine, frac: float, grow: float
) -> None:
    info = s.cycle(0)
    end = float(info.start) + float(info.length)
    at = int(frac * min(end, 10**6))
    total = at + max(1, int((end - at) * grow)) if math.isfinite(end) else at + 100
    if not math.isfinite(end) or end <= at:
        with pytest.raises(ReplanError, match="mode stretch"):
            replan(s, at=at, total=total, mode="stretch")
        return
    r = replan(s, at=at, total=total, mode="stretch")
    assert _jump(s(at), r(at)) <= MAX_JUMP
    before = np.arange(at)
    assert np.array_equal(r(before), s(before))  # nothing before the switch changes
    if s.max_cycles == 1:  # the last cycle: it now ends exactly at the new total, then holds its floor
        assert r.horizon is not None and math.isclose(r.horizon, total, rel_tol=1e-12)
        assert r(total) == pytest.approx(s(end), rel=1e-12)
        assert r(total + 10**6) == r(total)


@settings(max_examples=150, deadline=None)
@given(
    s=cosines,
    frac=st.floats(0.0, 1.0),
    shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    cut=st.floats(0.0, 1.0),
)
def test_cooldown_holds_then_decays_to_the_floor_at_the_total(
    s: Cosine, frac: float, shape: str, cut: float
) -> None:
    at = int(frac * 3000)
    total = at + 200
    length = max(1, int(200 * cut))
    if s(at) <= 0:
        with pytest.raises(ReplanError, match="nothing to cool down"):
            replan(s, at=at, total=total, mode="cooldown", cooldown_steps=length, shape=shape)
        return
    floor = s(at) * 0.1
    r = replan(s, at=at, total=total, mode="cooldown", cooldown_steps=length, shape=shape, floor=floor)
    assert _jump(s(at), r(at)) <= MAX_JUMP
    assert r(total - length) == pytest.approx(s(at), rel=1e-12)
    assert r(total) == pytest.approx(floor, rel=1e-12) and r(total + 5) == r(total)
    lrs = r(np.arange(at, total + 1))
    assert np.all(np.diff(lrs) <= 1e-15 * s(at))  # a cooldown never raises the LR
    assert r.horizon == total


@settings(max_examples=150, deadline=None)
@given(
    s=cosines,
    frac=st.floats(0.0, 0.95),
    extra=st.integers(10, 5000),
    cycles=st.one_of(st.none(), st.integers(1, 4)),
)
def test_added_cycles_keep_the_current_one_and_end_at_the_total(
    s: Cosine, frac: float, extra: int, cycles: int | None
) -> None:
    info = s.cycle(0)
    end = float(info.start) + float(info.length)
    at = int(frac * end)
    total = math.ceil(end) + extra
    try:
        r = replan(s, at=at, total=total, mode="cycles", cycles=cycles)
    except ReplanError as exc:
        assert "do not fit" in str(exc) and cycles is not None
        return
    assert _jump(s(at), r(at)) <= MAX_JUMP
    upto = np.arange(math.ceil(end))
    assert np.array_equal(r(upto), s(upto))  # the current cycle runs to its end unchanged
    assert r.horizon == total  # the last new cycle ends exactly at the new budget
    assert math.ceil(end) in r.restarts(total + 1) or r(math.ceil(end)) <= r(math.ceil(end) - 1)
    if cycles is not None:
        assert len([x for x in r.restarts(total + 1) if x >= end]) <= cycles
    assert not [w for w in lint(r, total) if w.code in ("CA002", "CA009")]  # no cut cycle, no early end


def test_added_cycles_follow_the_schedules_own_rule() -> None:
    s = Cosine(1.0, cycle_steps=100, cycle_mult=2.0, peak_decay=0.5, min_ratio=0.1, max_cycles=1)
    r = replan(s, at=60, total=700, mode="cycles")  # the rule gives 200 + 400 = 600 after update 100
    assert r.restarts(700) == [100, 300]
    assert r(100) == 0.5 and r(300) == 0.25  # peaks decay as the schedule says
    assert r(299) == pytest.approx(0.05, rel=1e-2) and r(700) == pytest.approx(0.025)  # min_ratio floors
    three = replan(s, at=60, total=700, mode="cycles", cycles=3)
    assert three.restarts(700) == [100, 186, 357]  # 200:400:800 scaled to 600 updates


def test_a_replan_round_trips_and_unwraps_to_the_plan_it_started_from() -> None:
    s = Cosine(0.1, warmup_steps=10, cycle_steps=90)
    r = replan(s, at=30, total=200, mode="stretch")
    r2 = replan(r, at=120, total=300, mode="cooldown", cooldown_steps=50, shape="1-sqrt")
    assert from_dict(r2.to_dict()) == r2 and r2.fingerprint() != r.fingerprint()
    assert plan_origin(r2) == s and r2.before == r
    steps = np.arange(0, 400)
    assert np.array_equal(r2(steps), np.array([r2(int(t)) for t in steps]))  # vector == scalar


def test_a_replan_after_a_world_size_change_keeps_its_lr_factor() -> None:
    s = Cosine(1.0, cycle_steps=100, max_cycles=None)
    resized = Rebatch(s, at=20, ratio=2.0, lr_factor=2.0)
    r = replan(resized, at=30, total=200, mode="cycles", cycles=2)
    assert continuity(resized, r, 30) == 0.0
    assert r.restarts(200)[0] == 60 and r(60) == pytest.approx(
        2.0
    )  # the next cycle's peak carries the resize's LR factor


@pytest.mark.parametrize(
    ("schedule", "kwargs", "message"),
    [
        (
            Cosine(1.0, cycle_steps=100),
            {"at": 50, "total": 50, "mode": "stretch"},
            "pass --total larger than 50",
        ),
        (Constant(0.1), {"at": 5, "total": 50, "mode": "stretch"}, "use --mode cooldown"),
        (Cosine(1.0, cycle_steps=100), {"at": 150, "total": 300, "mode": "stretch"}, "use --mode cooldown"),
        (
            Cosine(1.0, cycle_steps=100),
            {"at": 50, "total": 90, "mode": "cycles"},
            "not before the new total 90",
        ),
        (Constant(0.1), {"at": 5, "total": 50, "mode": "cycles"}, "not a cosine"),
        (
            Cosine(1.0, cycle_steps=100),
            {"at": 50, "total": 100, "mode": "cooldown", "cooldown_steps": 80},
            "pass --cooldown 50 or less",
        ),
        (
            Cosine(1.0, cycle_steps=100),
            {"at": 50, "total": 100, "mode": "cooldown", "floor": 0.9},
            "pass --floor 0.5 or less",
        ),
        (Cosine(1.0, cycle_steps=100), {"at": 50, "total": 100, "mode": "warp"}, "mode must be one of"),
        (
            Cosine(1.0, cycle_steps=100),
            {"at": 50, "total": 200, "mode": "cycles", "cycles": 200},
            "do not fit",
        ),
    ],
)
def test_refusals_name_the_option_and_the_fix(
    schedule: object, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ReplanError, match=message.replace(".", r"\.")):
        replan(schedule, **kwargs)  # type: ignore[arg-type]


def test_a_wsd_run_cooled_down_early_and_stretched() -> None:
    s = WarmupStableDecay(0.01, warmup_steps=10, stable_steps=800, decay_steps=190, min_lr_ratio=0.0)
    r = replan(s, at=400, total=600, mode="cooldown", cooldown_steps=120, shape="1-sqrt", floor=0.0)
    assert r(479) == 0.01 and r(600) == 0.0 and r(540) == pytest.approx(0.01 * (1 - math.sqrt(0.5)))
    grown = replan(s, at=400, total=2000, mode="stretch")
    assert grown(400) == 0.01 and grown.horizon == pytest.approx(2000)
    assert isinstance(grown, Replanned) and grown.mode == "stretch"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
request_fields = st.sampled_from(
    ["total", "mode", "cycles", "cooldown", "shape", "floor", "expect", "id", "other"]
)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(json_values, st.dictionaries(request_fields, json_values, max_size=6)))
def test_any_request_file_content_is_a_request_or_one_config_error(data: object) -> None:
    from cosanneal.errors import ConfigError
    from cosanneal.jobs.replan import ReplanRequest

    try:
        request = ReplanRequest.from_dict(data)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert request.total >= 1 and request.mode in ("stretch", "cycles", "cooldown")
    try:
        request.plan(Cosine(0.1, cycle_steps=100), at=10)
    except (ReplanError, ConfigError) as exc:  # a request that parses may still not fit this schedule
        assert "\n" not in str(exc)
