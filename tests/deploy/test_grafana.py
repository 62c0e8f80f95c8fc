"""The Grafana dashboards in deploy/grafana: structure, datasource references, and every PromQL
expression parsed by the real promtool and using only metrics the exporter (or rules.yml) provides."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cosanneal import Cosine
from cosanneal.runtime.runstore import EventRow, ScalarRow
from cosanneal.sinks.prometheus import PrometheusSink

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
# Grafana's variables, replaced by something promtool parses
SUBSTITUTE = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$run": ".*"}


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


def _plain(expr: str) -> str:
    for k, v in SUBSTITUTE.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, expr
    return expr


def _exported_names() -> set[str]:
    sched = Cosine(0.1, cycle_steps=4, max_cycles=3)
    sink = PrometheusSink(labels={"job": "j", "run": "r"}, schedule=sched)
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
    exprs = _exprs(json.loads(path.read_text()))
    rules = [{"record": f"dashboard:expr_{i}", "expr": _plain(e)} for i, e in enumerate(exprs)]
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


def test_metric_name_extraction() -> None:
    expr = 'sum by (cosanneal_job) (rate(cosanneal_x_total{cosanneal_run="r"}[5m])) and on (cosanneal_run) cosanneal:y'
    assert _metric_names(expr) == {"cosanneal_x_total", "cosanneal:y"}
