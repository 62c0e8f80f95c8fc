"""Durations ("500st", "3ep", "0.05dur") and binding them to steps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError, from_dict
from cosanneal.schedules import durations


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("500", 500),
        ("500st", 500),
        (" 500 st ", 500),
        ("2.5", 2.5),
        ("3ep", "3ep"),
        ("1.5ep", "1.5ep"),
        ("0.05dur", "0.05dur"),
        (".5dur", "0.5dur"),
        ("1e3st", 1000),
    ],
)
def test_parse(text: str, parsed: object) -> None:
    assert durations.parse("cycle_steps", text) == parsed


@pytest.mark.parametrize("text", ["", "ep", "-3ep", "3 epochs", "1.5dur", "3ep2", "nan", "inf"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ScheduleError, match=r"cycle_steps"):
        durations.parse("cycle_steps", text)


def test_bind_epochs_and_fractions() -> None:
    s = Cosine(0.1, warmup_steps="2ep", cycle_steps="0.9dur", cycle_warmup_steps="0.01dur")
    bound = s.bind(total_steps=1000, steps_per_epoch=50)
    assert (bound.warmup_steps, bound.cycle_steps, bound.cycle_warmup_steps) == (100, 900, 10)
    assert bound(100) == 0.1 and bound(1000) == 0.0


def test_bind_rounds_whole_step_fields_only() -> None:
    s = Cosine(1.0, warmup_steps="0.333dur", cycle_steps="0.333dur").bind(total_steps=100)
    assert s.warmup_steps == 33 and isinstance(s.warmup_steps, int)
    assert s.cycle_steps == pytest.approx(33.3)


def test_unbound_schedule_refuses_to_evaluate() -> None:
    s = Cosine(0.1, warmup_steps="3ep", cycle_steps=100)
    with pytest.raises(ScheduleError, match=r"warmup_steps='3ep' is not in steps yet; call \.bind"):
        s(0)
    with pytest.raises(ScheduleError, match="pass steps_per_epoch to bind"):
        s.bind(total_steps=1000)
    with pytest.raises(ScheduleError, match="pass total_steps to bind"):
        Cosine(0.1, cycle_steps="0.5dur").bind(steps_per_epoch=10)


def test_bound_values_are_validated_again() -> None:
    s = Cosine(0.1, warmup_steps="1ep", cycle_steps=5, warmup_prefix=False)
    with pytest.raises(ScheduleError, match=r"warmup_steps \(10\) must be < cycle_steps"):
        s.bind(steps_per_epoch=10)


def test_unbound_round_trip_and_fingerprint() -> None:
    s = Cosine(0.1, warmup_steps="3ep", cycle_steps="0.5dur")
    again = from_dict(s.to_dict())
    assert again == s and again.fingerprint() == s.fingerprint()
    assert s.fingerprint() != s.bind(total_steps=100, steps_per_epoch=10).fingerprint()
    assert Cosine(0.1, cycle_steps="100st") == Cosine(0.1, cycle_steps=100)


@given(st.integers(1, 10**6), st.integers(1, 10**4), st.floats(0.0, 1.0), st.integers(0, 50))
def test_bind_formulas(total: int, per_epoch: int, frac: float, epochs: int) -> None:
    assert (
        durations.resolve("x", f"{epochs}ep", total_steps=None, steps_per_epoch=per_epoch)
        == epochs * per_epoch
    )
    got = durations.resolve(
        "x", durations.parse("x", f"{frac!r}dur"), total_steps=total, steps_per_epoch=None
    )
    assert got == pytest.approx(frac * total, rel=1e-12, abs=1e-9)
