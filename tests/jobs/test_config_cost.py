"""The cost keys of ``[telemetry]`` (``price_per_device_hour``, ``devices``, ``planned_step_seconds``):
every wrong type or range is one line naming the key, through ``cosanneal train`` (exit 2, no
traceback, nothing written); good values load."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from blobs import blobs_config

from cosanneal.cli import main
from cosanneal.jobs.config import load_config

PROM = "telemetry.prometheus_textfile=m.prom"


def _train_cli(config: Path, run_dir: Path, *sets: str) -> tuple[int, str]:
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    for pair in sets:
        args += ["--set", pair]
    err = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "blobs.json"
    path.write_text(json.dumps(blobs_config(epochs=1)))
    return path


BAD = [
    # price_per_device_hour: a finite number > 0
    (["telemetry.price_per_device_hour=0"], "telemetry.price_per_device_hour: must be > 0, got 0"),
    (["telemetry.price_per_device_hour=-2.5"], "telemetry.price_per_device_hour: must be > 0, got -2.5"),
    (['telemetry.price_per_device_hour="3 EUR"'], "telemetry.price_per_device_hour: must be a number, got '3 EUR'"),
    (["telemetry.price_per_device_hour=true"], "telemetry.price_per_device_hour: must be a number, got True"),
    (["telemetry.price_per_device_hour=[1.0]"], "telemetry.price_per_device_hour: must be a number, got [1.0]"),
    (["telemetry.price_per_device_hour=nan"], "telemetry.price_per_device_hour: must be a finite number"),
    (["telemetry.price_per_device_hour=inf"], "telemetry.price_per_device_hour: must be a finite number"),
    # devices: an integer >= 1
    (["telemetry.price_per_device_hour=1", "telemetry.devices=0"], "telemetry.devices: must be in [1, 2**63), got 0"),
    (["telemetry.price_per_device_hour=1", "telemetry.devices=-4"], "telemetry.devices: must be in [1, 2**63), got -4"),
    (["telemetry.price_per_device_hour=1", "telemetry.devices=1.5"], "telemetry.devices: must be an integer, got 1.5"),
    (['telemetry.price_per_device_hour=1', 'telemetry.devices="8"'], "telemetry.devices: must be an integer, got '8'"),
    (["telemetry.price_per_device_hour=1", "telemetry.devices=false"], "telemetry.devices: must be an integer, got False"),
    (
        ["telemetry.price_per_device_hour=1", "telemetry.devices=9223372036854775808"],
        "telemetry.devices: must be in [1, 2**63), got 9223372036854775808",
    ),
    # planned_step_seconds: a finite number > 0
    (["telemetry.price_per_device_hour=1", "telemetry.planned_step_seconds=0"],
     "telemetry.planned_step_seconds: must be > 0, got 0"),
    (["telemetry.price_per_device_hour=1", "telemetry.planned_step_seconds=-0.1"],
     "telemetry.planned_step_seconds: must be > 0, got -0.1"),
    (["telemetry.price_per_device_hour=1", "telemetry.planned_step_seconds=inf"],
     "telemetry.planned_step_seconds: must be a finite number"),
    (["telemetry.price_per_device_hour=1", 'telemetry.planned_step_seconds="1s"'],
     "telemetry.planned_step_seconds: must be a number, got '1s'"),
    # the keys that need a price, and a price that needs a Prometheus sink
    (["telemetry.devices=8"], "telemetry.devices: needs telemetry.price_per_device_hour"),
    (["telemetry.planned_step_seconds=0.5"], "telemetry.planned_step_seconds: needs telemetry.price_per_device_hour"),
]  # fmt: skip


@pytest.mark.parametrize(("sets", "message"), BAD, ids=[" ".join(s) for s, _ in BAD])
def test_bad_cost_keys_are_one_line_naming_the_key(
    config: Path, tmp_path: Path, sets: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    code, err = _train_cli(config, run_dir, PROM, *sets)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert not (run_dir / "run.db").exists()


def test_a_price_without_a_prometheus_sink_is_one_line(config: Path, tmp_path: Path) -> None:
    code, err = _train_cli(config, tmp_path / "run", "telemetry.price_per_device_hour=2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "telemetry.price_per_device_hour: the cost is exported by the Prometheus sink" in err
    assert "telemetry.prometheus_port or telemetry.prometheus_textfile" in err


def test_a_bad_price_in_the_sink_options_is_one_line(config: Path, tmp_path: Path) -> None:
    """The options of a listed built-in sink override ``[telemetry]`` and skip its checks: the sink checks."""
    run_dir = tmp_path / "run"
    sets = [f'telemetry.sinks=[{{entry = "prometheus", options = {{prometheus_textfile = "{tmp_path / "m.prom"}", '
            'price_per_device_hour = -1, devices = 2.5}}]']  # fmt: skip
    code, err = _train_cli(config, run_dir, *sets)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "telemetry.price_per_device_hour: must be a finite number > 0, got -1" in err
    assert not (run_dir / "run.db").exists()


def test_the_cli_exits_2_without_a_traceback(config: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", str(tmp_path / "run"),
         "--set", PROM, "--set", "telemetry.price_per_device_hour=1", "--set", "telemetry.devices=0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: telemetry.devices: must be in [1, 2**63), got 0"


def test_good_cost_keys_load() -> None:
    cfg = load_config(
        None,
        [
            PROM,
            "telemetry.price_per_device_hour=2.5",
            "telemetry.devices=8",
            "telemetry.planned_step_seconds=0.25",
        ],
    )
    tel = cfg.telemetry
    assert (tel.price_per_device_hour, tel.devices, tel.planned_step_seconds) == (2.5, 8, 0.25)
    assert (
        load_config(None, [PROM, "telemetry.price_per_device_hour=3"]).telemetry.price_per_device_hour == 3.0
    )
    assert load_config(None, []).telemetry.price_per_device_hour is None
