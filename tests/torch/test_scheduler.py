"""cosanneal.torch.Scheduler: closed-form LRs in real training, update counting, construction errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from cosanneal import Cosine, ScheduleError, SchedulerUsageError
from cosanneal.torch import Scheduler, StepIgnoredWarning

SGDR = Cosine(peak_lr=1.0, warmup_steps=5, cycle_steps=20, cycle_mult=2, min_ratio=0.1, max_cycles=None)


def tiny_model(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    x, y = batch(step)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def two_groups(model: torch.nn.Linear, **kwargs: float) -> torch.optim.SGD:
    return torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.3}, {"params": [model.bias], "lr": 0.05}], **kwargs
    )


# ---- the LR of every update is the closed form ----------------------------------------------


def test_lr_used_by_each_update_is_closed_form_times_group_factor() -> None:
    model = tiny_model()
    opt = two_groups(model)
    sched = Scheduler(opt, SGDR)
    factors = [0.3 / SGDR.peak, 0.05 / SGDR.peak]
    assert sched.last_epoch == 0 and sched.get_last_lr() == [SGDR(0) * f for f in factors]
    for t in range(120):
        expected = [SGDR(t) * f for f in factors]
        assert [g["lr"] for g in opt.param_groups] == expected, t
        assert sched.get_last_lr() == expected and sched.get_lr() == expected
        assert sched.last_epoch == t
        before = model.bias.detach().clone()
        train_step(model, opt, t)
        assert model.bias.grad is not None
        # plain SGD: the update really used the LR the scheduler set for step t
        torch.testing.assert_close(model.bias.detach(), before - expected[1] * model.bias.grad)
        sched.step()
    assert sched.last_epoch == 120


def test_list_of_schedules_gives_absolute_lrs_per_group() -> None:
    model = tiny_model()
    opt = two_groups(model)
    body = Cosine(peak_lr=0.02, warmup_steps=3, cycle_steps=10, min_lr=1e-4)
    head = Cosine(peak_lr=0.5, cycle_steps=7, cycle_mult=1.5, max_cycles=None)
    sched = Scheduler(opt, [body, head])
    assert sched.schedule == (body, head)
    for t in range(60):
        assert sched.get_last_lr() == [body(t), head(t)], t
        train_step(model, opt, t)
        sched.step()
    assert sched.state_dict()["schedule"] == [body.to_dict(), head.to_dict()]


def test_shared_schedule_floor_scales_with_the_group_factor() -> None:
    s = Cosine(peak_lr=2.0, cycle_steps=10, min_lr=0.5)
    opt = two_groups(tiny_model())
    sched = Scheduler(opt, s)
    for _ in range(15):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [0.5 * (0.3 / 2.0), 0.5 * (0.05 / 2.0)]


@given(
    peak=st.floats(1e-4, 10.0),
    lrs=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=4),
    warmup=st.integers(0, 20),
    cycle=st.floats(1.0, 50.0),
    mult=st.sampled_from([1.0, 1.5, 2.0]),
    decay=st.floats(0.3, 1.0),
    steps=st.integers(0, 200),
)
@settings(max_examples=60)
def test_property_lr_after_n_steps_is_schedule_times_factor(
    peak: float, lrs: list[float], warmup: int, cycle: float, mult: float, decay: float, steps: int
) -> None:
    s = Cosine(
        peak, warmup_steps=warmup, cycle_steps=cycle, cycle_mult=mult, peak_decay=decay, max_cycles=None
    )
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)])
    sched = Scheduler(opt, s)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert sched.last_epoch == steps
    assert [g["lr"] for g in opt.param_groups] == [s(steps) * (lr / s.peak) for lr in lrs]


def test_matches_torch_cosine_annealing_lr() -> None:
    """Parity with the peer: CosineAnnealingLR(T_max, eta_min) == Cosine(peak, cycle_steps=T_max, min_lr)."""
    opt_t = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt_o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    peer = CosineAnnealingLR(opt_t, T_max=100, eta_min=0.001)
    ours = Scheduler(opt_o, Cosine(0.1, cycle_steps=100, min_lr=0.001))
    for _ in range(100):
        assert ours.get_last_lr()[0] == pytest.approx(peer.get_last_lr()[0], rel=1e-12, abs=1e-15)
        opt_t.step(), opt_o.step()
        peer.step(), ours.step()


def test_matches_transformers_cosine_with_warmup() -> None:
    from transformers import get_cosine_schedule_with_warmup

    opt_h = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    opt_o = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    peer = get_cosine_schedule_with_warmup(opt_h, num_warmup_steps=10, num_training_steps=110)
    ours = Scheduler(opt_o, Cosine(3e-4, warmup_steps=10, cycle_steps=100))
    for _ in range(111):  # past num_training_steps HF's cosine climbs back up; ours holds
        assert ours.get_last_lr()[0] == pytest.approx(peer.get_last_lr()[0], rel=1e-12, abs=1e-18)
        opt_h.step(), opt_o.step()
        peer.step(), ours.step()


def test_tensor_lr_is_filled_in_place() -> None:
    lr = torch.tensor(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    s = Cosine(1.0, cycle_steps=10)
    sched = Scheduler(opt, s)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr
    initial = float(torch.tensor(0.1))  # torch keeps a float32 copy as the group's initial_lr
    assert lr.item() == pytest.approx(s(1) * initial, rel=1e-6)
    assert sched.get_last_lr() == [s(1) * initial]


# ---- torch integration: warnings, bookkeeping ------------------------------------------------


def test_is_a_torch_lr_scheduler_with_consistent_bookkeeping() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = Scheduler(opt, SGDR)
        assert isinstance(sched, LRScheduler)
        assert sched._step_count == 1 and sched.base_lrs == [0.1]
        for _ in range(3):
            opt.step()
            sched.step()
    assert sched._step_count == 4 and sched.last_epoch == 3
    assert getattr(opt, "_opt_called", False)


def test_step_before_optimizer_step_is_ignored_so_the_first_update_keeps_lr_zero() -> None:
    """Torch would warn and skip the LR of step 0; here no update ran, so ``t`` stays 0."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Scheduler(opt, SGDR)
    with pytest.warns(
        StepIgnoredWarning, match=r"no optimizer update since the previous step\(\) was ignored"
    ):
        sched.step()
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == SGDR(0) * 0.1
    opt.step()
    sched.step()
    assert sched.last_epoch == 1


