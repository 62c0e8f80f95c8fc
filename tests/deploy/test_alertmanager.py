"""deploy/alertmanager/alertmanager.yml: valid for the real ``amtool check-config``, every label set routed
to its receiver by ``amtool config routes test``, a route to a missing receiver refused, and a real
Alertmanager (Debian's ``prometheus-alertmanager``) grouping, de-duplicating and inhibiting the
alerts of deploy/prometheus/alerts.yml as the config says, with the notifications caught by a local
webhook."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (Debian package: prometheus-alertmanager)"
)
PAGE, TICKET, SILENT = "cosanneal-page", "cosanneal-ticket", "cosanneal-silent"


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AMTOOL), *args], capture_output=True, text=True, timeout=60, check=False)


def _config() -> dict[str, Any]:
    return dict(yaml.safe_load(CONFIG.read_text()))


def _alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


@needs_amtool
def test_amtool_check_config() -> None:
    done = _amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    assert " - 3 receivers" in done.stdout and " - 3 inhibit rules" in done.stdout


#: (labels of an alert, the receiver it must reach); the alerts are the real ones of alerts.yml
ROUTES = [
    ({"alertname": "CosannealJobStalled", "severity": "page", "cosanneal_job": "demo", "cosanneal_run": "r1"}, PAGE),
    ({"alertname": "CosannealNonFiniteValues", "severity": "page", "cosanneal_job": "demo", "cosanneal_run": "r2"}, PAGE),
    ({"alertname": "CosannealCostBurnRateHigh", "severity": "page", "cosanneal_job": "lm", "cosanneal_sweep": "s"}, PAGE),
    ({"alertname": "CosannealLossSpike", "severity": "ticket", "cosanneal_job": "demo", "cosanneal_run": "r1"}, TICKET),
    ({"alertname": "CosannealCostBurnRateElevated", "severity": "ticket", "cosanneal_job": "demo", "cosanneal_run": "r1"}, TICKET),
    ({"alertname": "CosannealRestartWindowOpen", "severity": "info", "cosanneal_job": "demo", "cosanneal_run": "r1"}, SILENT),
    ({"alertname": "CosannealJobPreempted", "severity": "info", "cosanneal_job": "demo", "cosanneal_run": "r1"}, SILENT),
    ({"alertname": "SomethingElse", "team": "ml"}, TICKET),  # no severity: still reaches someone
    ({"alertname": "SomethingElse", "severity": "critical"}, TICKET),
]  # fmt: skip


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"), ROUTES, ids=lambda x: x if isinstance(x, str) else x["alertname"]
)
def test_amtool_routes_each_label_set_to_its_receiver(labels: dict[str, str], receiver: str) -> None:
    pairs = [f"{k}={v}" for k, v in labels.items()]
    done = _amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}", *pairs
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == receiver
    others = {PAGE, TICKET, SILENT} - {receiver}
    for other in others:  # and to no other: the test can fail
        wrong = _amtool(
            "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={other}", *pairs
        )
        assert wrong.returncode == 1, wrong.stdout + wrong.stderr


def test_every_severity_of_the_alert_rules_has_a_route() -> None:
    routed = {m.split("=")[1].strip('"') for r in _config()["route"]["routes"] for m in r["matchers"]}
    severities = {str(r["labels"]["severity"]) for r in _alert_rules().values()}
    assert severities == routed == {"page", "ticket", "info"}


def test_grouping_and_deduplication_settings() -> None:
    route = _config()["route"]
    assert route["group_by"] == ["cosanneal_job", "cosanneal_run", "cosanneal_sweep"]
    assert all("group_by" not in r for r in route["routes"])  # every child inherits the grouping
    for child in route["routes"]:
        group_wait = child.get("group_wait", route["group_wait"])
        repeat = child.get("repeat_interval", route["repeat_interval"])
        assert group_wait and repeat
    page = next(r for r in route["routes"] if r["receiver"] == PAGE)
    assert page["repeat_interval"] == "4h"


def test_inhibit_rules_name_real_alerts() -> None:
    names = set(_alert_rules())
    for rule in _config()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            key, _, value = matcher.partition("=")
            if key.strip() == "alertname":
                wanted = set(value.lstrip("~").strip('"').split("|"))
                assert wanted <= names, sorted(wanted - names)


@needs_amtool
def test_a_route_to_a_missing_receiver_is_refused(tmp_path: Path) -> None:
    config = _config()
    config["route"]["routes"][0]["receiver"] = "cosanneal-pager"  # a typo: no such receiver
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(yaml.safe_dump(config))
    done = _amtool("check-config", str(bad))
    assert done.returncode != 0
    assert 'undefined receiver "cosanneal-pager" used in route' in done.stdout + done.stderr


@needs_amtool
def test_a_missing_default_receiver_is_refused(tmp_path: Path) -> None:
    config = _config()
    config["receivers"] = [r for r in config["receivers"] if r["name"] != TICKET]
    bad = tmp_path / "alertmanager.yml"
    bad.write_text(yaml.safe_dump(config))
    done = _amtool("check-config", str(bad))
    assert done.returncode != 0
    assert f'undefined receiver "{TICKET}" used in route' in done.stdout + done.stderr


# ---- a real Alertmanager ------------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Webhook:
    """A local webhook receiver: every notification body, with the path it was posted to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        lock, received = threading.Lock(), self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    received.append((self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.received) if p == path]


