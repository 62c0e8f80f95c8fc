"""The progress of ``cosanneal train``: log lines off a terminal (fake clock), and a real run's lines."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config

from cosanneal import ConfigError, Cosine, runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.progress import LOSS_WINDOW, Progress

SCHED = Cosine(0.1, warmup_steps=10, cycle_steps=40, cycle_mult=2.0, max_cycles=2)
LINE = re.compile(
    r"update (?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\)"
    r"(?: loss (?P<loss>\S+))?(?: (?P<metric>val_\w+) (?P<value>\S+))?"
    r" lr (?P<lr>\S+) cycle (?P<cycle>\d+) (?P<phase>warmup|anneal|hold)"
    r"(?: (?P<rate>\S+) updates/s)?(?: eta (?P<eta>\S+))?"
)


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _parse(text: str) -> list[dict[str, str]]:
    out = []
    for line in text.splitlines():
        m = LINE.fullmatch(line)
        assert m, f"not a progress line: {line!r}"
        out.append(m.groupdict())
    return out


def _drive(
    progress: Progress, clock: Clock, total: int, losses: list[Any], evals: dict[int, dict[str, float]]
) -> None:
    """One update per second; ``evals[n]``: the metrics evaluated right after update ``n``."""
    metrics: dict[str, float] = {}
    for step in range(total):
        clock.now += 1.0
        progress.update(step + 1, float(SCHED(step)), SCHED, step, loss=losses[step], metrics=metrics)
        metrics = evals.get(step + 1, metrics)
    progress.close(metrics)


def test_lines_every_n_seconds_with_their_values() -> None:
    clock, out = Clock(), io.StringIO()
    total = 100
    losses = [3.0 - 0.02 * i for i in range(total)]
    evals = {25: {"val_loss": 2.5, "val_ppl": 12.18}, 50: {"val_loss": 2.0, "val_ppl": 7.389}}
    p = Progress(True, total, every_seconds=10, metric="val_ppl", stream=out, clock=clock, terminal=False)
    _drive(p, clock, total, losses, evals)
    lines = _parse(out.getvalue())
    # the first update, then every 10 s (one update per second), then the close
    assert [int(x["done"]) for x in lines] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]
    for x in lines:
        done = int(x["done"])
        assert x["total"] == "100" and int(x["pct"]) == done
        window = losses[max(0, done - LOSS_WINDOW) : done]
        assert x["loss"] == f"{sum(window) / len(window):.4g}"
        assert x["lr"] == f"{SCHED(done - 1):.1e}"
        assert x["cycle"] == str(SCHED.cycle(done - 1).index)
        assert x["phase"] == SCHED.phase(done - 1)
        shown = [m for n, m in evals.items() if n < done]  # evaluated after an update: shown from the next
        if done == total:
            shown = list(evals.values())
        if shown:
            assert (x["metric"], x["value"]) == ("val_ppl", f"{shown[-1]['val_ppl']:.4g}")
        else:
            assert x["metric"] is None
        if done == 1:  # no speed yet at the first update
            assert x["rate"] is None and x["eta"] is None
        else:
            assert x["rate"] == "1"  # one update per second since the first
            seconds = total - done
            assert x["eta"] == (f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s")
    assert out.getvalue().splitlines()[1] == (
        "update 11/100 (11%) loss 2.9 lr 1.0e-01 cycle 0 anneal 1 updates/s eta 1m29s"
    )
    assert out.getvalue().splitlines()[-1] == (
        "update 100/100 (100%) loss 1.51 val_ppl 7.389 lr 3.3e-02 cycle 1 anneal 1 updates/s eta 0s"
    )


def test_the_first_and_last_lines_of_a_short_job_and_no_repeat() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(True, 3, every_seconds=3600, stream=out, clock=clock, terminal=False)
    _drive(p, clock, 3, [1.0, 2.0, 3.0], {3: {"val_loss": 0.25, "val_acc": 0.9}})
    p.close()  # a second close writes nothing more
    assert out.getvalue().splitlines() == [
        "update 1/3 (33%) loss 1 lr 0.0e+00 cycle 0 warmup",
        "update 3/3 (100%) loss 2 val_loss 0.25 lr 2.0e-02 cycle 0 warmup 1 updates/s eta 0s",
    ]


def test_the_last_update_is_one_line_even_when_it_is_due_to_draw() -> None:
    # every_seconds=1 with one update a second: the last update is due to draw; the close shows it
    # once, with the evaluation run after it (the CI failure: ``update 160/160`` twice, rate apart)
    clock, out = Clock(), io.StringIO()
    p = Progress(True, 4, every_seconds=1, stream=out, clock=clock, terminal=False)
    _drive(p, clock, 4, [1.0, 2.0, 3.0, 4.0], {4: {"val_loss": 0.5}})
    done = [int(x["done"]) for x in _parse(out.getvalue())]
    assert done == [1, 2, 3, 4]
    assert out.getvalue().splitlines()[-1].startswith("update 4/4 (100%) loss 2.5 val_loss 0.5")


def test_a_stopped_run_closes_without_repeating_its_last_line() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(True, 100, every_seconds=1, stream=out, clock=clock, terminal=False)
    for done in (1, 2, 3):  # preempted after 3 of 100 updates: the close has nothing new to show
        clock.now += 1.0
        p.update(done, 0.05, SCHED, done - 1, loss=1.0)
    clock.now += 5.0
    p.close()
    assert [int(x["done"]) for x in _parse(out.getvalue())] == [1, 2, 3]
    single = io.StringIO()  # a one-update job: one line, from the close
    q = Progress(True, 1, stream=single, clock=clock, terminal=False)
    q.update(1, 0.05, SCHED, 0, loss=1.0)
    assert single.getvalue() == ""
    q.close({"val_loss": 0.25})
    assert [x["done"] for x in _parse(single.getvalue())] == ["1"]


def test_a_resumed_session_counts_its_speed_from_its_own_first_update() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(True, 100, every_seconds=5, stream=out, clock=clock, terminal=False)
    for done in range(61, 71):  # resumed at 60 updates; two updates per second
        clock.now += 0.5
        p.update(done, 0.05, SCHED, done - 1, loss=torch.tensor(1.0 + done))
    p.close()
    first, *_, last = _parse(out.getvalue())
    assert first["done"] == "61" and first["rate"] is None
    assert (last["done"], last["rate"], last["eta"]) == ("70", "2", "15s")  # 9 updates in 4.5 s; 30 left
    assert last["loss"] == f"{np.mean([1.0 + d for d in range(61, 71)]):.4g}"  # tensors, read when drawn


def test_the_metric_falls_back_to_val_loss_and_off_means_nothing() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(True, 2, every_seconds=30, metric="val_ppl", stream=out, clock=clock, terminal=False)
    p.update(1, 0.1, SCHED, 0, loss=1.0, metrics={"val_acc": 0.5, "val_loss": 0.7})
    p.close({"val_acc": 0.75})
    assert [(x["metric"], x["value"]) for x in _parse(out.getvalue())] == [
        ("val_loss", "0.7"),
        ("val_acc", "0.75"),
    ]
    silent = io.StringIO()
    off = Progress(False, 2, stream=silent, clock=clock, terminal=False)
    off.update(1, 0.1, SCHED, 0, loss=1.0)
    off.close({"val_loss": 1.0})
    assert silent.getvalue() == ""


def test_a_stream_that_is_not_a_terminal_gets_lines_a_terminal_gets_the_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Progress(True, 10, stream=io.StringIO()).terminal is False
    clock = Clock()
    bar = Progress(True, 10, stream=Tty(), clock=clock, every_seconds=3600)
    assert bar.terminal is True
    bar.update(1, 0.1, SCHED, 0, loss=2.5, metrics={"val_loss": 1.25})
    snap = bar.snapshot()
    assert snap is not None and snap.bar_eta() == ""  # no speed after one update
    clock.now += 1.0  # the bar is redrawn after BAR_SECONDS, whatever every_seconds says
    bar.update(2, 0.1, SCHED, 1, loss=3.5, metrics={"val_loss": 1.25})
    bar.close()
    snap = bar.snapshot()
    assert snap is not None and snap.bar_eta() == "eta 0:08"
    assert snap.bar_info() == "loss 3  val_loss 1.25  lr 1.000e-01  cycle 0  warmup  1 updates/s"
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bar.stream.getvalue())  # type: ignore[attr-defined]
    assert "2/10 eta 0:08" in shown and "loss 3  val_loss 1.25  lr 1.000e-01" in shown


def test_progress_seconds_is_validated() -> None:
    assert config_from_dict({}).telemetry.progress_seconds == 30.0
    assert config_from_dict({"telemetry": {"progress_seconds": 5}}).telemetry.progress_seconds == 5.0
    for bad, shown in ((0, "0"), (-1.5, "-1.5")):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"telemetry": {"progress_seconds": bad}})
        assert str(info.value) == f"telemetry.progress_seconds: must be > 0, got {shown}"
    with pytest.raises(ConfigError, match=r"^telemetry\.progress_seconds: must be a number, got 'often'$"):
        config_from_dict({"telemetry": {"progress_seconds": "often"}})


def test_a_piped_train_prints_lines_with_the_run_store_values(tmp_path: Path) -> None:
    cfg = blobs_config(telemetry__progress_seconds=0.05, checkpoint__enabled=False)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(cfg_path), "--run-dir", str(run_dir), "--progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = _parse("\n".join(x for x in proc.stderr.splitlines() if x.startswith("update ")))
    with runs.open(run_dir) as run:
        loss_steps, loss = run.scalar("loss")
        _, lr = run.scalar("lr", 0)
        val_steps, val = run.scalar("val_loss")
    assert loss_steps.tolist() == list(range(160))
    done = [int(x["done"]) for x in lines]
    assert done[0] == 1 and done[-1] == 160 and done == sorted(set(done))
    for x, n in zip(lines, done, strict=True):
        window = loss[max(0, n - LOSS_WINDOW) : n]
        assert float(x["loss"]) == pytest.approx(window.mean(), rel=6e-4)  # 4 significant digits
        assert x["lr"] == f"{lr[n - 1]:.1e}"
        before = val[val_steps < n] if n < 160 else val
        if len(before):
            assert x["metric"] == "val_loss"
            assert float(x["value"]) == pytest.approx(before[-1], rel=6e-4)
        else:
            assert x["metric"] is None
    assert lines[0]["loss"] == f"{loss[0]:.4g}"
    assert lines[-1]["eta"] == "0s"
