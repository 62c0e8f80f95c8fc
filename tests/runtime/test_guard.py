"""NonFiniteGuard: decisions, fused gradient check, schedule adjustment, state, and a real training run."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine
from cosanneal.errors import ScheduleError, StateError
from cosanneal.runtime.guard import ZERO_FLOOR_RATIO, NonFiniteGuard, adjust_schedule
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.baselines import Constant, Cyclic, Exponential, Linear, MultiStep, Polynomial, Step
from cosanneal.schedules.join import Join
from cosanneal.schedules.onecycle import OneCycle
from cosanneal.schedules.wsd import WarmupStableDecay
from cosanneal.torch import Scheduler

NAN, INF = float("nan"), float("inf")


def _actions(guard: NonFiniteGuard, losses: list[float]) -> list[str]:
    return [guard.check(x).action for x in losses]


# ---- decisions ----------------------------------------------------------------------------------
def test_skip_then_rollback_then_stop_with_counts_events_and_advice() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    rollbacks: list[int] = []
    guard = NonFiniteGuard(
        max_consecutive=3,
        max_rollbacks=2,
        rollback=lambda: rollbacks.append(1),
        schedule=Cosine(0.1, cycle_steps=100),
        on_event=lambda kind, **payload: events.append((kind, payload)),
    )
    losses = [1.0, NAN, 1.0, NAN, INF, NAN, 2.0, NAN, NAN, NAN, NAN, NAN, -INF]
    assert _actions(guard, losses) == [
        "ok", "skip", "ok", "skip", "skip", "rollback", "ok", "skip", "skip", "rollback", "skip", "skip", "stop",
    ]  # fmt: skip
    assert len(rollbacks) == 2 and guard.rollbacks == 2 and guard.stopped
    assert (guard.nonfinite, guard.checks) == (10, 13)
    assert isinstance(guard.schedule, Cosine) and guard.schedule.peak_lr == pytest.approx(
        0.025
    )  # 0.1 * 0.5**2
    kinds = [k for k, _ in events]
    assert kinds.count("nonfinite") == 10 and kinds.count("rollback") == 2 and kinds[-1] == "stop"
    assert [h["kind"] for h in guard.history] == kinds  # every decision recorded
    first_rollback = next(p for k, p in events if k == "rollback")
    assert first_rollback["step"] == 5 and first_rollback["lr_scale"] == 0.5
    assert first_rollback["schedule"]["peak_lr"] == 0.05
    message = guard.history[-1]["message"]
    for part in ("steps 10..12", "2 of max_rollbacks=2", "10 non-finite of 13", "last loss -inf", "lower peak_lr",
                 "raise the floor", "clip gradients", "fp16"):  # fmt: skip
        assert part in message, part
    # once stopped, it stays stopped and emits nothing more
    again = guard.check(1.0)
    assert again.stop and again.message == message and len(events) == len(kinds)


def test_decision_flags_and_explicit_steps() -> None:
    guard = NonFiniteGuard(max_consecutive=1, max_rollbacks=0)
    ok = guard.check(0.3, step=40)
    assert (ok.ok, ok.skip, ok.stop, ok.step, ok.message) == (True, False, False, 40, "")
    stop = guard.check(NAN, step=41)
    assert (stop.ok, stop.skip, stop.stop, stop.step) == (False, True, True, 41)
    assert "steps 41..41" in stop.message


def test_on_exhausted_stop_and_policy_stop() -> None:
    called: list[int] = []
    guard = NonFiniteGuard(max_consecutive=2, on_exhausted="stop", rollback=lambda: called.append(1))
    assert _actions(guard, [NAN, NAN]) == ["skip", "stop"] and not called
    strict = NonFiniteGuard(policy="stop")
    assert _actions(strict, [1.0, INF]) == ["ok", "stop"]
    assert "policy='stop'" in strict.stop_message


def test_rollback_without_schedule_gives_no_schedule() -> None:
    guard = NonFiniteGuard(max_consecutive=1)
    decision = guard.check(NAN)
    assert decision.action == "rollback" and decision.schedule is None and decision.lr_scale == 1.0


# ---- gradients: one fused check -----------------------------------------------------------------
def _model_with_grads(*grads: list[float], dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = torch.nn.Module()
    for i, g in enumerate(grads):
        p = torch.nn.Parameter(torch.zeros(len(g), dtype=dtype))
        p.grad = torch.tensor(g, dtype=dtype)
        model.register_parameter(f"p{i}", p)
    model.register_parameter("frozen", torch.nn.Parameter(torch.zeros(2)))  # no grad: ignored
    return model


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_non_finite_gradient_skips_even_with_a_finite_loss(bad: float) -> None:
    events: list[dict[str, Any]] = []
    guard = NonFiniteGuard(on_event=lambda kind, **p: events.append(p))
    model = _model_with_grads([1.0, 2.0], [3.0, bad], [0.5])
    decision = guard.check(torch.tensor(0.25), model)
    assert decision.action == "skip"
    assert (
        events[0]["where"] == "gradients" and events[0]["nonfinite_grads"] == 1 and events[0]["loss"] == 0.25
    )


def test_huge_but_finite_gradients_pass_and_all_sources_work() -> None:
    guard = NonFiniteGuard()
    model = _model_with_grads([1e30, -3e38], [1e-30])  # an L2 norm would overflow float32; max|g| does not
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert guard.check(torch.tensor(1.0), model).ok
    assert guard.check(torch.tensor(1.0), opt).ok
    assert guard.check(torch.tensor(1.0), list(model.parameters())).ok
    half = _model_with_grads([60000.0, -65504.0], dtype=torch.float16)
    assert guard.check(torch.tensor(1.0, dtype=torch.float16), half).ok
    assert guard.check(torch.tensor([1.0, NAN]), half).action == "skip"  # any element of a vector loss
    with pytest.raises(TypeError, match="model_or_params"):
        guard.check(1.0, 42)


# ---- schedule adjustment ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "adjust", "expected"),
    [
        (Cosine(0.1, min_lr=0.001, cycle_steps=100), "peak", {"peak_lr": 0.05, "min_lr": 0.001}),
        (Cosine(0.1, min_lr=0.08, warmup_start_lr=0.09, cycle_steps=100), "peak",
         {"peak_lr": 0.05, "min_lr": 0.05, "warmup_start_lr": 0.05}),
        (Cosine(0.1, min_ratio=0.1, cycle_steps=100), "peak", {"peak_lr": 0.05, "min_ratio": 0.1}),
        (Cosine(0.1, min_lr=0.001, cycle_steps=100), "floor", {"peak_lr": 0.1, "min_lr": 0.002}),
        (Cosine(0.1, min_lr=0.08, cycle_steps=100), "floor", {"min_lr": 0.1}),
        (Cosine(0.1, cycle_steps=100), "floor", {"min_lr": 0.1 * ZERO_FLOOR_RATIO}),
        (Cosine(0.1, min_ratio=0.1, cycle_steps=100), "floor", {"min_ratio": 0.2}),
        (Cosine(0.1, min_ratio=0.0, cycle_steps=100), "floor", {"min_ratio": ZERO_FLOOR_RATIO}),
        (WarmupStableDecay(1.0, 10, 80, 10, min_lr_ratio=0.1), "peak", {"peak_lr": 0.5, "min_lr_ratio": 0.1}),
        (WarmupStableDecay(1.0, 10, 80, 10, min_lr_ratio=0.1), "floor", {"min_lr_ratio": 0.2}),
        (OneCycle(1.0, total_steps=100), "peak", {"max_lr": 0.5}),
        (OneCycle(1.0, total_steps=100, final_div_factor=1e4), "floor", {"final_div_factor": 5e3}),
        (OneCycle(1.0, total_steps=100, final_div_factor=1.5), "floor", {"final_div_factor": 1.0}),
        (Cyclic(0.4, 1.0, step_size_up=10), "peak", {"max_lr": 0.5, "base_lr": 0.4}),
        (Cyclic(0.8, 1.0, step_size_up=10), "peak", {"max_lr": 0.5, "base_lr": 0.5}),
        (Cyclic(0.4, 1.0, step_size_up=10), "floor", {"base_lr": 0.8}),
        (Exponential(1.0, gamma=0.9, min_lr=0.1), "floor", {"min_lr": 0.2}),
        (Polynomial(1.0, total_steps=10, end_lr=0.7), "floor", {"end_lr": 1.0}),
        (Linear(0.0, 1.0, total_steps=10), "peak", {"start_lr": 0.0, "end_lr": 0.5}),
        (MultiStep(1.0, milestones=(5, 8)), "peak", {"lr": 0.5}),
    ],
)  # fmt: skip
def test_adjust_rules(schedule: Schedule, adjust: str, expected: dict[str, float]) -> None:
    out = adjust_schedule(schedule, adjust, 0.5)  # type: ignore[arg-type]
    assert type(out) is type(schedule)
    for name, value in expected.items():
        assert getattr(out, name) == pytest.approx(value), name


def test_adjust_join_and_errors() -> None:
    warm = Join((Linear(0.0, 1.0, total_steps=10), Cosine(1.0, min_lr=0.1, cycle_steps=90)), (10,))
    lowered = adjust_schedule(warm, "peak", 0.5)
    assert lowered.peak == 0.5 and lowered(10) == 0.5 and lowered(5) == 0.25
    raised = adjust_schedule(warm, "floor", 0.5)
    assert raised(100) == pytest.approx(0.2) and raised(5) == warm(5)  # only the piece with a floor changes
    with pytest.raises(ScheduleError, match="kind 'step' has none"):
        adjust_schedule(Step(1.0, step_size=10), "floor")
    with pytest.raises(ScheduleError, match="has none"):
        adjust_schedule(Join((Constant(1.0), Step(1.0, step_size=5)), (5,)), "floor")
    with pytest.raises(ScheduleError, match=r"lr_factor must be a number in \(0, 1\), got 1.5"):
        adjust_schedule(Constant(1.0), "peak", 1.5)
    with pytest.raises(ScheduleError, match="must return a Schedule"):
        adjust_schedule(Constant(1.0), lambda s: None)  # type: ignore[arg-type,return-value]
    assert adjust_schedule(Constant(1.0), lambda s: Constant(0.3)) == Constant(0.3)


LINEAR_IN_PEAK = [
    Cosine(0.2, min_ratio=0.05, warmup_steps=7, cycle_steps=30, cycle_mult=1.5, peak_decay=0.8, max_cycles=4),
    Constant(0.2),
    Step(0.2, step_size=9, gamma=0.5),
    MultiStep(0.2, milestones=(10, 50), gamma=0.3),
    OneCycle(0.2, total_steps=150),
    WarmupStableDecay(0.2, 10, 60, 40, min_lr_ratio=0.1),
    Linear(0.2, 0.01, total_steps=120),
]


@given(
    index=st.integers(0, len(LINEAR_IN_PEAK) - 1),
    factor=st.floats(0.01, 0.99),
    steps=st.lists(st.integers(0, 400), min_size=1, max_size=20),
)
def test_lowering_the_peak_scales_curves_that_are_linear_in_it(
    index: int, factor: float, steps: list[int]
) -> None:
    original = LINEAR_IN_PEAK[index]
    lowered = adjust_schedule(original, "peak", factor)
    t = np.array(steps, dtype=np.float64)
    np.testing.assert_allclose(lowered(t), factor * original(t), rtol=1e-12, atol=1e-15)


@given(
    factor=st.floats(0.01, 0.99), floor=st.floats(0.0, 1.0), steps=st.lists(st.integers(0, 300), min_size=1)
)
def test_raising_the_floor_never_lowers_the_lr_nor_exceeds_the_peak(
    factor: float, floor: float, steps: list[int]
) -> None:
    original = Cosine(1.0, min_lr=floor, warmup_steps=5, cycle_steps=40, max_cycles=3)
    raised = adjust_schedule(original, "floor", factor)
    t = np.array(steps, dtype=np.float64)
    assert (raised(t) >= original(t) - 1e-15).all() and (raised(t) <= 1.0).all()
    assert raised.min_lr == (min(1.0, floor / factor) if floor > 0 else ZERO_FLOOR_RATIO)


# ---- construction and state -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"policy": "ignore"}, ValueError, "policy must be 'skip' or 'stop', got 'ignore'"),
        ({"on_exhausted": "retry"}, ValueError, "on_exhausted"),
        ({"max_consecutive": 0}, ValueError, "max_consecutive must be an integer >= 1, got 0"),
        ({"max_rollbacks": -1}, ValueError, "max_rollbacks must be an integer >= 0, got -1"),
        ({"lr_factor": 0.0}, ScheduleError, "lr_factor"),
        ({"adjust": "both"}, ValueError, "adjust must be"),
        ({"adjust": "floor", "schedule": Step(1.0, step_size=3)}, ScheduleError, "kind 'step' has none"),
    ],
)
def test_bad_arguments_fail_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        NonFiniteGuard(**kwargs)


def test_state_round_trips_through_strict_json_and_keeps_counting() -> None:
    guard = NonFiniteGuard(max_consecutive=3, max_rollbacks=1, schedule=Cosine(0.1, cycle_steps=10))
    _actions(guard, [1.0, NAN, NAN, NAN, 1.0, NAN, NAN])  # one rollback, then 2 in a row
    text = json.dumps(guard.state_dict(), allow_nan=False)
    resumed = NonFiniteGuard(max_consecutive=3, max_rollbacks=1, schedule=Cosine(0.1, cycle_steps=10))
    resumed.load_state_dict(json.loads(text))
    assert (resumed.checks, resumed.consecutive, resumed.nonfinite, resumed.rollbacks) == (7, 2, 5, 1)
    assert resumed.schedule == guard.schedule and isinstance(resumed.schedule, Cosine)
    assert resumed.schedule.peak_lr == 0.05
    assert resumed.last_loss is not None and math.isnan(resumed.last_loss)
    assert resumed.history == guard.history
    assert resumed.check(NAN).stop  # the third in a row, out of rollbacks: same as the original would do
    assert guard.check(NAN).stop
    with pytest.raises(StateError, match="version must be 1, got 7"):
        resumed.load_state_dict({"version": 7})
    with pytest.raises(StateError, match="malformed"):
        resumed.load_state_dict({"version": 1, "checks": 1})


# ---- a real training run ----------------------------------------------------------------------------
def test_real_training_skips_rolls_back_and_stops_without_advancing_the_schedule() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = Cosine(0.1, warmup_steps=3, cycle_steps=40)
    sched = Scheduler(opt, schedule, count="optimizer")
    saved: dict[str, Any] = {}

    def save() -> None:
        saved.update(model=copy.deepcopy(model.state_dict()), opt=copy.deepcopy(opt.state_dict()),
                     sched=sched.state_dict())  # fmt: skip

    def rollback() -> None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])

    guard = NonFiniteGuard(max_consecutive=3, max_rollbacks=2, rollback=rollback, schedule=schedule)
    poison = {8, 20, 21, 22} | set(range(40, 100))  # one skip; a rollback; then NaN for good
    save()
    log: list[tuple[int, str, int]] = []
    for it in range(100):
        before = ([p.detach().clone() for p in model.parameters()], sched.last_epoch)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
        if it in poison:
            loss = loss * float("nan")  # NaN loss and NaN gradients
        loss.backward()  # type: ignore[no-untyped-call]
        decision = guard.check(loss, model, step=sched.last_epoch)
        log.append((it, decision.action, sched.last_epoch))
        if decision.ok:
            opt.step()  # the Scheduler's hook counts this update
            if sched.last_epoch % 5 == 0:
                save()
            continue
        if decision.action == "skip":
            assert sched.last_epoch == before[1]  # a skipped update does not advance the schedule
            for old, new in zip(before[0], model.parameters(), strict=True):
                assert torch.equal(old, new)
        elif decision.action == "rollback":
            assert decision.schedule is not None
            for p, want in zip(model.state_dict().values(), saved["model"].values(), strict=True):
                assert torch.equal(p, want)  # the callback restored the saved copy
            sched.close()
            for group in opt.param_groups:
                group["initial_lr"] *= decision.lr_scale  # the Scheduler normalises by the schedule's peak
            sched = Scheduler(opt, decision.schedule, count="optimizer")
            sched.load_state_dict(saved["sched"], on_mismatch="continue")
            t = sched.last_epoch
            assert t == saved["sched"]["step"]
            assert opt.param_groups[0]["lr"] == pytest.approx(decision.schedule(t))
            assert decision.schedule(t) == pytest.approx(schedule(t) * 0.5**guard.rollbacks)
        else:
            break
    actions = [a for _, a, _ in log]
    assert actions.count("rollback") == 2 and actions[-1] == "stop"
    assert len(log) == 46 and actions.count("ok") == 46 - len(poison & set(range(46)))
    assert log[8][1] == "skip" and log[9][1] == "ok" and log[9][2] == log[8][2]  # skipped: t did not move
    assert log[22][1] == "rollback"
    assert sched.last_epoch == log[-1][2]  # nothing advanced after the stop
    assert "last loss nan" in guard.stop_message
    assert isinstance(guard.schedule, Cosine) and guard.schedule.peak_lr == pytest.approx(0.025)
