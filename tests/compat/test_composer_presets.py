"""Composer preset against Composer's documented formula (Composer itself cannot be installed here).

Reference: ``CosineAnnealingWithWarmupScheduler`` in ``composer/optim/scheduler.py`` of
mosaicml/composer at commit 0f1df8bbb65a6c2eadff4093e85a1f00908d30ef, docstring formula

    alpha(t) = t / t_warmup                                        if t < t_warmup
             = alpha_f + (1 - alpha_f) * (1 + cos(pi * tau_w)) / 2  otherwise,
    tau_w = min(1, (t - t_warmup) / (t_max - t_warmup)),

and the LR is ``base_lr * alpha(t)`` (LambdaLR). Times in ``dur`` become ``int(value * max_duration)``
batches (``int(value * dataloader_len * max_epochs)`` when max_duration is in epochs).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError
from cosanneal.compat import composer_cosine_with_warmup


def composer_reference(base_lr: float, t_warmup: int, t_max: int, alpha_f: float, t: float) -> float:
    """Composer's documented formula, written independently of the preset."""
    if t < t_warmup:
        return base_lr * (t / t_warmup)
    tau = min(1.0, (t - t_warmup) / (t_max - t_warmup))
    return base_lr * (alpha_f + (1 - alpha_f) * (1 + math.cos(tau * math.pi)) / 2)


class _Unit(enum.Enum):
    BATCH = "ba"
    EPOCH = "ep"
    DURATION = "dur"
    SAMPLE = "sp"


@dataclasses.dataclass
class _Time:
    """Stands in for ``composer.core.Time`` (a value and a TimeUnit enum)."""

    value: int | float
    unit: _Unit


def test_hand_checked_values() -> None:
    s = composer_cosine_with_warmup(1.0, 0, t_max=4)
    assert s(0) == 1.0
    assert s(1) == pytest.approx((1 + math.sqrt(0.5)) / 2, rel=1e-15)  # cos(pi/4)
    assert s(2) == pytest.approx(0.5, abs=1e-16)  # cos(pi/2) = 0
    assert s(4) == 0.0 and s(100) == 0.0
    w = composer_cosine_with_warmup(0.1, "10ba", t_max="110ba", alpha_f=0.1)
    assert w(0) == 0.0 and w(5) == 0.05 and w(10) == 0.1
    assert w(60) == pytest.approx(0.1 * 0.55, rel=1e-15)
    assert w(110) == pytest.approx(0.01, rel=1e-15) and w(10**9) == pytest.approx(0.01, rel=1e-15)


CONFIGS = [
    (0.1, 0, 1000, 0.0),
    (0.1, 100, 1000, 0.0),
    (3e-4, 2000, 100000, 0.1),
    (1.0, 7, 333, 0.05),
    (0.5, 1, 2, 0.5),
]


@pytest.mark.parametrize(("base_lr", "t_warmup", "t_max", "alpha_f"), CONFIGS)
def test_matches_composer_formula(base_lr: float, t_warmup: int, t_max: int, alpha_f: float) -> None:
    s = composer_cosine_with_warmup(base_lr, t_warmup, t_max=t_max, alpha_f=alpha_f)
    steps = np.unique(
        np.concatenate([np.arange(0, min(t_max, 600)), np.linspace(0, 2 * t_max, 301).round(), [t_max]])
    )
    want = np.array([composer_reference(base_lr, t_warmup, t_max, alpha_f, t) for t in steps])
    got = s(steps)
    assert (np.abs(got - want) <= 1e-12 * np.abs(want) + 1e-15).all()
    assert np.array_equal(got, np.array([s(float(t)) for t in steps]))


@given(
    st.floats(1e-6, 10.0),
    st.integers(0, 5000),
    st.integers(1, 10**6),
    st.floats(0.0, 1.0),
    st.lists(st.floats(0.0, 3e6), min_size=1, max_size=30),
)
def test_matches_composer_formula_everywhere(
    base_lr: float, t_warmup: int, length: int, alpha_f: float, ts: list[float]
) -> None:
    t_max = t_warmup + length
    s = composer_cosine_with_warmup(base_lr, t_warmup, t_max=t_max, alpha_f=alpha_f)
    for t in [float(round(x)) for x in ts]:
        want = composer_reference(base_lr, t_warmup, t_max, alpha_f, t)
        assert abs(s(t) - want) <= 1e-12 * abs(want) + 1e-15 * base_lr


