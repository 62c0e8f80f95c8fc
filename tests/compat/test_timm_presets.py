"""timm preset against the real ``timm.scheduler.CosineLRScheduler`` (``step_update`` per update)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cosanneal import Cosine, ScheduleError
from cosanneal.compat import timm_cosine

torch = pytest.importorskip("torch")
RTOL, ATOL = 1e-12, 1e-15


def _timm_trace(base_lr: float, steps: int, **kwargs: Any) -> tuple[np.ndarray, Exception | None]:
    """LR after ``step_update(num_updates=t)`` for t = 0..steps-1; stops at timm's first error."""
    from peers import timm_scheduler_module

    module = timm_scheduler_module("cosine_lr")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=base_lr)
    scheduler = module.CosineLRScheduler(opt, t_in_epochs=False, **kwargs)
    out: list[float] = []
    for t in range(steps):
        try:
            scheduler.step_update(num_updates=t)
        except ValueError as exc:  # timm's log() leaves its domain when cycle_mul < 1
            return np.asarray(out), exc
        out.append(opt.param_groups[0]["lr"])
    return np.asarray(out), None


def _mismatches(ours: np.ndarray, theirs: np.ndarray) -> list[int]:
    bad = ~(np.abs(ours - theirs) <= np.maximum(RTOL * np.abs(theirs), ATOL))
    return [int(t) for t in np.flatnonzero(bad)]


CASES: list[dict[str, Any]] = [
    {"t_initial": 200},
    {"t_initial": 100, "lr_min": 1e-5, "warmup_t": 10, "warmup_lr_init": 1e-6},
    {"t_initial": 100, "warmup_t": 10, "warmup_prefix": True},
    {"t_initial": 10, "cycle_mul": 2.0, "cycle_limit": 6},
    {"t_initial": 10, "cycle_mul": 1.5, "cycle_limit": 4, "cycle_decay": 0.5, "lr_min": 1e-3},
    {
        "t_initial": 30,
        "cycle_mul": 1.5,
        "cycle_limit": 3,
        "warmup_t": 5,
        "warmup_prefix": True,
        "k_decay": 2.0,
    },
    {"t_initial": 30, "cycle_limit": 3, "warmup_t": 5, "k_decay": 0.5, "cycle_decay": 0.7, "lr_min": 1e-3},
    {"t_initial": 64, "cycle_mul": 0.75, "cycle_limit": 4, "warmup_t": 8, "warmup_lr_init": 1e-3},
    {"t_initial": 20, "cycle_mul": 0.5, "cycle_limit": 4, "warmup_t": 3, "warmup_lr_init": 1e-4},
    {"t_initial": 50, "cycle_limit": 5, "cycle_decay": 0.8, "warmup_t": 20, "warmup_prefix": True},
]


@pytest.mark.parametrize("kwargs", CASES)
def test_every_step_of_the_horizon(kwargs: dict[str, Any]) -> None:
    base_lr = 0.1
    preset = timm_cosine(base_lr, **kwargs)
    assert isinstance(preset, Cosine)
    horizon = preset.horizon
    assert horizon is not None
    steps = math.floor(horizon) + 60
    theirs, error = _timm_trace(base_lr, steps, **kwargs)
    ours = preset(np.arange(steps))
    assert _mismatches(ours[: theirs.size], theirs) == []
    lr_min = kwargs.get("lr_min", 0.0)
    assert (ours[math.ceil(horizon) :] == lr_min).all()  # both hold lr_min after cycle_limit cycles
    if error is not None:  # cycle_mul < 1: timm raises from t_initial / (1 - cycle_mul) on
        limit = kwargs["t_initial"] / (1.0 - kwargs["cycle_mul"])
        assert horizon < theirs.size <= limit + 1


def test_cycle_mul_0_8_restarts_exactly_where_timm_misses_them() -> None:
    """cycle_mul=0.8, t_initial=100: cycles start at exactly 100, 180 and 244.

    timm computes the cycle index as floor(log(1 - t/100 * 0.2, 0.8)), which rounds to the previous
    cycle at 180 and 244 and gives those two steps that cycle's end value lr_min. Everywhere else
    the two agree to 1e-12.
    """
    kwargs: dict[str, Any] = {"t_initial": 100, "cycle_mul": 0.8, "cycle_limit": 4}
    preset = timm_cosine(0.1, **kwargs)
    theirs, error = _timm_trace(0.1, 520, **kwargs)
    ours = preset(np.arange(theirs.size))
    assert preset.restarts(10**6) == [100, 180, 244]
    assert _mismatches(ours, theirs) == [180, 244]
    assert theirs[180] == theirs[244] == 0.0  # timm: end of the previous cycle
    assert ours[180] == ours[244] == 0.1  # exact restart at the new cycle's peak
    assert theirs[181] == pytest.approx(ours[181], rel=1e-12)  # timm restarts one step late
    assert isinstance(error, ValueError) and theirs.size == 501


def test_warmup_prefix_both_ways_differ_as_timm_does() -> None:
    kw: dict[str, Any] = {"t_initial": 40, "warmup_t": 10, "warmup_lr_init": 0.01}
    over = timm_cosine(0.1, **kw, warmup_prefix=False)
    before = timm_cosine(0.1, **kw, warmup_prefix=True)
    assert over.horizon == 40 and before.horizon == 50
    assert over(10) < 0.1 == before(10)  # overlaid: the cosine has already run 10 steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"t_initial": 0}, "t_initial must be an integer >= 1, got 0"),
        ({"t_initial": 10, "lr_min": 0.5}, "lr_min must be <= base_lr"),
        ({"t_initial": 10, "warmup_lr_init": 0.5}, "warmup_lr_init must be <= base_lr"),
        ({"t_initial": 10, "cycle_mul": 0.0}, "cycle_mul must be > 0, got 0.0"),
        ({"t_initial": 10, "cycle_decay": -1.0}, "cycle_decay must be > 0"),
        ({"t_initial": 10, "cycle_limit": 0}, "cycle_limit must be an integer >= 1, got 0"),
        ({"t_initial": 10, "k_decay": 0}, "k_decay must be > 0"),
        (
            {"t_initial": 10, "warmup_t": 10},
            "warmup_t must be < t_initial \\(10\\) when warmup_prefix is false",
        ),
        ({"t_initial": 10, "warmup_prefix": 1}, "warmup_prefix must be true or false"),
    ],
)
def test_validation_uses_timm_names(kwargs: dict[str, Any], message: str) -> None:
    call: Callable[[], Any] = lambda: timm_cosine(0.1, **kwargs)  # noqa: E731
    with pytest.raises(ScheduleError, match=message):
        call()
