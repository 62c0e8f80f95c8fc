"""Fleet load test (issue 13): 32 concurrent ``cosanneal train`` jobs, one real Prometheus on loopback.

Every job has its own run directory and exporter port (a ``file_sd`` target labelled with its slot); a
quarter of them also write a node-exporter textfile (rewritten at each checkpoint, every 2 updates), a quarter export cost metrics, four inject a NaN
loss. Prometheus scrapes every 500 ms and evaluates the project's rule files (deploy/prometheus, group
intervals shortened to 1 s) every second. Checked afterwards: every job exited 0; each job's series
carry its own labels on its own target, and every scraped LR is the one its run store recorded for the
step scraped with it; all 32 exporters were up at once; every rule group is healthy, the recording
rules produced a series per job (the cost ones per priced job), ``CosannealRestartWindowOpen`` fired
for every job (warmup) and ``CosannealNonFiniteValues`` for exactly the NaN jobs, no other alert; every
run store passes ``PRAGMA integrity_check`` and holds all its steps; every textfile read while the jobs
wrote it was whole, and parses with ``promtool check metrics``.

The jobs run in a fork server (tests/deploy/prom_helpers.py: imports shared, each child runs the real
``cosanneal train`` command), so that 32 jobs fit a 2-core machine in well under the slow step's time.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import prom_helpers as ph
import pytest
from blobs import blobs_config
from prometheus_client.parser import text_string_to_metric_families

from cosanneal import runs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ph.PROMETHEUS is None or ph.PROMTOOL is None,
        reason="prometheus/promtool not installed (Debian package: prometheus)",
    ),
]

N_JOBS = 32
UPDATES = 40  # 2 epochs of 20 updates: warmup 0-9, then the first cosine cycle
WARMUP = 10
JOB_NAMES = ("fleet-a", "fleet-b", "fleet-c", "fleet-d")
NAN_AT = 20
RUN_PATTERN = "job-[0-9]+"
#: The selector of the fleet's series (the slots' run directory names).
OURS = f'cosanneal_run=~"{RUN_PATTERN}"'


def _slot(i: int) -> str:
    return f"job-{i:02d}"


def _nan_job(i: int) -> bool:
    return i % 8 == 3


def _priced(i: int) -> bool:
    return i % 4 == 1


def _textfile_job(i: int) -> bool:
    return i % 4 == 2


class TextfileWatcher(threading.Thread):
    """Reads the jobs' textfiles while they are written; records every distinct content and every bad read."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.snapshots: dict[Path, list[bytes]] = {p: [] for p in paths}
        self.bad: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.paths:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                seen = self.snapshots[path]
                if seen and seen[-1] == data:
                    continue
                seen.append(data)
                problem = whole_exposition_problem(data)
                if problem:
                    self.bad.append(f"{path.name} read {len(seen)}: {problem}")
            self.done.wait(0.1)


def whole_exposition_problem(data: bytes) -> str | None:
    """Why ``data`` is not one whole exposition of the sink (``None``: it is)."""
    if not data.endswith(b"\n"):
        return f"no final newline ({len(data)} bytes)"
    try:
        families = {f.name: f for f in text_string_to_metric_families(data.decode())}
    except Exception as exc:  # the parser's errors are ValueError and friends
        return f"does not parse: {exc}"
    last = families.get("cosanneal_run_failures")  # the last family the sink writes
    if last is None or not last.samples:
        return "the last metric family is missing"
    return None


def promtool_check(data: bytes) -> subprocess.CompletedProcess[bytes]:
    assert ph.PROMTOOL is not None
    return subprocess.run(
        [ph.PROMTOOL, "check", "metrics"], input=data, capture_output=True, timeout=30, check=False
    )


