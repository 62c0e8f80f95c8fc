"""Hugging Face presets against the real ``transformers`` schedules stepping a real optimizer."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError, from_dict
from cosanneal.compat import (
    HfCosineCycles,
    hf_cosine_with_hard_restarts,
    hf_cosine_with_min_lr,
    hf_cosine_with_warmup,
    hf_wsd,
)
from cosanneal.schedules.wsd import WarmupStableDecay

torch = pytest.importorskip("torch")
optimization = pytest.importorskip("transformers.optimization")
RTOL, ATOL = 1e-12, 1e-15


def _trace(factory: Callable[[Any], Any], base_lr: float, steps: int) -> np.ndarray:
    """The LR in effect for updates 0..steps-1 of a real SGD optimizer driven by the HF schedule."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=base_lr)
    scheduler = factory(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(steps):
            out.append(opt.param_groups[0]["lr"])
            if t < steps - 1:
                opt.step()
                scheduler.step()
    return np.asarray(out, dtype=np.float64)


def _assert_agrees(ours: np.ndarray, theirs: np.ndarray) -> None:
    bad = ~(np.abs(ours - theirs) <= np.maximum(RTOL * np.abs(theirs), ATOL))
    steps = np.flatnonzero(bad)
    assert not bad.any(), list(zip(steps[:5], ours[bad][:5], theirs[bad][:5], strict=True))


# ---------------------------------------------------------------------------------------------
# get_cosine_schedule_with_warmup
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warmup", "total", "cycles"),
    [
        (0, 100, 0.5),
        (10, 110, 0.5),
        (500, 10_000, 0.5),
        (7, 7, 0.5),
        (10, 210, 1.0),
        (0, 90, 0.25),
        (5, 305, 2.0),
        (3, 103, 1.5),
    ],
)
def test_cosine_with_warmup_every_step(warmup: int, total: int, cycles: float) -> None:
    base_lr = 0.3
    theirs = _trace(
        lambda o: optimization.get_cosine_schedule_with_warmup(o, warmup, total, num_cycles=cycles),
        base_lr,
        total + 200,
    )
    preset = hf_cosine_with_warmup(base_lr, warmup, total, num_cycles=cycles)
    assert isinstance(preset, Cosine if cycles == 0.5 else HfCosineCycles)
    ours = preset(np.arange(theirs.size))
    _assert_agrees(ours[:total], theirs[:total])
    end = max(total, warmup + 1)
    if cycles == 0.5:  # HF climbs back up after num_training_steps; the preset holds 0
        assert (np.diff(theirs[end : end + 3]) > 0).any() and (ours[end:] == 0.0).all()
    else:  # HF keeps oscillating; HfCosineCycles holds the value it reached at the horizon
        assert np.ptp(theirs[end:]) > 0.1 * base_lr and (ours[end:] == ours[end]).all()


# ---------------------------------------------------------------------------------------------
# get_cosine_with_min_lr_schedule_with_warmup
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warmup", "total", "cycles", "floor"),
    [
        (10, 110, 0.5, {"min_lr": 1e-3}),
        (0, 1000, 0.5, {"min_lr_rate": 0.1}),
        (25, 525, 0.5, {"min_lr_rate": 0.0}),
        (10, 210, 1.0, {"min_lr_rate": 0.05}),
        (4, 64, 3.0, {"min_lr": 0.02}),
    ],
)
def test_cosine_with_min_lr_every_step(
    warmup: int, total: int, cycles: float, floor: dict[str, float]
) -> None:
    base_lr = 0.2
    theirs = _trace(
        lambda o: optimization.get_cosine_with_min_lr_schedule_with_warmup(
            o, warmup, total, num_cycles=cycles, **floor
        ),
        base_lr,
        total + 100,
    )
    preset = hf_cosine_with_min_lr(base_lr, warmup, total, num_cycles=cycles, **floor)
    ours = preset(np.arange(theirs.size))
    _assert_agrees(ours[:total], theirs[:total])
    if cycles == 0.5:
        low = theirs[total]
        assert theirs[total + 50] > low and (ours[total:] == ours[total]).all()
        assert ours[total] == pytest.approx(low, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# get_cosine_with_hard_restarts_schedule_with_warmup
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warmup", "total", "cycles"), [(0, 100, 1), (10, 310, 3), (5, 25, 6), (0, 1000, 4), (7, 100, 7)]
)
def test_cosine_with_hard_restarts_every_step(warmup: int, total: int, cycles: int) -> None:
    base_lr = 0.1
    theirs = _trace(
        lambda o: optimization.get_cosine_with_hard_restarts_schedule_with_warmup(o, warmup, total, cycles),
        base_lr,
        total + 50,
    )
    preset = hf_cosine_with_hard_restarts(base_lr, warmup, total, num_cycles=cycles)
    assert isinstance(preset, Cosine)
    ours = preset(np.arange(theirs.size))
    _assert_agrees(ours, theirs)  # both hold 0 past num_training_steps
    assert (ours[total:] == 0.0).all()


def test_hard_restarts_sweep_against_the_lambda() -> None:
    """Every (warmup, length, cycles) with length < 80: restarts on whole steps land where HF's do."""
    lam = optimization._get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda
    for warmup in (0, 3):
        for length in range(1, 80):
            for cycles in range(1, 7):
                total = warmup + length
                preset = hf_cosine_with_hard_restarts(1.0, warmup, total, num_cycles=cycles)
                theirs = np.array(
                    [
                        lam(t, num_warmup_steps=warmup, num_training_steps=total, num_cycles=cycles)
                        for t in range(total + 2)
                    ]
                )
                _assert_agrees(preset(np.arange(total + 2)), theirs)


