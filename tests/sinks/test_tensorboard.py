"""TensorBoard sink: real event files, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cosanneal import Cosine, runs
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.sinks.tensorboard import TensorBoardSink, tag

SCHED = Cosine(0.1, warmup_steps=2, cycle_steps=6, max_cycles=None)  # restarts at 8, 14, 20


def load(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def series(acc: EventAccumulator, name: str) -> tuple[list[int], list[float]]:
    events = acc.Scalars(name)
    return [e.step for e in events], [e.value for e in events]


def test_telemetry_through_the_sink_reads_back_in_tensorboard(tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    with RunStore(tmp_path, flush_rows=16, flush_seconds=0) as store:
        tel = Telemetry(store, schedule=SCHED, sinks=[TensorBoardSink(tb)])
        for step in range(24):
            lr = SCHED(step)
            tel.on_update(step, [lr, lr / 10], loss=3.0 - step / 10, grad_norm=1.0 + step, momentum=0.9)
            if step % 8 == 7:
                tel.on_eval(step, {"loss": 2.0 - step / 100, "acc": step / 24})
        tel.event(23, "run_finished", steps=24)
    acc = load(tb)
    tags = set(acc.Tags()["scalars"])
    assert {
        "lr/group_0",
        "lr/group_1",
        "lr_expected/group_0",
        "lr_expected/group_1",
        "momentum/group_0",
        "loss/train",
        "loss/val",
        "val/acc",
        "train/grad_norm",
        "schedule/cycle",
        "schedule/phase",
        "perf/step_time_s",
    } <= tags
    steps = list(range(24))
    want = SCHED(np.arange(24))
    s, v = series(acc, "lr/group_0")
    assert s == steps and v == want.astype(np.float32).tolist()  # TensorBoard stores float32
    s, v = series(acc, "lr/group_1")
    assert v == (want / 10).astype(np.float32).tolist()
    assert series(acc, "lr_expected/group_1")[1] == want.astype(np.float32).tolist()
    assert series(acc, "loss/train")[1] == (3.0 - np.arange(24) / 10).astype(np.float32).tolist()
    assert series(acc, "loss/val") == ([7, 15, 23], np.float32([1.93, 1.85, 1.77]).tolist())
    assert series(acc, "val/acc")[0] == [7, 15, 23]
    assert series(acc, "schedule/cycle")[1] == [float(SCHED.cycle(t).index) for t in steps]
    # events become text summaries with the payload as JSON
    restarts = acc.Tensors("events/restart")
    assert [e.step for e in restarts] == [8, 14, 20]
    payload = json.loads(restarts[0].tensor_proto.string_val[0])
    assert payload == {"cycle": 1, "previous_cycle": 0, "lr_expected": SCHED(8)}
    # the run store got the same rows
    assert runs.open(tmp_path).scalar("lr", group=0)[1].tolist() == want.tolist()


def test_resumed_run_keeps_the_last_write_in_tensorboard(tmp_path: Path) -> None:
    tb = tmp_path / "tb"
    for lo, hi, value in ((0, 10, 1.0), (5, 12, 2.0)):  # the second session resumes from step 5
        with RunStore(tmp_path, flush_seconds=0, sinks=[TensorBoardSink(tb)]) as store:
            for step in range(lo, hi):
                store.log_scalar(step, "loss", value)
    steps, values = series(load(tb), "loss/train")
    assert steps == list(range(12))  # TensorBoard purges the orphaned steps 5..9 of the first session
    assert values == [1.0] * 5 + [2.0] * 7


def test_tag_names() -> None:
    assert tag("lr", 3) == "lr/group_3"
    assert tag("lr_expected", 0) == "lr_expected/group_0"
    assert tag("val_loss") == "loss/val" and tag("val_top1") == "val/top1"
    assert tag("samples_per_s") == "perf/samples_per_s" and tag("nonfinite") == "train/nonfinite"
    assert tag("my_metric") == "my_metric"


def test_a_resumed_run_keeps_the_checkpoints_evaluation_in_tensorboard(tmp_path: Path) -> None:
    """Telemetry.resume(n): TensorBoard drops the old rows past n, but keeps the evaluation at n itself."""
    from cosanneal.runtime.telemetry import Telemetry

    tb = tmp_path / "tb"
    with RunStore(tmp_path, flush_seconds=0, sinks=[TensorBoardSink(tb)]) as store:
        tel = Telemetry(store, schedule=SCHED)
        for step in range(10):  # killed after 10 updates; the checkpoint was at 6, evaluated there
            tel.on_update(step, [1.0], loss=1.0)
            if step + 1 == 6:
                tel.on_eval(6, {"loss": 0.5})
    with RunStore(tmp_path, flush_seconds=0, sinks=[TensorBoardSink(tb)]) as store:
        tel = Telemetry(store, schedule=SCHED)
        tel.resume(6)
        for step in range(6, 12):
            tel.on_update(step, [2.0], loss=2.0)
    acc = load(tb)
    assert series(acc, "loss/val") == ([6], [0.5])  # the checkpoint's evaluation survives the purge
    steps, values = series(acc, "loss/train")
    assert steps[-6:] == list(range(6, 12)) and values[-6:] == [2.0] * 6
    assert set(steps) == set(range(12))
    assert values[:6] == [1.0] * 6