def test_past_t_max_holds_alpha_f_like_composer() -> None:
    s = composer_cosine_with_warmup(0.2, 10, t_max=100, alpha_f=0.25)
    assert s.horizon == 100
    for t in (100, 101, 10**4, 10**9):
        assert s(t) == pytest.approx(composer_reference(0.2, 10, 100, 0.25, t), rel=1e-15)
        assert s(t) == pytest.approx(0.05, rel=1e-15)


def test_time_forms_agree() -> None:
    ref = composer_cosine_with_warmup(0.1, 100, t_max=1000)
    assert composer_cosine_with_warmup(0.1, "100ba", t_max="1000ba") == ref
    assert composer_cosine_with_warmup(0.1, "100st", t_max=1000) == ref
    assert composer_cosine_with_warmup(0.1, _Time(100, _Unit.BATCH), t_max=_Time(1000, _Unit.BATCH)) == ref
    assert composer_cosine_with_warmup(0.1, "2ep", t_max="20ep", dataloader_len=50) == ref
    assert composer_cosine_with_warmup(0.1, "0.1dur", max_duration=1000) == ref
    assert composer_cosine_with_warmup(0.1, "0.1dur", max_duration="20ep", dataloader_len=50) == ref
    assert composer_cosine_with_warmup(0.1, _Time(0.1, _Unit.DURATION), max_duration="1000ba") == ref


def test_duration_resolution_truncates_like_composer() -> None:
    s = composer_cosine_with_warmup(1.0, "0.15dur", t_max="1dur", max_duration=1010)
    assert s.warmup_steps == int(0.15 * 1010) == 151  # Composer: int(value * max_duration)
    assert s.cycle_steps == 1010 - 151
    e = composer_cosine_with_warmup(1.0, "0.5dur", t_max="1dur", max_duration="3ep", dataloader_len=7)
    assert e.warmup_steps == int(0.5 * 7 * 3) == 10 and e.cycle_steps == 21 - 10


def test_unbound_same_unit_times_bind_later() -> None:
    lazy = composer_cosine_with_warmup(0.1, "1ep", t_max="10ep")
    assert (lazy.warmup_steps, lazy.cycle_steps) == ("1ep", "9ep")
    assert lazy.bind(steps_per_epoch=50) == composer_cosine_with_warmup(0.1, 50, t_max=500)
    frac = composer_cosine_with_warmup(0.1, "0.1dur")
    assert (frac.warmup_steps, frac.cycle_steps) == ("0.1dur", "0.9dur")
    assert frac.bind(total_steps=1000) == composer_cosine_with_warmup(0.1, 100, t_max=1000)
    no_warmup = composer_cosine_with_warmup(0.1, 0)
    assert isinstance(no_warmup, Cosine) and no_warmup.cycle_steps == "1dur"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(t_warmup=100, t_max=100), "t_max must be > t_warmup"),
        (dict(t_warmup="0.5dur", t_max="0.5dur"), "t_max must be > t_warmup"),
        (dict(t_warmup=100), "need max_duration="),
        (dict(t_warmup="1ep", t_max="0.5dur"), "need max_duration="),
        (dict(t_warmup="100sp"), "t_warmup must be batches"),
        (dict(t_warmup=_Time(5, _Unit.SAMPLE)), "t_warmup must be in batches, epochs or dur"),
        (dict(t_warmup="1.5ba", t_max=10), "t_warmup in batches must be whole"),
        (dict(t_warmup=-1, t_max=10), "t_warmup must be an integer >= 0, got -1"),
        (dict(t_warmup=1, t_max=10, alpha_f=2.0), "alpha_f must be <= 1, got 2.0"),
        (dict(t_warmup=1, t_max=10, base_lr=0.0), "base_lr must be > 0, got 0.0"),
        (dict(t_warmup="0.1dur", max_duration="0.5dur"), "max_duration must be in batches or epochs"),
        (dict(t_warmup=1, t_max=10, dataloader_len=0), "dataloader_len must be an integer >= 1"),
    ],
)
def test_validation_names_composer_parameters(kwargs: dict[str, Any], message: str) -> None:
    args = {"base_lr": 0.1, **kwargs}
    with pytest.raises(ScheduleError, match=message):
        composer_cosine_with_warmup(**args)