def test_fleet_of_32_jobs_on_one_prometheus(tmp_path: Path) -> None:
    t_start = time.monotonic()
    configs = {}
    for name in JOB_NAMES:
        cfg = blobs_config(name=name, epochs=2, checkpoint__every_steps=20)
        configs[name] = tmp_path / f"{name}.json"
        configs[name].write_text(json.dumps(cfg))
    (tmp_path / "runs").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "textfiles").mkdir()
    jobs, textfiles = [], {}
    for i in range(N_JOBS):
        slot = _slot(i)
        sets = ["debug.sleep_per_step=0.25"]
        if _nan_job(i):
            sets.append(f"debug.inject_nan_at=[{NAN_AT}]")
        if _priced(i):
            sets.append("telemetry.price_per_device_hour=2.0")
        if _textfile_job(i):
            textfiles[slot] = tmp_path / "textfiles" / f"{slot}.prom"
            # the sink rewrites its textfile at every explicit flush: before each checkpoint, and at the end
            sets += [f"telemetry.prometheus_textfile={textfiles[slot]}", "checkpoint.every_steps=2"]
        jobs.append(
            ph.fleet_job(
                slot,
                configs[JOB_NAMES[i % len(JOB_NAMES)]],
                tmp_path / "runs" / slot,
                tmp_path / "logs" / f"{slot}.log",
                sets,
            )
        )
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    rule_files = ph.copy_rules(tmp_path, interval="1s")
    config = tmp_path / "prometheus.yml"
    ph.write_config(config, targets, rule_files)
    port = ph.free_port()
    api = ph.PromAPI(port)
    prom = ph.start_prometheus(tmp_path, config, port)
    fleet: subprocess.Popen[bytes] | None = None
    watcher = TextfileWatcher(list(textfiles.values()))
    try:
        ph.wait_for(api.ready, 60, "prometheus to be ready")
        fleet, result_path = ph.start_fleet(tmp_path, jobs, targets)
        watcher.start()
        result = ph.wait_fleet(fleet, result_path, timeout=170)
        watcher.done.set()
        watcher.join(timeout=10)
        # let the last scrapes (the exporters gone: up 0, series stale) and rule evaluations happen
        time.sleep(3)
        end = time.time()
        _check_fleet(api, result, end, tmp_path)
    finally:
        watcher.done.set()
        ph.stop(fleet)
        ph.stop(prom)
    _check_run_stores(result)
    _check_textfiles(watcher, textfiles, result)
    wall = time.monotonic() - t_start
    cpu = sum(j["cpu_user_s"] + j["cpu_sys_s"] for j in result["jobs"])
    print(
        f"fleet of {N_JOBS}: {wall:.0f} s wall, {cpu:.0f} CPU s in the jobs, "
        f"peak PSS of the jobs {result['peak_pss_kib'] / 2**20:.2f} GiB, "
        f"max RSS of one job {max(j['maxrss_kib'] for j in result['jobs']) / 1024:.0f} MiB, "
        f"{sum(j['attempts'] > 1 for j in result['jobs'])} job(s) restarted on another port"
    )


def _check_fleet(api: ph.PromAPI, result: dict[str, Any], end: float, tmp_path: Path) -> None:
    jobs = {j["slot"]: j for j in result["jobs"]}
    slots = [_slot(i) for i in range(N_JOBS)]
    failed = {s: Path(j["log"]).read_text()[-2000:] for s, j in jobs.items() if j["returncode"] != 0}
    assert not failed, failed
    assert set(jobs) == set(slots)

    # every target was scraped, and all 32 exporters were up at one moment
    targets = {t["labels"]["slot"]: t for t in api.active_targets() if t["labels"]["job"] == "cosanneal"}
    assert set(targets) == set(slots)
    for slot, target in targets.items():
        assert target["labels"]["instance"] == f"127.0.0.1:{jobs[slot]['port']}"
    (overlap,) = api.query('max_over_time(count(up{job="cosanneal"} == 1)[10m:500ms])', end)
    assert float(overlap["value"][1]) == N_JOBS

    # each job's series: its own labels on its own target. A port taken by another process of the machine
    # between its pick and the job's bind was given up (the job ran again on another one); whatever
    # served there was scraped meanwhile, and only there: no other series than the fleet's anywhere else.
    window = "10m"
    given_up = {f"127.0.0.1:{p}" for j in jobs.values() for p in j["ports"][:-1]}
    for series in api.query(f'cosanneal_step{{cosanneal_run!~"{RUN_PATTERN}"}}[{window}]', end):
        assert series["metric"]["instance"] in given_up, series["metric"]
    step_series = api.query(f"cosanneal_step{{{OURS}}}[{window}]", end)
    assert sorted(s["metric"]["cosanneal_run"] for s in step_series) == slots, [
        (s["metric"], len(s["values"])) for s in step_series
    ]
    for series in step_series:
        labels = series["metric"]
        slot = labels["cosanneal_run"]
        i = int(slot.split("-")[1])
        assert labels["slot"] == slot, labels  # the target of this slot served this job's metrics
        assert labels["cosanneal_job"] == JOB_NAMES[i % len(JOB_NAMES)], labels
        assert labels["instance"] == f"127.0.0.1:{jobs[slot]['port']}", labels
        assert labels["job"] == "cosanneal"

    # every scraped LR is the one the run store recorded for the step scraped with it
    steps = api.samples(f"cosanneal_step{{{OURS}}}", window, end)
    lrs = api.samples(f'cosanneal_learning_rate{{group="0",{OURS}}}', window, end)
    expected = api.samples(f'cosanneal_expected_learning_rate{{group="0",{OURS}}}', window, end)
    assert set(lrs) == set(slots) == set(expected)
    for slot in slots:
        run = runs.open(jobs[slot]["run_dir"])
        try:
            store_steps, store_lr = run.scalar("lr", 0)
        finally:
            run.close()
        recorded = dict(zip(store_steps.tolist(), store_lr.tolist(), strict=True))
        step_at = dict(steps[slot])
        scraped = []
        for t, lr in lrs[slot]:
            step = int(step_at[t])
            assert recorded[step] == lr, (slot, step, lr, recorded[step])
            scraped.append((step, lr))
        assert dict(expected[slot]) == dict(lrs[slot]), slot  # the schedule's LR, same scrapes
        seen_steps = {s for s, _ in scraped}
        assert len({lr for _, lr in scraped}) >= 5, (slot, scraped)  # the LR moved through the schedule
        assert min(seen_steps) < WARMUP <= max(seen_steps), (slot, sorted(seen_steps))  # warmup and anneal

    nonfinite = api.by_run(f"max_over_time(cosanneal_nonfinite_steps_total{{{OURS}}}[{window}])", end)
    assert nonfinite == {s: 1.0 if _nan_job(int(s[4:])) else 0.0 for s in slots}

    # the rules: every group loaded, evaluated and healthy
    groups = {g["name"]: g for g in api.rules()}
    want = ph.rule_groups()
    assert set(groups) == set(want)
    for name, group in groups.items():
        assert [r["name"] for r in group["rules"]] == want[name]
        for rule in group["rules"]:
            assert rule["health"] == "ok", (name, rule["name"], rule.get("lastError"))
            assert not rule.get("lastError"), (name, rule["name"], rule["lastError"])
            assert not rule["lastEvaluation"].startswith("0001-"), (name, rule["name"])

    # the recording rules produced a series for every job (the cost ones for every priced job)
    rel_error = api.by_run(f"max_over_time(cosanneal:learning_rate:relative_error{{{OURS}}}[{window}])", end)
    assert rel_error == dict.fromkeys(slots, 0.0)
    rate = api.by_run(f"max_over_time(cosanneal:optimizer_steps:rate5m{{{OURS}}}[{window}])", end)
    assert set(rate) == set(slots) and min(rate.values()) > 0, rate
    started = api.by_run(f"max_over_time(cosanneal:run_start_timestamp_seconds:max{{{OURS}}}[{window}])", end)
    exported = api.by_run(f"max_over_time(cosanneal_run_start_timestamp_seconds{{{OURS}}}[{window}])", end)
    assert started == exported and set(started) == set(slots)
    for slot in slots:
        assert jobs[slot]["started"] - 1 <= started[slot] <= jobs[slot]["ended"], slot
    priced = {s for s in slots if _priced(int(s[4:]))}
    planned = api.by_run(f"max_over_time(cosanneal:cost:planned_to_date{{{OURS}}}[{window}])", end)
    assert set(planned) == priced and min(planned.values()) > 0, planned

    # the alerts: the restart window (warmup) of every job, the NaN of exactly the NaN jobs, nothing else
    fired: dict[str, set[str]] = {}
    for series in api.query(f'max_over_time(ALERTS{{alertstate="firing",{OURS}}}[{window}])', end):
        fired.setdefault(series["metric"]["alertname"], set()).add(series["metric"]["cosanneal_run"])
    assert fired == {
        "CosannealRestartWindowOpen": set(slots),
        "CosannealNonFiniteValues": {s for s in slots if _nan_job(int(s[4:]))},
    }, {k: sorted(v) for k, v in fired.items()}


