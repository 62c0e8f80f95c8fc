"""`cosanneal compare`: the table is what the run stores hold; the shipped specs fit any budget."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import ConfigError, runs
from cosanneal.analysis.compare import (
    CompareSettings,
    first_reaching,
    load_schedules,
    mean_std,
    run_stats,
)
from cosanneal.cli import main
from cosanneal.schedules import from_dict
from cosanneal.schedules.spec import read_spec

BLOBS: dict[str, Any] = {
    "name": "blobs-compare",
    "epochs": 2,
    "batch_size": 32,
    "device": "cpu",
    "model": {"name": "mlp"},
    "data": {"name": "blobs", "options": {"n": 800}},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "eval": {"every_steps": 5},
    "checkpoint": {"enabled": False},
    "telemetry": {"tensorboard": False, "progress": False},
}  # 20 updates per epoch, 40 per run, evaluated every 5
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples/compare").glob("*.toml"))
TARGET = 0.05


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return int(exit_.value.code or 0)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny real comparison: 2 schedules x 2 seeds, through the CLI."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("compare")
    config = tmp / "cfg.json"
    config.write_text(json.dumps(BLOBS))
    (tmp / "cosine.toml").write_text(
        'kind = "cosine"\npeak_lr = 0.2\nmin_ratio = 0.01\ncycle_steps = "1dur"\n'
    )
    (tmp / "constant.toml").write_text('kind = "constant"\nlr = 1e-4\n')
    out = tmp / "out"
    args = ["compare", str(config), "--schedules", str(tmp / "cosine.toml"), str(tmp / "constant.toml"),
            "--seeds", "2", "--metric", "val_loss", "--target", str(TARGET), "-o", str(out)]  # fmt: skip
    assert _cli(args) == 0
    return out, " ".join(args)


def _expected(run_dir: Path) -> dict[str, Any]:
    """The figures of one run, computed here straight from its store."""
    with runs.open(run_dir) as run:
        steps, loss = run.scalar("val_loss")
        lr_steps, _ = run.scalar("lr", 0)
        t_steps, t = run.scalar("step_time")
        wall = run.summary()["wall_seconds"]
    hit = next((i for i, v in enumerate(loss) if v <= TARGET), None)
    to = None if hit is None else int(steps[hit])
    return {"final": loss[-1], "best": loss.min(), "steps": len(lr_steps), "wall": wall, "to": to,
            "to_s": None if to is None else float(t[t_steps < to].sum())}  # fmt: skip


def test_table_numbers_equal_the_run_stores(compared: tuple[Path, str]) -> None:
    out, _ = compared
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["label"]: r for r in summary["rows"]}
    assert list(rows) == ["cosine", "constant"]
    for label, row in rows.items():
        runs_ = [_expected(out / label / f"seed-{s}") for s in (0, 1)]
        assert row["runs"] == 2
        assert row["final_mean"] == pytest.approx(statistics.mean(r["final"] for r in runs_), rel=1e-12)
        assert row["final_std"] == pytest.approx(
            statistics.stdev(r["final"] for r in runs_), rel=1e-9, abs=1e-12
        )
        assert row["best_mean"] == pytest.approx(statistics.mean(r["best"] for r in runs_), rel=1e-12)
        assert row["best_std"] == pytest.approx(
            statistics.stdev(r["best"] for r in runs_), rel=1e-9, abs=1e-12
        )
        assert row["steps"] == 40 == runs_[0]["steps"]
        assert row["wall_seconds"] == pytest.approx(statistics.mean(r["wall"] for r in runs_))
        reached = [r for r in runs_ if r["to"] is not None]
        assert row["reached"] == len(reached)
        if reached:
            assert row["steps_to_target"] == pytest.approx(statistics.mean(r["to"] for r in reached))
            assert row["seconds_to_target"] == pytest.approx(statistics.mean(r["to_s"] for r in reached))
        else:
            assert row["steps_to_target"] is None
    # the cosine peak of 0.2 learns the blobs; a constant 1e-4 cannot reach the target in 40 updates
    assert rows["cosine"]["reached"] == 2 and rows["constant"]["reached"] == 0
    # the runs trained what was asked: each seed's own config and schedule
    with runs.open(out / "cosine" / "seed-1") as run:
        assert run.params["config"]["seed"] == 1 and run.params["schedule"]["kind"] == "cosine"
    table = (out / "summary.md").read_text().splitlines()
    cos = rows["cosine"]
    assert table[2].startswith(
        f"| cosine | {cos['final_mean']:.4f} ± {cos['final_std']:.4f} | {cos['best_mean']:.4f} ± {cos['best_std']:.4f} |"
    )
    assert "not reached (0/2)" in table[3]
    for png in ("lr_curves.png", "val_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_printed_table_and_rerun_reuses_finished_runs(
    compared: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, args = compared
    before = (out / "cosine" / "seed-0" / "run.db").stat().st_mtime_ns
    assert _cli(args.split()) == 0
    captured = capsys.readouterr()
    assert captured.err.count("finished before, reused") == 4
    assert (out / "cosine" / "seed-0" / "run.db").stat().st_mtime_ns == before
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    assert f"{row['final_mean']:.4f} ± {row['final_std']:.4f}" in captured.out


def test_run_stats_uses_the_metric_direction(compared: tuple[Path, str]) -> None:
    out, _ = compared
    stats = run_stats(out / "cosine" / "seed-0", "cosine", 0, "val_acc", "max", 0.9)
    with runs.open(out / "cosine" / "seed-0") as run:
        steps, acc = run.scalar("val_acc")
    assert stats.best == acc.max() and stats.final == acc[-1]
    assert stats.steps_to_target == steps[np.argmax(acc >= 0.9)]
    with pytest.raises(ConfigError, match=r"^--metric: no scalar 'val_f1'"):
        run_stats(out / "cosine" / "seed-0", "cosine", 0, "val_f1", "max", None)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize(("total", "per_epoch"), [(440, 22), (3000, 100)])
def test_shipped_specs_fit_any_budget(path: Path, total: int, per_epoch: int) -> None:
    schedule = from_dict(read_spec(path)).bind(total_steps=total, steps_per_epoch=per_epoch)
    lr = schedule(np.arange(total, dtype=np.float64))
    assert np.all(np.isfinite(lr)) and np.all(lr >= 0) and lr.max() > 0
    if path.stem in ("cosine", "cosine_warmup", "sgdr", "wsd", "onecycle"):
        assert lr[-1] < 0.02 * lr.max()  # annealed by the end of the budget, whatever its length


def test_the_built_in_comparison_has_the_eight_schedules() -> None:
    specs = load_schedules(EXAMPLES)
    kinds = {label: spec["kind"] for label, spec in specs.items()}
    assert kinds == {"constant": "constant", "cosine": "cosine", "cosine_warmup": "cosine",
                     "exponential": "exponential", "onecycle": "onecycle", "sgdr": "cosine",
                     "step": "step", "wsd": "wsd"}  # fmt: skip
    assert specs["sgdr"]["cycle_mult"] == 2 and specs["cosine_warmup"]["warmup_steps"] == "0.05dur"


def test_duplicate_labels_and_bad_specs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.toml").write_text('kind = "constant"\nlr = 0.1\n')
    (tmp_path / "x.toml").write_text('kind = "constant"\nlr = 0.1\n')
    with pytest.raises(ConfigError, match=r"^--schedules: two specs are named 'x'"):
        load_schedules([tmp_path / "x.toml", tmp_path / "a" / "x.toml"])
    (tmp_path / "bad.toml").write_text('kind = "cosine"\npeak_lr = -1\ncycle_steps = 10\n')
    with pytest.raises(ConfigError, match=r"^--schedules .*bad.toml: peak_lr"):
        load_schedules([tmp_path / "bad.toml"])
    with pytest.raises(ConfigError, match=r"^--seeds: must be >= 1"):
        CompareSettings(tmp_path, seeds=())


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20))
def test_mean_std_matches_statistics(values: list[float]) -> None:
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.fmean(values), abs=1e-9, rel=1e-9)
    assert std == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0, abs=1e-6, rel=1e-9)


@given(st.lists(st.floats(0, 1), min_size=0, max_size=30), st.floats(0, 1), st.sampled_from(["min", "max"]))
def test_first_reaching_is_the_first_crossing(values: list[float], target: float, mode: str) -> None:
    i = first_reaching(list(range(len(values))), values, target, mode)  # type: ignore[arg-type]
    ok = [(v >= target) if mode == "max" else (v <= target) for v in values]
    assert i == (ok.index(True) if any(ok) else None)