def test_step_before_optimizer_step_after_close_warns_like_torch() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Scheduler(opt, SGDR)
    sched.close()
    with pytest.warns(UserWarning, match=r"before `optimizer.step\(\)`"):
        sched.step()
    assert sched.last_epoch == 1


def test_step_with_epoch_is_rejected() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Scheduler(opt, SGDR)
    opt.step()
    with pytest.raises(SchedulerUsageError, match="epoch=5"):
        sched.step(5)


def test_adding_a_param_group_later_is_a_clear_error() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Scheduler(opt, SGDR)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    opt.step()
    with pytest.raises(SchedulerUsageError, match="2 param groups"):
        sched.step()


def test_repr_names_schedule_mode_and_step() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    text = repr(Scheduler(opt, Cosine(1.0, cycle_steps=3), count="optimizer"))
    assert text.startswith("Scheduler(Cosine(peak_lr=1.0") and text.endswith("count='optimizer', t=0)")


# ---- construction errors ------------------------------------------------------------------


def _opt(n: int = 1) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(n)], lr=0.1)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (
            Cosine(1.0, cycle_steps="0.5dur"),
            r"^schedule.cycle_steps='0.5dur' is not in steps; pass schedule.bind",
        ),
        (Cosine(1.0, cycle_steps=5, peak_decay=1.5, max_cycles=None), r"^schedule.peak must be a finite"),
        (0.1, r"^schedule must be a cosanneal Schedule, got 0.1$"),
        ([Cosine(1.0, cycle_steps=5)], r"list of one per param group \(2\), got a list of 1$"),
        ([Cosine(1.0, cycle_steps=5), "x"], r"^schedule\[1\] must be a cosanneal Schedule"),
    ],
)
def test_bad_schedule_is_rejected_with_one_line(schedule: object, match: str) -> None:
    with pytest.raises(ScheduleError, match=match) as info:
        Scheduler(_opt(2), schedule)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_bad_count_and_non_optimizer_are_rejected() -> None:
    with pytest.raises(ScheduleError, match=r"^count must be one of manual, optimizer, calls; got 'auto'$"):
        Scheduler(_opt(), SGDR, count="auto")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        Scheduler(object(), SGDR)  # type: ignore[arg-type]


def test_non_finite_group_lr_is_rejected() -> None:
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": math.inf}])
    with pytest.raises(ScheduleError, match=r"param_groups\[0\] lr must be a finite number >= 0, got inf"):
        Scheduler(opt, SGDR)


def test_construction_sets_schedule_at_zero_even_if_scheduler_existed() -> None:
    """A previous torch scheduler's ``initial_lr`` is the reference, as in torch."""
    opt = _opt()
    CosineAnnealingLR(opt, T_max=10)
    opt.param_groups[0]["lr"] = 123.0
    s = Cosine(1.0, warmup_steps=2, warmup_start_lr=0.5, cycle_steps=10)
    Scheduler(opt, s)
    assert opt.param_groups[0]["lr"] == 0.5 * 0.1
