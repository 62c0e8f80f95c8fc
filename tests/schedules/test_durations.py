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


# ---- samples and tokens -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2e6sp", "2000000sp"),
        ("2E6 sp", "2000000sp"),
        ("2.5e6sp", "2500000sp"),
        ("1500sp", "1500sp"),
        ("5e7tok", "50000000tok"),
        ("123456789012345678901234567890tok", "123456789012345678901234567890tok"),  # exact, no float
        ("1.000e3tok", "1000tok"),
        ("0sp", "0sp"),
    ],
)
def test_parse_samples_and_tokens_exactly(text: str, parsed: str) -> None:
    assert durations.parse("cycle_steps", text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "2.5sp",
            r"^cycle_steps must be a whole number of samples, got '2.5sp'; give a count like '2000000sp'$",
        ),
        ("1e-3tok", r"^cycle_steps must be a whole number of tokens, got '1e-3tok'"),
        ("1e400sp", r"^cycle_steps='1e400sp' is too large a number of samples$"),
        ("-5sp", r"^cycle_steps must be a number or a duration like .*'2e6sp' or '5e7tok', got '-5sp'$"),
    ],
)
def test_parse_refuses_partial_counts(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        durations.parse("cycle_steps", text)


def test_updates_round_up_exactly() -> None:
    def sp(text: str, per: float) -> object:
        return durations.resolve(
            "x", durations.parse("x", text), total_steps=None, steps_per_epoch=None, samples_per_update=per
        )

    assert sp("2e6sp", 512) == 3907  # 3906.25 updates: the last one completes the 2e6 samples
    assert sp("2e6sp", 500) == 4000 and isinstance(sp("2e6sp", 500), int)
    assert sp("1sp", 4096) == 1  # any sample at all is one update
    assert sp("0sp", 64) == 0
    assert sp("1000sp", 0.5) == 2000 and sp("1000sp", 3.0) == 334
    # exact where floats are not: (10**17 + 1) / 1 is not 10**17 in float64
    assert sp("100000000000000001sp", 1) == 10**17 + 1
    tok = durations.resolve(
        "x", "50000000tok", total_steps=None, steps_per_epoch=None, tokens_per_update=512 * 1024
    )
    assert tok == 96  # 95.37 updates of 524288 tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"^warmup_steps='1000sp' is in samples; pass samples_per_update to bind\(\)$"),
        (
            {"tokens_per_update": 10},
            r"^warmup_steps='1000sp' is in samples; pass samples_per_update to bind\(\)$",
        ),
        ({"samples_per_update": 0}, r"^samples_per_update must be a number > 0, got 0$"),
        ({"samples_per_update": -8}, r"^samples_per_update must be a number > 0, got -8$"),
        ({"samples_per_update": True}, r"^samples_per_update must be a number > 0, got True$"),
        ({"samples_per_update": float("nan")}, r"^samples_per_update must be a number > 0, got nan$"),
        ({"samples_per_update": float("inf")}, r"^samples_per_update must be a number > 0, got inf$"),
    ],
)
def test_sample_lengths_need_their_binding(kwargs: dict[str, object], message: str) -> None:
    s = Cosine(0.1, warmup_steps="1000sp", cycle_steps=100)
    with pytest.raises(ScheduleError, match=message):
        s.bind(total_steps=1000, steps_per_epoch=10, **kwargs)  # type: ignore[arg-type]


def test_token_lengths_need_their_binding_and_refuse_to_evaluate() -> None:
    s = Cosine(0.1, cycle_steps="5e7tok")
    with pytest.raises(
        ScheduleError, match=r"^cycle_steps='50000000tok' is in tokens; pass tokens_per_update to bind"
    ):
        s.bind(samples_per_update=512)
    with pytest.raises(
        ScheduleError,
        match=r"^cycle_steps='50000000tok' is not in steps yet; call \.bind\(tokens_per_update=\.\.\.\) first$",
    ):
        s(0)


def test_bind_samples_and_tokens_in_every_kind() -> None:
    s = Cosine(0.1, warmup_steps="1e5sp", cycle_steps="2e8tok", cycle_warmup_steps="1e4sp", max_cycles=2)
    b = s.bind(samples_per_update=256, tokens_per_update=256 * 2048)
    assert (b.warmup_steps, b.cycle_steps, b.cycle_warmup_steps) == (391, 382, 40)
    assert b(391) == 0.1 and b.horizon == 391 + 2 * 382
    assert (
        from_dict({"kind": "onecycle", "max_lr": 1.0, "total_steps": "1e6sp"})
        .bind(samples_per_update=1000)
        .total_steps
        == 1000
    )
    assert from_dict({"kind": "multistep", "lr": 1.0, "milestones": ["3ep", "1e6sp", "5e9tok"]}).bind(
        steps_per_epoch=100, samples_per_update=1024, tokens_per_update=1024 * 4096
    ).milestones == (300, 977, 1193)
    joined = from_dict(
        {
            "kind": "join",
            "schedules": [
                {"kind": "linear", "start_lr": 0.0, "end_lr": 1.0, "total_steps": "6400sp"},
                {"kind": "cosine", "peak_lr": 1.0, "cycle_steps": "1e6tok"},
            ],
            "boundaries": ["6400sp"],
        }
    ).bind(samples_per_update=64, tokens_per_update=64 * 128)
    assert joined.boundaries == (100,) and joined.schedules[0].total_steps == 100
    assert joined.schedules[1].cycle_steps == 123  # 1e6 / 8192 = 122.07


