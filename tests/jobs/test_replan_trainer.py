"""``cosanneal replan`` on real training: a running job and a stopped one take the request, exactly.

The blobs job (160 updates: warmup 10, cycles of 30, 60, 60 cut by the budget) is replanned at an
evaluation (the ``on_eval`` callback runs the CLI, as a user in another shell would, between two
updates) or while stopped; the LR it then trains is the new plan's closed form at every update, the
switch is one recorded event, ``verify`` passes on the run and fails once the event is gone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import BLOBS, blobs_config, events, last_weights, lr_trace
from blobs import run_cli as cli

from cosanneal import from_dict, runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.replan import REFUSED, REQUEST, ReplanRequest, write_request
from cosanneal.jobs.trainer import Trainer
from cosanneal.schedules.replan import Replanned, replan

SCHEDULE = from_dict(BLOBS["schedule"])


def train(run_dir: Path, on_eval: Any = None, **changes: Any) -> Any:
    cfg = config_from_dict(blobs_config(**changes))
    return Trainer(cfg, run_dir, progress=False, log=lambda _: None, on_eval=on_eval).run()


def replan_at(run_dir: Path, at: int, *args: str) -> Any:
    """An ``on_eval`` callback that runs ``cosanneal replan RUN ARGS`` once, at update ``at``."""

    def on_eval(updates: int, _metrics: dict[str, float], _end: bool) -> bool:
        if updates == at:
            code, _, err = cli("replan", run_dir, *args)
            assert code == 0, err
        return False

    return on_eval


@pytest.fixture(scope="module")
def replanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job given a new total of 240 updates (two more cycles) at update 40, while it runs."""
    run_dir = tmp_path_factory.mktemp("replan") / "run"
    result = train(run_dir, replan_at(run_dir, 40, "--total", "240", "--mode", "cycles"))
    assert result.status == "finished" and result.steps == 240
    return run_dir


def test_a_running_job_switches_at_its_next_update_to_the_exact_new_plan(replanned: Path) -> None:
    plan = replan(SCHEDULE, at=40, total=240, mode="cycles")
    steps, lr = lr_trace(replanned)
    assert steps.tolist() == list(range(240))
    np.testing.assert_array_equal(lr, plan(steps))  # the closed form of the new plan, bit for bit
    np.testing.assert_array_equal(lr[:40], SCHEDULE(np.arange(40)))
    with runs.open(replanned) as run:
        np.testing.assert_array_equal(run.scalar("lr_expected", 0)[1], lr)  # telemetry expected the new plan
        (event,) = run.events("schedule_replanned")
    assert event["step"] == 40 and event["mode"] == "cycles" and event["jump"] == 0.0
    assert (event["total_steps_before"], event["total_steps"]) == (160, 240)
    assert event["fingerprint_before"] == SCHEDULE.fingerprint() != event["fingerprint_after"]
    assert from_dict(event["schedule"]) == plan
    assert not (replanned / REQUEST).exists()  # spent: the final checkpoint holds the new plan


def test_verify_passes_on_a_recorded_replan_and_fails_without_the_event(
    replanned: Path, tmp_path: Path
) -> None:
    code, out, err = cli("verify", replanned)
    assert code == 0, out + err
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(replanned, copy)
    with sqlite3.connect(copy / "run.db") as db:
        db.execute("DELETE FROM events WHERE kind = 'schedule_replanned'")
    code, out, _ = cli("verify", copy)
    assert code == 1 and "mismatch" in out.lower()


