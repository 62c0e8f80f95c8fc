"""Cost metrics of the Prometheus sink, from real ``cosanneal train`` runs: the textfile each run writes is
parsed back with prometheus_client's parser and every value checked against the module's formulas
(``rate = price * devices / 3600``; cost = rate x wall seconds of every session; planned cost = rate x
planned updates x seconds per update), a fresh run, a preempted one and a killed one resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blobs import blobs_config
from prometheus_client.parser import text_string_to_metric_families

from cosanneal import runs
from cosanneal.jobs.config import load_config
from cosanneal.jobs.sink_factories import cost_plan, previous_seconds, sink_labels
from cosanneal.jobs.trainer import Trainer

PRICE, DEVICES = 3.6, 2
RATE = PRICE * DEVICES / 3600.0  # per wall second
TOTAL = 160  # updates of the blobs config


def _metrics(path: Path) -> dict[str, float]:
    """The textfile's unlabelled-by-anything-else samples, by name (every sample of a cost family)."""
    families = text_string_to_metric_families(path.read_text())
    out: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            extra = set(sample.labels) - {"cosanneal_job", "cosanneal_run", "cosanneal_sweep"}
            if not extra:
                out[sample.name] = sample.value
            elif family.name == "cosanneal_run_status" and sample.value == 1:
                out[f"status:{sample.labels['status']}"] = 1.0
    return out


def _config(tmp_path: Path, **telemetry: object) -> Path:
    tel = {f"telemetry__{k}": v for k, v in telemetry.items()}
    data = blobs_config(
        telemetry__prometheus_textfile=str(tmp_path / "textfile" / "cosanneal.prom"),
        telemetry__price_per_device_hour=PRICE,
        telemetry__devices=DEVICES,
        **tel,
    )
    path = tmp_path / "cost.json"
    path.write_text(json.dumps(data))
    return path


def _train(config: Path, run_dir: Path, *sets: str) -> None:
    Trainer(load_config(config, list(sets)), run_dir, progress=False, log=lambda _: None).run()


