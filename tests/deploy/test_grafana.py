"""The Grafana dashboards in deploy/grafana: structure, datasource references, every variable a query
uses defined, every PromQL expression parsed by the real promtool and using only metrics the exporter (or
rules.yml) provides, and every panel returning data from a real Prometheus scraping a real training run."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cosanneal import Cosine
from cosanneal.runtime.runstore import EventRow, ScalarRow
from cosanneal.sinks.prometheus import CostPlan, PrometheusSink

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
#: Grafana's global variables (https://grafana.com/docs/grafana/latest/dashboards/variables/add-template-variables/#global-variables)
BUILTINS = {
    "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range", "__range_s",
    "__range_ms", "__from", "__to", "__timeFilter", "__dashboard", "__user", "__org", "__name", "timeFilter",
}  # fmt: skip
#: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]``, ``[[name:format]]``
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
# Grafana's interval variables, replaced by something promtool parses
INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}


def _datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "cosanneal.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    out = [str(t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert match, var["query"]
        out.append(match.group(1))
    return out


def _used_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in VARIABLE.finditer(text)}


def _defaults(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each templating variable's default as a query sees it: "All" is its ``allValue``, a multi-value
    selection is joined into a regex alternation."""
    out: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        value = var.get("current", {}).get("value")
        values = value if isinstance(value, list) else [value]
        if "$__all" in values:
            assert var.get("includeAll") and var.get("allValue"), f"{var['name']}: All needs an allValue"
            out[var["name"]] = str(var["allValue"])
        else:
            assert values and all(isinstance(v, str) and v for v in values), (var["name"], value)
            out[var["name"]] = "|".join(values)
    return out


def _substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with every variable replaced by ``values[name]`` (a name is a whole word: ``$runs`` is not ``$run``)."""

    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        assert name in values, f"${name} has no value"
        return values[name]

    return VARIABLE.sub(one, expr)


def _plain(expr: str, dashboard: dict[str, Any], intervals: dict[str, str] = INTERVALS) -> str:
    """``expr`` as the dashboard first runs it: its variables at their defaults, intervals fixed."""
    out = _substitute(expr, {**intervals, **_defaults(dashboard)})
    assert "$" not in out, out
    return out


def _exported_names() -> set[str]:
    sched = Cosine(0.1, cycle_steps=4, max_cycles=3)
    cost = CostPlan(price_per_device_hour=1.0, planned_steps=10)
    sink = PrometheusSink(labels={"job": "j", "run": "r", "sweep": "s"}, schedule=sched, cost=cost)
    sink.write(
        [ScalarRow(0, n, g, 1.0, 1.0) for n, g in (("lr", 0), ("lr_expected", 0), ("momentum", 0))]
        + [ScalarRow(0, n, None, 1.0, 1.0) for n in ("loss", "grad_norm", "samples_per_s", "cycle", "phase",
                                                      "step_time", "val_loss", "val_acc")],
        [EventRow(0, "checkpoint_saved", {}, 1.0)],
    )  # fmt: skip
    text = sink.exposition().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    records = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    return names | records


def _metric_names(expr: str) -> set[str]:
    """Metric names in ``expr``: identifiers outside ``{...}``, ``by (...)`` and the like."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"\bcosanneal[a-zA-Z0-9_:]*", expr))


