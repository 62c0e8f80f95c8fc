"""Momentum / beta1 annealing inverse to the LR."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError
from cosanneal.torch import Scheduler
from cosanneal.torch.scheduler import schedule_floor

HIGH, LOW = 0.95, 0.85


def expected_m(lr: float, floor: float, peak: float) -> float:
    frac = min(max((lr - floor) / (peak - floor), 0.0), 1.0)
    return HIGH - (HIGH - LOW) * frac


def train(opt: torch.optim.Optimizer, sched: Scheduler, model: torch.nn.Module, steps: int) -> list[float]:
    """Real updates; returns the momentum each update used."""
    used = []
    for step in range(steps):
        group = opt.param_groups[0]
        used.append(group["betas"][0] if "betas" in group else group["momentum"])
        opt.zero_grad()
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
        model(x).pow(2).mean().backward()
        opt.step()
        sched.step()
    return used


def test_sgd_momentum_follows_the_inverse_formula() -> None:
    s = Cosine(peak_lr=0.5, warmup_steps=4, cycle_steps=20, min_lr=0.05)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = Scheduler(opt, s, momentum=(HIGH, LOW))
    used = train(opt, sched, model, 30)
    assert used == [expected_m(s(t), 0.05, 0.5) for t in range(30)]
    assert used[4] == LOW  # at the peak
    assert used[24] == HIGH == used[29]  # at the floor and in the hold
    assert used[0] == HIGH  # warmup starts below the floor: clipped to max_m


def test_adamw_beta1_is_annealed_and_beta2_kept() -> None:
    s = Cosine(peak_lr=1e-3, cycle_steps=10, cycle_mult=2, max_cycles=None)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.98))
    sched = Scheduler(opt, s, momentum=(HIGH, LOW))
    used = train(opt, sched, model, 40)
    assert used == [expected_m(s(t), 0.0, 1e-3) for t in range(40)]
    assert used[10] == LOW  # restart
    assert opt.param_groups[0]["betas"][1] == 0.98


def test_shared_schedule_uses_the_unscaled_shape_for_every_group() -> None:
    s = Cosine(peak_lr=1.0, cycle_steps=8)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD(
        [{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.01}], momentum=0.9
    )
    sched = Scheduler(opt, s, momentum=(HIGH, LOW))
    for t in range(10):
        assert [g["momentum"] for g in opt.param_groups] == [expected_m(s(t), 0.0, 1.0)] * 2
        opt.step()
        sched.step()


def test_list_of_schedules_uses_each_group_schedule() -> None:
    a, b = Cosine(0.1, cycle_steps=6, min_lr=0.01), Cosine(1.0, warmup_steps=3, cycle_steps=6)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.1, momentum=0.9)
    sched = Scheduler(opt, [a, b], momentum=(HIGH, LOW))
    for t in range(10):
        assert [g["momentum"] for g in opt.param_groups] == [
            expected_m(a(t), 0.01, 0.1),
            expected_m(b(t), 0.0, 1.0),
        ]
        opt.step()
        sched.step()


def test_momentum_is_restored_by_load_state_dict() -> None:
    s = Cosine(peak_lr=1.0, cycle_steps=50)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched = Scheduler(opt, s, momentum=(HIGH, LOW))
    sched.load_state_dict({"version": 1, "step": 25, "schedule": s.to_dict()})
    assert opt.param_groups[0]["momentum"] == expected_m(s(25), 0.0, 1.0)


@given(t=st.integers(0, 10**6), decay=st.floats(0.2, 1.0), ratio=st.floats(0.0, 0.5))
@settings(max_examples=50)
def test_property_momentum_stays_in_range_and_moves_against_the_lr(
    t: int, decay: float, ratio: float
) -> None:
    s = Cosine(
        1.0,
        warmup_steps=5,
        cycle_steps=30,
        cycle_mult=1.5,
        peak_decay=decay,
        min_ratio=ratio,
        max_cycles=None,
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched = Scheduler(opt, s, momentum=(HIGH, LOW))
    lrs, ms = [], []
    for step in (t, t + 1):
        sched.load_state_dict({"version": 1, "step": step, "schedule": s.to_dict()})
        lrs.append(opt.param_groups[0]["lr"])
        ms.append(opt.param_groups[0]["momentum"])
    assert all(LOW <= m <= HIGH for m in ms)
    if lrs[1] > lrs[0]:
        assert ms[1] <= ms[0]
    elif lrs[1] < lrs[0]:
        assert ms[1] >= ms[0]


def test_schedule_floor_of_decaying_min_ratio_cosine() -> None:
    assert (
        schedule_floor(Cosine(1.0, cycle_steps=5, min_ratio=0.1, peak_decay=0.5, max_cycles=3)) == 0.1 * 0.25
    )
    assert schedule_floor(Cosine(1.0, cycle_steps=5, min_ratio=0.1, peak_decay=0.5, max_cycles=None)) == 0.0
    assert schedule_floor(Cosine(1.0, cycle_steps=5, min_lr=0.2, peak_decay=0.5, max_cycles=None)) == 0.2


@pytest.mark.parametrize(
    ("momentum", "match"),
    [
        (
            (0.85, 0.95),
            r"^momentum must be a pair \(max_m, min_m\) with 0 <= min_m <= max_m < 1, got \(0.85, 0.95\)$",
        ),
        ((1.0, 0.9), r"got \(1.0, 0.9\)$"),
        ((0.9,), r"got \(0.9,\)$"),
        (0.9, r"got 0.9$"),
    ],
)
def test_bad_momentum_pair(momentum: object, match: str) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    with pytest.raises(ScheduleError, match=match):
        Scheduler(opt, Cosine(1.0, cycle_steps=5), momentum=momentum)  # type: ignore[arg-type]


def test_optimizer_without_momentum_or_betas() -> None:
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(
        ScheduleError, match=r"needs an optimizer with 'momentum' \(SGD\) or 'betas'.*Adagrad has neither$"
    ):
        Scheduler(opt, Cosine(1.0, cycle_steps=5), momentum=(HIGH, LOW))
