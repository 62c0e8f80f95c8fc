"""Scheduler state: exact resume, schedule mismatch handling, malformed states, torch.save, pickling."""

from __future__ import annotations

import copy
import io
import json
import pickle
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.lr_scheduler import CosineAnnealingLR

from cosanneal import Cosine, StateError
from cosanneal.torch import Scheduler

SGDR = Cosine(
    peak_lr=0.4,
    warmup_steps=25,
    cycle_steps=100,
    cycle_mult=1.5,
    peak_decay=0.8,
    min_lr=1e-4,
    max_cycles=None,
)
FINITE = Cosine(peak_lr=0.4, warmup_steps=10, cycle_steps=100, cycle_mult=2, max_cycles=3)  # horizon 710


def make(schedule: Any = SGDR, count: str = "manual", lr: float = 0.4) -> tuple[torch.optim.SGD, Scheduler]:
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(
        [{"params": [params[0]], "lr": lr}, {"params": [params[1]], "lr": lr / 4}], momentum=0.9
    )
    return opt, Scheduler(opt, schedule, count=count)  # type: ignore[arg-type]


def advance(opt: torch.optim.Optimizer, sched: Scheduler, n: int) -> list[list[Any]]:
    out = []
    for _ in range(n):
        opt.step()
        if sched.count == "manual":
            sched.step()
        out.append(sched.get_last_lr())
    return out


def test_state_dict_is_exactly_version_step_schedule() -> None:
    opt, sched = make()
    advance(opt, sched, 7)
    assert sched.state_dict() == {"version": 1, "step": 7, "schedule": SGDR.to_dict()}
    json.dumps(sched.state_dict())  # plain data


@given(save_at=st.integers(0, 3000))
@settings(max_examples=5)
def test_resume_mid_cycle_reproduces_10000_more_steps_exactly(save_at: int) -> None:
    opt, sched = make()
    advance(opt, sched, 1)
    advance(opt, sched, save_at)
    state = sched.state_dict()
    opt_state = copy.deepcopy(opt.state_dict())
    reference = advance(opt, sched, 10_000)

    opt2, sched2 = make()  # a fresh process would build these from the config
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == save_at + 1
    assert [g["lr"] for g in opt2.param_groups] == [SGDR(save_at + 1), SGDR(save_at + 1) * 0.25]
    assert advance(opt2, sched2, 10_000) == reference


def test_resume_with_optimizer_counting() -> None:
    opt, sched = make(count="optimizer")
    advance(opt, sched, 137)  # inside the second cycle (restart at 125)
    state, opt_state = sched.state_dict(), copy.deepcopy(opt.state_dict())
    reference = advance(opt, sched, 300)
    opt2, sched2 = make(count="optimizer")
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert advance(opt2, sched2, 300) == reference


def test_load_re_sets_every_group_lr_from_the_closed_form() -> None:
    opt, sched = make()
    advance(opt, sched, 40)
    state = sched.state_dict()
    opt2, sched2 = make()
    for g in opt2.param_groups:
        g["lr"] = 123.0  # e.g. a stale LR restored from elsewhere
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [SGDR(40), SGDR(40) * 0.25]
    assert sched2.get_last_lr() == [SGDR(40), SGDR(40) * 0.25]


def test_lightning_style_single_argument_load() -> None:
    opt, sched = make()
    advance(opt, sched, 3)
    state = sched.state_dict()
    _, sched2 = make()
    Scheduler.load_state_dict(sched2, state)
    assert sched2.last_epoch == 3