def test_three_dashboards_are_provisioned() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "cosanneal-debug.json", "cosanneal-executive.json", "cosanneal-oncall.json",
    ]  # fmt: skip
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cosanneal.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    dash = json.loads(path.read_text())
    uid = _datasource_uid()
    variables = {f"${{{v['name']}}}" for v in dash["templating"]["list"] if v["type"] == "datasource"}
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] == path.stem and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"panel {panel['id']} overlaps another in {path.name}"
        cells |= mine
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert panel["targets"], f"panel {panel['id']} has no query"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for ref in refs:
            assert ref["type"] == "prometheus" and (ref["uid"] == uid or ref["uid"] in variables), ref
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == uid


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package: prometheus)")
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_expression_parses_with_promtool(path: Path, tmp_path: Path) -> None:
    dash = json.loads(path.read_text())
    rules = [{"record": f"dashboard:expr_{i}", "expr": _plain(e, dash)} for i, e in enumerate(_exprs(dash))]
    rule_file = tmp_path / "exprs.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_metric_is_exported(path: Path) -> None:
    known = _exported_names()
    used = set().union(*(_metric_names(e) for e in _exprs(json.loads(path.read_text()))))
    assert used, path.name
    assert used <= known, sorted(used - known)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_a_query_uses_is_defined(path: Path) -> None:
    dash = json.loads(path.read_text())
    defined = [v["name"] for v in dash["templating"]["list"]]
    assert len(defined) == len(set(defined)), defined
    for panel in dash["panels"]:
        for target in panel["targets"]:
            undefined = _used_variables(target["expr"]) - set(defined) - BUILTINS
            assert not undefined, f"panel {panel['id']} ({panel['title']}) uses undefined {sorted(undefined)}"
    for i, var in enumerate(dash["templating"]["list"]):  # a variable's query may use the ones before it
        if var["type"] == "query":
            used = _used_variables(var["query"]["query"]) - BUILTINS
            assert used <= set(defined[:i]), f"variable {var['name']} uses {sorted(used - set(defined[:i]))}"
    assert set(_defaults(dash)) == set(defined)


def test_variable_extraction_and_substitution() -> None:
    expr = 'a{x=~"$job", y=~"${run}", z="${run:regex}"}[$__rate_interval] [[old]]'
    assert _used_variables(expr) == {"job", "run", "__rate_interval", "old"}
    values = {"job": "j", "run": "r|s", "__rate_interval": "4s", "old": "o"}
    assert _substitute(expr, values) == 'a{x=~"j", y=~"r|s", z="r|s"}[4s] o'
    assert _substitute('x{a="$runs"}', {"runs": "2", "run": "1"}) == 'x{a="2"}'


def test_metric_name_extraction() -> None:
    expr = 'sum by (cosanneal_job) (rate(cosanneal_x_total{cosanneal_run="r"}[5m])) and on (cosanneal_run) cosanneal:y'
    assert _metric_names(expr) == {"cosanneal_x_total", "cosanneal:y"}


# ---- every panel against a real Prometheus scraping a real training run ---------------------------
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package: prometheus; CI installs it)"
)
#: Scrape and rule-evaluation interval of the test's Prometheus (seconds).
SCRAPE_S = 1
#: Grafana's interval variables for that Prometheus: ``$__rate_interval = max($__interval + scrape, 4 x scrape)``.
LIVE_INTERVALS = {"__interval": "1s", "__rate_interval": f"{4 * SCRAPE_S}s", "__range": "1h"}