# ---------------------------------------------------------------------------------------------
# get_wsd_schedule
# ---------------------------------------------------------------------------------------------

SHAPES = ["linear", "cosine", "1-sqrt"]


@pytest.mark.parametrize("warmup_type", SHAPES)
@pytest.mark.parametrize("decay_type", SHAPES)
@pytest.mark.parametrize(("lengths", "ratio"), [((10, 50, 40), 0.0), ((7, 0, 93), 0.1), ((0, 20, 1), 0.5)])
def test_wsd_every_step(
    warmup_type: str, decay_type: str, lengths: tuple[int, int, int], ratio: float
) -> None:
    warmup, stable, decay = lengths
    base_lr = 0.05
    theirs = _trace(
        lambda o: optimization.get_wsd_schedule(
            o,
            warmup,
            decay,
            num_stable_steps=stable,
            warmup_type=warmup_type,
            decay_type=decay_type,
            min_lr_ratio=ratio,
        ),
        base_lr,
        warmup + stable + decay + 30,
    )
    preset = hf_wsd(
        base_lr, warmup, stable, decay, min_lr_ratio=ratio, warmup_type=warmup_type, decay_type=decay_type
    )
    assert isinstance(preset, WarmupStableDecay)
    _assert_agrees(preset(np.arange(theirs.size)), theirs)  # both hold min_lr_ratio * base_lr after
    assert preset(10**9) == base_lr * ratio


def test_wsd_num_training_steps_form() -> None:
    """HF's num_training_steps form is the preset with num_stable_steps = total - warmup - decay."""
    theirs = _trace(lambda o: optimization.get_wsd_schedule(o, 10, 30, num_training_steps=100), 0.1, 120)
    _assert_agrees(hf_wsd(0.1, 10, 60, 30)(np.arange(120)), theirs)


# ---------------------------------------------------------------------------------------------
# HfCosineCycles
# ---------------------------------------------------------------------------------------------


@given(
    warmup=st.integers(0, 50),
    length=st.integers(0, 500),
    cycles=st.floats(0.05, 5.0),
    rate=st.floats(0.0, 1.0),
    steps=st.lists(st.floats(0.0, 1200.0, allow_nan=False), min_size=1, max_size=20),
)
def test_cosine_cycles_properties(
    warmup: int, length: int, cycles: float, rate: float, steps: list[float]
) -> None:
    s = HfCosineCycles(0.5, warmup, warmup + length, num_cycles=cycles, min_lr_rate=rate)
    vec = s(np.asarray(steps))
    assert [s(t) for t in steps] == vec.tolist()  # scalar == vectorised, bit for bit
    assert ((vec >= 0.0) & (vec <= 0.5)).all()
    after = np.asarray(steps)[np.asarray(steps) >= warmup]
    assert (s(after) >= rate * 0.5 * (1 - 1e-15)).all()
    assert s(s.horizon) == s(s.horizon + 1e6)
    assert from_dict(s.to_dict()) == s and pickle.loads(pickle.dumps(s)) == s


def test_cosine_cycles_introspection() -> None:
    s = HfCosineCycles(1.0, num_warmup_steps=10, num_training_steps=110, num_cycles=1.0)
    assert (s.phase(5), s.phase(10), s.phase(110)) == ("warmup", "anneal", "hold")
    assert s.horizon == 110 and s.peak == 1.0 and s.kind == "hf_cosine_cycles"
    assert s(60) == 0.0 and s(110) == 1.0


# ---------------------------------------------------------------------------------------------
# validation: HF's parameter names in the messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hf_cosine_with_warmup(0.1, -1, 10), "num_warmup_steps must be an integer >= 0, got -1"),
        (
            lambda: hf_cosine_with_warmup(0.1, 20, 10),
            "num_training_steps must be >= num_warmup_steps \\(20\\)",
        ),
        (lambda: hf_cosine_with_warmup(0.1, 0, 10, num_cycles=0), "num_cycles must be > 0, got 0"),
        (lambda: hf_cosine_with_min_lr(0.1, 0, 10), "give exactly one of min_lr or min_lr_rate"),
        (lambda: hf_cosine_with_min_lr(0.1, 0, 10, min_lr=0.01, min_lr_rate=0.1), "give exactly one of"),
        (lambda: hf_cosine_with_min_lr(0.1, 0, 10, min_lr=0.2), "min_lr must be <= base_lr"),
        (lambda: hf_cosine_with_min_lr(0.1, 0, 10, min_lr_rate=1.5), "min_lr_rate must be <= 1, got 1.5"),
        (
            lambda: hf_cosine_with_hard_restarts(0.1, 0, 10, num_cycles=1.5),
            "num_cycles must be an integer >= 1",
        ),
        (lambda: hf_cosine_with_hard_restarts(0.1, 0, 10.5), "num_training_steps must be an integer >= 0"),
        (
            lambda: hf_wsd(0.1, 1, 2, 3, warmup_type="cos"),
            "warmup_type must be one of linear, cosine, 1-sqrt",
        ),
        (lambda: hf_wsd(0.1, 1, 2, 3, decay_type="exp"), "decay_type must be one of linear, cosine, 1-sqrt"),
        (lambda: hf_wsd(0.1, 1, -2, 3), "num_stable_steps must be an integer >= 0, got -2"),
        (lambda: hf_wsd(0.1, 1, 2, 3, min_lr_ratio=2.0), "min_lr_ratio must be <= 1, got 2.0"),
    ],
)
def test_validation_uses_hf_names(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        call()