def test_torch_save_and_weights_only_load() -> None:
    opt, sched = make([SGDR, FINITE])
    advance(opt, sched, 33)
    buffer = io.BytesIO()
    torch.save({"scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["scheduler"]
    _, sched2 = make([SGDR, FINITE])
    sched2.load_state_dict(loaded)
    assert sched2.last_epoch == 33 and sched2.get_last_lr() == [SGDR(33), FINITE(33)]


# ---- schedule mismatch ------------------------------------------------------------------------


def saved_state(schedule: Any, steps: int) -> dict[str, Any]:
    opt, sched = make(schedule)
    advance(opt, sched, steps)
    return sched.state_dict()


def test_mismatch_error_shows_both_fingerprints_and_the_differing_keys() -> None:
    old = Cosine(0.4, warmup_steps=10, cycle_steps=100)
    new = Cosine(0.4, warmup_steps=10, cycle_steps=200, min_lr=1e-5)
    state = saved_state(old, 50)
    _, sched = make(new)
    with pytest.raises(StateError) as info:
        sched.load_state_dict(state)
    message = str(info.value)
    assert "\n" not in message
    assert old.fingerprint() in message and new.fingerprint() in message
    assert "differing keys: min_lr, cycle_steps" in message
    assert "on_mismatch='continue' or 'rescale'" in message
    assert sched.last_epoch == 0  # nothing changed


def test_mismatch_continue_keeps_the_new_schedule_at_the_saved_step() -> None:
    new = Cosine(0.4, warmup_steps=10, cycle_steps=200)
    state = saved_state(FINITE, 123)
    _, sched = make(new)
    sched.load_state_dict(state, on_mismatch="continue")
    assert sched.last_epoch == 123 and sched.schedule is new
    assert sched.get_last_lr() == [new(123), new(123) * 0.25]
    assert sched.state_dict()["schedule"] == new.to_dict()


def test_mismatch_rescale_keeps_the_fraction_of_progress() -> None:
    new = Cosine(0.4, warmup_steps=10, cycle_steps=50)  # horizon 60; FINITE's horizon is 710
    assert FINITE.horizon == 710 and new.horizon == 60
    state = saved_state(FINITE, 355)
    _, sched = make(new)
    sched.load_state_dict(state, on_mismatch="rescale")
    assert sched.last_epoch == 30 == round(355 / 710 * 60)
    assert sched.get_last_lr() == [new(30), new(30) * 0.25]


def test_rescale_needs_finite_horizons() -> None:
    state = saved_state(SGDR, 10)
    _, sched = make(FINITE)
    with pytest.raises(StateError, match="the saved schedule restarts forever"):
        sched.load_state_dict(state, on_mismatch="rescale")
    _, sched = make(SGDR)
    with pytest.raises(StateError, match="the current schedule restarts forever"):
        sched.load_state_dict(saved_state(FINITE, 10), on_mismatch="rescale")


def test_equal_schedule_loads_regardless_of_mode() -> None:
    state = saved_state(FINITE, 77)
    for mode in ("error", "continue", "rescale"):
        _, sched = make(FINITE)
        sched.load_state_dict(state, on_mismatch=mode)  # type: ignore[arg-type]
        assert sched.last_epoch == 77


def test_list_length_mismatch() -> None:
    state = saved_state([FINITE, SGDR], 5)
    _, sched = make(FINITE)
    with pytest.raises(StateError, match=r"saved 2 schedule\(s\), this scheduler has 1"):
        sched.load_state_dict(state)
    sched.load_state_dict(state, on_mismatch="continue")
    assert sched.last_epoch == 5


def test_list_element_mismatch_names_the_group() -> None:
    state = saved_state([FINITE, SGDR], 5)
    _, sched = make([FINITE, FINITE])
    with pytest.raises(StateError, match=r"schedule\[1\] saved fingerprint"):
        sched.load_state_dict(state)


def test_bad_on_mismatch_value() -> None:
    _, sched = make()
    with pytest.raises(
        StateError, match=r"^on_mismatch must be one of error, continue, rescale; got 'ignore'$"
    ):
        sched.load_state_dict(saved_state(SGDR, 1), on_mismatch="ignore")  # type: ignore[arg-type]


# ---- malformed states -------------------------------------------------------------------------


def _torch_state() -> dict[str, Any]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return CosineAnnealingLR(opt, T_max=10).state_dict()


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ([1, 2], r"^scheduler state must be a mapping, got list$"),
        (
            _torch_state(),
            r"^not a cosanneal Scheduler state: expected keys version, step, schedule; got keys: ",
        ),
        (
            {"version": 2, "step": 0, "schedule": SGDR.to_dict()},
            r"^scheduler state version must be 1, got 2$",
        ),
        ({"version": True, "step": 0, "schedule": SGDR.to_dict()}, r"version must be 1, got True$"),
        ({"version": 1, "step": 0}, r"^scheduler state has missing key 'schedule'"),
        (
            {"version": 1, "step": 0, "schedule": SGDR.to_dict(), "x": 1},
            r"^scheduler state has unexpected key 'x'",
        ),
        ({"version": 1, "step": -1, "schedule": SGDR.to_dict()}, r"step must be an integer >= 0, got -1$"),
        ({"version": 1, "step": 1.5, "schedule": SGDR.to_dict()}, r"step must be an integer >= 0, got 1.5$"),
        (
            {"version": 1, "step": 0, "schedule": {"kind": "nope"}},
            r"^scheduler state schedule is invalid: kind must",
        ),
        (
            {"version": 1, "step": 0, "schedule": {"kind": "cosine", "peak_lr": 1.0}},
            r"is invalid: cycle_steps",
        ),
        ({"version": 1, "step": 0, "schedule": []}, r"^scheduler state schedule is an empty list$"),
    ],
)
def test_malformed_state_is_a_state_error(state: Any, match: str) -> None:
    _, sched = make()
    with pytest.raises(StateError, match=match) as info:
        sched.load_state_dict(state)
    assert "\n" not in str(info.value)
    assert sched.last_epoch == 0


# ---- pickling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["manual", "optimizer"])
@pytest.mark.parametrize("clone", [lambda o: pickle.loads(pickle.dumps(o)), copy.deepcopy])
def test_pickled_scheduler_continues_identically(count: str, clone: Any) -> None:
    opt, sched = make(count=count)
    advance(opt, sched, 17)
    copied = clone(sched)
    assert copied.last_epoch == 17 and copied.count == count
    assert copied.optimizer is not opt
    assert advance(copied.optimizer, copied, 50) == advance(opt, sched, 50)
    assert copied.last_epoch == sched.last_epoch == 67