def test_a_stopped_job_takes_the_request_when_it_resumes_bit_identical_to_a_running_switch(
    replanned: Path, tmp_path: Path
) -> None:
    args = ("--total", "200", "--mode", "cooldown", "--cooldown", "0.25", "--shape", "1-sqrt")
    running = tmp_path / "running"
    assert train(running, replan_at(running, 60, *args)).steps == 200

    stopped = tmp_path / "stopped"

    def preempt_at_60(updates: int, _m: dict[str, float], _e: bool) -> bool:
        if updates == 60:
            os.kill(os.getpid(), signal.SIGTERM)  # the job checkpoints at the next step boundary and stops
        return False

    first = train(stopped, preempt_at_60)
    assert first.status == "preempted" and first.steps == 60
    code, out, err = cli("replan", stopped, *args)
    assert code == 0 and "wrote" in out, err
    resumed = train(stopped)
    assert resumed.status == "finished" and resumed.steps == 200
    plan = replan(SCHEDULE, at=60, total=200, mode="cooldown", cooldown_steps=50, shape="1-sqrt")
    for run_dir in (running, stopped):
        steps, lr = lr_trace(run_dir)
        assert steps.tolist() == list(range(200))
        np.testing.assert_array_equal(lr, plan(steps))
        assert [e["step"] for e in events(run_dir, "schedule_replanned")] == [60]
    ref, got = last_weights(running), last_weights(stopped)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_finished_run_and_a_jump_are_refused_with_nothing_written(replanned: Path, tmp_path: Path) -> None:
    code, _, err = cli("replan", replanned, "--total", "400")
    assert (
        code == 2 and err.startswith("error: RUN:") and "cosanneal branch" in err and "Traceback" not in err
    )
    assert not (replanned / REQUEST).exists()

    stopped = tmp_path / "stopped"

    def preempt_at_20(updates: int, _m: dict[str, float], _e: bool) -> bool:
        if updates == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return False

    assert train(stopped, preempt_at_20).status == "preempted"
    for args, message in [
        (("--total", "30", "--mode", "cycles"), "not before the new total 30"),  # the cycle ends at 40
        (("--total", "20"), "pass --total larger than 20"),
        (("--total", "300", "--mode", "warp"), "--mode must be one of"),
        (("--total", "300", "--mode", "cooldown", "--cooldown", "soon"), "--cooldown"),
        (("--total", "300", "--mode", "cooldown", "--floor", "5"), "pass --floor"),
        (("--total", "300", "--cycles", "2"), "--cycles is for --mode cycles"),
    ]:
        code, _, err = cli("replan", stopped, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
        assert not (stopped / REQUEST).exists()
    code, _, err = cli("replan", tmp_path / "nowhere", "--total", "300")
    assert code == 2 and "not a run directory" in err


def test_a_request_made_against_another_schedule_is_set_aside_and_training_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_request(run_dir, ReplanRequest(total=300, mode="stretch", expect="0123456789abcdef", id="stale"))
    result = train(run_dir)
    assert result.status == "finished" and result.steps == 160
    steps, lr = lr_trace(run_dir)
    np.testing.assert_array_equal(lr, SCHEDULE(steps))
    (event,) = events(run_dir, "replan_refused")
    assert event["request"] == "stale" and "run `cosanneal replan` again" in event["reason"]
    assert (run_dir / REFUSED).exists() and not (run_dir / REQUEST).exists()


def test_the_dry_run_and_json_show_the_hand_off_and_lint(tmp_path: Path) -> None:
    import json

    stopped = tmp_path / "stopped"

    def preempt_at_100(updates: int, _m: dict[str, float], _e: bool) -> bool:
        if updates == 100:
            os.kill(os.getpid(), signal.SIGTERM)
        return False

    assert train(stopped, preempt_at_100).steps == 100
    code, out, err = cli("replan", stopped, "--total", "400", "--dry-run")
    assert code == 0, err
    assert "replan (stretch) at update 100: 160 -> 400 updates" in out and "dry run: nothing written" in out
    assert not (stopped / REQUEST).exists()
    code, out, err = cli("replan", stopped, "--total", "400", "--json")
    payload = json.loads(out)
    new = from_dict(payload["schedule"])
    assert isinstance(new, Replanned) and new.horizon == pytest.approx(400)
    assert payload["lr_before"] == payload["lr_after"] == SCHEDULE(100)
    assert (stopped / REQUEST).exists() and payload["written"]


def test_the_report_marks_the_replan_and_draws_the_new_plan_as_expected(
    replanned: Path, tmp_path: Path
) -> None:
    import json
    import re

    page = tmp_path / "report.html"
    code, _, err = cli("report", replanned, "-o", page)
    assert code == 0, err
    text = page.read_text()
    assert (
        "at update 40 (cycles): 160 -&gt; 240 updates" in text
        or "at update 40 (cycles): 160 -> 240 updates" in text
    )
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert found is not None
    doc = json.loads(found.group(1))
    lr = next(p for c in doc["charts"] for p in c["panels"] if p["id"] == "lr-0")
    assert [v["x"] for v in lr["vlines"] if v["label"].endswith("replan")] == [40]
    expected = next(s for s in lr["series"] if s["label"].endswith("expected"))
    plan = replan(SCHEDULE, at=40, total=240, mode="cycles")
    np.testing.assert_allclose(expected["y"], plan(np.asarray(expected["x"])), rtol=1e-12)


@pytest.mark.slow
def test_a_job_killed_right_after_its_switch_resumes_on_one_exact_plan(tmp_path: Path) -> None:
    """SIGKILL as soon as the switch is on record, before the request file is spent: one switch survives."""
    import json
    import time

    from blobs import spawn_train, wait_for_updates

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(blobs_config(debug__sleep_per_step=0.03)))
    run_dir = tmp_path / "run"
    proc = spawn_train(cfg, run_dir)
    wait_for_updates(run_dir, 25, proc)
    code, _, err = cli("replan", run_dir, "--total", "220")
    assert code == 0, err
    deadline = time.monotonic() + 60
    while not events(run_dir, "schedule_replanned"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    assert (run_dir / REQUEST).exists()
    from cosanneal.jobs.config import load_config

    result = Trainer(load_config(cfg), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 220
    switches = events(run_dir, "schedule_replanned")
    assert len({e["request"] for e in switches}) == 1
    at = switches[-1]["step"]
    plan = replan(SCHEDULE, at=at, total=220, mode="stretch")
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(220))
    np.testing.assert_array_equal(lr, plan(steps))
    assert cli("verify", run_dir)[0] == 0
    assert not (run_dir / REQUEST).exists()


def test_prometheus_sees_the_new_length_and_the_new_plans_restarts(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    run_dir, textfile = tmp_path / "run", tmp_path / "metrics.prom"
    result = train(
        run_dir,
        replan_at(run_dir, 40, "--total", "240", "--mode", "cycles"),
        telemetry__prometheus_textfile=str(textfile),
        telemetry__price_per_device_hour=1.0,
    )
    assert result.steps == 240
    samples = {
        s.name: s.value for f in text_string_to_metric_families(textfile.read_text()) for s in f.samples
    }
    plan = replan(SCHEDULE, at=40, total=240, mode="cycles")
    assert samples["cosanneal_planned_steps"] == 240
    assert samples["cosanneal_configured_restarts"] == len(plan.restarts(plan.horizon))
    assert samples["cosanneal_restarts_total"] == len(plan.restarts(240))


def test_a_corrupt_request_file_is_reported_once_and_training_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / REQUEST).write_text('{"total": "lots"')  # half a file, as an editor's crash leaves it
    lines: list[str] = []
    cfg = config_from_dict(blobs_config())
    result = Trainer(cfg, run_dir, progress=False, log=lines.append).run()
    assert result.status == "finished" and result.steps == 160
    np.testing.assert_array_equal(lr_trace(run_dir)[1], SCHEDULE(np.arange(160)))
    assert len([line for line in lines if line.startswith("replan:") and "not JSON" in line]) == 1


@pytest.mark.slow
def test_two_torchrun_ranks_take_the_request_at_the_same_update(tmp_path: Path) -> None:
    """2 gloo ranks stopped by max_steps at 12, replanned, resumed: rank 0 broadcasts, both switch at 12."""
    import json
    import shutil
    import subprocess
    import sys

    from blobs import free_port

    port = free_port()
    cfg = tmp_path / "cfg.json"
    traces = tmp_path / "traces"
    cfg.write_text(
        json.dumps(
            blobs_config(epochs=3, max_steps=12, debug__lr_trace_dir=str(traces), checkpoint__every_steps=4)
        )
    )
    run_dir = tmp_path / "run"
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun is not None
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", str(port), "-m", "cosanneal", "train", str(cfg),
           "--run-dir", str(run_dir), "--no-progress"]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    code, out, err = cli("replan", run_dir, "--total", "40", "--mode", "cooldown", "--cooldown", "10")
    assert code == 0 and "cosanneal train` on it again" in out, out + err
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    plan = replan(SCHEDULE, at=12, total=40, mode="cooldown", cooldown_steps=10)
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(40))
    np.testing.assert_array_equal(lr, plan(steps))
    ranks = [json.loads((traces / f"lr-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and [row[0] for row in ranks[0]] == list(range(12, 40))  # the resumed session
    assert [e["step"] for e in events(run_dir, "schedule_replanned")] == [12]
    assert cli("verify", run_dir)[0] == 0


def test_a_run_of_another_loop_is_refused_with_the_python_way(tmp_path: Path) -> None:
    from cosanneal.runtime.runstore import RunStore, run_params

    run_dir = tmp_path / "lightning-run"
    with RunStore(run_dir) as store:  # what the Lightning and HF callbacks record: no trainer length
        store.log_params(run_params({"trainer": "lightning"}, schedule=SCHEDULE))
        store.log_scalars(0, {"lr": SCHEDULE(0), "lr_expected": SCHEDULE(0)}, group=0)
    code, _, err = cli("replan", run_dir, "--total", "400")
    assert code == 2 and "not written by `cosanneal train`" in err and "replan()" in err
    assert not (run_dir / REQUEST).exists()