@dataclasses.dataclass(frozen=True)
class Scraped:
    """A finished training run that a real Prometheus scraped, and a time at which its series are live."""

    api: str
    time: float
    job: str
    run: str
    sweep: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant query's result at :attr:`time` (Prometheus HTTP API)."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{self.time:.3f}"})
        with urllib.request.urlopen(f"{self.api}/query?{params}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.25)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """``cosanneal train`` on blobs (evaluations, checkpoints, two restarts, one non-finite update, a price:
    the cost metrics; its run directory a sweep's trial, ``<study>/trial-0``: the ``sweep`` label) with its
    ``/metrics`` scraped every second by a real Prometheus that also evaluates deploy/prometheus/rules.yml
    (the recording rules some panels use; their interval lowered to the scrape interval)."""
    from blobs import blobs_config

    tmp = tmp_path_factory.mktemp("grafana")
    exporter, server = _port(), _port()
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = f"{SCRAPE_S}s"
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                "rule_files": [str(tmp / "rules.yml")],
                "scrape_configs": [
                    {"job_name": "cosanneal", "static_configs": [{"targets": [f"127.0.0.1:{exporter}"]}]}
                ],
            }
        )
    )
    prom = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{server}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = tmp / "grafana.json"
    config.write_text(json.dumps(blobs_config(name="grafana-blobs", debug__inject_nan_at=[70])))
    api = f"http://127.0.0.1:{server}/api/v1"
    train: subprocess.Popen[bytes] | None = None
    try:
        _until(lambda: _ready(f"http://127.0.0.1:{server}/-/ready"), 60, "prometheus to be ready")
        train = subprocess.Popen(
            [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", str(tmp / "grafana-sweep" / "trial-0"),
             "--no-progress", "--set", f"telemetry.prometheus_port={exporter}",
             "--set", "telemetry.price_per_device_hour=2.5",
             "--set", "debug.sleep_per_step=0.06"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = train.communicate(timeout=300)
        assert train.returncode == 0, err.decode()
        # the last scrape of the run: every series is live there (the next, failed scrape marks them stale)
        params = urllib.parse.urlencode({"query": "cosanneal_optimizer_steps_total[1h]", "time": time.time()})
        with urllib.request.urlopen(f"{api}/query?{params}", timeout=10) as resp:
            (series,) = json.loads(resp.read())["data"]["result"]
        last, steps = series["values"][-1]
        assert float(steps) > 100, series["values"]  # scraped until late in the run
        yield Scraped(api=api, time=float(last), job="grafana-blobs", run="trial-0", sweep="grafana-sweep")
    finally:
        if train is not None:
            _end(train)
        _end(prom)


@needs_prometheus
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_returns_data_from_a_real_run(path: Path, scraped: Scraped) -> None:
    dash = json.loads(path.read_text())
    empty = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = _plain(target["expr"], dash, LIVE_INTERVALS)
            if not scraped.query(expr):
                empty.append(f"panel {panel['id']} ({panel['title']}) {target['refId']}: {expr}")
    assert empty == [], "\n".join(empty)


@needs_prometheus
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_lists_the_real_run(path: Path, scraped: Scraped) -> None:
    dash = json.loads(path.read_text())
    expected = {"cosanneal_job": scraped.job, "cosanneal_run": scraped.run}
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"]).groups()  # type: ignore[union-attr]
        values = {s["metric"].get(label) for s in scraped.query(_plain(selector, dash, LIVE_INTERVALS))}
        assert expected[label] in values, (var["name"], values)


def _executive_panel(title: str) -> dict[str, Any]:
    dash = json.loads((GRAFANA / "dashboards" / "cosanneal-executive.json").read_text())
    (panel,) = [p for p in dash["panels"] if p["title"] == title]
    return dict(panel)


def test_the_executive_dashboard_shows_cost_per_run_and_per_sweep() -> None:
    run = _executive_panel("Cost per run (7 days)")["targets"][0]["expr"]
    sweep = _executive_panel("Cost per sweep (7 days)")["targets"][0]["expr"]
    assert "cosanneal_cost" in run and run.startswith("max by (cosanneal_job, cosanneal_run) (")
    assert sweep.startswith(
        "sum by (cosanneal_job, cosanneal_sweep) (max by (cosanneal_job, cosanneal_sweep, cosanneal_run) ("
    )
    assert 'cosanneal_sweep!=""' in sweep


@needs_prometheus
def test_the_cost_panels_show_the_real_run_and_its_sweep(scraped: Scraped) -> None:
    dash = json.loads((GRAFANA / "dashboards" / "cosanneal-executive.json").read_text())
    cost = scraped.query(f'cosanneal_cost{{cosanneal_run="{scraped.run}"}}')
    (sample,) = cost
    assert sample["metric"]["cosanneal_sweep"] == scraped.sweep
    for title, label, value in (("Cost per run (7 days)", "cosanneal_run", scraped.run),
                                ("Cost per sweep (7 days)", "cosanneal_sweep", scraped.sweep)):  # fmt: skip
        expr = _plain(_executive_panel(title)["targets"][0]["expr"], dash, LIVE_INTERVALS)
        (row,) = scraped.query(expr)
        assert row["metric"][label] == value and row["metric"]["cosanneal_job"] == scraped.job
        # one trial: the sweep costs what its run cost (its highest value, at the last scrape)
        assert float(row["value"][1]) == pytest.approx(float(sample["value"][1]), rel=1e-9)
        assert float(row["value"][1]) > 0
