"""telemetry.sinks: a user's sink from the config, the built-ins through the same path, one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from blobs import blobs_config

from cosanneal import runs
from cosanneal.errors import ConfigError
from cosanneal.jobs.config import SinkEntry, config_from_dict
from cosanneal.jobs.sink_factories import sink_entries
from cosanneal.jobs.trainer import Trainer

SINK_MODULE = """
import json
from pathlib import Path


class JsonlSink:
    def __init__(self, path, tag):
        self.path, self.tag, self.rows = Path(path), tag, []

    def write(self, scalars, events):
        self.rows.extend({"step": r.step, "name": r.name, "group": r.group, "value": r.value} for r in scalars)
        self.rows.extend({"step": e.step, "event": e.kind} for e in events)

    def flush(self):
        self.path.write_text("\\n".join(json.dumps(r) for r in self.rows))

    def close(self):
        self.flush()


def make_sink(context):
    assert context.run_dir.is_absolute() and context.config["name"] == context.name
    return JsonlSink(context.run_dir / f"rows-{context.options.get('tag', 'plain')}.jsonl",
                     context.options.get("tag", "plain"))


def broken(context):
    raise ValueError("no endpoint configured")


def not_a_sink(context):
    return 42
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_sinks.py").write_text(textwrap.dedent(SINK_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_sinks"


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_users_sink_gets_every_row_the_run_store_gets(user_module: str, tmp_path: Path) -> None:
    sinks = [f"{user_module}:make_sink", {"entry": f"{user_module}:make_sink", "options": {"tag": "x"}}]
    cfg = config_from_dict(blobs_config(epochs=2, telemetry__sinks=sinks))
    run_dir = tmp_path / "run"
    assert Trainer(cfg, run_dir, progress=False, log=lambda _: None).run().status == "finished"
    run = runs.open(run_dir)
    try:
        steps, lr = run.scalar("lr", 0)
        kinds = [e["kind"] for e in run.events()]
    finally:
        run.close()
    for name in ("rows-plain.jsonl", "rows-x.jsonl"):
        rows = _rows(run_dir / name)
        lr_rows = [(r["step"], r["value"]) for r in rows if r.get("name") == "lr" and r.get("group") == 0]
        assert lr_rows == list(zip(steps.tolist(), lr.tolist(), strict=True))
        assert [r["event"] for r in rows if "event" in r] == kinds


def test_builtins_by_name_are_made_once(tmp_path: Path) -> None:
    cfg = config_from_dict(
        blobs_config(epochs=1, telemetry__tensorboard=False, telemetry__sinks=["tensorboard"])
    )
    assert [e.entry for e in sink_entries(cfg)] == ["tensorboard"]
    both = config_from_dict(blobs_config(telemetry__tensorboard=True, telemetry__sinks=["tensorboard"]))
    assert [e.entry for e in sink_entries(both)] == ["tensorboard"]
    run_dir = tmp_path / "run"
    Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1


def test_a_sink_table_round_trips_through_the_config() -> None:
    cfg = config_from_dict(blobs_config(telemetry__sinks=["a.b:c", {"entry": "d:e", "options": {"k": 1}}]))
    assert cfg.telemetry.sinks == ("a.b:c", SinkEntry("d:e", {"k": 1}))
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        (["neptune"], r"^telemetry.sinks\[0\]: must be one of tensorboard, prometheus, mlflow, wandb or 'package.module:function', got 'neptune'"),
        ([{"options": {}}], r"^telemetry.sinks\[0\]"),
        ("my:sink", r"^telemetry.sinks: must be a list"),
    ],
)  # fmt: skip
def test_a_malformed_entry_is_refused_when_the_config_loads(sinks: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(blobs_config(telemetry__sinks=sinks))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nope_module:make", r"^telemetry.sinks\[0\]: cannot import module 'nope_module'"),
        (
            "my_sinks:broken",
            r"^telemetry.sinks\[0\]: my_sinks:broken failed: ValueError: no endpoint configured$",
        ),
        ("my_sinks:not_a_sink", r"^telemetry.sinks\[0\]: my_sinks:not_a_sink returned int, not a sink"),
    ],
)
def test_a_sink_that_cannot_be_made_is_one_line_and_writes_no_run(
    user_module: str, entry: str, message: str, tmp_path: Path
) -> None:
    cfg = config_from_dict(blobs_config(telemetry__sinks=[entry]))
    with pytest.raises(ConfigError, match=message) as info:
        Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "run.db").exists()


def test_the_cli_names_the_broken_sink_and_exits_2(user_module: str, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(blobs_config(telemetry__sinks=["my_sinks:broken"])))
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", "run", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        proc.stderr
        == "error: telemetry.sinks[0]: my_sinks:broken failed: ValueError: no endpoint configured\n"
    )
