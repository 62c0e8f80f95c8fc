"""RestartAwareEarlyStopping on SGDR-shaped validation curves: spikes never stop a run, stagnation does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine
from cosanneal.errors import StateError
from cosanneal.runtime.stopping import RestartAwareEarlyStopping

CYCLE = 100
SGDR = Cosine(0.1, cycle_steps=CYCLE, max_cycles=None)  # restarts at 100, 200, ...


def sgdr_curve(bases: list[float], every: int = 10, spike: float = 5.0) -> list[tuple[int, float]]:
    """(step, val_loss) every ``every`` updates: a spike right after each restart decaying to ``bases[c]``."""
    out = []
    for step in range(every, CYCLE * len(bases) + 1, every):
        c, u = divmod(step - 1, CYCLE)  # the cycle of the last update
        frac = (u + 1) / CYCLE  # progress through the cycle, 1.0 at its end
        out.append((step, bases[c] + spike * (1.0 - frac) ** 2))
    return out


def naive_stop_step(curve: list[tuple[int, float]], patience: int) -> int | None:
    """Per-evaluation patience (what a plain EarlyStopping does): the step where it would stop."""
    best, bad = float("inf"), 0
    for step, value in curve:
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return step
    return None


def run(
    stopper: RestartAwareEarlyStopping, curve: list[tuple[int, float]], schedule: Cosine = SGDR
) -> int | None:
    for step, value in curve:
        if stopper.update(step, {"val_loss": value, "acc": 0.0}, schedule):
            return step
    return None


def test_improving_cycle_ends_never_stop_although_a_naive_patience_would() -> None:
    curve = sgdr_curve([1.0 / (c + 1) for c in range(8)])
    stopper = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    assert run(stopper, curve) is None and not stopper.should_stop and stopper.reason is None
    assert [e["step"] for e in stopper.cycle_ends] == [100 * (c + 1) for c in range(8)]
    assert stopper.best == pytest.approx(1 / 8) and stopper.best_step == 800
    naive = naive_stop_step(curve, patience=2)
    assert naive == 120  # stopped on the spike right after the first restart (110, 120 > 1.0)
    assert SGDR.restarts(naive) == [100]


def test_stagnating_cycle_ends_stop_after_exactly_patience_cycles() -> None:
    curve = sgdr_curve([1.0, 0.8, 0.7, 0.7, 0.71, 0.7, 0.6])
    stopper = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    assert run(stopper, curve) == 500  # cycle ends 400 and 500 did not beat 0.7 (step 300)
    assert stopper.best == pytest.approx(0.7) and stopper.best_step == 300 and stopper.bad_cycles == 2
    assert (
        stopper.reason
        == "val_loss did not improve on 0.7 (step 300) for 2 cycle ends (last 0.71 at step 500)"
    )
    three = RestartAwareEarlyStopping("val_loss", patience_cycles=3)
    assert run(three, curve) == 600


@given(
    bases=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12),
    patience=st.integers(1, 4),
    spike=st.floats(0.0, 1e6),
    min_delta=st.sampled_from([0.0, 0.05]),
)
def test_decision_depends_only_on_cycle_ends(
    bases: list[float], patience: int, spike: float, min_delta: float
) -> None:
    stopper = RestartAwareEarlyStopping("val_loss", patience_cycles=patience, min_delta=min_delta)
    got = run(stopper, sgdr_curve(bases, every=25, spike=spike))
    best, bad, expected = bases[0], 0, None  # reference over the cycle-end values alone
    for c, value in enumerate(bases[1:], start=1):
        if value < best - min_delta:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                expected = CYCLE * (c + 1)
                break
    assert got == expected
    assert stopper.best == best


def test_unaligned_evaluations_use_the_last_one_before_each_restart() -> None:
    stopper = RestartAwareEarlyStopping("val_loss", patience_cycles=1)
    values = {30: 0.9, 60: 0.8, 90: 0.7, 120: 9.0, 150: 0.75, 180: 0.72}
    for step, value in values.items():
        stopper.update(step, {"val_loss": value}, SGDR)
    assert [(e["step"], e["value"]) for e in stopper.cycle_ends] == [
        (90, 0.7)
    ]  # 30, 60 superseded; 180 pending
    assert stopper.update(210, {"val_loss": 5.0}, SGDR)  # restart at 200: 180 (0.72) was cycle 1's end
    assert stopper.cycle_ends[-1] == {"step": 180, "cycle": 1, "value": 0.72, "improved": False}


def test_warmup_counts_in_the_first_cycle_and_the_hold_phase_compares_every_evaluation() -> None:
    schedule = Cosine(0.1, warmup_steps=10, cycle_steps=100, max_cycles=2)  # cycle 0: 0..110, 1: 110..210
    stopper = RestartAwareEarlyStopping("val_loss", mode="max", patience_cycles=2)
    for step, acc in [(50, 0.5), (110, 0.6), (150, 0.1), (210, 0.7), (250, 0.7), (260, 0.69)]:
        stopper.update(step, {"val_loss": acc}, schedule)
    assert [e["step"] for e in stopper.cycle_ends] == [110, 210, 250, 260]
    assert stopper.should_stop and stopper.best == 0.7 and stopper.best_step == 210


def test_explicit_cycle_end_without_schedule_and_min_delta() -> None:
    stopper = RestartAwareEarlyStopping("acc", mode="max", patience_cycles=2, min_delta=0.01)
    stopper.update(5, {"acc": 0.99})  # recorded, never compared without a schedule
    assert stopper.cycle_ends == []
    assert not stopper.cycle_end(100, 0.50)
    assert not stopper.cycle_end(200, 0.505)  # +0.005 < min_delta: not an improvement
    assert stopper.cycle_end(300, 0.509)
    assert [e["cycle"] for e in stopper.cycle_ends] == [0, 1, 2] and stopper.best == 0.5


def test_non_finite_cycle_end_never_improves() -> None:
    stopper = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    stopper.cycle_end(100, float("nan"))
    assert stopper.best is None
    assert stopper.cycle_end(200, float("inf"))
    assert stopper.reason is not None and "no finite value yet" in stopper.reason
    json.dumps(stopper.state_dict(), allow_nan=False)


def test_state_round_trip_keeps_pending_value_and_decision() -> None:
    a = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    b = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    curve = sgdr_curve([1.0, 0.9, 0.95, 0.96], every=30)
    for step, value in curve[:7]:  # stops mid-cycle 2 with a value pending
        a.update(step, {"val_loss": value}, SGDR)
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    assert b.state_dict() == a.state_dict()
    for step, value in curve[7:]:
        a.update(step, {"val_loss": value}, SGDR)
        b.update(step, {"val_loss": value}, SGDR)
    assert b.state_dict() == a.state_dict() and b.cycle_ends == a.cycle_ends
    with pytest.raises(StateError, match="saved for metric='val_loss', this one has metric='acc'"):
        RestartAwareEarlyStopping("acc").load_state_dict(a.state_dict())
    with pytest.raises(StateError, match="version must be 1"):
        b.load_state_dict({})


def test_user_errors() -> None:
    stopper = RestartAwareEarlyStopping("val_loss")
    with pytest.raises(KeyError, match=r"metric 'val_loss' is not in the metrics given \(keys: acc, loss\)"):
        stopper.update(10, {"loss": 1.0, "acc": 0.5}, SGDR)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        stopper.update(-1, {"val_loss": 1.0}, SGDR)
    for kwargs, match in [
        ({"mode": "lowest"}, "mode must be 'min' or 'max', got 'lowest'"),
        ({"patience_cycles": 0}, "patience_cycles must be an integer >= 1, got 0"),
        ({"min_delta": -0.1}, "min_delta must be a finite number >= 0, got -0.1"),
    ]:
        with pytest.raises(ValueError, match=match):
            RestartAwareEarlyStopping("val_loss", **kwargs)  # type: ignore[arg-type]
