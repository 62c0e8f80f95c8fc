"""Integration: a real Prometheus server (loopback only) scrapes a running ``cosanneal train`` job; the
LR series its query API returns is the LR the run store recorded (and the expected LR)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blobs import BLOBS
from blobs import free_port as _free_port

from cosanneal import runs

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package: prometheus)"
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _up(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=1).status == 200)
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_prometheus_scrapes_the_lr_the_run_store_recorded(tmp_path: Path) -> None:
    exporter, server = _free_port(), _free_port()
    cfg = tmp_path / "blobs.json"
    cfg.write_text(json.dumps(BLOBS))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: cosanneal\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{server}",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    train = subprocess.Popen(
        [
            sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", str(run_dir), "--no-progress",
            "--set", f"telemetry.prometheus_port={exporter}", "--set", "debug.sleep_per_step=0.05",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    api = f"http://127.0.0.1:{server}/api/v1"
    try:
        _wait(lambda: _up(f"http://127.0.0.1:{server}/-/ready"), 30, "prometheus to be ready")
        start = time.time()
        _, err = train.communicate(timeout=120)
        assert train.returncode == 0, err.decode()
        end = time.time()
        query = urllib.parse.urlencode(
            {"query": 'cosanneal_learning_rate{group="0"}', "start": start - 5, "end": end, "step": "0.5"}
        )
        result = _get(f"{api}/query_range?{query}")
        assert result["status"] == "success"
        (series,) = result["data"]["result"]
        assert series["metric"]["cosanneal_job"] == "blobs"
        assert series["metric"]["cosanneal_run"] == "run"
        assert series["metric"]["job"] == "cosanneal"
        scraped = np.array([float(v) for _, v in series["values"]])
        expected = _get(
            f"{api}/query_range?{query.replace('cosanneal_learning_rate', 'cosanneal_expected_learning_rate')}"
        )
        (exp_series,) = expected["data"]["result"]
        assert [float(v) for _, v in exp_series["values"]] == scraped.tolist()
    finally:
        _stop(train)
        _stop(prom)
    run = runs.open(run_dir)
    try:
        steps, lrs = run.scalar("lr", 0)
        _, lr_expected = run.scalar("lr_expected", 0)
    finally:
        run.close()
    assert len(steps) == 160
    np.testing.assert_array_equal(lrs, lr_expected)
    recorded = set(lrs.tolist())
    assert len(set(scraped.tolist())) >= 10  # the scrapes saw the LR move through the schedule
    assert set(scraped.tolist()) <= recorded, sorted(set(scraped.tolist()) - recorded)[:5]