def test_a_positive_count_is_at_least_one_update_and_zero_is_refused_where_positive() -> None:
    assert Cosine(0.1, cycle_steps="1sp").bind(samples_per_update=10**6).cycle_steps == 1
    with pytest.raises(ScheduleError, match="cycle_steps must be > 0, got 0"):
        Cosine(0.1, cycle_steps="0sp").bind(samples_per_update=64)
    with pytest.raises(ScheduleError, match=r"milestones\[0\] must be > 0, got '0sp'"):
        from_dict({"kind": "multistep", "lr": 1.0, "milestones": ["0sp"]})
    with pytest.raises(
        ScheduleError, match=r"milestones must be strictly increasing; milestones\[1\]='2e3sp'"
    ):
        from_dict({"kind": "multistep", "lr": 1.0, "milestones": ["1e4sp", "2e3sp"]})


def test_sample_lengths_round_trip_and_compare_by_value() -> None:
    s = Cosine(0.1, warmup_steps="2e6sp", cycle_steps="5e7tok")
    assert s == Cosine(0.1, warmup_steps="2000000sp", cycle_steps="50000000tok")
    again = from_dict(s.to_dict())
    assert again == s and again.fingerprint() == s.fingerprint()
    assert s.to_dict()["warmup_steps"] == "2000000sp"


@given(samples=st.integers(0, 10**30), per=st.integers(1, 10**9))
def test_updates_are_the_ceiling_of_samples_per_update(samples: int, per: int) -> None:
    updates = durations.resolve(
        "x", f"{samples}sp", total_steps=None, steps_per_epoch=None, samples_per_update=per
    )
    assert isinstance(updates, int)
    assert updates * per >= samples > (updates - 1) * per  # never fewer samples, and less than one batch more
    if samples % per == 0:  # a whole number of batches: exactly the steps
        assert updates == samples // per
    if samples % per == 0 and samples:
        bound = Cosine(0.1, cycle_steps=f"{samples}sp").bind(samples_per_update=per)
        assert bound == Cosine(0.1, cycle_steps=samples // per)
    tokens = durations.resolve(
        "x", f"{samples}tok", total_steps=None, steps_per_epoch=None, tokens_per_update=per
    )
    assert tokens == updates


@given(a=st.integers(0, 10**12), b=st.integers(0, 10**12), per=st.integers(1, 10**6))
def test_more_samples_never_fewer_updates(a: int, b: int, per: int) -> None:
    lo, hi = sorted((a, b))
    kw = {"total_steps": None, "steps_per_epoch": None, "samples_per_update": per}
    assert durations.resolve("x", f"{lo}sp", **kw) <= durations.resolve("x", f"{hi}sp", **kw)  # type: ignore[arg-type]
    assert durations.resolve("x", f"{hi}sp", **kw) <= durations.resolve(  # type: ignore[arg-type]
        "x",
        f"{hi}sp",
        **{**kw, "samples_per_update": max(1, per - 1)},  # type: ignore[arg-type]
    )  # a smaller batch never needs fewer updates


@given(mantissa=st.integers(1, 10**6), exponent=st.integers(0, 30))
def test_scientific_notation_is_read_exactly(mantissa: int, exponent: int) -> None:
    assert durations.parse("x", f"{mantissa}e{exponent}sp") == f"{mantissa * 10**exponent}sp"
    assert durations.split(durations.parse("x", f"{mantissa}e{exponent}tok")) == (
        "tok",
        mantissa * 10**exponent,
    )


def test_plan_and_lint_take_sample_and_token_lengths() -> None:
    from cosanneal.analysis.plan import plan
    from cosanneal.schedules.lint import lint

    p = plan("2e6sp", samples_per_update=512, warmup="1e5sp", cycles=2)
    assert p.total_steps == 3907 and p.warmup_steps == 196 and p.schedule.horizon == 3907
    assert plan("5e7tok", tokens_per_update=512 * 1024).total_steps == 96
    with pytest.raises(ScheduleError, match=r"^total='2e6sp' is in samples; give samples_per_update"):
        plan("2e6sp")
    with pytest.raises(ScheduleError, match=r"^warmup='1e6tok' is in tokens; give tokens_per_update"):
        plan(1000, warmup="1e6tok")
    s = Cosine(0.1, warmup_steps="6400sp", cycle_steps="0.9dur")
    assert lint(s, 1000, samples_per_update=64) == []