def _wait(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.2)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _post(api: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{api}/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _alert(name: str, **labels: str) -> dict[str, Any]:
    severity = _alert_rules()[name]["labels"]["severity"]
    return {"labels": {"alertname": name, "severity": severity, "job": "cosanneal", **labels}}


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, _Webhook]]:
    """deploy/alertmanager/alertmanager.yml in a real Alertmanager, its receivers' URLs pointed at a local
    webhook and its waits shortened to seconds (routing, grouping and inhibition unchanged)."""
    if ALERTMANAGER is None:
        pytest.skip("alertmanager not installed (Debian package: prometheus-alertmanager)")
    hook = _Webhook()
    config = _config()
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{hook.url}/{receiver['name']}"
    for route in [config["route"], *config["route"]["routes"]]:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = _port()
    proc = subprocess.Popen(
        [str(ALERTMANAGER), f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(lambda: _up(f"http://127.0.0.1:{port}/-/ready"), 60, "alertmanager to be ready")
        yield f"http://127.0.0.1:{port}/api/v2", hook
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        hook.server.shutdown()


def _groups(hook: _Webhook, receiver: str) -> dict[tuple[str, str], set[str]]:
    """Per notified group (cosanneal_job, cosanneal_run): the alert names of its latest notification."""
    out: dict[tuple[str, str], set[str]] = {}
    for body in hook.to(f"/{receiver}"):
        key = (body["groupLabels"].get("cosanneal_job", ""), body["groupLabels"].get("cosanneal_run", ""))
        out[key] = {a["labels"]["alertname"] for a in body["alerts"] if a["status"] == "firing"}
    return out


def test_a_real_alertmanager_groups_by_run_deduplicates_and_routes(
    alertmanager: tuple[str, _Webhook],
) -> None:
    api, hook = alertmanager
    alerts = [
        _alert("CosannealJobStalled", instance="a:1", cosanneal_job="demo", cosanneal_run="r1"),
        _alert("CosannealNonFiniteValues", instance="a:1", cosanneal_job="demo", cosanneal_run="r1"),
        _alert("CosannealNonFiniteValues", instance="b:1", cosanneal_job="demo", cosanneal_run="r2"),
        _alert("CosannealCheckpointOverdue", instance="c:1", cosanneal_job="demo", cosanneal_run="r3"),
        _alert("CosannealRestartWindowOpen", cosanneal_job="demo", cosanneal_run="r3"),
    ]
    _post(api, alerts)
    _post(api, alerts[:2])  # the same alerts again (a second Prometheus, a re-evaluation): de-duplicated
    _wait(lambda: len(_groups(hook, PAGE)) == 2 and _groups(hook, TICKET), 30, "the notifications")
    time.sleep(3)  # any duplicate notification would have arrived by now (group_wait 1 s)
    assert _groups(hook, PAGE) == {
        ("demo", "r1"): {"CosannealJobStalled", "CosannealNonFiniteValues"},  # one notification for the run
        ("demo", "r2"): {"CosannealNonFiniteValues"},
    }
    for body in hook.to(f"/{PAGE}"):
        names = [a["labels"]["alertname"] for a in body["alerts"]]
        assert len(names) == len(set(names)), names  # each alert once
    assert len(hook.to(f"/{PAGE}")) == 2  # one notification per group, not per post
    assert _groups(hook, TICKET) == {("demo", "r3"): {"CosannealCheckpointOverdue"}}
    assert hook.to(f"/{SILENT}") == []  # the silent receiver has no URL at all


def test_a_real_alertmanager_inhibits_during_a_restart_window_and_a_preemption(
    alertmanager: tuple[str, _Webhook],
) -> None:
    api, hook = alertmanager
    _post(
        api,
        [
            _alert("CosannealRestartWindowOpen", cosanneal_job="demo", cosanneal_run="r1"),
            _alert("CosannealJobPreempted", cosanneal_job="demo", cosanneal_run="r2"),
            # r1: in its restart window; r2: being preempted; r3: neither
            *(
                _alert(name, instance="a:1", cosanneal_job="demo", cosanneal_run=run, **extra)
                for run in ("r1", "r2", "r3")
                for name, extra in (
                    ("CosannealLossSpike", {}),
                    ("CosannealLearningRateDeviation", {"group": "0"}),
                )
            ),
        ],
    )
    _wait(lambda: _groups(hook, PAGE), 30, "the page")
    time.sleep(3)  # the tickets would have arrived by now (group_wait 1 s)
    assert _groups(hook, PAGE) == {("demo", "r3"): {"CosannealLearningRateDeviation"}}
    # r3's LR page also inhibits r3's loss-spike ticket (a page makes a ticket of the same run redundant)
    with urllib.request.urlopen(f"{api}/alerts", timeout=5) as resp:
        state = {
            (a["labels"]["alertname"], a["labels"]["cosanneal_run"]): a["status"]
            for a in json.loads(resp.read())
        }
    for run in ("r1", "r2", "r3"):
        for name in ("CosannealLossSpike", "CosannealLearningRateDeviation"):
            status = state[(name, run)]
            if (name, run) == ("CosannealLearningRateDeviation", "r3"):
                assert status["state"] == "active" and status["inhibitedBy"] == [], status
            else:
                assert status["state"] == "suppressed" and status["inhibitedBy"], (name, run, status)
    assert hook.to(f"/{TICKET}") == []
