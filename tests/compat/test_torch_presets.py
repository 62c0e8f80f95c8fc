"""PyTorch presets against the real ``torch.optim.lr_scheduler`` classes stepping a real optimizer."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cosanneal import Cosine, ScheduleError
from cosanneal.compat import (
    torch_cosine_annealing_lr,
    torch_cosine_annealing_warm_restarts,
    torch_linear_warmup_cosine,
    torch_one_cycle_lr,
)
from cosanneal.schedules.onecycle import OneCycle

torch = pytest.importorskip("torch")
sched = torch.optim.lr_scheduler
RTOL, ATOL = 1e-12, 1e-15


def _optimizer(base_lr: float, adam: bool = False) -> Any:
    params = [torch.nn.Parameter(torch.zeros(2))]
    if adam:
        return torch.optim.Adam(params, lr=base_lr)
    return torch.optim.SGD(params, lr=base_lr, momentum=0.9)


def _trace(optimizer: Any, scheduler: Any, steps: int, key: str = "lr") -> np.ndarray:
    """The group value in effect for updates 0..steps-1 (scheduler stepped after each update)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(steps):
            value = optimizer.param_groups[0][key]
            out.append(value[0] if key == "betas" else value)
            if t < steps - 1:
                optimizer.step()
                scheduler.step()
    return np.asarray(out, dtype=np.float64)


def _assert_agrees(ours: np.ndarray, theirs: np.ndarray) -> None:
    bad = ~(np.abs(ours - theirs) <= np.maximum(RTOL * np.abs(theirs), ATOL))
    steps = np.flatnonzero(bad)
    assert not bad.any(), list(zip(steps[:5], ours[bad][:5], theirs[bad][:5], strict=True))


def _make(factory: Callable[[Any], Any], base_lr: float, adam: bool = False) -> tuple[Any, Any]:
    opt = _optimizer(base_lr, adam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return opt, factory(opt)


# ---------------------------------------------------------------------------------------------
# CosineAnnealingLR
# ---------------------------------------------------------------------------------------------

COSINE_CASES = [(0.1, 100, 0.0), (0.5, 37, 1e-3), (1.0, 1000, 0.0), (2.0, 7, 0.5), (0.01, 1, 0.0)]


@pytest.mark.parametrize(("base_lr", "t_max", "eta_min"), COSINE_CASES)
def test_cosine_annealing_lr_every_step(base_lr: float, t_max: int, eta_min: float) -> None:
    opt, peer = _make(lambda o: sched.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), base_lr)
    theirs = _trace(opt, peer, 3 * t_max + 2)
    preset = torch_cosine_annealing_lr(base_lr, T_max=t_max, eta_min=eta_min)
    assert isinstance(preset, Cosine)
    steps = np.arange(theirs.size)
    ours = preset(steps)
    _assert_agrees(ours[: t_max + 1], theirs[: t_max + 1])
    # past T_max PyTorch climbs back up (period 2 T_max); the preset holds eta_min
    assert theirs[t_max + 1] > eta_min and theirs[2 * t_max] == pytest.approx(base_lr, rel=1e-9)
    assert (ours[t_max:] == eta_min).all()


# ---------------------------------------------------------------------------------------------
# CosineAnnealingWarmRestarts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_lr", "t_0", "t_mult", "eta_min"),
    [(0.1, 10, 1, 0.0), (0.1, 10, 2, 0.0), (1.0, 7, 3, 1e-3), (0.3, 1, 2, 0.0), (0.05, 50, 2, 1e-4)],
)
def test_warm_restarts_every_step(base_lr: float, t_0: int, t_mult: int, eta_min: float) -> None:
    n = 800
    opt, peer = _make(
        lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=eta_min), base_lr
    )
    theirs = _trace(opt, peer, n)
    preset = torch_cosine_annealing_warm_restarts(base_lr, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    assert preset.horizon is None  # restarts forever, like PyTorch
    _assert_agrees(preset(np.arange(n)), theirs)
    peaks = [t for t in range(1, n) if theirs[t] > theirs[t - 1] or abs(theirs[t] - base_lr) <= 1e-15]
    assert preset.restarts(n) == peaks


# ---------------------------------------------------------------------------------------------
# SequentialLR(LinearLR, CosineAnnealingLR)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_lr", "start_factor", "warmup_iters", "t_max", "eta_min"),
    [
        (0.1, 0.1, 5, 50, 0.0),
        (1.0, 0.5, 20, 100, 0.01),
        (0.3, 1.0, 3, 10, 0.0),
        (0.2, 1e-3, 250, 1000, 1e-5),
        (0.2, 0.25, 1, 30, 0.0),
    ],
)
def test_linear_warmup_cosine_every_step(
    base_lr: float, start_factor: float, warmup_iters: int, t_max: int, eta_min: float
) -> None:
    def factory(o: Any) -> Any:
        warm = sched.LinearLR(o, start_factor=start_factor, total_iters=warmup_iters)
        cos = sched.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min)
        return sched.SequentialLR(o, [warm, cos], milestones=[warmup_iters])

    opt, peer = _make(factory, base_lr)
    end = warmup_iters + t_max
    theirs = _trace(opt, peer, end + t_max)
    preset = torch_linear_warmup_cosine(base_lr, start_factor, warmup_iters, T_max=t_max, eta_min=eta_min)
    ours = preset(np.arange(theirs.size))
    _assert_agrees(ours[: end + 1], theirs[: end + 1])
    assert ours[warmup_iters] == base_lr  # the cosine restarts from base_lr at the milestone
    assert theirs[end + 2] > eta_min and (ours[end:] == eta_min).all()


