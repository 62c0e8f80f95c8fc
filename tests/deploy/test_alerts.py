"""The Prometheus rules in deploy/prometheus: valid (promtool check), unit-tested (promtool test), and
every alert tested both firing and silent, with a runbook link to a documented anchor."""

from __future__ import annotations

import re
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
ROOT = DEPLOY.parents[1]
ANCHORS = {
    "docs/runbooks.md": {
        "non-finite-values", "job-stalled", "job-crash-looping", "lr-deviation", "loss-spike",
        "checkpoint-overdue", "restart-count", "cost-overruns",
    },
    "docs/observability.md": {"alertmanager-routing"},
}  # fmt: skip
#: Alerts that only inhibit others in Alertmanager (deploy/alertmanager/alertmanager.yml) and notify nobody.
INHIBITORS = {"CosannealRestartWindowOpen", "CosannealJobPreempted"}


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


def _slug(heading: str) -> str:
    """The anchor mkdocs (pymdownx slugify, lower case) and GitHub give a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_and_a_runbook_anchor() -> None:
    alerts = _alerts()
    assert len(alerts) == 11
    severities, used = {}, set()
    for rule in alerts:
        labels, ann = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(ann, dict)
        severities[rule["alert"]] = labels["severity"]
        doc, _, anchor = str(ann["runbook_url"]).partition("#")
        assert anchor in ANCHORS.get(doc, set()), ann["runbook_url"]
        used.add((doc, anchor))
    assert used == {(doc, a) for doc, anchors in ANCHORS.items() for a in anchors}
    for doc, anchors in ANCHORS.items():  # each anchor is a heading of that document
        headings = {
            _slug(line.lstrip("#")) for line in (ROOT / doc).read_text().splitlines() if line.startswith("#")
        }
        assert anchors <= headings, (doc, sorted(anchors - headings))
    pages = {a for a, s in severities.items() if s == "page"}
    assert pages == {
        "CosannealNonFiniteValues", "CosannealJobStalled", "CosannealJobCrashLooping",
        "CosannealLearningRateDeviation", "CosannealCostBurnRateHigh",
    }  # fmt: skip
    assert {a for a, s in severities.items() if s == "info"} == INHIBITORS
    assert set(severities.values()) == {"page", "ticket", "info"}


def test_burn_rate_pages_above_2x_and_tickets_between_1x_and_2x() -> None:
    by_name = {r["alert"]: r for r in _alerts()}
    high, elevated = by_name["CosannealCostBurnRateHigh"], by_name["CosannealCostBurnRateElevated"]
    assert high["labels"] == {"severity": "page"} and elevated["labels"] == {"severity": "ticket"}  # type: ignore[comparison-overlap]
    for scope in ("cosanneal:cost:burn_rate", "cosanneal_sweep:cost:burn_rate"):
        assert f"{scope} > 2" in str(high["expr"])
        assert f"({scope} > 1 and {scope} <= 2)" in " ".join(str(elevated["expr"]).split())


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
