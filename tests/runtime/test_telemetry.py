"""Telemetry: per-update LR/expected LR/cycle/phase rows, restart events, eval metrics, events."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cosanneal import Cosine, runs
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import EVENT_KINDS, PHASE_CODES, Telemetry, val_name

SGDR = Cosine(
    1.0, min_lr=0.01, warmup_steps=3, cycle_steps=5, cycle_mult=2.0, peak_decay=0.5, max_cycles=3
)  # cycles start at 0 (3 warmup + 5), 8 (10 long), 18 (20 long); hold from 38


def run_sgdr(d: Path, *, every: int = 1, steps: int = 45, **kw: Any) -> None:
    with RunStore(d, flush_seconds=0) as store:
        tel = Telemetry(store, schedule=SGDR, every=every, **kw)
        for step in range(steps):
            lr = SGDR(step)
            tel.on_update(step, [lr, lr * 0.1], loss=10.0 - step * 0.1, samples=32, step_time=0.5)


def test_per_update_rows_match_the_closed_form(tmp_path: Path) -> None:
    run_sgdr(tmp_path)
    run = runs.open(tmp_path)
    steps = np.arange(45)
    want = SGDR(steps)
    for group, scale in ((0, 1.0), (1, 0.1)):
        s, lr = run.scalar("lr", group=group)
        assert s.tolist() == steps.tolist()
        np.testing.assert_array_equal(lr, want * scale)
        s, expected = run.scalar("lr_expected", group=group)
        np.testing.assert_array_equal(expected, want)  # the schedule's value for every group
    cycles = run.scalar("cycle")[1]
    assert cycles.tolist() == [SGDR.cycle(int(t)).index for t in steps]
    assert cycles.tolist() == [0] * 8 + [1] * 10 + [2] * 20 + [3] * 7  # the final hold is its own cycle
    phases = run.scalar("phase")[1]
    assert phases.tolist() == [PHASE_CODES[SGDR.phase(int(t))] for t in steps]
    assert set(phases.tolist()) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(run.scalar("loss")[1], 10.0 - steps * 0.1)
    assert run.scalar("step_time")[1].tolist() == [0.5] * 45
    assert run.scalar("samples_per_s")[1].tolist() == [64.0] * 45
    assert "nonfinite" not in run.scalar_names() and "momentum" not in run.scalar_names()


def test_restart_events_are_emitted_at_the_cycle_starts(tmp_path: Path) -> None:
    run_sgdr(tmp_path)
    restarts = runs.open(tmp_path).events("restart")  # the hold from step 38 is no restart
    assert [e["step"] for e in restarts] == SGDR.restarts(45) == [8, 18]
    assert [(e["cycle"], e["previous_cycle"]) for e in restarts] == [(1, 0), (2, 1)]
    assert [e["lr_expected"] for e in restarts] == [SGDR(8), SGDR(18)]


def test_every_thins_rows_but_not_restart_events(tmp_path: Path) -> None:
    run_sgdr(tmp_path, every=4)
    run = runs.open(tmp_path)
    assert run.scalar("lr", group=0)[0].tolist() == list(range(0, 45, 4))
    assert run.scalar("cycle")[1].tolist() == [SGDR.cycle(t).index for t in range(0, 45, 4)]
    assert [e["step"] for e in run.events("restart")] == [8, 18]


def test_expected_callable_takes_precedence(tmp_path: Path) -> None:
    with RunStore(tmp_path, flush_seconds=0) as store:
        tel = Telemetry(store, schedule=SGDR, expected=lambda t: [SGDR(t) * 2, SGDR(t) * 3])
        for step in range(5):
            tel.on_update(step, 0.5)  # one float for a single group
    run = runs.open(tmp_path)
    assert run.groups("lr") == [0] and run.groups("lr_expected") == [0, 1]
    np.testing.assert_array_equal(run.scalar("lr_expected", group=1)[1], SGDR(np.arange(5)) * 3)


def test_failing_expected_stores_nan_and_keeps_the_batch(tmp_path: Path) -> None:
    def expected(t: int) -> list[float]:
        if t == 2:
            raise ZeroDivisionError("bad step")
        return [SGDR(t), SGDR(t) / 2]

    warns = pytest.warns(UserWarning, match=r"expected\(step\) failed at step 2 \(ZeroDivisionError")
    with warns, RunStore(tmp_path, flush_seconds=0) as store:
        tel = Telemetry(store, schedule=SGDR, expected=expected)
        for step in range(4):
            tel.on_update(step, [SGDR(step), SGDR(step) / 2], loss=1.0)
    run = runs.open(tmp_path)
    for group, scale in ((0, 1.0), (1, 0.5)):
        steps, values = run.scalar("lr_expected", group=group)
        assert steps.tolist() == [0, 1, 2, 3]
        assert np.isnan(values[2]) and values[[0, 1, 3]].tolist() == [SGDR(t) * scale for t in (0, 1, 3)]
    assert run.scalar("loss")[1].tolist() == [1.0] * 4  # the rest of the batch was written
    assert run.scalar("phase")[1].tolist() == [PHASE_CODES["warmup"]] * 3 + [PHASE_CODES["anneal"]]


def test_optional_fields_and_measured_step_time(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with RunStore(tmp_path, flush_seconds=0) as store:
        tel = Telemetry(store)  # no schedule: no expected LR, cycle or phase
        for step in range(3):
            loss = torch.tensor(float(step), requires_grad=True) * 2
            tel.on_update(
                step,
                [0.1],
                loss=loss,
                grad_norm=torch.tensor(step + 0.5),
                nonfinite=step,  # 0 is not recorded as an int; 1 and 2 are
                samples=10,
                momentum=[0.9, 0.85],
            )
    run = runs.open(tmp_path)
    assert run.scalar_names() == [
        "grad_norm",
        "loss",
        "lr",
        "momentum",
        "nonfinite",
        "samples_per_s",
        "step_time",
    ]
    assert run.scalar("loss")[1].tolist() == [0.0, 2.0, 4.0]
    assert run.scalar("grad_norm")[1].tolist() == [0.5, 1.5, 2.5]
    assert run.scalar("nonfinite")[0].tolist() == [1, 2]
    assert run.scalar("momentum", group=1)[1].tolist() == [0.85] * 3
    steps, times = run.scalar("step_time")  # measured between calls: none before the first
    assert steps.tolist() == [1, 2] and (times > 0).all()
    np.testing.assert_allclose(run.scalar("samples_per_s")[1], 10 / times, rtol=1e-12)


def test_tensors_are_converted_on_the_writer_thread(tmp_path: Path) -> None:
    seen: list[str] = []

    class Spy:
        def item(self) -> float:
            seen.append(threading.current_thread().name)
            return 1.25

    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0.01)
    tel = Telemetry(store)
    tel.on_update(0, [Spy()], loss=Spy(), grad_norm=Spy())
    tel.on_eval(0, {"loss": Spy()})
    assert seen == []  # nothing read on the training thread
    store.close()  # close() drains the writer thread first, then flushes on the caller
    assert len(seen) == 4
    assert runs.open(tmp_path).scalar("val_loss")[1].tolist() == [1.25]


def test_on_eval_names_metrics_val(tmp_path: Path) -> None:
    with RunStore(tmp_path, flush_seconds=0) as store:
        Telemetry(store).on_eval(10, {"loss": 0.5, "val_acc": 0.9, "top5": 0.99})
    run = runs.open(tmp_path)
    assert run.scalar_names() == ["val_acc", "val_loss", "val_top5"]
    assert run.scalar("val_top5")[0].tolist() == [10]
    assert (val_name("loss"), val_name("val_loss")) == ("val_loss", "val_loss")


def test_events_are_validated_and_recorded(tmp_path: Path) -> None:
    with RunStore(tmp_path, flush_seconds=0) as store:
        tel = Telemetry(store)
        for kind in EVENT_KINDS:
            tel.event(3, kind, note=kind)
        with pytest.raises(ValueError, match=r"event kind must be one of restart, .*; got 'reboot'"):
            tel.event(3, "reboot")
        with pytest.raises(ValueError, match="event payload field 'wall' is reserved"):
            tel.event(3, "resumed", wall=1.0)
    events = runs.open(tmp_path).events()
    assert [(e["step"], e["kind"], e["note"]) for e in events] == [(3, k, k) for k in EVENT_KINDS]


def test_context_manager_records_run_failed_and_flushes(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0)
    with pytest.raises(FloatingPointError), Telemetry(store) as tel:
        tel.on_update(7, [0.1])
        raise FloatingPointError("loss is nan")
    (event,) = runs.open(tmp_path).events()  # already flushed; store still open
    assert (event["step"], event["kind"], event["error"], event["message"]) == (
        7,
        "run_failed",
        "FloatingPointError",
        "loss is nan",
    )
    store.close()


def test_disabled_store_makes_telemetry_a_noop(tmp_path: Path) -> None:
    tel = Telemetry(RunStore.disabled(), schedule=SGDR)
    tel.on_update(0, [0.1], loss=1.0)
    tel.on_eval(0, {"loss": 1.0})
    tel.event(0, "run_finished")
    tel.flush()
    assert tel.store.pending == 0 and list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path: Path) -> None:
    store = RunStore.disabled()
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        Telemetry(store, every=0)
    with pytest.raises(ValueError, match="schedule must be a cosanneal Schedule"):
        Telemetry(store, schedule=0.1)


def test_cuda_tensors_cause_no_sync_on_the_training_thread(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0)  # the writer stays idle meanwhile
    tel = Telemetry(store, schedule=SGDR)
    w = torch.arange(4.0, device="cuda", requires_grad=True)
    want = []
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync below raises
    try:
        for step in range(20):
            loss = (w * (step + 1)).sum()
            loss.backward()
            assert w.grad is not None
            grad_norm = torch.linalg.vector_norm(w.grad)
            nonfinite = (~torch.isfinite(w.grad)).sum()
            tel.on_update(step, [SGDR(step)], loss=loss.detach(), grad_norm=grad_norm, nonfinite=nonfinite)
            w.grad = None
            want.append(6.0 * (step + 1))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    store.close()
    run = runs.open(tmp_path)
    assert run.scalar("loss")[1].tolist() == want
    np.testing.assert_allclose(run.scalar("grad_norm")[1], 2.0 * np.arange(1, 21), rtol=1e-6)  # |(s+1) * 1_4|
    assert run.scalar("nonfinite")[1].tolist() == [0.0] * 20
