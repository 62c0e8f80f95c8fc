"""The budget planner: the last cycle ends at the budget, the table, Young/Daly, the spec file, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal.analysis.plan import (
    branch_plan,
    fit_cycle_steps,
    measured_branch_plan,
    parse_seconds,
    plan,
    young_daly_seconds,
)
from cosanneal.errors import ScheduleError
from cosanneal.jobs.config import config_from_dict, load_config
from cosanneal.jobs.plan import measure_step_seconds
from cosanneal.schedules import Cosine, from_dict
from cosanneal.schedules.lint import lint
from cosanneal.schedules.spec import load_spec

MULTS = st.one_of(
    st.sampled_from([1.0, 2.0, 1.5, 0.8, 0.5, 3.0]),
    st.floats(0.3, 3.0),
    st.floats(1.0, 1.001),
)


def _check_ends_at_budget(total: int, horizon: float | None) -> None:
    """The documented guarantee: exactly at the budget, else at most 4 ulps before it, never after."""
    assert horizon is not None
    assert horizon <= total
    assert total - horizon <= 4 * math.ulp(total)


# ---- the schedule ends at the budget ----------------------------------------------------------------
@given(
    total=st.integers(2, 10**9),
    warmup_frac=st.floats(0.0, 0.5),
    cycles=st.integers(1, 12),
    mult=MULTS,
    decay=st.floats(0.3, 1.0),
    ratio=st.sampled_from([0.0, 0.01, 0.1]),
)
def test_last_cycle_ends_exactly_at_the_budget(
    total: int, warmup_frac: float, cycles: int, mult: float, decay: float, ratio: float
) -> None:
    warmup = int(total * warmup_frac)
    try:
        p = plan(total, cycles=cycles, cycle_mult=mult, warmup=warmup, peak_decay=decay, min_ratio=ratio)
    except ScheduleError as exc:  # only when the shortest cycle would be under one step
        c = (total - warmup) / cycles if mult == 1 else (total - warmup) * (mult - 1) / (mult**cycles - 1)
        shortest = c if mult >= 1 else c * mult ** (cycles - 1)
        assert shortest < 1.0 + 1e-9, exc
        assert "(< 1)" in str(exc)
        return
    s = p.schedule
    _check_ends_at_budget(total, s.horizon)
    assert p.horizon_error == s.horizon - total
    assert s.max_cycles == cycles and int(s.warmup_steps) == warmup
    assert len(s.restarts(total)) == cycles - 1  # every planned restart happens inside the budget
    assert s.phase(total - 1) != "hold"  # no step is wasted holding the floor


@settings(max_examples=100)
@given(
    total=st.integers(20, 30_000),
    warmup_frac=st.floats(0.0, 0.3),
    cycles=st.integers(1, 6),
    mult=MULTS,
    decay=st.floats(0.5, 1.0),
)
def test_lint_finds_no_cut_cycle(
    total: int, warmup_frac: float, cycles: int, mult: float, decay: float
) -> None:
    warmup = int(total * warmup_frac)
    try:
        p = plan(total, cycles=cycles, cycle_mult=mult, warmup=warmup, peak_decay=decay, min_ratio=0.01)
    except ScheduleError:
        return
    codes = {w.code for w in lint(p.schedule, total)}
    assert not codes & {"CA002", "CA003", "CA009"}, codes


def test_ends_exactly_for_common_budgets() -> None:
    for total in (1000, 35100, 100_000, 390 * 200, 10**9 + 7):
        for cycles, mult in ((1, 1.0), (3, 1.0), (3, 2.0), (4, 1.5), (5, 0.8)):
            s = plan(total, cycles=cycles, cycle_mult=mult, warmup=total // 50).schedule
            _check_ends_at_budget(total, s.horizon)


def test_cycle_lengths_follow_the_formula() -> None:
    p = plan("90ep", steps_per_epoch=390, cycles=3, cycle_mult=2, warmup="2ep", peak=0.2, peak_decay=0.5)
    assert p.total_steps == 35100 and p.warmup_steps == 780
    d = 35100 - 780
    assert float(p.schedule.cycle_steps) == pytest.approx(d * (2 - 1) / (2**3 - 1), rel=1e-15)
    assert p.schedule.horizon == 35100
    rows = p.rows
    assert [r.index for r in rows] == [None, 0, 1, 2]
    assert rows[0].start == 0 and rows[0].end == 780
    assert all(a.end == b.start for a, b in itertools.pairwise(rows))
    assert rows[-1].end == 35100 and math.fsum(r.length for r in rows) == pytest.approx(35100, abs=1e-9)
    assert [r.length for r in rows[2:]] == pytest.approx([2 * rows[1].length, 4 * rows[1].length])
    assert [r.peak for r in rows[1:]] == pytest.approx([0.2, 0.1, 0.05])
    assert all(r.seconds is None and r.cost is None for r in rows)
    # equal cycles: D / n, whole steps when they divide
    q = plan(1000, cycles=4, warmup="0.1dur")
    assert (
        q.warmup_steps == 100
        and q.schedule.cycle_steps == 225
        and q.schedule.restarts(1000) == [325, 550, 775]
    )


def test_wall_time_and_cost() -> None:
    p = plan(35100, cycles=3, cycle_mult=2, warmup=780, step_seconds=0.12, price_per_hour=2.5)
    for r in p.rows:
        assert r.seconds == pytest.approx(r.length * 0.12)
        assert r.cost == pytest.approx(r.length * 0.12 / 3600 * 2.5)
    assert p.wall_seconds == pytest.approx(35100 * 0.12)
    assert p.cost == pytest.approx(35100 * 0.12 / 3600 * 2.5)
    assert math.fsum(r.cost or 0.0 for r in p.rows) == pytest.approx(p.cost)


def test_cycle_mult_alone_picks_the_most_cycles_that_fit() -> None:
    p = plan("90ep", steps_per_epoch=390, cycle_mult=2)  # shortest cycle >= 1 epoch by default
    assert p.cycles == 6 and p.min_cycle == 390
    assert float(p.schedule.cycle_steps) >= 390 > 35100 / (2**7 - 1)  # a 7th cycle would not fit
    p = plan(10_000, cycle_mult=0.5, min_cycle=500)  # shrinking cycles: the last one is the shortest
    n = p.cycles
    last = float(p.schedule.cycle_steps) * 0.5 ** (n - 1)
    assert last >= 500
    assert fit_cycle_steps(10_000, 0.5, n + 1) * 0.5**n < 500
    assert plan(100, cycle_mult=2).cycles == 3  # without steps_per_epoch: cycles of >= 10 steps
    assert plan(5, cycle_mult=2).cycles == 1  # always at least one cycle
    assert plan(1000).cycles == 1  # neither --cycles nor --cycle-mult: one cosine decay


@given(
    delta=st.floats(0.1, 600.0),
    mtbf=st.floats(60.0, 7 * 86400.0),
    step=st.floats(1e-3, 5.0),
    restart=st.one_of(st.none(), st.floats(0.0, 900.0)),
    total=st.integers(1, 10**7),
)
def test_young_daly_numbers(
    delta: float, mtbf: float, step: float, restart: float | None, total: int
) -> None:
    p = plan(
        total, step_seconds=step, mtbf=mtbf, checkpoint_seconds=delta, restart_seconds=restart
    ).checkpoint
    assert p is not None
    tau = math.sqrt(2 * delta * mtbf)
    r = delta if restart is None else restart
    assert p.interval_seconds == pytest.approx(tau, rel=1e-15) == young_daly_seconds(delta, mtbf)
    assert p.interval_steps == max(1, round(tau / step))
    assert p.lost_seconds == pytest.approx(tau / 2 + r, rel=1e-15)
    assert p.expected_preemptions == pytest.approx(total * step / mtbf)
    assert p.overhead_seconds == pytest.approx(total * step * (delta / tau + (tau / 2 + r) / mtbf))


def test_young_daly_known_value_and_units() -> None:
    p = plan(1000, mtbf="6h", checkpoint_seconds="20s").checkpoint
    assert p is not None
    assert p.interval_seconds == pytest.approx(929.516, abs=1e-3)  # sqrt(2 * 20 * 21600)
    assert p.interval_steps is None and p.expected_preemptions is None  # no step time
    assert p.lost_seconds == pytest.approx(929.516 / 2 + 20, abs=1e-3)
    assert [parse_seconds("mtbf", v) for v in ("6h", "30m", "3600s", "2d", "1.5h", 90, "45min")] == [
        21600,
        1800,
        3600,
        172800,
        5400,
        90,
        2700,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"total_steps": 100, "warmup": 100},
            "warmup=100 (100 steps) leaves no step for the cycles of a 100-step",
        ),
        ({"total_steps": 100, "warmup": 250}, "leaves no step for the cycles"),
        ({"total_steps": 100, "cycles": 0}, "cycles must be an integer >= 1, got 0"),
        ({"total_steps": 100, "cycles": 101}, "makes the shortest cycle 0.99 steps (< 1)"),
        ({"total_steps": 100, "cycles": 8, "cycle_mult": 2.0}, "(< 1)"),
        ({"total_steps": 0}, "total must be at least 1 step"),
        ({"total_steps": "3ep"}, "total='3ep' is in epochs; give steps_per_epoch"),
        ({"total_steps": "0.5dur"}, "cannot be a fraction of the run"),
        ({"total_steps": "lots"}, "total must be a number or a duration"),
        ({"total_steps": 100, "cycle_mult": 1.0}, "cycle_mult=1 gives equal cycles; say how many"),
        ({"total_steps": 100, "cycle_mult": -2.0}, "cycle_mult must be a finite number > 0, got -2.0"),
        ({"total_steps": 100, "peak": 0.0}, "peak must be a finite number > 0, got 0.0"),
        ({"total_steps": 100, "min_ratio": 1.5}, "min_ratio must be between 0 and 1, got 1.5"),
        ({"total_steps": 100, "price_per_hour": 2.0}, "price_per_hour needs a step time"),
        ({"total_steps": 100, "mtbf": "6h"}, "mtbf needs checkpoint_seconds"),
        ({"total_steps": 100, "checkpoint_seconds": 20}, "checkpoint_seconds needs mtbf"),
        ({"total_steps": 100, "mtbf": "6 hours", "checkpoint_seconds": 1}, "mtbf must be a duration like"),
        ({"total_steps": 100, "mtbf": 0, "checkpoint_seconds": 1}, "mtbf must be > 0, got 0"),
        ({"total_steps": 100, "step_seconds": -1.0}, "step_seconds must be > 0, got -1.0"),
    ],
)
def test_impossible_or_bad_input_is_one_clear_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        plan(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ---- the spec file --------------------------------------------------------------------------------
def test_toml_loads_as_spec_and_as_training_config(tmp_path: Path) -> None:
    p = plan(
        "8ep", steps_per_epoch=20, cycles=3, cycle_mult=2, warmup=10, peak=0.2, min_ratio=0.01,
        peak_decay=0.8, step_seconds=0.05, mtbf="1h", checkpoint_seconds=2,
    )  # fmt: skip
    path = tmp_path / "plan.toml"
    path.write_text(p.to_toml())
    spec = load_spec(path)
    assert spec == p.schedule and spec.fingerprint() == p.schedule.fingerprint()
    assert spec.horizon == 160
    data = tomllib.loads(path.read_text())
    assert data["checkpoint"] == {"every_steps": round(math.sqrt(2 * 2 * 3600) / 0.05)}
    # merged into a training config: the trainer binds it to its own budget (8 epochs x 20 updates)
    base = {
        "epochs": 8, "batch_size": 32, "device": "cpu",
        "model": {"name": "mlp"}, "data": {"name": "blobs", "options": {"n": 800}},
        "schedule": {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"},
    }  # fmt: skip
    cfg = config_from_dict({**base, **data})
    bound = from_dict(cfg.schedule).bind(total_steps=160, steps_per_epoch=20)
    assert bound == p.schedule and not [w for w in lint(bound, 160) if w.code in ("CA002", "CA003", "CA009")]
    assert cfg.checkpoint.every_steps == data["checkpoint"]["every_steps"]
    # the file alone is a training config too (every other key at its default)
    assert load_config(path).schedule == data["schedule"]


def test_toml_without_a_step_time_writes_every_seconds(tmp_path: Path) -> None:
    text = plan(1000, cycles=2, mtbf="30m", checkpoint_seconds=10).to_toml()
    data = tomllib.loads(text)
    assert data["checkpoint"] == {"every_seconds": round(math.sqrt(2 * 10 * 1800), 3)}
    assert Cosine(**{k: v for k, v in data["schedule"].items() if k != "kind"}).horizon == 1000


def test_measure_times_real_steps() -> None:
    cfg = config_from_dict(
        {
            "batch_size": 32,
            "device": "cpu",
            "model": {"name": "mlp"},
            "data": {"name": "blobs", "options": {"n": 800}},
        }
    )
    timing = measure_step_seconds(cfg, steps=4, warmup_steps=1)
    assert len(timing.samples) == 4 and timing.step_seconds > 0
    assert timing.step_seconds == pytest.approx((sorted(timing.samples)[1] + sorted(timing.samples)[2]) / 2)
    assert timing.steps_per_epoch == 640 // 32 and timing.device == "cpu"


# ---- the CLI --------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_cli_prints_the_table_and_writes_a_loadable_file(tmp_path: Path) -> None:
    out = _cli(
        "plan", "--steps", "90ep", "--steps-per-epoch", "390", "--cycles", "3", "--cycle-mult", "2",
        "--warmup", "2ep", "--step-seconds", "0.12", "--price-per-hour", "2.5", "--mtbf", "6h",
        "--checkpoint-seconds", "20", "-o", "plan.toml", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = next(line for line in lines if line.strip("│ ").startswith("2 "))
    assert [c.strip() for c in row.strip("│").split("│")][:5] == ["2", "15488.6", "35100", "19611.4", "50.29"]
    assert any("warmup" in line and "780" in line for line in lines)
    assert "1h 10m, cost 2.92" in out.stdout  # 35100 x 0.12 s = 4212 s at 2.5/h
    assert "every 15m 30s = every 7746 steps" in out.stdout  # sqrt(2 x 20 x 21600) = 929.5 s / 0.12 s
    assert "last cycle ends at step 35100 = the budget" in out.stdout
    spec = load_spec(tmp_path / "plan.toml")
    assert spec.horizon == 35100 and spec.restarts(35100) == plan(
        35100, cycles=3, cycle_mult=2, warmup=780
    ).schedule.restarts(35100)


def test_cli_measure_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps({"batch_size": 32, "device": "cpu", "model": {"name": "mlp"}, "data": {"name": "blobs"}})
    )
    out = _cli(
        "plan",
        "--steps",
        "4ep",
        "--cycles",
        "2",
        "--measure",
        str(config),
        "--measure-steps",
        "3",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "50 steps per epoch" in out.stdout  # 1600 training samples // 32
    assert "200 steps (4 epochs of 50)" in out.stdout and "total: 200 steps x" in out.stdout

    out = _cli("plan", "--steps", "100", "--warmup", "100", "--cycles", "2", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == (
        "error: warmup='100' (100 steps) leaves no step for the cycles of a 100-step budget; "
        "shorten warmup or raise total\n"
    )
    out = _cli("plan", "--steps", "100", "--step-seconds", "0.1", "--measure", str(config), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: --measure and --step-seconds")
    assert not (tmp_path / "plan.toml").exists()


# ---- one stable run + cooldown branches vs separate cosine runs -------------------------------------
def test_branch_plan_counts_the_stable_run_once() -> None:
    p = branch_plan(20000, cooldown=0.2, step_seconds=0.36)
    assert [(r.budget, r.at, r.cooldown) for r in p.rows] == [
        (5000, 4000, 1000), (10000, 8000, 2000), (15000, 12000, 3000), (20000, 16000, 4000)
    ]  # fmt: skip
    assert (p.stable_updates, p.branch_updates, p.cosine_updates) == (16000, 26000, 50000)
    assert p.saved_fraction == pytest.approx(0.48) and p.hours(26000) == pytest.approx(2.6)
    fixed = branch_plan(1000, cooldown=100)
    assert [r.cooldown for r in fixed.rows] == [100] * 4 and fixed.branch_updates == 900 + 400
    assert branch_plan(1000).hours(10) is None


@given(st.integers(400, 10**7), st.floats(0.01, 0.6))
@settings(max_examples=200, deadline=None)
def test_branches_never_cost_more_than_the_separate_runs(total: int, f: float) -> None:
    p = branch_plan(total, cooldown=f)
    assert p.stable_updates == p.rows[-1].at
    assert all(r.at + r.cooldown == r.budget and r.cooldown >= 1 for r in p.rows)
    assert p.branch_updates == p.stable_updates + sum(r.cooldown for r in p.rows) <= p.cosine_updates


def test_branch_plan_refusals() -> None:
    for kwargs, message in [
        ({"cooldown": 1.5}, "whole updates or a fraction"),
        ({"cooldown": 250}, "must leave the stable run"),
        ({"fractions": (0.5, 2.0)}, "fractions must be in"),
    ]:
        with pytest.raises(ScheduleError, match=message):
            branch_plan(1000, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="matches no branch"):
        measured_branch_plan([(40, 10, 0.5)], cosine={60: 0.4})
    with pytest.raises(ScheduleError, match="cosanneal branch"):
        measured_branch_plan([])


def test_cli_plans_branches_against_cosine_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cosanneal", "plan", "--steps", "20000", "--cooldown", "0.2", "--step-seconds", "0.36"],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "160"},
    ).stdout  # fmt: skip
    assert "stable run + 4 branches: 26000 updates = 2.6 device-hours" in out
    assert "4 separate cosine runs: 50000 updates = 5 device-hours" in out
    assert "branches save 24000 updates (48.0%)" in out
