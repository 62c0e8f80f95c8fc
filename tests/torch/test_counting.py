"""count="optimizer": only updates that really ran advance the schedule (GradScaler skips do not)."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from cosanneal import Cosine, SchedulerUsageError
from cosanneal.torch import Scheduler

SCHEDULE = Cosine(
    peak_lr=1.0,
    warmup_steps=3,
    warmup_start_lr=0.1,
    cycle_steps=10,
    cycle_mult=2,
    max_cycles=None,
    min_lr=0.01,
)


def setup(count: str = "optimizer") -> tuple[torch.nn.Linear, torch.optim.SGD, Scheduler]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, Scheduler(opt, SCHEDULE, count=count)  # type: ignore[arg-type]


def amp_step(
    model: torch.nn.Linear, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, poison: bool
) -> None:
    """One GradScaler step; ``poison`` injects an inf gradient, so the scaler skips the update."""
    opt.zero_grad()
    x = torch.ones(4, 3)
    loss = model(x).pow(2).mean()
    scaler.scale(loss).backward()
    if poison:
        assert model.weight.grad is not None
        model.weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()


def test_gradscaler_skipped_update_does_not_advance_real_ones_do() -> None:
    model, opt, sched = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    pattern = [False, True, False, False, True, True, False]
    expected_t = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" misfire
        for poison in pattern:
            before = model.weight.detach().clone()
            amp_step(model, opt, scaler, poison)
            changed = not torch.equal(before, model.weight.detach())
            assert changed is not poison  # the scaler really skipped (or ran) the update
            expected_t += 0 if poison else 1
            assert sched.last_epoch == expected_t
            assert sched.get_last_lr() == [SCHEDULE(expected_t) * 0.1]
            assert opt.param_groups[0]["lr"] == SCHEDULE(expected_t) * 0.1
    assert sched._step_count == 1 + pattern.count(False)


def test_manual_count_advances_on_a_skipped_update() -> None:
    """Why count='optimizer' exists: the usual loop steps the scheduler even when the scaler skipped."""
    model, opt, sched = setup("manual")
    scaler = torch.amp.GradScaler("cpu")
    opt.step()  # a first real update, so torch's ordering warning stays quiet
    sched.step()
    amp_step(model, opt, scaler, poison=True)
    sched.step()
    assert sched.last_epoch == 2


def test_step_in_optimizer_mode_raises_one_line() -> None:
    _, opt, sched = setup()
    opt.step()
    with pytest.raises(
        SchedulerUsageError, match=r"^scheduler.step\(\) called with count='optimizer'"
    ) as info:
        sched.step()
    assert "\n" not in str(info.value)
    assert sched.last_epoch == 1  # not a double step


def test_close_removes_the_hook() -> None:
    _, opt, sched = setup()
    opt.step()
    sched.close()
    sched.close()  # idempotent
    opt.step()
    assert sched.last_epoch == 1
    assert not opt._optimizer_step_post_hooks


def test_hook_goes_away_with_the_scheduler() -> None:
    _, opt, sched = setup()
    assert len(opt._optimizer_step_post_hooks) == 1
    del sched
    gc.collect()
    assert not opt._optimizer_step_post_hooks
    opt.step()  # no dangling hook to call


def test_two_schedulers_on_one_optimizer_each_count() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    a = Scheduler(opt, SCHEDULE, count="optimizer")
    b = Scheduler(opt, SCHEDULE, count="optimizer")
    for _ in range(4):
        opt.step()
    assert a.last_epoch == b.last_epoch == 4
