"""Join: active piece, local steps, continuity, restarts, cycles, durations, serialisation, validation."""

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

from cosanneal import Cosine, ScheduleError, from_dict
from cosanneal.schedules.baselines import Constant, Cyclic, Exponential, Linear, MultiStep, Polynomial, Step
from cosanneal.schedules.join import Join

# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------


def test_warmup_then_step() -> None:
    s = Join([Linear(0.0, 0.1, total_steps=100), Step(0.1, step_size=1000, gamma=0.5)], [100])
    assert [s(0), s(50), s(100), s(1099), s(1100), s(2100)] == [0.0, 0.05, 0.1, 0.1, 0.05, 0.025]
    assert s.peak == 0.1 and s.horizon is None
    assert [s.phase(0), s.phase(99.5), s.phase(100)] == ["warmup", "warmup", "anneal"]
    assert s.restarts(10**6) == []


def test_equals_torch_sequentiallr() -> None:
    """LinearLR warmup then StepLR, chained by SequentialLR, stepping a real optimizer."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.2)
    warm = tl.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=20)
    decay = tl.StepLR(optimizer, step_size=30, gamma=0.5)
    scheduler = tl.SequentialLR(optimizer, [warm, decay], milestones=[20])
    theirs = [scheduler.get_last_lr()[0]]
    for _ in range(299):
        optimizer.step()
        scheduler.step()
        theirs.append(scheduler.get_last_lr()[0])
    ours = Join([Linear(0.02, 0.2, 20), Step(0.2, 30, gamma=0.5)], [20])
    np.testing.assert_allclose(ours(np.arange(300.0)), theirs, rtol=1e-12, atol=1e-15)


def test_single_piece_is_that_piece() -> None:
    piece = Cosine(1.0, cycle_steps=10)
    s = Join([piece])
    ts = np.linspace(0, 30, 61)
    assert np.array_equal(s(ts), piece(ts)) and s.horizon == piece.horizon


def test_restarts_are_shifted_and_cut_at_the_boundary() -> None:
    sgdr = Cosine(1.0, cycle_steps=10, max_cycles=None)
    s = Join([Linear(0.0, 1.0, 5), sgdr, Constant(0.9), Constant(0.2)], [5, 30, 40])
    # sgdr restarts at local 10, 20 (absolute 15, 25); its restart at local 30 is past the boundary.
    # The Constant(0.9) boundary is a jump up from sgdr's mid-decay; the drop to 0.2 is not a restart.
    assert s.restarts(1000) == [15, 25, 30]
    assert s.restarts(30) == [15, 25]
    assert s.restarts(15.5) == [15]


def test_continuous_boundary_is_no_restart() -> None:
    s = Join([Linear(0.0, 0.1, 100), Polynomial(0.1, total_steps=900, power=2.0)], [100])
    assert s(100) == 0.1 and s(math.nextafter(100.0, 0.0)) == pytest.approx(0.1, rel=1e-12)
    assert s.restarts(10**6) == []
    assert s.horizon == 1000


def test_cycles_are_numbered_on_and_cut() -> None:
    s = Join([Linear(0.0, 1.0, 5), Cosine(1.0, cycle_steps=10, max_cycles=None), Step(0.5, 7)], [5, 30])
    assert tuple(s.cycle(0)) == (0, 0, 5)
    assert tuple(s.cycle(7)) == (1, 5, 10)
    assert tuple(s.cycle(25)) == (3, 25, 5)  # cut at the boundary 30
    assert tuple(s.cycle(31)) == (4, 30, math.inf)


def test_durations_bind_boundaries_and_pieces() -> None:
    s = Join([Linear(0.0, 0.1, "0.1dur"), Cosine(0.1, cycle_steps="0.9dur")], ["0.1dur"])
    assert s.unbound_fields() == {
        "boundaries[0]": "0.1dur",
        "schedules[0].total_steps": "0.1dur",
        "schedules[1].cycle_steps": "0.9dur",
    }
    with pytest.raises(ScheduleError, match=r"boundaries\[0\]='0.1dur' is not in steps yet"):
        s(5)
    bound = s.bind(total_steps=1000)
    assert bound == Join([Linear(0.0, 0.1, 100), Cosine(0.1, cycle_steps=900)], [100])
    assert bound.bind(total_steps=1000) is bound and bound.horizon == 1000
    only_pieces = Join([Step(1.0, "1ep"), Constant(0.5)], [50]).bind(steps_per_epoch=10)
    assert only_pieces.schedules[0] == Step(1.0, 10)
    with pytest.raises(ScheduleError, match=r"boundaries must be strictly increasing"):
        Join([Constant(1.0), Constant(0.5), Constant(0.1)], [500, "1ep"]).bind(steps_per_epoch=100)


def test_nested_dict_round_trip() -> None:
    inner = Join([Constant(0.5), Exponential(0.5, 0.99)], [10])
    s = Join([Linear(0.0, 0.5, 10), inner, MultiStep(0.1, [5, 9])], [10, 200])
    data = s.to_dict()
    assert (
        data["schedules"][1]["kind"] == "join" and data["schedules"][1]["schedules"][0]["kind"] == "constant"
    )
    back = from_dict(json.loads(json.dumps(data)))
    assert back == s and back.fingerprint() == s.fingerprint()
    assert pickle.loads(pickle.dumps(s)) == s and hash(back) == hash(s)
    assert (
        s.fingerprint()
        != Join([Linear(0.0, 0.5, 10), inner, MultiStep(0.1, [5, 9])], [10, 201]).fingerprint()
    )


def test_array_shapes_are_kept() -> None:
    s = Join([Linear(0.0, 1.0, 4), Constant(1.0)], [4])
    grid = np.arange(12.0).reshape(2, 2, 3)
    out = s(grid)
    assert out.shape == (2, 2, 3) and out[0, 0, 2] == 0.5 and out[1, 1, 2] == 1.0


# ---------------------------------------------------------------------------------------------
# properties over random joins
# ---------------------------------------------------------------------------------------------

lrs = st.floats(1e-5, 1.0)
lengths = st.integers(1, 400)


@st.composite
def pieces(draw: Any) -> Any:
    kind = draw(
        st.sampled_from(["constant", "step", "exponential", "polynomial", "linear", "cyclic", "cosine"])
    )
    lr = draw(lrs)
    if kind == "constant":
        return Constant(lr)
    if kind == "step":
        return Step(lr, draw(lengths), draw(st.floats(0.1, 1.0)))
    if kind == "exponential":
        return Exponential(lr, draw(st.floats(0.9, 1.0)), min_lr=lr * draw(st.floats(0.0, 1.0)))
    if kind == "polynomial":
        return Polynomial(lr, draw(lengths), draw(st.floats(0.5, 3.0)), end_lr=lr * draw(st.floats(0.0, 1.0)))
    if kind == "linear":
        return Linear(lr, draw(lrs), draw(lengths))
    if kind == "cyclic":
        return Cyclic(lr, lr + draw(lrs), draw(lengths), draw(st.one_of(st.none(), lengths)))
    return Cosine(
        lr,
        warmup_steps=draw(st.integers(0, 20)),
        cycle_steps=draw(lengths),
        cycle_mult=draw(st.sampled_from([1.0, 1.5, 2.0])),
        max_cycles=draw(st.sampled_from([1, 3, None])),
    )


@st.composite
def joins(draw: Any) -> Join:
    parts = draw(st.lists(pieces(), min_size=1, max_size=5))
    gaps = draw(
        st.lists(st.one_of(lengths, st.floats(0.5, 400.0)), min_size=len(parts) - 1, max_size=len(parts) - 1)
    )
    return Join(parts, list(np.cumsum(gaps).tolist()))


steps = st.one_of(st.integers(0, 3000), st.floats(0.0, 3000.0, allow_nan=False), st.integers(0, 10**7))


@given(joins(), st.lists(steps, min_size=1, max_size=40))
def test_active_piece_at_its_local_step(s: Join, ts: list[float]) -> None:
    starts = [0.0, *s.boundaries]
    for t in ts:
        j = max(i for i, b in enumerate(starts) if b <= t)
        assert s(t) == s.schedules[j](t - starts[j])
        assert s.phase(t) == s.schedules[j].phase(t - starts[j])


@given(joins(), st.lists(steps, min_size=1, max_size=40))
def test_vectorised_equals_scalar_bit_for_bit(s: Join, ts: list[float]) -> None:
    assert np.array_equal(s(np.array(ts, dtype=np.float64)), np.array([s(t) for t in ts]))


@given(joins(), st.lists(steps, min_size=1, max_size=40))
def test_bounded_by_the_peak(s: Join, ts: list[float]) -> None:
    values = s(np.array(ts, dtype=np.float64))
    assert (values >= 0.0).all() and (values <= s.peak).all()
    assert s.peak == max(p.peak for p in s.schedules)


@given(joins(), st.lists(steps, min_size=2, max_size=30))
def test_cycles_contain_their_step_and_count_up(s: Join, ts: list[float]) -> None:
    infos = [(t, s.cycle(t)) for t in sorted(ts)]
    for t, info in infos:
        assert info.start <= t < info.start + info.length
    indices = [info.index for _, info in infos]
    assert indices == sorted(indices)


@given(joins())
def test_restarts_are_sorted_rises_or_piece_restarts(s: Join) -> None:
    until = float(s.boundaries[-1]) + 500 if s.boundaries else 500.0
    found = s.restarts(until)
    assert found == sorted(set(found)) and all(0 < r < until for r in found)
    for r in found:
        assert s(r) > s(math.nextafter(float(r), 0.0)) or r not in s.boundaries


@given(joins(), steps)
def test_settles_after_the_horizon(s: Join, extra: float) -> None:
    h = s.horizon
    if h is not None:
        assert s(h + extra) == s(h)


@given(joins())
def test_dict_round_trip_and_fingerprint(s: Join) -> None:
    back = from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.fingerprint() == s.fingerprint()


@given(lrs, lengths, lengths, st.floats(1.0, 3.0))
def test_jump_up_at_a_boundary_is_a_restart(lr: float, decay: int, extra: int, factor: float) -> None:
    s = Join([Polynomial(lr, decay, end_lr=lr / 10), Constant(lr / 10 * factor * 1.01)], [decay + extra])
    assert s.restarts(10**6) == [decay + extra]
    flat = Join([Polynomial(lr, decay, end_lr=lr / 10), Constant(lr / 10)], [decay + extra])
    assert flat.restarts(10**6) == []


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: Join([], []), "schedules"),
    (lambda: Join(Constant(1.0), []), "schedules"),  # type: ignore[arg-type]
    (lambda: Join([Constant(1.0), "linear"], [5]), "schedules[1]"),  # type: ignore[list-item]
    (lambda: Join([Constant(1.0)], [5]), "boundaries must hold len(schedules) - 1 = 0"),
    (lambda: Join([Constant(1.0), Constant(0.5)]), "boundaries must hold len(schedules) - 1 = 1"),
    (lambda: Join([Constant(1.0), Constant(0.5)], [0]), "boundaries[0]"),
    (lambda: Join([Constant(1.0), Constant(0.5)], [math.nan]), "boundaries[0]"),
    (lambda: Join([Constant(1.0), Constant(0.5)], ["soon"]), "boundaries[0]"),
    (lambda: Join([Constant(1.0), Constant(0.5), Constant(0.1)], [10, 5]), "boundaries[1]"),
    (lambda: Join([Constant(1.0), Constant(0.5), Constant(0.1)], [10, 10]), "boundaries[1]"),
    (lambda: Join([Constant(1.0), Constant(0.5)], 10), "boundaries"),  # type: ignore[arg-type]
    (
        lambda: from_dict(
            {"kind": "join", "schedules": [{"kind": "constant", "lr": 1}, {"kind": "x"}], "boundaries": [5]}
        ),
        "schedules[1]: kind must be one of",
    ),
    (
        lambda: from_dict({"kind": "join", "schedules": [{"kind": "step", "lr": 1, "step_size": -1}]}),
        "schedules[0]: step_size must be > 0",
    ),
    (lambda: from_dict({"kind": "join", "boundaries": []}), "needs parameter 'schedules'"),
]


@pytest.mark.parametrize(("build", "message"), BAD)
def test_bad_input_is_rejected_naming_the_parameter(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as info:
        build()
    assert "\n" not in str(info.value)