def _spawn(config: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", str(run_dir), "--no-progress",
         "--set", "debug.sleep_per_step=0.03"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            run = runs.open(run_dir)
            try:
                steps, _ = run.scalar("lr", 0)
            finally:
                run.close()
            if len(steps) and int(steps.max()) >= step:
                return
        except Exception:  # no run store or no LR row yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"the run never reached update {step}")


def _sessions(run_dir: Path) -> list[tuple[float, float | None]]:
    conn = sqlite3.connect(f"{(run_dir / 'run.db').as_uri()}?mode=ro", uri=True)
    try:
        return [(float(a), b) for a, b in conn.execute("SELECT started, ended FROM sessions ORDER BY id")]
    finally:
        conn.close()


def test_a_finished_run_exports_its_cost_and_the_planned_cost(tmp_path: Path) -> None:
    config = _config(tmp_path, planned_step_seconds=0.5)
    _train(config, tmp_path / "run", "debug.sleep_per_step=0.01")
    m = _metrics(tmp_path / "textfile" / "cosanneal.prom")
    assert m["status:finished"] == 1
    assert m["cosanneal_price_per_device_hour"] == PRICE and m["cosanneal_devices"] == DEVICES
    assert m["cosanneal_previous_sessions_seconds"] == 0
    # cost = rate * (0 + last row - start): the textfile's own run duration is that difference
    assert m["cosanneal_cost"] == pytest.approx(RATE * m["cosanneal_run_duration_seconds"], rel=1e-12)
    # it grows with wall time: 160 updates that each sleep 10 ms cost at least 1.6 s of the devices
    assert m["cosanneal_cost"] >= RATE * TOTAL * 0.01
    assert m["cosanneal_planned_steps"] == TOTAL
    assert m["cosanneal_planned_step_seconds"] == 0.5
    assert m["cosanneal_planned_cost"] == pytest.approx(RATE * TOTAL * 0.5, rel=1e-12)  # 0.16


def test_without_planned_seconds_the_plan_uses_the_measured_seconds_per_update(tmp_path: Path) -> None:
    _train(_config(tmp_path), tmp_path / "run")
    m = _metrics(tmp_path / "textfile" / "cosanneal.prom")
    measured = (
        m["cosanneal_last_step_timestamp_seconds"] - m["cosanneal_run_start_timestamp_seconds"]
    ) / TOTAL
    assert m["cosanneal_planned_step_seconds"] == pytest.approx(measured, rel=1e-12)
    assert m["cosanneal_planned_cost"] == pytest.approx(RATE * TOTAL * measured, rel=1e-12)
    assert m["cosanneal_step"] == TOTAL - 1


def test_no_price_no_cost_metrics(tmp_path: Path) -> None:
    data = blobs_config(epochs=1, telemetry__prometheus_textfile=str(tmp_path / "m.prom"))
    (tmp_path / "c.json").write_text(json.dumps(data))
    _train(tmp_path / "c.json", tmp_path / "run")
    names = set(_metrics(tmp_path / "m.prom"))
    assert "cosanneal_step" in names
    assert not {n for n in names if "cost" in n or "planned" in n or "price" in n}


def test_cost_continues_across_a_preemption_and_resume(tmp_path: Path) -> None:
    config, run_dir = _config(tmp_path), tmp_path / "run"
    textfile = tmp_path / "textfile" / "cosanneal.prom"
    first = _spawn(config, run_dir)
    _wait_for_step(run_dir, 60, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143, first.stderr.read().decode() if first.stderr else ""
    before = _metrics(textfile)
    assert before["status:preempted"] == 1
    assert before["cosanneal_cost"] == pytest.approx(
        RATE * before["cosanneal_run_duration_seconds"], rel=1e-12
    )
    ((started, ended),) = _sessions(run_dir)
    assert ended is not None  # a preempted process closes its run store

    _train(config, run_dir)
    after = _metrics(textfile)
    assert after["status:finished"] == 1
    # the earlier session's seconds, from the run store: ended - started
    assert after["cosanneal_previous_sessions_seconds"] == pytest.approx(ended - started, rel=1e-12)
    assert after["cosanneal_cost"] == pytest.approx(
        RATE * (ended - started + after["cosanneal_run_duration_seconds"]), rel=1e-12
    )
    assert after["cosanneal_cost"] > before["cosanneal_cost"]
    # the measured seconds per update count only this session's updates (from the resumed step)
    run = runs.open(run_dir)
    try:
        (resumed,) = run.events("resumed")
    finally:
        run.close()
    resumed_from = int(resumed["step"])
    assert 60 <= resumed_from < TOTAL
    measured = (
        after["cosanneal_last_step_timestamp_seconds"] - after["cosanneal_run_start_timestamp_seconds"]
    ) / (TOTAL - resumed_from)
    assert after["cosanneal_planned_step_seconds"] == pytest.approx(measured, rel=1e-12)


def test_a_killed_session_is_charged_until_its_last_row_not_until_the_restart(tmp_path: Path) -> None:
    config, run_dir = _config(tmp_path), tmp_path / "run"
    proc = _spawn(config, run_dir)
    _wait_for_step(run_dir, 40, proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    killed_at = time.time()
    ((started, ended),) = _sessions(run_dir)
    assert ended is None
    expected = previous_seconds(run_dir)  # the formula, on the store as the resumed run finds it
    assert 0 < expected <= killed_at - started
    time.sleep(1.0)  # the job waits to be restarted: not charged
    _train(config, run_dir)
    after = _metrics(tmp_path / "textfile" / "cosanneal.prom")
    assert after["cosanneal_previous_sessions_seconds"] == pytest.approx(expected, rel=1e-12)
    assert after["cosanneal_cost"] == pytest.approx(
        RATE * (expected + after["cosanneal_run_duration_seconds"]), rel=1e-12
    )
    assert len(_sessions(run_dir)) == 2


def test_cost_plan_devices_default_to_the_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "16")
    plan = cost_plan({"price_per_device_hour": 1.8}, tmp_path)
    assert plan.devices == 16 and plan.rate_per_second == pytest.approx(1.8 * 16 / 3600)
    assert cost_plan({"price_per_device_hour": 1.8, "devices": 4}, tmp_path).devices == 4
    monkeypatch.delenv("WORLD_SIZE")
    assert cost_plan({"price_per_device_hour": 1.8}, tmp_path).devices == 1


def test_a_sweep_trial_carries_the_sweep_label() -> None:
    assert sink_labels("lm", Path("/runs/lr-study/trial-12")) == {
        "job": "lm", "run": "trial-12", "sweep": "lr-study",
    }  # fmt: skip
    assert sink_labels("lm", Path("/runs/trial-run")) == {"job": "lm", "run": "trial-run"}
