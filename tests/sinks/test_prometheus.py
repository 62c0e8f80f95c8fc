"""PrometheusSink: the state it folds from run-store batches, its exposition (checked by the real
promtool), its HTTP server, its atomic textfile, and its use inside a real RunStore + Telemetry."""

from __future__ import annotations

import math
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cosanneal import Cosine
from cosanneal.errors import ConfigError
from cosanneal.runtime.runstore import EventRow, RunStore, ScalarRow
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.sinks.prometheus import (
    PrometheusSink,
    configured_restarts,
    in_restart_window,
)

PROMTOOL = shutil.which("promtool")
LABELS = {"job": "blobs", "run": "r1"}
CONST = {"cosanneal_job": "blobs", "cosanneal_run": "r1"}


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels without the constant ones): value}`` of an exposition."""
    out = {}
    data = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(data):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in CONST))
            out[(s.name, labels)] = s.value
    return out


def value(text: bytes, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def rows(step: int, wall: float, **scalars: float) -> list[ScalarRow]:
    return [ScalarRow(step, n, None, v, wall) for n, v in scalars.items()]


def test_state_from_batches() -> None:
    sched = Cosine(0.1, warmup_steps=2, cycle_steps=10, max_cycles=3)
    sink = PrometheusSink(labels=LABELS, schedule=sched)
    batch = [
        ScalarRow(5, "lr", 0, 0.05, 100.0),
        ScalarRow(5, "lr", 1, 0.005, 100.0),
        ScalarRow(5, "lr_expected", 0, 0.05, 100.0),
        ScalarRow(5, "lr_expected", 1, 0.005, 100.0),
        *rows(5, 100.0, cycle=0, phase=1, loss=2.5, grad_norm=0.7, step_time=0.02, samples_per_s=640),
        ScalarRow(6, "lr", 0, 0.04, 101.0),
        *rows(6, 101.0, step_time=0.3, nonfinite=1, val_loss=1.25, val_acc=0.75),
    ]
    events = [
        EventRow(6, "nonfinite", {"consecutive": 1}, 101.0),  # same step as the scalar: counted once
        EventRow(6, "checkpoint_saved", {"path": "x"}, 2e9),
        EventRow(6, "rollback", {}, 101.0),
    ]
    sink.write(batch, events)
    text = sink.exposition()
    assert value(text, "cosanneal_learning_rate", group="0") == 0.04
    assert value(text, "cosanneal_learning_rate", group="1") == 0.005
    assert value(text, "cosanneal_expected_learning_rate", group="0") == 0.05
    assert value(text, "cosanneal_step") == 6
    assert value(text, "cosanneal_optimizer_steps_total") == 2
    assert value(text, "cosanneal_loss") == 2.5
    assert value(text, "cosanneal_gradient_norm") == 0.7
    assert value(text, "cosanneal_samples_per_second") == 640
    assert value(text, "cosanneal_validation_loss") == 1.25
    assert value(text, "cosanneal_validation_metric", metric="acc") == 0.75
    assert value(text, "cosanneal_phase", phase="anneal") == 1
    assert value(text, "cosanneal_phase", phase="warmup") == 0
    assert value(text, "cosanneal_nonfinite_steps_total") == 1
    assert value(text, "cosanneal_rollbacks_total") == 1
    assert value(text, "cosanneal_checkpoints_total") == 1
    assert value(text, "cosanneal_last_checkpoint_timestamp_seconds") == 2e9
    assert value(text, "cosanneal_last_step_timestamp_seconds") == 101.0
    assert value(text, "cosanneal_configured_restarts") == 2
    assert value(text, "cosanneal_run_status", status="running") == 1
    assert value(text, "cosanneal_step_duration_seconds_count") == 2
    assert value(text, "cosanneal_step_duration_seconds_sum") == pytest.approx(0.32)
    assert value(text, "cosanneal_step_duration_seconds_bucket", le="0.025") == 1
    assert value(text, "cosanneal_step_duration_seconds_bucket", le="0.25") == 1
    assert value(text, "cosanneal_step_duration_seconds_bucket", le="0.5") == 2
    assert value(text, "cosanneal_step_duration_seconds_bucket", le="+Inf") == 2
    sink.write([], [EventRow(7, "run_failed", {"error": "boom"}, 102.0)])
    text = sink.exposition()
    assert value(text, "cosanneal_run_status", status="failed") == 1
    assert value(text, "cosanneal_run_status", status="running") == 0
    assert value(text, "cosanneal_run_failures_total") == 1
    sink.close()


def test_constant_labels_are_prefixed_and_the_global_registry_untouched() -> None:
    before = {m.name for m in REGISTRY.collect()}
    sink = PrometheusSink(labels=LABELS)
    sink.write([ScalarRow(0, "lr", 0, 0.1, 1.0)], [])
    for family in text_string_to_metric_families(sink.exposition().decode()):
        for s in family.samples:
            assert s.labels["cosanneal_job"] == "blobs" and s.labels["cosanneal_run"] == "r1"
            assert "job" not in s.labels
    assert {m.name for m in REGISTRY.collect()} == before
    sink.close()


def test_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry=registry)
    sink.write([ScalarRow(3, "lr", 0, 0.5, 1.0)], [])
    assert sink.registry is registry
    assert registry.get_sample_value("cosanneal_learning_rate", {"group": "0"}) == 0.5


def test_restarts_count_events_plus_the_restarts_before_a_resume() -> None:
    sched = Cosine(0.1, cycle_steps=10, max_cycles=4)  # restarts at 10, 20, 30
    sink = PrometheusSink(schedule=sched)
    sink.write([ScalarRow(20, "lr", 0, sched(20), 1.0)], [])  # resumed exactly at a restart
    assert sink.snapshot().restarts == 2
    sink.write([ScalarRow(30, "lr", 0, sched(30), 2.0)], [EventRow(30, "restart", {"cycle": 3}, 2.0)])
    assert sink.snapshot().restarts == 3


@pytest.mark.parametrize(
    ("status_event", "status"),
    [("run_finished", "finished"), ("early_stop", "early_stopped"), ("preempted", "preempted")],
)
def test_run_status(status_event: str, status: str) -> None:
    sink = PrometheusSink()
    sink.write([], [EventRow(1, status_event, {}, 1.0)])
    text = sink.exposition()
    assert value(text, "cosanneal_run_status", status=status) == 1
    assert sum(v for (n, _), v in samples(text).items() if n == "cosanneal_run_status") == 1


def test_restart_window_and_configured_restarts() -> None:
    s = Cosine(0.1, warmup_steps=5, cycle_steps=20, cycle_warmup_steps=3, max_cycles=3, cycle_mult=2)
    # cycles (schedule.cycle): [0, 25) with warmup 0..4; [25, 65): warmup 25..27 and window
    # ceil(0.1 * 40) = 4 -> 25..28; [65, 145): warmup 65..67 and window ceil(0.1 * 80) = 8 -> 65..72; hold after
    assert s.restarts(1000) == [25, 65]
    window = [t for t in range(200) if in_restart_window(s, t)]
    assert window == [0, 1, 2, 3, 4, 25, 26, 27, 28, *range(65, 73)]
    assert configured_restarts(s) == 2
    assert math.isnan(configured_restarts(Cosine(0.1, cycle_steps=5, max_cycles=None)))
    sink = PrometheusSink(schedule=s)
    sink.write([ScalarRow(72, "lr", 0, s(72), 1.0)], [])
    assert value(sink.exposition(), "cosanneal_in_restart_window") == 1
    sink.write([ScalarRow(73, "lr", 0, s(73), 1.0)], [])
    assert value(sink.exposition(), "cosanneal_in_restart_window") == 0


def test_without_schedule_the_window_is_the_warmup_phase() -> None:
    sink = PrometheusSink()
    sink.write([ScalarRow(1, "lr", 0, 0.1, 1.0), *rows(1, 1.0, phase=0)], [])
    assert value(sink.exposition(), "cosanneal_in_restart_window") == 1
    sink.write([ScalarRow(2, "lr", 0, 0.1, 1.0), *rows(2, 1.0, phase=1)], [])
    assert value(sink.exposition(), "cosanneal_in_restart_window") == 0
    assert math.isnan(value(sink.exposition(), "cosanneal_configured_restarts"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": {"bad-name": "x"}}, "'bad-name' is not a valid label name"),
        ({"textfile": "/tmp/x.txt"}, "must end in .prom"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PrometheusSink(**kwargs)  # type: ignore[arg-type]


def test_port_in_use_is_a_config_error() -> None:
    first = PrometheusSink(port=0)
    try:
        with pytest.raises(
            ConfigError, match=rf"prometheus_port: cannot serve /metrics on 127.0.0.1:{first.port}"
        ):
            PrometheusSink(port=first.port)
    finally:
        first.close()


def test_http_server_serves_the_exposition_and_stops_at_close() -> None:
    sink = PrometheusSink(port=0, labels=LABELS)
    assert sink.port and sink.port > 0
    sink.write([ScalarRow(0, "lr", 0, 0.125, 1.0)], [])
    url = f"http://127.0.0.1:{sink.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read()
    assert value(body, "cosanneal_learning_rate", group="0") == 0.125
    sink.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_no_port_means_no_server() -> None:
    sink = PrometheusSink()
    assert sink.port is None
    sink.close()


def test_textfile_is_written_atomically_with_the_final_state(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "cosanneal.prom"
    sched = Cosine(0.1, cycle_steps=4, max_cycles=2)
    sink = PrometheusSink(textfile=str(path), labels=LABELS, schedule=sched)
    with RunStore(tmp_path / "run", sinks=[sink]) as store:
        tel = Telemetry(store, schedule=sched)
        for step in range(6):
            tel.on_update(step, [sched(step)], loss=1.0 / (step + 1), step_time=0.01)
        store.log_event(6, "run_finished", updates=6)
    text = path.read_bytes()
    assert value(text, "cosanneal_learning_rate", group="0") == sched(5)
    assert value(text, "cosanneal_expected_learning_rate", group="0") == sched(5)
    assert value(text, "cosanneal_optimizer_steps_total") == 6
    assert value(text, "cosanneal_restarts_total") == 1
    assert value(text, "cosanneal_cycle") == 1
    assert value(text, "cosanneal_run_status", status="finished") == 1
    assert [p.name for p in path.parent.iterdir()] == ["cosanneal.prom"]  # no temporary file left


def test_textfile_follows_the_background_flushes_not_only_the_end(tmp_path: Path) -> None:
    """node-exporter sees the run move between checkpoints: each background flush rewrites the file."""
    import time

    path = tmp_path / "cosanneal.prom"
    sched = Cosine(0.1, cycle_steps=4, max_cycles=2)
    sink = PrometheusSink(textfile=str(path), labels=LABELS, schedule=sched)
    with RunStore(tmp_path / "run", sinks=[sink], flush_seconds=0.05) as store:
        tel = Telemetry(store, schedule=sched)
        for step in range(3):
            tel.on_update(step, [sched(step)], loss=1.0, step_time=0.01)
        deadline = time.monotonic() + 30
        while not path.exists() or value(path.read_bytes(), "cosanneal_optimizer_steps_total") != 3:
            assert time.monotonic() < deadline, "the background flush never rewrote the textfile"
            time.sleep(0.02)
        assert value(path.read_bytes(), "cosanneal_learning_rate", group="0") == sched(2)  # no flush() called


def test_port_zero_is_reported_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cosanneal.jobs.sink_factories import SinkContext, _prometheus

    sched = Cosine(0.1, cycle_steps=4)
    context = SinkContext(tmp_path, "blobs", {"telemetry": {"prometheus_port": 0}}, sched, {})
    sink = _prometheus(context)
    try:
        line = capsys.readouterr().err
        assert line == f"prometheus: serving /metrics on http://127.0.0.1:{sink.port}/metrics\n"  # type: ignore[attr-defined]
        with urllib.request.urlopen(line.split()[-1], timeout=10) as reply:
            assert b"cosanneal_" in reply.read()
    finally:
        sink.close()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package: prometheus)")
def test_promtool_check_metrics_passes(tmp_path: Path) -> None:
    sched = Cosine(0.1, warmup_steps=2, cycle_steps=4, max_cycles=3)
    sink = PrometheusSink(labels=LABELS, schedule=sched, textfile=str(tmp_path / "m.prom"))
    with RunStore(tmp_path / "run", sinks=[sink]) as store:
        tel = Telemetry(store, schedule=sched)
        for step in range(12):
            tel.on_update(step, [sched(step), sched(step) / 10], loss=0.5, grad_norm=1.0, samples=32,
                          step_time=0.01, momentum=[0.9, 0.9])  # fmt: skip
        tel.on_eval(12, {"loss": 0.4, "acc": 0.9})
        store.log_event(12, "checkpoint_saved", path="x")
    for text in (sink.exposition(), (tmp_path / "m.prom").read_bytes()):
        done = subprocess.run(
            [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert done.stdout.decode().strip() == "" and done.stderr.decode().strip() == ""
