"""Baseline schedules: parity with the real PyTorch and transformers schedulers, properties, validation."""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tl
from transformers import get_polynomial_decay_schedule_with_warmup

from cosanneal import ScheduleError, from_dict
from cosanneal.schedules.baselines import (
    Constant,
    Cyclic,
    Exponential,
    Linear,
    MultiStep,
    Polynomial,
    Step,
)

N = 400  # steps compared against each peer


def peer_trace(make: Callable[[torch.optim.Optimizer], Any], base_lr: float, n: int = N) -> np.ndarray:
    """LRs a real scheduler gives at steps 0..n-1, stepping a real optimizer and reading get_last_lr()."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make(optimizer)
    out = [scheduler.get_last_lr()[0]]
    for _ in range(n - 1):
        optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return np.array(out, dtype=np.float64)


def assert_parity(ours: Any, theirs: np.ndarray) -> None:
    steps = np.arange(len(theirs), dtype=np.float64)
    np.testing.assert_allclose(ours(steps), theirs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose([ours(int(t)) for t in steps], theirs, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# golden parity with the peers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lr", "step_size", "gamma"), [(0.1, 7, 0.5), (0.3, 30, 0.1), (1.0, 1, 0.97)])
def test_step_equals_torch_steplr(lr: float, step_size: int, gamma: float) -> None:
    theirs = peer_trace(lambda o: tl.StepLR(o, step_size=step_size, gamma=gamma), lr)
    assert_parity(Step(lr, step_size=step_size, gamma=gamma), theirs)


@pytest.mark.parametrize(
    ("milestones", "gamma"), [([10, 50, 51, 200], 0.3), ([1], 0.1), ([100, 250, 399], 0.5)]
)
def test_multistep_equals_torch_multisteplr(milestones: list[int], gamma: float) -> None:
    theirs = peer_trace(lambda o: tl.MultiStepLR(o, milestones=milestones, gamma=gamma), 0.2)
    assert_parity(MultiStep(0.2, milestones=milestones, gamma=gamma), theirs)


@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.0])
def test_exponential_equals_torch_exponentiallr(gamma: float) -> None:
    theirs = peer_trace(lambda o: tl.ExponentialLR(o, gamma=gamma), 0.05)
    assert_parity(Exponential(0.05, gamma=gamma), theirs)


@pytest.mark.parametrize(
    ("start_factor", "end_factor", "total"),
    [(0.25, 1.0, 40), (1.0, 0.1, 100), (0.5, 0.0, 37), (0.1, 0.9, 333)],
)
def test_linear_equals_torch_linearlr(start_factor: float, end_factor: float, total: int) -> None:
    base = 0.3
    theirs = peer_trace(
        lambda o: tl.LinearLR(o, start_factor=start_factor, end_factor=end_factor, total_iters=total), base
    )
    assert_parity(Linear(base * start_factor, base * end_factor, total_steps=total), theirs)


@pytest.mark.parametrize(("total", "power"), [(100, 1.0), (250, 2.0), (150, 0.5), (399, 3.0)])
def test_polynomial_equals_torch_polynomiallr(total: int, power: float) -> None:
    theirs = peer_trace(lambda o: tl.PolynomialLR(o, total_iters=total, power=power), 0.1)
    assert_parity(Polynomial(0.1, total_steps=total, power=power), theirs)


@pytest.mark.parametrize(("total", "power", "end"), [(200, 1.0, 1e-3), (300, 2.0, 1e-4), (123, 0.5, 0.0)])
def test_polynomial_equals_transformers(total: int, power: float, end: float) -> None:
    theirs = peer_trace(
        lambda o: get_polynomial_decay_schedule_with_warmup(
            o, num_warmup_steps=0, num_training_steps=total, lr_end=end, power=power
        ),
        0.1,
    )
    assert_parity(Polynomial(0.1, total_steps=total, power=power, end_lr=end), theirs)


@pytest.mark.parametrize(
    ("up", "down", "mode", "gamma"),
    [
        (10, None, "triangular", 1.0),
        (10, 15, "triangular", 1.0),
        (7, 20, "triangular2", 1.0),
        (25, None, "triangular2", 1.0),
        (10, 5, "exp_range", 0.99),
        (30, None, "exp_range", 0.995),
    ],
)
def test_cyclic_equals_torch_cycliclr(up: int, down: int | None, mode: str, gamma: float) -> None:
    theirs = peer_trace(
        lambda o: tl.CyclicLR(
            o,
            base_lr=0.01,
            max_lr=0.1,
            step_size_up=up,
            step_size_down=down,
            mode=mode,  # type: ignore[arg-type]
            gamma=gamma,
            cycle_momentum=False,
        ),
        0.01,
    )
    assert_parity(Cyclic(0.01, 0.1, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma), theirs)


# ---------------------------------------------------------------------------------------------
# hand-checkable values and introspection
# ---------------------------------------------------------------------------------------------


def test_golden_values() -> None:
    assert Constant(0.25)(10**12) == 0.25
    assert Step(1.0, step_size=10, gamma=0.5)(np.array([0, 9.99, 10, 29, 30])).tolist() == [
        1.0,
        1.0,
        0.5,
        0.25,
        0.125,
    ]
    assert MultiStep(1.0, [3, 5], gamma=0.1)(np.array([2.9, 3, 4.5, 5, 1e9])).tolist() == pytest.approx(
        [1.0, 0.1, 0.1, 0.01, 0.01], rel=1e-15
    )
    assert Exponential(2.0, gamma=0.5)(3) == 0.25
    assert Polynomial(1.0, total_steps=4, power=2.0)(2) == 0.25
    assert Linear(0.0, 1.0, total_steps=4)(1) == 0.25
    tri = Cyclic(0.0, 1.0, step_size_up=4, step_size_down=2)
    assert tri(np.arange(8.0)).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.0, 0.25]


def test_holds_after_the_end() -> None:
    assert Linear(0.1, 0.3, 7)(7) == 0.3 and Linear(0.1, 0.3, 7)(10**9) == 0.3
    assert Polynomial(0.3, 7, end_lr=0.1)(7) == 0.1 and Polynomial(0.3, 7, end_lr=0.1)(1e12) == 0.1
    assert Exponential(1.0, 0.5, min_lr=0.01)(1e9) == 0.01


def test_horizon_and_phase() -> None:
    assert Constant(0.1).horizon == 0.0 and Constant(0.1).phase(3) == "hold"
    assert Step(0.1, 10).horizon is None and Step(0.1, 10).phase(10**6) == "anneal"
    assert Step(0.1, 10, gamma=1.0).horizon == 0.0
    ms = MultiStep(0.1, [10, 20])
    assert ms.horizon == 20 and ms.phase(19) == "anneal" and ms.phase(20) == "hold"
    assert Polynomial(0.1, 50).horizon == 50 and Polynomial(0.1, 50, end_lr=0.1).horizon == 0
    up, down = Linear(0.0, 0.1, 10), Linear(0.1, 0.0, 10)
    assert [up.phase(0), up.phase(9.5), up.phase(10)] == ["warmup", "warmup", "hold"]
    assert [down.phase(0), down.phase(10)] == ["anneal", "hold"]
    assert Exponential(1.0, 0.9).horizon is None
    cyc = Cyclic(0.1, 1.0, 10)
    assert cyc.horizon is None and {cyc.phase(t) for t in range(0, 100, 3)} == {"anneal"}


@given(st.floats(1e-3, 10.0), st.floats(0.5, 0.999), st.floats(1e-6, 0.9))
def test_exponential_horizon_is_the_first_step_on_the_floor(lr: float, gamma: float, ratio: float) -> None:
    s = Exponential(lr, gamma=gamma, min_lr=lr * ratio)
    h = s.horizon
    assert h is not None
    assert s(h) == s.min_lr and s(h * 2 + 1) == s.min_lr
    assert s(math.nextafter(h, 0.0)) > s.min_lr


def test_cycles_of_settling_schedules() -> None:
    p = Polynomial(1.0, total_steps=10)
    assert tuple(p.cycle(3)) == (0, 0, 10) and tuple(p.cycle(12)) == (1, 10, math.inf)
    assert tuple(Constant(1.0).cycle(5)) == (0, 0, math.inf)
    assert tuple(Step(1.0, 5).cycle(50)) == (0, 0, math.inf)
    assert p.restarts(100) == []


def test_cyclic_cycles_and_restarts() -> None:
    s = Cyclic(0.1, 1.0, step_size_up=3, step_size_down=2)
    assert s.restarts(16) == [5, 10, 15]
    assert s.restarts(15) == [5, 10]
    assert tuple(s.cycle(12)) == (2, 10, 5)
    assert [s(r) for r in s.restarts(100)] == [0.1] * 19
    assert s.peak == 1.0 and s(3) == 1.0
    half = Cyclic(0.0, 1.0, step_size_up=2, mode="triangular2")
    assert [half(2 + 4 * k) for k in range(4)] == [1.0, 0.5, 0.25, 0.125]


def test_durations_bind() -> None:
    s = Step(0.1, step_size="2ep")
    with pytest.raises(ScheduleError, match=r"step_size='2ep' is not in steps yet"):
        s(5)
    assert s.bind(steps_per_epoch=50).step_size == 100
    assert Step(0.1, "30st").step_size == 30
    assert Polynomial(0.1, "0.5dur").bind(total_steps=1000).total_steps == 500
    c = Cyclic(0.0, 1.0, "1ep", step_size_down="0.5ep").bind(steps_per_epoch=10)
    assert (c.step_size_up, c.step_size_down) == (10, 5)
    m = MultiStep(0.1, ["1ep", "3ep"])
    assert m.unbound_fields() == {"milestones[0]": "1ep", "milestones[1]": "3ep"}
    with pytest.raises(ScheduleError, match=r"milestones\[0\]"):
        m(1)
    assert m.bind(steps_per_epoch=10) == MultiStep(0.1, [10, 30])
    with pytest.raises(ScheduleError, match=r"strictly increasing.*milestones\[1\]"):
        MultiStep(0.1, [500, "1ep"]).bind(steps_per_epoch=100)


def test_whole_float_points_equal_ints() -> None:
    a, b = MultiStep(0.1, [10.0, 20.0]), MultiStep(0.1, (10, 20))
    assert a == b and a.fingerprint() == b.fingerprint() and a.milestones == (10, 20)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

lrs = st.floats(1e-6, 10.0)
lengths = st.one_of(st.integers(1, 500), st.floats(0.5, 500.0))
gammas = st.floats(0.01, 1.0)
steps = st.one_of(st.integers(0, 10**7), st.floats(0.0, 1e7, allow_nan=False))


@st.composite
def baselines(draw: Any) -> tuple[Any, float, int]:
    """A random baseline schedule, its floor and its direction (-1 falls, +1 rises, 0 neither)."""
    kind = draw(
        st.sampled_from(["constant", "step", "multistep", "exponential", "polynomial", "linear", "cyclic"])
    )
    lr = draw(lrs)
    if kind == "constant":
        return Constant(lr), lr, 0
    if kind == "step":
        return Step(lr, draw(lengths), draw(gammas)), 0.0, -1
    if kind == "multistep":
        points = sorted(draw(st.sets(st.integers(1, 10**6), min_size=1, max_size=6)))
        gamma = draw(st.floats(0.01, 3.0))
        s = MultiStep(lr, points, gamma)
        return s, min(lr, float(s(1e9))), -1 if gamma <= 1 else 1
    if kind == "exponential":
        floor = lr * draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
        return Exponential(lr, draw(st.floats(0.5, 1.0)), min_lr=floor), floor, -1
    if kind == "polynomial":
        end = lr * draw(st.floats(0.0, 1.0))
        return Polynomial(lr, draw(lengths), draw(st.floats(0.1, 5.0)), end), end, -1
    if kind == "linear":
        end = draw(lrs)
        return Linear(lr, end, draw(lengths)), min(lr, end), -1 if end <= lr else 1
    mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    gamma = draw(st.floats(0.9, 1.0)) if mode == "exp_range" else 1.0
    down = draw(st.one_of(st.none(), lengths))
    return Cyclic(lr, lr + draw(lrs), draw(lengths), down, mode, gamma), lr, 0


@given(baselines(), st.lists(steps, min_size=1, max_size=40))
def test_vectorised_equals_scalar_bit_for_bit(case: tuple[Any, float, int], ts: list[float]) -> None:
    s = case[0]
    vec = s(np.array(ts, dtype=np.float64))
    scal = np.array([s(t) for t in ts])
    assert np.array_equal(vec, scal), (s, ts, vec, scal)


@given(baselines(), st.lists(steps, min_size=1, max_size=40))
def test_between_floor_and_peak(case: tuple[Any, float, int], ts: list[float]) -> None:
    s, floor, _ = case
    values = s(np.array(ts, dtype=np.float64))
    assert (values >= floor).all() and (values <= s.peak).all()


@given(baselines(), st.lists(steps, min_size=2, max_size=60))
def test_monotone_where_the_curve_is(case: tuple[Any, float, int], ts: list[float]) -> None:
    s, _, direction = case
    values = s(np.sort(np.array(ts, dtype=np.float64)))
    if direction < 0:
        assert (np.diff(values) <= 0).all()
    elif direction > 0:
        assert (np.diff(values) >= 0).all()


@given(baselines(), steps)
def test_constant_after_the_horizon(case: tuple[Any, float, int], extra: float) -> None:
    s = case[0]
    if s.horizon is not None:
        assert s(s.horizon + extra) == s(s.horizon)
        assert s.phase(s.horizon + extra) == "hold"


@given(baselines())
def test_dict_round_trip_and_fingerprint(case: tuple[Any, float, int]) -> None:
    s = case[0]
    data = json.loads(json.dumps(s.to_dict()))
    back = from_dict(data)
    assert back == s and type(back) is type(s)
    assert back.fingerprint() == s.fingerprint()
    assert pickle.loads(pickle.dumps(s)) == s and hash(back) == hash(s)


def test_array_shapes_are_kept() -> None:
    s = Cyclic(0.1, 1.0, 4)
    grid = np.arange(12.0).reshape(3, 4)
    assert s(grid).shape == (3, 4) and s(grid)[2, 1] == s(9)


# ---------------------------------------------------------------------------------------------
# validation: one-line errors that name the parameter
# ---------------------------------------------------------------------------------------------

BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: Constant(-0.1), "lr"),
    (lambda: Constant(math.nan), "lr"),
    (lambda: Constant("0.1"), "lr"),  # type: ignore[arg-type]
    (lambda: Step(0.0, 10), "lr"),
    (lambda: Step(0.1, 0), "step_size"),
    (lambda: Step(0.1, math.inf), "step_size"),
    (lambda: Step(0.1, "ten"), "step_size"),
    (lambda: Step(0.1, "0ep"), "step_size"),
    (lambda: MultiStep(0.1, ["0ep"]), "milestones[0]"),
    (lambda: Step(0.1, 10, gamma=0.0), "gamma"),
    (lambda: Step(0.1, 10, gamma=1.5), "gamma"),
    (lambda: MultiStep(0.1, []), "milestones"),
    (lambda: MultiStep(0.1, "10"), "milestones"),  # type: ignore[arg-type]
    (lambda: MultiStep(0.1, [0, 5]), "milestones[0]"),
    (lambda: MultiStep(0.1, [10, 5]), "milestones[1]"),
    (lambda: MultiStep(0.1, [10, 10]), "milestones[1]"),
    (lambda: MultiStep(0.1, ["2ep", "1ep"]), "milestones[1]"),
    (lambda: MultiStep(0.1, [10], gamma=-1.0), "gamma"),
    (lambda: Exponential(0.1, 0.0), "gamma"),
    (lambda: Exponential(0.1, 1.01), "gamma"),
    (lambda: Exponential(0.1, 0.9, min_lr=0.2), "min_lr"),
    (lambda: Exponential(0.1, 0.9, min_lr=-1e-3), "min_lr"),
    (lambda: Exponential(math.inf, 0.9), "lr"),
    (lambda: Polynomial(-0.1, 10), "lr"),
    (lambda: Polynomial(0.1, 0), "total_steps"),
    (lambda: Polynomial(0.1, 10, power=0.0), "power"),
    (lambda: Polynomial(0.1, 10, end_lr=0.2), "end_lr"),
    (lambda: Linear(-1.0, 0.0, 10), "start_lr"),
    (lambda: Linear(0.0, -1.0, 10), "end_lr"),
    (lambda: Linear(0.0, 1.0, -5), "total_steps"),
    (lambda: Cyclic(-0.1, 1.0, 10), "base_lr"),
    (lambda: Cyclic(0.1, 0.01, 10), "max_lr"),
    (lambda: Cyclic(0.1, 1.0, 0), "step_size_up"),
    (lambda: Cyclic(0.1, 1.0, 10, step_size_down=0), "step_size_down"),
    (lambda: Cyclic(0.1, 1.0, 10, mode="cosine"), "mode"),
    (lambda: Cyclic(0.1, 1.0, 10, gamma=0.99), "gamma"),
    (lambda: Cyclic(0.1, 1.0, 10, mode="exp_range", gamma=0.0), "gamma"),
    (lambda: Cyclic(0.1, 1.0, 10).restarts(math.inf), "until"),
    (lambda: from_dict({"kind": "step", "lr": 0.1}), "step_size"),
    (lambda: from_dict({"kind": "linear", "start_lr": 0, "end_lr": 1, "total_steps": 5, "warm": 1}), "warm"),
]


@pytest.mark.parametrize(("build", "name"), BAD)
def test_bad_input_is_rejected_naming_the_parameter(build: Callable[[], Any], name: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(name)) as info:
        build()
    assert "\n" not in str(info.value)