def _check_run_stores(result: dict[str, Any]) -> None:
    for job in result["jobs"]:
        slot, run_dir = job["slot"], Path(job["run_dir"])
        conn = sqlite3.connect(run_dir / "run.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], slot
        finally:
            conn.close()
        run = runs.open(run_dir)
        try:
            steps, lrs = run.scalar("lr", 0)
            _, lr_expected = run.scalar("lr_expected", 0)
            finished = run.events("run_finished")
            nonfinite = run.events("nonfinite")
        finally:
            run.close()
        np.testing.assert_array_equal(steps, np.arange(UPDATES), err_msg=slot)
        np.testing.assert_array_equal(lrs, lr_expected, err_msg=slot)
        assert [e["updates"] for e in finished] == [UPDATES], slot
        assert [e["step"] for e in nonfinite] == ([NAN_AT] if _nan_job(int(slot[4:])) else []), slot


def _check_textfiles(watcher: TextfileWatcher, textfiles: dict[str, Path], result: dict[str, Any]) -> None:
    assert not watcher.bad, watcher.bad[:5]
    jobs = {j["slot"]: j for j in result["jobs"]}
    for slot, path in textfiles.items():
        snapshots = watcher.snapshots[path]
        assert len(snapshots) >= 5, (slot, len(snapshots))  # read while the job rewrote it
        final = path.read_bytes()
        assert whole_exposition_problem(final) is None
        picks = [snapshots[0], snapshots[len(snapshots) // 2], final]
        for data in picks:
            done = promtool_check(data)
            assert done.returncode == 0, (slot, done.stdout, done.stderr)
        families = {f.name: f for f in text_string_to_metric_families(final.decode())}
        (step,) = families["cosanneal_step"].samples
        assert step.value == UPDATES - 1 and step.labels["cosanneal_run"] == slot
        status = {s.labels["status"]: s.value for s in families["cosanneal_run_status"].samples}
        assert status["finished"] == 1.0, (slot, status)
        run = runs.open(jobs[slot]["run_dir"])
        try:
            _, lrs = run.scalar("lr", 0)
        finally:
            run.close()
        (lr,) = families["cosanneal_learning_rate"].samples
        assert lr.value == lrs[-1], slot
