"""``lr_loss.png`` of a run (``cosanneal.plotting.run_figure``): title, legend, restart and resume markers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blobs import BLOBS, blobs_config

from cosanneal import Cosine, from_dict, runs
from cosanneal.jobs.config import load_config
from cosanneal.jobs.trainer import Trainer
from cosanneal.plotting import plot_run, run_figure
from cosanneal.runtime.runstore import RunStore, run_params


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _marks(ax: Any, gid: str) -> list[float]:
    return [float(line.get_xdata()[0]) for line in ax.lines if line.get_gid() == gid]


def _line(ax: Any, label: str) -> Any:
    (line,) = [x for x in ax.lines if x.get_label() == label]
    return line


def _wait_for_updates(run_dir: Path, at_least: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with runs.open(run_dir) as run:
                steps, _ = run.scalar("lr", 0)
            if len(steps) and steps.max() >= at_least:
                return
        except (FileNotFoundError, KeyError, Exception):  # no run store, or no row yet
            pass
        time.sleep(0.05)
    raise AssertionError("the training process never got that far")


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with two param groups on one curve and annealed momentum, SIGTERMed at ~50 updates, resumed."""
    tmp = tmp_path_factory.mktemp("plot_run")
    cfg = blobs_config(
        debug__sleep_per_step=0.02,  # widens the window for the signal; it changes no computation
        scheduler__momentum=[0.95, 0.85],
        optimizer__groups=[{"match": "bias", "weight_decay": 0.0}],
    )
    cfg_path = tmp / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    run_dir = tmp / "run"
    args = [
        sys.executable,
        "-m",
        "cosanneal",
        "train",
        str(cfg_path),
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_updates(run_dir, 50, proc)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # reads and closes both pipes
    assert proc.returncode == 143, err.decode()
    result = Trainer(load_config(cfg_path), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 160
    return run_dir


def test_a_resumed_run_is_marked_where_it_resumed(resumed_run: Path) -> None:
    with runs.open(resumed_run) as run:
        preempted = [e["step"] for e in run.events("preempted")]
        resumed = [e["step"] for e in run.events("resumed")]
        steps, lr0 = run.scalar("lr", 0)
        _, momentum = run.scalar("momentum", 0)
    assert len(preempted) == 1 and resumed == preempted and 50 <= resumed[0] < 160
    fig = run_figure(resumed_run)
    ax_lr, ax_loss, ax_m = fig.axes
    assert ax_lr.get_title() == "blobs — cosine, 3 cycles (x2), peak 0.2"
    assert _marks(ax_lr, "resumed") == resumed and _marks(ax_loss, "resumed") == resumed
    schedule = from_dict(BLOBS["schedule"])
    assert _marks(ax_lr, "restart") == [float(r) for r in schedule.restarts(160)] == [40.0, 100.0]
    # two param groups on one curve: one line, one legend entry each for lr, expected and momentum
    assert _legend(ax_lr) == [
        "lr (groups 0, 1)",
        "expected (groups 0, 1)",
        "restart",
        "resumed",
        "momentum (groups 0, 1)",
    ]
    line = _line(ax_lr, "lr (groups 0, 1)")
    np.testing.assert_array_equal(line.get_xdata(), steps)
    np.testing.assert_array_equal(line.get_ydata(), lr0)
    np.testing.assert_array_equal(_line(ax_m, "momentum (groups 0, 1)").get_ydata(), momentum)
    assert ax_m.get_ylabel() == "momentum / beta1" and momentum.max() > momentum.min()
    assert _legend(ax_loss) == ["train loss", "val loss"]
    plot_run(resumed_run, resumed_run / "lr_loss.png")
    assert (resumed_run / "lr_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_groups_on_different_curves_get_one_entry_each(tmp_path: Path) -> None:
    schedule = Cosine(0.1, cycle_steps=10, max_cycles=1)
    with RunStore(tmp_path, flush_seconds=0) as store:
        store.log_params({**run_params({"name": "mine"}, schedule=schedule), "total_steps": 20})
        for step in range(20):
            lr = float(schedule(step))
            for group, scale in enumerate((1.0, 1.0, 0.5)):
                store.log_scalars(step, {"lr": lr * scale, "lr_expected": lr * scale}, group=group)
                store.log_scalars(step, {"momentum": 0.9}, group=group)  # not annealed: no second axis
            store.log_scalars(step, {"loss": 1.0 / (step + 1)})
    fig = run_figure(tmp_path)
    assert len(fig.axes) == 2
    ax_lr = fig.axes[0]
    assert ax_lr.get_title() == "mine — cosine, peak 0.1"
    assert _legend(ax_lr) == [
        "lr (groups 0, 1)",
        "lr (group 2)",
        "expected (groups 0, 1)",
        "expected (group 2)",
    ]
    np.testing.assert_allclose(_line(ax_lr, "lr (group 2)").get_ydata(), 0.5 * schedule(np.arange(20)))
    assert _marks(ax_lr, "resumed") == [] and _marks(ax_lr, "restart") == []


def test_a_run_without_params_is_titled_by_its_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "my-run"
    with RunStore(run_dir, flush_seconds=0) as store:
        store.log_scalars(0, {"lr": 0.1}, group=0)
        store.log_event(0, "resumed", from_step=0)
    fig = run_figure(run_dir)
    assert fig.axes[0].get_title() == "my-run"
    assert _legend(fig.axes[0]) == ["lr", "resumed"] and _marks(fig.axes[0], "resumed") == [0.0]
