"""Update counting: count="optimizer" (the hook advances t) and count="manual" (step() advances after a real update)."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import pytest
import torch

from cosanneal import Cosine, SchedulerUsageError
from cosanneal.torch import Scheduler, StepIgnoredWarning
from cosanneal.torch.scheduler import STALL_LIMIT

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


# ---- count="manual": a step() with no update since the last one does not advance -------------


def test_manual_loop_is_exact_and_quiet() -> None:
    """The plain loop (optimizer.step(); scheduler.step()) advances once per update, no warning."""
    model, opt, sched = setup("manual")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(40):
            assert opt.param_groups[0]["lr"] == SCHEDULE(t) * 0.1
            amp_step(model, opt, scaler, poison=False)
            sched.step()
    assert sched.last_epoch == 40 and sched._step_count == 41


def test_manual_step_after_a_gradscaler_skip_is_ignored_and_warned_once() -> None:
    """The usual AMP loop calls scheduler.step() even when the scaler skipped: t counts real updates."""
    model, opt, sched = setup("manual")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    pattern = [False, True, False, True, True, False, False]
    expected_t = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for poison in pattern:
            amp_step(model, opt, scaler, poison)
            sched.step()
            expected_t += 0 if poison else 1
            assert sched.last_epoch == expected_t
            assert opt.param_groups[0]["lr"] == SCHEDULE(expected_t) * 0.1
    messages = [str(w.message) for w in caught if issubclass(w.category, StepIgnoredWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(
        "scheduler.step() with no optimizer update since the previous step() was ignored (t stays 1)"
    )
    assert caught[0].filename == __file__  # points at the caller's line


def test_manual_second_step_for_one_update_is_ignored() -> None:
    """A wrapper that steps the scheduler twice per update (as accelerate does per process)."""
    _, opt, sched = setup("manual")
    with pytest.warns(StepIgnoredWarning):
        for _ in range(5):
            opt.step()
            sched.step()
            sched.step()
    assert sched.last_epoch == 5 and sched.get_last_lr() == [SCHEDULE(5) * 0.1]


def accelerate_like_wrapper(scheduler: Scheduler, optimizers: list[torch.optim.Optimizer], calls: int) -> Any:
    """A stand-in for accelerate's AcceleratedScheduler (same module name): ``calls`` steps per step()."""
    namespace: dict[str, Any] = {"__name__": "accelerate.scheduler"}
    exec(
        "class AcceleratedScheduler:\n"
        "    def __init__(self, scheduler, optimizers, calls):\n"
        "        self.scheduler, self.optimizers, self.calls = scheduler, optimizers, calls\n"
        "    def step(self):\n"
        "        for _ in range(self.calls):\n"
        "            self.scheduler.step()\n",
        namespace,
    )
    return namespace["AcceleratedScheduler"](scheduler, optimizers, calls)


def test_accelerates_extra_per_process_calls_are_ignored_silently() -> None:
    _, opt, sched = setup("manual")
    wrapper = accelerate_like_wrapper(sched, [opt], calls=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapper.step()  # before any update (a step() per micro-batch while accumulating)
        for _ in range(3):
            opt.step()
            wrapper.step()
    assert sched.last_epoch == 3


def test_accelerate_stepping_a_scheduler_on_an_optimizer_it_does_not_gate_on_is_not_silent() -> None:
    """The scheduler was built on another optimizer than the one prepared and stepped."""
    _, _, sched = setup("manual")
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    wrapper = accelerate_like_wrapper(sched, [other], calls=STALL_LIMIT - 1)
    with pytest.warns(StepIgnoredWarning):
        other.step()
        wrapper.step()
    wrapper.calls = 1
    with pytest.raises(SchedulerUsageError, match="times in a row with no update"):
        wrapper.step()


def test_manual_step_after_several_updates_advances_once() -> None:
    """``t`` counts step() calls that follow an update; the caller decides, as with torch."""
    _, opt, sched = setup("manual")
    for _ in range(3):
        opt.step()
    sched.step()
    assert sched.last_epoch == 1


def test_manual_steps_with_no_update_at_all_raise_at_the_stall_limit() -> None:
    """A loop that steps another optimizer (or none) would leave the schedule stuck: an error."""
    _, opt, sched = setup("manual")
    opt.step()
    sched.step()
    with pytest.warns(StepIgnoredWarning):
        for _ in range(STALL_LIMIT - 1):
            sched.step()
    with pytest.raises(
        SchedulerUsageError, match=rf"^scheduler.step\(\) was called {STALL_LIMIT} times in a row"
    ) as info:
        sched.step()
    assert "\n" not in str(info.value) and "SGD" in str(info.value)
    assert sched.last_epoch == 1
    opt.step()  # an update resets the count
    sched.step()
    for _ in range(STALL_LIMIT - 1):
        sched.step()
    assert sched.last_epoch == 2


def test_manual_after_close_counts_every_call() -> None:
    _, opt, sched = setup("manual")
    opt.step()
    sched.step()
    sched.close()
    assert not opt._optimizer_step_post_hooks
    sched.step()
    sched.step()
    assert sched.last_epoch == 3


def test_calls_count_advances_at_every_call_and_has_no_hook() -> None:
    """For updates that run without optimizer.step() in Python (a replayed CUDA graph)."""
    _, opt, sched = setup("calls")
    assert not opt._optimizer_step_post_hooks and sched.count == "calls"
    opt.step()  # e.g. the warm-up before a graph capture
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(1, 6):
            sched.step()
            assert sched.last_epoch == t and opt.param_groups[0]["lr"] == SCHEDULE(t) * 0.1


def test_load_state_dict_needs_a_new_update_before_the_next_advance() -> None:
    _, opt, sched = setup("manual")
    opt.step()
    sched.load_state_dict({"version": 1, "step": 10, "schedule": SCHEDULE.to_dict()})
    with pytest.warns(StepIgnoredWarning):
        sched.step()
    assert sched.last_epoch == 10
    opt.step()
    sched.step()
    assert sched.last_epoch == 11


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


@pytest.mark.parametrize("count", ["manual", "optimizer"])
def test_hook_goes_away_with_the_scheduler(count: str) -> None:
    _, opt, sched = setup(count)
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
