"""`cosanneal compare`: the table is what the run stores hold; the shipped specs fit any budget."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from cosanneal import ConfigError, runs
from cosanneal.analysis.compare import (
    CompareSettings,
    first_reaching,
    load_entries,
    load_schedules,
    mean_ci,
    mean_std,
    run_stats,
    welch_p,
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
    half = float(stats.t.ppf(0.975, 1)) / np.sqrt(2)  # the 95% Student-t half-width over 2 seeds, per std
    finals = {label: [_expected(out / label / f"seed-{s}")["final"] for s in (0, 1)] for label in rows}
    bests = [_expected(out / "cosine" / f"seed-{s}")["best"] for s in (0, 1)]
    assert cos["final_ci"] == pytest.approx(half * statistics.stdev(finals["cosine"]), rel=1e-9)
    assert cos["best_ci"] == pytest.approx(half * statistics.stdev(bests), rel=1e-9)
    assert rows["cosine"]["p_vs_best"] is None  # the lower final val_loss
    welch = stats.ttest_ind(finals["constant"], finals["cosine"], equal_var=False).pvalue
    assert rows["constant"]["p_vs_best"] == pytest.approx(welch, rel=1e-9)
    assert table[2].startswith(
        f"| cosine | {cos['final_mean']:.4f} ± {cos['final_ci']:.4f} | best | {cos['best_mean']:.4f} ± {cos['best_ci']:.4f} |"
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
    assert f"{row['final_mean']:.4f} ± {row['final_ci']:.4f}" in captured.out


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


# ---- the modern alternatives: schedule-free AdamW, SWA of the stable phase, the shipped specs -------
MODERN = sorted((Path(__file__).resolve().parents[2] / "examples/compare/modern").glob("*.toml"))
ADAMW = {**BLOBS, "optimizer": {"name": "adamw", "weight_decay": 0.01}, "eval": {"every_steps": 8}}
WSD = 'kind = "wsd"\npeak_lr = 0.01\nwarmup_steps = 4\nstable_steps = 28\ndecay_steps = 8\ndecay_shape = "1-sqrt"\n'
SF = '[schedule]\nkind = "cosine"\npeak_lr = 0.01\nmin_ratio = 1.0\nwarmup_steps = 4\ncycle_steps = 36\n\n[optimizer]\nname = "adamw_schedulefree"\n'


@pytest.fixture(scope="module")
def modern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WSD (averaged: --swa) against schedule-free AdamW, 3 seeds, through the CLI."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("modern")
    (tmp / "cfg.json").write_text(json.dumps(ADAMW))
    (tmp / "wsd.toml").write_text(WSD)
    (tmp / "sf.toml").write_text(SF)
    out = tmp / "out"
    args = ["compare", str(tmp / "cfg.json"), "--schedules", str(tmp / "wsd.toml"), str(tmp / "sf.toml"),
            "--seeds", "3", "--metric", "val_loss", "--swa", "wsd", "--swa-every", "4", "-o", str(out)]  # fmt: skip
    assert _cli(args) == 0
    return out


def test_swa_row_is_the_average_of_the_stable_phase_checkpoints(modern: Path) -> None:
    from safetensors.torch import load_file

    from cosanneal.jobs.builders import build_data, build_model
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.data import EpochBatches
    from cosanneal.jobs.tasks import ClassificationTask

    summary = json.loads((modern / "summary.json").read_text())
    rows = {r["label"]: r for r in summary["rows"]}
    assert list(rows) == ["wsd", "wsd+swa", "sf"]
    assert summary["optimizers"] == {"sf": {"name": "adamw_schedulefree"}}
    swa = [json.loads((modern / "wsd" / f"seed-{s}" / "swa.json").read_text()) for s in range(3)]
    # checkpoints every 4 updates; the stable phase is updates 4..31, so checkpoints 8..32 (the last
    # update before each ran at the peak); window 0.5 (default): the last 4 of those 7
    assert all(a["steps"] == [20, 24, 28, 32] and a["window"] == 0.5 for a in swa), swa
    values = [a["metrics"]["val_loss"] for a in swa]
    assert rows["wsd+swa"]["final_mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
    assert rows["wsd+swa"]["best_mean"] == rows["wsd+swa"]["final_mean"] and rows["wsd+swa"]["runs"] == 3
    # recomputed by hand for seed 1: the mean of the four checkpoints' weights, evaluated
    ckpts = modern / "wsd" / "seed-1" / "checkpoints"
    states = [load_file(str(ckpts / f"step-{s:09d}" / "model.safetensors")) for s in (20, 24, 28, 32)]
    cfg = config_from_dict({**ADAMW, "schedule": read_spec(modern.parent / "wsd.toml")})
    model = build_model(cfg.model)
    model.load_state_dict({k: sum(st_[k] for st_ in states) / 4 for k in states[0]})
    model.eval()
    _, val_set = build_data(cfg.data)
    batches = list(EpochBatches(val_set, cfg.eval.batch_size).sequential(cfg.eval.batch_size))
    with torch.no_grad():
        loss = ClassificationTask().evaluate(model, batches)["loss"]
    assert swa[1]["metrics"]["val_loss"] == pytest.approx(loss, rel=1e-5)
    # the table: mean ± 95% CI over 3 seeds, Welch's p against the best row
    half = float(stats.t.ppf(0.975, 2)) / np.sqrt(3)
    assert rows["wsd+swa"]["final_ci"] == pytest.approx(half * statistics.stdev(values), rel=1e-9)
    assert sum(r["p_vs_best"] is None for r in rows.values()) == 1
    table = (modern / "summary.md").read_text()
    assert "| wsd+swa | " in table and "(mean ± 95% CI)" in table


def test_schedule_free_runs_train_flat_and_save_in_eval_mode(modern: Path) -> None:
    run_dir = modern / "sf" / "seed-0"
    with runs.open(run_dir) as run:
        _, lr = run.scalar("lr", 0)
        assert run.params["config"]["optimizer"]["name"] == "adamw_schedulefree"
        assert run.params["config"]["optimizer"]["weight_decay"] == 0.01  # the base config's keys stay
    assert lr[4:].min() == lr[4:].max() == 0.01 and lr[0] < lr[3] < 0.01


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        (SF.replace("adamw_schedulefree", "adamw_schedule_free"), [], r"--schedules sf: optimizer.name: 'adamw_schedule_free' is not a torch.optim optimizer; did you mean 'adamw_schedulefree'"),
        (SF.replace("min_ratio = 1.0", "min_ratio = 0.1"), [], r"--schedules sf: schedule: a schedule-free optimizer .* leaves its peak"),
        (SF, ["--swa", "wsdd"], r"--swa: no schedule is labelled 'wsdd'; the labels are sf"),
        (SF + "\n[model]\nname = 'mlp'\n", [], r"--schedules .*sf.toml: 'model' is not a key of a compared entry"),
        (SF, ["--swa-window", "0"], r"--swa-window: must be in \(0, 1\]"),
    ],
)  # fmt: skip
def test_bad_entries_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, extra: list[str], message: str
) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps(ADAMW))
    (tmp_path / "sf.toml").write_text(spec)
    out = tmp_path / "out"
    code = _cli(
        [
            "compare",
            str(tmp_path / "cfg.json"),
            "--schedules",
            str(tmp_path / "sf.toml"),
            "-o",
            str(out),
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_schedulefree_missing_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "schedulefree", None)  # the package is not importable here
    (tmp_path / "cfg.json").write_text(json.dumps(ADAMW))
    (tmp_path / "sf.toml").write_text(SF)
    out = tmp_path / "out"
    assert (
        _cli(
            ["compare", str(tmp_path / "cfg.json"), "--schedules", str(tmp_path / "sf.toml"), "-o", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "optimizer.name: 'adamw_schedulefree' needs the schedulefree package, which is not installed; "
        "pip install schedulefree==1.4.1 (it comes with cosanneal[runtime])"
    )
    assert not out.exists()


@pytest.mark.parametrize(("total", "per_epoch"), [(300, 30), (4000, 100)])
def test_the_modern_specs_are_what_they_say(total: int, per_epoch: int) -> None:
    from cosanneal.jobs.optimizer_modes import check_schedule

    entries = load_entries(MODERN)
    assert sorted(entries) == [
        "cosine_10pct",
        "cosine_to_zero",
        "linear_to_zero",
        "schedulefree",
        "wsd_1sqrt",
    ]
    lr = {
        label: from_dict(e.schedule).bind(total_steps=total, steps_per_epoch=per_epoch)(
            np.arange(total + 1.0)
        )
        for label, e in entries.items()
    }
    w, peak = round(0.05 * total), 3e-3
    assert all(np.isclose(v[w], peak, rtol=1e-12) and v.max() == pytest.approx(peak) for v in lr.values())
    t = np.arange(w, total + 1)
    np.testing.assert_allclose(
        lr["linear_to_zero"][w:], peak * (1 - (t - w) / (total - w)), rtol=1e-9, atol=1e-15
    )
    d = round(0.8 * total)
    p = (np.arange(d, total + 1) - d) / (total - d)
    np.testing.assert_allclose(lr["wsd_1sqrt"][d:], peak * (1 - np.sqrt(p)), rtol=1e-9, atol=1e-15)
    assert np.all(lr["wsd_1sqrt"][w:d] == peak)
    assert lr["cosine_10pct"][total] == pytest.approx(0.1 * peak) and lr["cosine_to_zero"][
        total
    ] == pytest.approx(0.0, abs=1e-18)
    assert entries["schedulefree"].optimizer == {"name": "adamw_schedulefree"}
    check_schedule(
        from_dict(entries["schedulefree"].schedule).bind(total_steps=total), total, "adamw_schedulefree"
    )
    assert all(not e.optimizer for label, e in entries.items() if label != "schedulefree")


def test_mean_ci_and_welch_p_are_scipys() -> None:
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.89, 0.915]
    mean, half = mean_ci(a)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=stats.sem(a))
    assert mean == pytest.approx(np.mean(a)) and half == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert (
        np.isnan(mean_ci([1.0])[1])
        and np.isnan(welch_p([1.0], b))
        and np.isnan(welch_p([1.0, 1.0], [2.0, 2.0]))
    )