# ---------------------------------------------------------------------------------------------
# OneCycleLR
# ---------------------------------------------------------------------------------------------

ONECYCLE_CASES: list[dict[str, Any]] = [
    {"max_lr": 0.1, "total_steps": 100},
    {"max_lr": 0.1, "total_steps": 1000, "anneal_strategy": "linear"},
    {"max_lr": 1.0, "total_steps": 37, "pct_start": 0.25, "three_phase": True},
    {"max_lr": 0.5, "total_steps": 250, "pct_start": 0.5, "three_phase": True, "anneal_strategy": "linear"},
    {"max_lr": 0.3, "total_steps": 10, "pct_start": 0.05, "div_factor": 3.0, "final_div_factor": 0.5},
    {"max_lr": 2.0, "total_steps": 77, "pct_start": 0.0},
    {"max_lr": 0.01, "total_steps": 64, "pct_start": 1.0},
    {"max_lr": 0.2, "total_steps": 1},
    {"max_lr": 0.4, "total_steps": 120, "base_momentum": 0.8, "max_momentum": 0.99},
]


@pytest.mark.parametrize("kwargs", ONECYCLE_CASES)
@pytest.mark.parametrize("adam", [False, True])
def test_one_cycle_lr_and_momentum_every_step(kwargs: dict[str, Any], adam: bool) -> None:
    total = kwargs["total_steps"]
    opt, peer = _make(lambda o: sched.OneCycleLR(o, **kwargs), 1.0, adam=adam)
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(total):
            group = opt.param_groups[0]
            history.append((group["lr"], group["betas"][0] if adam else group["momentum"]))
            if t < total - 1:
                opt.step()
                peer.step()
    theirs = np.asarray(history)
    preset = torch_one_cycle_lr(**kwargs)
    assert isinstance(preset, OneCycle)
    steps = np.arange(total)
    _assert_agrees(preset(steps), theirs[:, 0])
    _assert_agrees(preset.momentum(steps), theirs[:, 1])


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_past_the_horizon(strategy: str) -> None:
    """PyTorch extrapolates once at step total_steps, then raises; the preset holds the final LR."""
    total = 100
    opt, peer = _make(
        lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=total, anneal_strategy=strategy), 1.0
    )
    theirs = _trace(opt, peer, total + 1)
    preset = torch_one_cycle_lr(0.1, total_steps=total, anneal_strategy=strategy)
    final = 0.1 / 25.0 / 1e4
    assert preset(total - 1) == pytest.approx(final, rel=1e-12)
    assert preset(total) == preset(10**9) == preset(total - 1)
    assert theirs[total] != pytest.approx(final, rel=1e-3)  # PyTorch's extrapolated step
    if strategy == "linear":
        assert theirs[total] < 0.0  # a negative LR after the last update
    with warnings.catch_warnings(), pytest.raises(ValueError, match="Tried to step"):
        warnings.simplefilter("ignore")
        peer.step()


def test_one_cycle_epochs_and_steps_per_epoch() -> None:
    assert torch_one_cycle_lr(0.1, epochs=4, steps_per_epoch=25) == torch_one_cycle_lr(0.1, 100)
    assert torch_one_cycle_lr(0.1, total_steps=50, epochs=4, steps_per_epoch=25).total_steps == 50


# ---------------------------------------------------------------------------------------------
# validation: PyTorch's parameter names in the messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: torch_cosine_annealing_lr(0.1, T_max=0), "T_max must be an integer >= 1, got 0"),
        (lambda: torch_cosine_annealing_lr(0.1, T_max=10, eta_min=0.2), "eta_min must be <= base_lr"),
        (lambda: torch_cosine_annealing_lr(0.0, T_max=10), "base_lr must be > 0, got 0.0"),
        (
            lambda: torch_cosine_annealing_warm_restarts(0.1, T_0=10, T_mult=0),
            "T_mult must be an integer >= 1",
        ),
        (lambda: torch_cosine_annealing_warm_restarts(0.1, T_0=2.5), "T_0 must be an integer >= 1, got 2.5"),
        (lambda: torch_linear_warmup_cosine(0.1, 0.0, 5, 10), "start_factor must be > 0, got 0.0"),
        (lambda: torch_linear_warmup_cosine(0.1, 1.5, 5, 10), "start_factor must be <= 1, got 1.5"),
        (lambda: torch_linear_warmup_cosine(0.1, 0.5, -1, 10), "warmup_iters must be an integer >= 0"),
        (lambda: torch_one_cycle_lr(0.1), "give total_steps, or epochs and steps_per_epoch"),
        (
            lambda: torch_one_cycle_lr(0.1, 10, pct_start=0.1),
            "pct_start \\* total_steps must not be exactly 1",
        ),
        (lambda: torch_one_cycle_lr(0.1, 10, pct_start=1.5), "pct_start must be <= 1, got 1.5"),
        (lambda: torch_one_cycle_lr(0.1, 10, anneal_strategy="cosine"), "anneal_strategy must be one of cos"),
        (lambda: torch_one_cycle_lr(0.1, 0), "total_steps must be an integer >= 1, got 0"),
        (lambda: torch_one_cycle_lr(0.1, epochs=0, steps_per_epoch=3), "epochs must be an integer >= 1"),
    ],
)
def test_validation_uses_torch_names(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        call()


def test_torch_really_divides_by_zero_where_we_refuse() -> None:
    """pct_start * total_steps == 1 is refused at construction because PyTorch fails at step 0."""
    opt = _optimizer(1.0)
    with pytest.raises(ZeroDivisionError):
        sched.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.1)
