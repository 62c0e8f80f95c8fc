"""The Prometheus rules in deploy/prometheus: valid (promtool check), unit-tested (promtool test), and
every alert tested both firing and silent, with a runbook link to a documented anchor."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package: prometheus)"
)
ANCHORS = {
    "non-finite-values", "job-stalled", "job-crash-looping", "lr-deviation", "loss-spike",
    "checkpoint-overdue", "restart-count",
}  # fmt: skip


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False
    )


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@needs_promtool
def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", "rules.yml", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_config() -> None:
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_severity_and_a_runbook_anchor() -> None:
    alerts = _alerts()
    assert len(alerts) == 7
    severities = {}
    for rule in alerts:
        labels, ann = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(ann, dict)
        severities[rule["alert"]] = labels["severity"]
        url = str(ann["runbook_url"])
        assert url.startswith("docs/runbooks.md#") and url.split("#")[1] in ANCHORS, url
    assert {str(r["annotations"]["runbook_url"]).split("#")[1] for r in alerts} == ANCHORS  # type: ignore[index]
    pages = {a for a, s in severities.items() if s == "page"}
    assert pages == {
        "CosannealNonFiniteValues", "CosannealJobStalled", "CosannealJobCrashLooping",
        "CosannealLearningRateDeviation",
    }  # fmt: skip
    assert set(severities.values()) == {"page", "ticket"}


def test_every_alert_is_tested_firing_and_silent() -> None:
    doc = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    fired, silent = set(), set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    names = {str(r["alert"]) for r in _alerts()}
    assert fired == names
    assert silent == names


def test_loss_spike_is_silenced_by_the_restart_window() -> None:
    spike = next(r for r in _alerts() if r["alert"] == "CosannealLossSpike")
    assert "unless max_over_time(cosanneal_in_restart_window[5m]) == 1" in str(spike["expr"])
