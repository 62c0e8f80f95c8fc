"""The traced closed form (schedules/_traced.py) over numpy ops: equal to the core at every boundary, in
float64/int64 and float32/int32, and refusing what it cannot place exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from traced_cases import EPS32, assert_close, cosines, probe_steps, restarts, schedules

from cosanneal import ScheduleError
from cosanneal.schedules import Constant, Cosine, Cyclic, Join, MultiStep, Schedule, Step, kinds, register
from cosanneal.schedules._traced import (
    TABLE_LIMIT,
    NumpyOps,
    UntraceableScheduleError,
    compile_schedule,
    refused_kinds,
    traceable_kinds,
)
from cosanneal.schedules.base import FloatArray


def _run(s: Schedule, steps: np.ndarray, wide: bool) -> np.ndarray:
    out = compile_schedule(s, wide=wide)(NumpyOps(wide), steps.astype(np.int64 if wide else np.int32))
    assert out.dtype == (np.float64 if wide else np.float32)
    return np.asarray(out, dtype=np.float64)


def test_every_registered_kind_has_a_traced_form() -> None:
    # a kind added to the core without a closed form here would only fail inside a user's graph;
    # the only exception refuses with its own reason (rebatch: fractional positions after a resize)
    assert sorted(traceable_kinds() + refused_kinds()) == kinds()
    assert refused_kinds() == ["rebatch", "replan"]


@given(schedules(), st.lists(st.integers(0, 10**6), max_size=10))
def test_wide_program_equals_the_core_at_every_boundary(s: Schedule, extra: list[int]) -> None:
    steps = probe_steps(s, limit=2**53, extra=extra)
    assert_close(_run(s, steps, wide=True), s(steps), s, steps, wide=True)


@given(schedules(), st.lists(st.integers(0, 10**6), max_size=10))
def test_narrow_program_equals_the_core_to_float32_rounding(s: Schedule, extra: list[int]) -> None:
    try:
        program = compile_schedule(s, wide=False)
    except UntraceableScheduleError as exc:  # only fractional lengths repeating forever are refused
        assert "float64" in str(exc) and "not a whole" in str(exc)
        return
    steps = probe_steps(s, extra=extra)
    got = np.asarray(program(NumpyOps(False), steps.astype(np.int32)), dtype=np.float64)
    assert_close(got, s(steps), s, steps, wide=False)


@settings(max_examples=300)
@given(cosines(), st.booleans())
def test_restarts_happen_at_exactly_the_cores_integer_step(s: Cosine, wide: bool) -> None:
    """At r - 1, r, r + 1 around every restart r (any cycle_mult), the LR is the core's: a restart one
    step early or late would put a whole peak-to-floor jump into the error."""
    s = dataclasses.replace(s, min_lr=0.0, min_ratio=None, peak_decay=1.0, k=1.0, cycle_warmup_steps=0)
    # restarts of cycles at least 2 steps long: the first whole step of the cycle is in its first half
    starts = [r for r in restarts(s, 2e6, 200) if r >= 2 and s.cycle(r).length >= 2]
    if not starts:
        return
    steps = np.unique(np.concatenate([[np.ceil(r) - 1, np.ceil(r), np.ceil(r) + 1] for r in starts]))
    try:
        got = _run(s, steps.astype(np.int64), wide)
    except UntraceableScheduleError:
        assert not wide
        return
    want = s(steps)
    at_restart = np.isin(steps, np.ceil(starts))
    assert (want[at_restart] > 0.5 * s.peak_lr).all()  # the jump a misplaced restart would miss
    assert_close(got, want, s, steps, wide=wide)


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(
    "s",
    [
        Cosine(1.0, cycle_steps=10, cycle_mult=2, max_cycles=None),
        Cosine(1.0, cycle_steps=10, cycle_mult=1.5, peak_decay=0.9, max_cycles=None, min_lr=0.01),
        Cosine(1.0, warmup_steps=7, cycle_steps=977.5, max_cycles=None, cycle_warmup_steps=3, min_ratio=0.1),
        Cosine(1.0, cycle_steps=1000, max_cycles=None, k=2.0),
        Step(1.0, step_size=2.5, gamma=0.999),
        Cyclic(0.1, 1.0, step_size_up=2000, step_size_down=1000.5, mode="triangular2"),
    ],
    ids=["sgdr-m2", "sgdr-m1.5-decay", "dyadic-cycles", "k-decay", "dyadic-step", "cyclic"],
)
def test_exact_near_the_end_of_the_step_range(s: Schedule, wide: bool) -> None:
    top = 2**31 - 2 if not wide else 10**12
    ends = [0, 1, top // 3, top // 2 - 1, top - 1, top]
    if isinstance(s, Cosine):
        ends += [int(np.ceil(r)) + d for r in restarts(s, top, 3, last=True) for d in (-1, 0, 1)]
    steps = np.array(sorted({e for e in ends if 0 <= e <= top}), dtype=np.int64)
    assert_close(_run(s, steps, wide), s(steps), s, steps, wide=wide)


def test_float32_restart_at_a_fractional_boundary_near_two_to_the_31() -> None:
    # cycles of 977.5 steps: the restart after 2196894 cycles is at step 2147463885 (a whole step);
    # in float32 the step itself is not representable, yet the restart is exactly there
    s = Cosine(1.0, cycle_steps=977.5, max_cycles=None)
    r = int(2 * 977.5 * 1098447)
    steps = np.array([r - 1, r, r + 1], dtype=np.int64)
    got = _run(s, steps, wide=False)
    assert got[1] == 1.0 and got[0] < 1e-5 and got[2] > 0.99999
    assert np.allclose(got, s(steps), atol=2 * EPS32)


def test_negative_steps_are_nan_not_a_value() -> None:
    s = Cosine(0.1, warmup_steps=5, cycle_steps=10)
    got = _run(s, np.array([-3, 0, 5]), wide=False)
    assert np.isnan(got[0]) and got[1] == 0.0 and got[2] == pytest.approx(0.1, rel=1e-7)


def test_float32_powers_of_a_base_near_one_keep_their_precision() -> None:
    # 0.99999 rounds to float32 with a relative error of 4e-8; raised to 230000 that would be 1%
    from cosanneal.schedules import Exponential

    s = Exponential(1.0, gamma=0.99999, min_lr=0.1)
    steps = np.array([100_000, 200_000, 230_000], dtype=np.int64)
    assert np.allclose(_run(s, steps, wide=False), s(steps), rtol=4 * EPS32, atol=0)


# ---- what cannot be placed exactly: one clear error when the program is built --------------------
@pytest.mark.parametrize(
    ("s", "message"),
    [
        (Step(1.0, step_size=7.3), r"kind 'step': step_size=7.3 is not a whole .*jax_enable_x64"),
        (
            Cosine(1.0, cycle_steps=7.3, max_cycles=None),
            r"kind 'cosine': cycle_steps=7.3 .* repeats it forever",
        ),
        (Cyclic(0.1, 1.0, step_size_up=2.1), r"kind 'cyclic': step_size_up \+ step_size_down=4.2"),
        (Join([Constant(1.0), Step(1.0, step_size=1.1)], [10]), r"kind 'step': step_size=1.1"),
    ],
)
def test_float32_refuses_fractional_lengths_repeated_forever(s: Schedule, message: str) -> None:
    with pytest.raises(UntraceableScheduleError, match=message):
        compile_schedule(s, wide=False)
    steps = probe_steps(s, limit=10**5)
    assert_close(_run(s, steps, wide=True), s(steps), s, steps, wide=True)  # float64 places them exactly


def test_finite_fractional_cycles_are_tabulated_in_float32() -> None:
    s = Cosine(1.0, cycle_steps=7.3, max_cycles=50, min_lr=0.01)  # 7.3 * k is never quite whole in float64
    steps = probe_steps(s)
    assert_close(_run(s, steps, wide=False), s(steps), s, steps, wide=False)


@pytest.mark.parametrize("wide", [False, True])
def test_cycle_mult_too_close_to_one_is_refused(wide: bool) -> None:
    s = Cosine(1.0, cycle_steps=1, cycle_mult=1.00001, max_cycles=None)
    with pytest.raises(
        UntraceableScheduleError, match=rf"cycle_mult=1.00001 restarts more than {TABLE_LIMIT} times"
    ):
        compile_schedule(s, wide=wide)
    bounded = dataclasses.replace(s, max_cycles=1000)
    steps = probe_steps(bounded)
    assert_close(_run(bounded, steps, wide), bounded(steps), bounded, steps, wide=wide)


def test_a_kind_without_a_traced_form_is_refused_by_name() -> None:
    @register("test_halving")
    @dataclasses.dataclass(frozen=True)
    class Halving(Schedule):
        lr: float

        def _vector(self, t: FloatArray) -> FloatArray:
            return self.lr * 0.5 ** np.floor(t)

        @property
        def peak(self) -> float:
            return self.lr

    try:
        with pytest.raises(
            UntraceableScheduleError, match=r"kind 'test_halving' has no traced closed form.*join"
        ):
            compile_schedule(Join([Constant(1.0), Halving(1.0)], [5]), wide=True)
    finally:
        from cosanneal.schedules import base

        del base._REGISTRY["test_halving"]


def test_unbound_durations_need_bind_first() -> None:
    with pytest.raises(ScheduleError, match=r"cycle_steps='0.5dur' is not in steps yet; call .bind"):
        compile_schedule(Cosine(1.0, cycle_steps="0.5dur"), wide=True)
    with pytest.raises(ScheduleError, match=r"milestones\[0\]='2ep' is not in steps yet"):
        compile_schedule(MultiStep(1.0, ["2ep"]), wide=False)


def test_program_and_ops_precision_must_match() -> None:
    program = compile_schedule(Constant(0.1), wide=True)
    with pytest.raises(ValueError, match="compiled for wide=True"):
        program(NumpyOps(False), np.arange(3, dtype=np.int32))


def test_numpy_ops_doctest_example_values() -> None:
    # the dyadic step size 2.5 decays at steps 3 (2.5 -> 3) and 5, exactly
    program = compile_schedule(Step(1.0, step_size=2.5, gamma=0.5), wide=False)
    got: Any = program(NumpyOps(False), np.arange(8, dtype=np.int32))
    assert got.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25]
