"""``cosanneal verify``: every diagnosis on a trace produced by really running the mistaken torch code.

Each trace comes from a tiny model trained with a real optimizer and a real scheduler (torch's, timm's
or cosanneal's), logging ``optimizer.param_groups[0]["lr"]`` before every ``optimizer.step()``; the
traces travel through real CSV/JSONL files, TensorBoard event files, an MLflow store and a real
``cosanneal train`` run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import Cosine
from cosanneal.analysis import TraceError, load_trace, read_trace, verify
from cosanneal.analysis.diagnose import plateau_length, restart_steps
from cosanneal.analysis.verify import format_verdict
from cosanneal.errors import ScheduleError
from cosanneal.torch import Scheduler

PEAK = 0.1
EPOCHS, PER_EPOCH = 8, 10
UPDATES = EPOCHS * PER_EPOCH

Step = Callable[[], None]


def _model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=PEAK, momentum=0.9)


def _update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lrs: list[float]) -> None:
    """One real update; the LR it uses is logged before ``optimizer.step()``."""
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.step()


def _train(
    make: Callable[[torch.optim.Optimizer], Any],
    *,
    per_update: int = 1,
    per_epoch: int = 0,
    updates: int = UPDATES,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``updates`` updates, calling ``scheduler.step()`` ``per_update`` times per update and
    ``per_epoch`` times at the end of every epoch of ``PER_EPOCH`` updates."""
    model, optimizer = _model_and_optimizer()
    scheduler = make(optimizer)
    lrs: list[float] = []
    for t in range(updates):
        _update(model, optimizer, lrs)
        for _ in range(per_update):
            scheduler.step()
        if (t + 1) % PER_EPOCH == 0:
            for _ in range(per_epoch):
                scheduler.step()
    return np.arange(updates), np.array(lrs)


def _torch_cosine(t_max: int, eta_min: float = 0.0) -> Callable[[torch.optim.Optimizer], Any]:
    return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)


def _write_csv(path: Path, steps: np.ndarray, lrs: np.ndarray, header: str = "step,lr") -> Path:
    lines = [header] + [f"{int(s)},{float(v)!r}" for s, v in zip(steps, lrs, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``cosanneal verify`` as a real process (exit status and stderr as a user sees them)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "cosanneal", "verify", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cosanneal.cli.main`` in this process: the console script's code path, without the start-up cost."""
    from cosanneal.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["verify", *args])
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess(list(args), int(code or 0), out.getvalue(), err.getvalue())


def _spec(path: Path, schedule: Cosine) -> Path:
    path.write_text(json.dumps(schedule.to_dict()))
    return path


# ---- the matching case and the verdict's numbers -------------------------------------------------
def test_torch_cosine_stepped_per_update_matches_its_cosanneal_spec() -> None:
    steps, lrs = _train(_torch_cosine(UPDATES, eta_min=1e-3))
    verdict = verify(steps, lrs, Cosine(PEAK, min_lr=1e-3, cycle_steps=UPDATES))
    assert verdict.matches and verdict.mismatched == 0 and verdict.diagnoses == []
    assert verdict.max_rel_error <= 1e-9 and verdict.steps == UPDATES


def test_errors_and_first_mismatches_are_reported() -> None:
    s = Cosine(1.0, cycle_steps=10)
    t = np.arange(10)
    lrs = s(t)
    lrs[[3, 7]] *= 1.5
    v = verify(t, lrs, s)
    assert not v.matches and v.mismatched == 2
    assert [(m.step, m.expected) for m in v.first_mismatches] == [(3, s(3)), (7, s(7))]
    assert v.max_abs_error == pytest.approx(0.5 * s(3))
    assert v.max_rel_error == pytest.approx(0.5) and v.worst_step in (3, 7)


def test_scale_compares_a_param_group_with_its_share_of_the_schedule() -> None:
    s = Cosine(1.0, warmup_steps=3, cycle_steps=20)
    t = np.arange(25)
    assert verify(t, 0.25 * s(t), s, scale=0.25).matches
    assert not verify(t, 0.25 * s(t), s).matches


def test_nan_in_the_trace_is_a_mismatch() -> None:
    s = Cosine(1.0, cycle_steps=10)
    lrs = s(np.arange(10))
    lrs[4] = math.nan
    v = verify(np.arange(10), lrs, s)
    assert not v.matches and [m.step for m in v.first_mismatches] == [4] and math.isnan(v.max_abs_error)


def test_verify_rejects_bad_input() -> None:
    s = Cosine(1.0, cycle_steps=10)
    with pytest.raises(ScheduleError, match="same length"):
        verify([0, 1], [1.0], s)
    with pytest.raises(ScheduleError, match="empty"):
        verify([], [], s)
    with pytest.raises(ScheduleError, match="tolerance must be"):
        verify([0], [1.0], s, tolerance=-1)


@settings(max_examples=50)
@given(
    st.floats(1e-5, 10.0),
    st.integers(2, 500),
    st.floats(0.0, 0.5),
    st.floats(1e-6, 1e-2),
)
def test_within_tolerance_matches_and_outside_does_not(
    peak: float, cycle: int, ratio: float, tol: float
) -> None:
    s = Cosine(peak, min_ratio=ratio, cycle_steps=cycle)
    t = np.arange(cycle + 5)
    e = s(t)
    assert verify(t, e * (1 + 0.5 * tol), s, tolerance=tol).matches
    bumped = e.copy()
    bumped[cycle // 2] *= 1 + 3 * tol  # mid-cycle, where the LR is about half the peak
    v = verify(t, bumped, s, tolerance=tol)
    assert not v.matches and [m.step for m in v.first_mismatches] == [cycle // 2]


# ---- each diagnosis from real mistaken training code ---------------------------------------------
def test_never_stepped_torch_scheduler() -> None:
    steps, lrs = _train(_torch_cosine(UPDATES), per_update=0)
    v = verify(steps, lrs, Cosine(PEAK, cycle_steps=UPDATES))
    assert v.codes() == ["never-stepped"]
    assert v.diagnoses[0].evidence["flat_lr"] == PEAK


@pytest.mark.parametrize("which", ["torch", "cosanneal"])
def test_stepped_per_epoch_staircase_and_plateau_length(which: str) -> None:
    schedule = Cosine(PEAK, warmup_steps=5, cycle_steps=UPDATES - 5)
    make: Callable[[torch.optim.Optimizer], Any] = (
        _torch_cosine(UPDATES - 5) if which == "torch" else (lambda opt: Scheduler(opt, schedule))
    )
    if which == "torch":
        schedule = Cosine(PEAK, cycle_steps=UPDATES - 5)
    steps, lrs = _train(make, per_update=0, per_epoch=1)
    v = verify(steps, lrs, schedule)
    assert v.codes() == ["per-epoch"]
    d = v.diagnoses[0]
    assert d.fitted and d.evidence["plateau_steps"] == PER_EPOCH


def test_per_epoch_plateau_reported_against_given_steps_per_epoch() -> None:
    steps, lrs = _train(_torch_cosine(UPDATES), per_update=0, per_epoch=1)
    v = verify(steps, lrs, Cosine(PEAK, cycle_steps=UPDATES), steps_per_epoch=12)
    assert v.diagnoses[0].evidence == {"plateau_steps": 10, "steps_per_epoch": 12}
    assert "--steps-per-epoch is 12" in v.diagnoses[0].explanation


def test_stepped_twice_per_update() -> None:
    steps, lrs = _train(_torch_cosine(200), per_update=2)
    v = verify(steps, lrs, Cosine(PEAK, cycle_steps=200))
    assert v.codes() == ["compressed"]
    assert v.diagnoses[0].evidence == {"k": 2, "offset": 0, "continued": False}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_gradient_accumulation_stepping_per_micro_batch() -> None:
    schedule = Cosine(PEAK, warmup_steps=8, warmup_start_lr=0.0, cycle_steps=300, min_ratio=0.05)
    model, optimizer = _model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: schedule(t) / PEAK)
    accumulation, lrs = 4, []
    for micro in range(60 * accumulation):
        loss = model(torch.randn(8, 4)).pow(2).mean() / accumulation
        loss.backward()
        if (micro + 1) % accumulation == 0:
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()  # the mistake: once per micro-batch
    v = verify(np.arange(len(lrs)), np.array(lrs), schedule)
    assert v.codes() == ["compressed"]
    assert v.diagnoses[0].evidence == {"k": accumulation, "offset": accumulation - 1, "continued": False}


def test_lr_logged_after_scheduler_step_is_off_by_one() -> None:
    schedule = Cosine(PEAK, warmup_steps=5, cycle_steps=UPDATES - 5)
    model, optimizer = _model_and_optimizer()
    scheduler = Scheduler(optimizer, schedule)
    lrs: list[float] = []
    for _ in range(UPDATES):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])  # the mistake: the LR of the *next* update
    v = verify(np.arange(UPDATES), np.array(lrs), schedule, lr_read="after-scheduler-step")
    assert v.codes() == ["off-by-one"]
    assert v.diagnoses[0].evidence == {"shift": 1, "lr_read": "after-scheduler-step"}
    # read as docs/verify.md prescribes, the same numbers mean the optimizer used the next step's LR
    v = verify(np.arange(UPDATES), np.array(lrs), schedule)
    assert v.codes() == ["step-order"] and "--lr-read after-scheduler-step" in v.diagnoses[0].explanation
    with pytest.raises(ScheduleError, match="lr_read must be one of"):
        verify(np.arange(UPDATES), np.array(lrs), schedule, lr_read="whenever")


def test_wrong_t_max_fits_the_real_cycle_length() -> None:
    steps, lrs = _train(_torch_cosine(123, eta_min=1e-3))
    v = verify(steps, lrs, Cosine(PEAK, min_lr=1e-3, cycle_steps=UPDATES))
    assert v.codes() == ["cycle-length"]
    assert v.diagnoses[0].evidence["fitted_cycle_steps"] == 123


def test_resume_that_rebuilds_the_scheduler_without_its_state() -> None:
    schedule = Cosine(PEAK, warmup_steps=6, cycle_steps=UPDATES - 6, min_ratio=0.1)
    model, optimizer = _model_and_optimizer()
    scheduler = Scheduler(optimizer, schedule)
    lrs: list[float] = []
    for _ in range(50):
        _update(model, optimizer, lrs)
        scheduler.step()
    saved_model, saved_opt = model.state_dict(), optimizer.state_dict()
    model, optimizer = _model_and_optimizer(seed=1)  # the "new process" after preemption
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_opt)
    scheduler = Scheduler(optimizer, schedule)  # the mistake: scheduler.load_state_dict(...) forgotten
    for _ in range(50, UPDATES):
        _update(model, optimizer, lrs)
        scheduler.step()
    v = verify(np.arange(UPDATES), np.array(lrs), schedule)
    assert v.codes() == ["resume-jump"]
    assert v.diagnoses[0].evidence["resume_step"] == 50 and v.diagnoses[0].evidence["restarted_from_start"]


def test_resume_that_stops_stepping_the_scheduler_is_stuck() -> None:
    model, optimizer = _model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=UPDATES)
    real: list[float] = []
    for t in range(UPDATES):
        _update(model, optimizer, real)
        if t < 39:  # the mistake: the resumed loop no longer steps the scheduler
            scheduler.step()
    v = verify(np.arange(UPDATES), np.array(real), Cosine(PEAK, cycle_steps=UPDATES))
    assert v.codes() == ["resume-jump"] and v.diagnoses[0].evidence["stuck"]
    assert v.diagnoses[0].evidence["resume_step"] == 40


def test_torch_cosine_run_past_t_max_climbs_back() -> None:
    steps, lrs = _train(_torch_cosine(50, eta_min=1e-3))
    v = verify(steps, lrs, Cosine(PEAK, min_lr=1e-3, cycle_steps=50))
    assert v.codes() == ["past-horizon"]
    d = v.diagnoses[0]
    assert (
        d.evidence["horizon"] == 50
        and d.evidence["max_lr_after_end"] > 0.05
        and "continued cosine" in d.explanation
    )


def test_timm_warmup_prefix_false_against_a_prefix_true_spec() -> None:
    from peers import timm_scheduler_module

    timm = timm_scheduler_module("cosine_lr")
    model, optimizer = _model_and_optimizer()
    scheduler = timm.CosineLRScheduler(
        optimizer, t_initial=60, warmup_t=10, warmup_lr_init=1e-3, warmup_prefix=False, t_in_epochs=False
    )
    lrs: list[float] = []
    for t in range(UPDATES):
        _update(model, optimizer, lrs)
        scheduler.step_update(num_updates=t + 1)
    spec = Cosine(PEAK, warmup_steps=10, warmup_start_lr=1e-3, cycle_steps=60, warmup_prefix=True)
    v = verify(np.arange(UPDATES), np.array(lrs), spec)
    assert v.codes() == ["warmup-handoff"]
    assert v.diagnoses[0].evidence["trace_warmup_prefix"] is False


def test_warm_restarts_with_another_t_mult_restart_at_the_wrong_steps() -> None:
    make = lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2)  # noqa: E731
    steps, lrs = _train(make, updates=150)
    v = verify(steps, lrs, Cosine(PEAK, cycle_steps=10, max_cycles=None))
    assert v.codes() == ["restarts"]
    ev = v.diagnoses[0].evidence
    assert ev["trace_restarts"] == [10, 30, 70] and ev["expected_restarts"][:3] == [10, 20, 30]
    assert ev["fitted_cycle_mult"] == 2


def test_unknown_shape_has_no_diagnosis() -> None:
    s = Cosine(1.0, cycle_steps=100)
    t = np.arange(100)
    rng = np.random.default_rng(0)
    v = verify(t, s(t) * (1 + rng.uniform(0.01, 0.02, 100)), s)
    assert not v.matches and v.diagnoses == []


def test_plateau_and_restart_detectors() -> None:
    assert plateau_length(np.linspace(1, 0, 20), 1e-9, 1.0) is None
    assert plateau_length(np.repeat([3.0, 2.0, 1.0, 0.5], 7), 1e-9, 3.0) == 7
    y = Cosine(1.0, cycle_steps=8, cycle_mult=2, max_cycles=None)(np.arange(60))
    assert restart_steps(np.arange(60.0), y, 1.0) == [8, 24, 56]


# ---- sources -----------------------------------------------------------------------------------
def test_csv_and_jsonl_with_flexible_headers(tmp_path: Path) -> None:
    steps, lrs = _train(_torch_cosine(UPDATES), per_update=0, per_epoch=1)
    csv_path = _write_csv(tmp_path / "lr.csv", steps, lrs, header="iteration,learning_rate")
    s2, l2 = load_trace(csv_path)
    assert s2.tolist() == steps.tolist() and l2.tolist() == lrs.tolist()
    jsonl = tmp_path / "lr.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"global_step": int(s), "loss": 1.0, "lr": float(v)}) + "\n"
            for s, v in zip(steps, lrs, strict=True)
        )
    )
    s3, l3 = load_trace(jsonl)
    assert s3.tolist() == steps.tolist() and l3.tolist() == lrs.tolist()


def test_repeated_steps_keep_the_last_value(tmp_path: Path) -> None:
    path = tmp_path / "lr.csv"
    path.write_text("step,lr\n0,1.0\n1,0.5\n2,0.25\n1,0.75\n2,0.5\n")
    steps, lrs = load_trace(path)
    assert steps.tolist() == [0, 1, 2] and lrs.tolist() == [1.0, 0.75, 0.5]


def test_tensorboard_event_files_from_summary_writer(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    steps, lrs = _train(_torch_cosine(200), per_update=2)
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        for s, v in zip(steps, lrs, strict=True):
            writer.add_scalar("lr-SGD", float(v), int(s))
            writer.add_scalar("loss", 1.0 / (s + 1), int(s))
    trace = read_trace(tmp_path / "tb")
    assert trace.steps.tolist() == steps.tolist() and "lr-SGD" in trace.source
    np.testing.assert_allclose(trace.lrs, lrs, rtol=2**-23)
    v = verify(trace.steps, trace.lrs, Cosine(PEAK, cycle_steps=200), tolerance=trace.resolution)
    assert v.codes() == ["compressed"]
    proc = _cli(
        str(tmp_path / "tb"), "--schedule", str(_spec(tmp_path / "s.json", Cosine(PEAK, cycle_steps=200)))
    )
    assert proc.returncode == 1 and "[compressed]" in proc.stdout


def test_tensorboard_ambiguous_and_unknown_tags(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        for s in range(5):
            writer.add_scalar("train/lr", 0.1, s)
            writer.add_scalar("learning_rate_head", 0.2, s)
    with pytest.raises(TraceError, match=r"several learning-rate tags \(learning_rate_head, train/lr\)"):
        read_trace(tmp_path)
    with pytest.raises(TraceError, match="no tag 'lr'"):
        read_trace(tmp_path, tag="lr")
    assert read_trace(tmp_path, tag="train/lr").lrs.tolist() == [pytest.approx(0.1)] * 5
    spec = _spec(tmp_path / "s.json", Cosine(0.1, cycle_steps=5))
    proc = _cli(str(tmp_path), "--schedule", str(spec), "--tag", "nope")  # in-process
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_mlflow_run_read_with_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    # A real local file store (a SQLite store works the same but spends ~10 s creating its tables).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    steps, lrs = _train(_torch_cosine(50, eta_min=1e-3))
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("verify")
    run = client.create_run(exp)
    from mlflow.entities import Metric

    metrics = [
        Metric("learning_rate", float(v), 1_700_000_000_000 + int(s), int(s))
        for s, v in zip(steps, lrs, strict=True)
    ]
    metrics += [Metric("loss", 1.0, 1_700_000_000_000, 0)]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    trace = read_trace(f"mlflow:{run.info.run_id}", tracking_uri=uri)
    assert trace.steps.tolist() == steps.tolist() and trace.lrs.tolist() == lrs.tolist()
    spec = _spec(tmp_path / "s.json", Cosine(PEAK, min_lr=1e-3, cycle_steps=50))
    proc = _cli(
        f"mlflow:{run.info.run_id}", "--tracking-uri", uri, "--schedule", str(spec), "--format", "json"
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["matches"] is False and [d["code"] for d in out["diagnoses"]] == ["past-horizon"]
    with pytest.raises(TraceError, match="mlflow:nope"):
        read_trace("mlflow:nope", tracking_uri=uri)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.trainer import Trainer

    config = {
        "name": "blobs", "seed": 3, "epochs": 3, "batch_size": 32, "device": "cpu",
        "model": {"name": "mlp"}, "data": {"name": "blobs", "options": {"n": 400}},
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"kind": "cosine", "peak_lr": 0.2, "min_ratio": 0.01, "warmup_steps": 5, "cycle_steps": 12,
                     "cycle_mult": 2, "max_cycles": 2},
        "checkpoint": {"keep_last": 1, "every_steps": 100},
        "telemetry": {"tensorboard": True, "flush_seconds": 0.2, "progress": False},
    }  # fmt: skip
    run_dir = tmp_path_factory.mktemp("verify") / "run"
    Trainer(config_from_dict(config), run_dir, progress=False, log=lambda _: None).run()
    return run_dir


def test_cosanneal_train_run_directory_matches(trained_run: Path, tmp_path: Path) -> None:
    proc = _cli_process(str(trained_run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MATCH" in proc.stdout and "max abs error 0" in proc.stdout
    wrong = Cosine(0.2, min_ratio=0.01, warmup_steps=5, cycle_steps=10, cycle_mult=2, max_cycles=2)
    proc = _cli(str(trained_run), "--schedule", str(_spec(tmp_path / "s.json", wrong)), "--format", "json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["scale"] == 1.0 and [d["code"] for d in out["diagnoses"]] == ["cycle-length"]
    assert out["diagnoses"][0]["evidence"]["fitted_cycle_steps"] == 12


def test_the_runs_own_tensorboard_files_pick_lr_not_lr_expected(trained_run: Path, tmp_path: Path) -> None:
    from cosanneal import runs

    with runs.open(trained_run) as run:
        stored = run.params["schedule"]
        steps, lrs = run.scalar("lr", 0)
    trace = read_trace(trained_run / "tb")
    assert trace.source.endswith("(tensorboard tag lr/group_0)") and trace.steps.tolist() == steps.tolist()
    np.testing.assert_allclose(trace.lrs, lrs, rtol=2**-23)
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(stored))
    proc = _cli(str(trained_run / "tb"), "--schedule", str(spec))
    assert proc.returncode == 0, proc.stdout
    assert "within tolerance 1.19209e-07" in proc.stdout  # float32 event files: tolerance raised to 2**-23


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    csv_path = _write_csv(tmp_path / "lr.csv", np.arange(3), np.array([0.1, 0.1, 0.1]))
    proc = _cli_process(str(tmp_path / "missing.csv"), "--schedule", "s.json")
    assert (
        proc.returncode == 2
        and proc.stderr == f"error: {tmp_path / 'missing.csv'}: no such file or directory\n"
    )
    cosine = ["--set", "kind=cosine", "--set", "peak_lr=0.1"]
    cases = [
        ([str(csv_path)], "no schedule stored with this trace; pass --schedule SPEC"),
        ([str(csv_path), *cosine], "cycle_steps"),
        ([str(csv_path), *cosine, "--set", "cycle_steps=3ep"], "is in epochs; pass --steps-per-epoch N"),
        ([str(csv_path), *cosine, "--set", "cycle_steps=0.5dur"], "pass --steps N"),
        ([str(csv_path), "--schedule", str(tmp_path / "nope.toml")], "nope.toml"),
        (
            [str(csv_path), *cosine, "--set", "cycle_steps=3", "--tag", "learning_rate"],
            "no column 'learning_rate'",
        ),
        ([str(tmp_path), *cosine, "--set", "cycle_steps=3"], "nor a TensorBoard log directory"),
        (["mlflow:", *cosine, "--set", "cycle_steps=3"], "needs a run id"),
    ]
    for args, needle in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and needle in proc.stderr, (
            args,
            proc.stderr,
        )


def test_cli_csv_match_and_per_epoch_text(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "s.json", Cosine(PEAK, cycle_steps=UPDATES))
    steps, lrs = _train(_torch_cosine(UPDATES))
    assert _cli(str(_write_csv(tmp_path / "ok.csv", steps, lrs)), "--schedule", str(spec)).returncode == 0
    steps, lrs = _train(_torch_cosine(UPDATES), per_update=0, per_epoch=1)
    proc = _cli_process(str(_write_csv(tmp_path / "bad.csv", steps, lrs)), "--schedule", str(spec))
    assert proc.returncode == 1
    assert "MISMATCH" in proc.stdout and "[per-epoch]" in proc.stdout and "fix:" in proc.stdout


# ---- a run store that is not one ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "why"),
    [(b"step,lr\n0,0.1\n", "not an SQLite database"), (b"", "no schema_version table")],
    ids=["text-file", "empty-sqlite"],
)
def test_cli_run_db_that_is_not_a_run_store_is_one_error_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.db").write_bytes(content)
    (tmp_path / "x.db").write_bytes(content)
    for source, db in ((run_dir, run_dir / "run.db"), (tmp_path / "x.db", tmp_path / "x.db")):
        proc = _cli_process(str(source))
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {db} is not a cosanneal run store ({why})"), proc.stderr


def test_cli_directory_without_run_db_or_event_files_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _cli(
        str(tmp_path / "empty"), "--set", "kind=cosine", "--set", "peak_lr=0.1", "--set", "cycle_steps=3"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"error: {tmp_path / 'empty'}: not a run directory (no run.db) nor a TensorBoard log directory "
        "(no events.out.tfevents.* files)\n"
    )


# ---- incomplete traces: holes are never a match --------------------------------------------------
def _store_with_rows(
    run_dir: Path, schedule: Cosine, steps: list[int], *, every: int = 1, finished: int | None = None
) -> None:
    """A run store as the trainer writes it (params with the schedule), holding LR rows for ``steps`` only."""
    from cosanneal.runtime.runstore import RunStore, run_params

    with RunStore(run_dir) as store:
        config = {"telemetry": {"every": every}}
        store.log_params({**run_params(config, schedule=schedule, seed=0), "steps_per_epoch": 11})
        for t in steps:
            store.log_scalars(t, {"lr": float(schedule(t)), "lr_expected": float(schedule(t))}, group=0)
        if finished is not None:
            store.log_event(finished, "run_finished", updates=finished)


HOLES = Cosine(PEAK, warmup_steps=6, cycle_steps=60, min_ratio=0.01)


def test_verdict_of_a_trace_with_holes_is_incomplete_and_names_the_ranges() -> None:
    t = np.arange(66)
    keep = (t >= 12) & ~((t >= 30) & (t < 33))
    v = verify(t[keep], HOLES(t[keep]), HOLES)
    assert (v.status, v.matches, v.values_match) == ("incomplete", False, True)
    assert v.gaps.ranges == [(0, 11), (30, 32)] and (v.gaps.missing, v.gaps.expected) == (15, 66)
    assert v.diagnoses == [] and v.mismatched == 0
    text = format_verdict(v)
    assert text.startswith("INCOMPLETE: missing updates 0-11, 30-32 (15 of 66); the 51 steps present")
    # a run that knowingly starts later, or whose end is known
    assert verify(t[12:], HOLES(t[12:]), HOLES, first_step=12).status == "match"
    assert verify(t[:50], HOLES(t[:50]), HOLES, last_step=65).gaps.ranges == [(50, 65)]
    # sparse logging is not a hole: every 5 updates, inferred or given
    assert verify(t[::5], HOLES(t[::5]), HOLES).status == "match"
    assert verify(t[::5], HOLES(t[::5]), HOLES, stride=5, last_step=65).status == "match"
    assert verify(t[::5], HOLES(t[::5]), HOLES, stride=1).gaps.missing == 66 - 14


def test_mismatch_among_the_rows_present_is_still_a_mismatch() -> None:
    t = np.arange(12, 66)
    lrs = HOLES(t)
    lrs[20] *= 1.5
    v = verify(t, lrs, HOLES)
    assert v.status == "mismatch" and v.mismatched == 1 and v.first_mismatches[0].step == 32
    assert "incomplete too: missing updates 0-11 (12 of 66)" in format_verdict(v)


def test_cli_run_store_with_missing_updates_is_incomplete_exit_3(tmp_path: Path) -> None:
    from cosanneal.commands.verify import EXIT_CODES

    assert EXIT_CODES == {"match": 0, "mismatch": 1, "incomplete": 3}
    _store_with_rows(tmp_path / "killed", HOLES, list(range(12, 66)))  # rows of updates 0-11 lost at a kill
    proc = _cli_process(str(tmp_path / "killed"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "INCOMPLETE: missing updates 0-11 (12 of 66)" in proc.stdout and "MATCH" not in proc.stdout
    out = json.loads(_cli(str(tmp_path / "killed"), "--format", "json").stdout)
    assert out["status"] == "incomplete" and out["matches"] is False and out["values_match"] is True
    assert out["gaps"]["ranges"] == [[0, 11]] and out["gaps"]["missing"] == 12
    # the run's end is in its store: rows lost at the end are missing too
    _store_with_rows(tmp_path / "tail", HOLES, list(range(50)), finished=66)
    proc = _cli(str(tmp_path / "tail"))
    assert proc.returncode == 3 and "missing updates 50-65 (16 of 66)" in proc.stdout
    # telemetry.every=5: a row every 5 updates is complete; a lost one is not
    _store_with_rows(tmp_path / "every", HOLES, list(range(0, 66, 5)), every=5, finished=66)
    assert _cli(str(tmp_path / "every")).returncode == 0
    _store_with_rows(tmp_path / "every-hole", HOLES, [s for s in range(0, 66, 5) if s != 25], every=5)
    proc = _cli(str(tmp_path / "every-hole"))
    assert (
        proc.returncode == 3
        and "missing updates 25 every 5 (1 of 14 rows logged every 5 updates)" in proc.stdout
    )
    # a mismatch in the rows present wins: exit 1, and the holes are still named
    _store_with_rows(tmp_path / "both", HOLES, list(range(12, 66)))
    wrong = _spec(tmp_path / "s.json", dataclasses.replace(HOLES, cycle_steps=50))
    proc = _cli(str(tmp_path / "both"), "--schedule", str(wrong))
    assert (
        proc.returncode == 1
        and "MISMATCH" in proc.stdout
        and "missing updates 0-11 (12 of 66)" in proc.stdout
    )


def test_deleting_rows_from_a_real_run_makes_it_incomplete(trained_run: Path, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with contextlib.closing(sqlite3.connect(run / "run.db")) as conn, conn:
        conn.execute("DELETE FROM scalars WHERE name = 'lr' AND step < 12")
    proc = _cli(str(run))
    assert proc.returncode == 3, proc.stdout
    assert "INCOMPLETE: missing updates 0-11 (12 of " in proc.stdout


def test_cli_lr_read_names_the_cause_of_a_trace_one_step_ahead(tmp_path: Path) -> None:
    model, optimizer = _model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=UPDATES)
    lrs: list[float] = []
    for _ in range(UPDATES):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])  # read after scheduler.step()
    csv_path = _write_csv(tmp_path / "lr.csv", np.arange(UPDATES), np.array(lrs))
    spec = str(_spec(tmp_path / "s.json", Cosine(PEAK, cycle_steps=UPDATES)))
    default = _cli(str(csv_path), "--schedule", spec, "--format", "json")
    after = _cli(str(csv_path), "--schedule", spec, "--format", "json", "--lr-read", "after-scheduler-step")
    assert default.returncode == after.returncode == 1
    d, a = json.loads(default.stdout), json.loads(after.stdout)
    assert (d["lr_read"], [x["code"] for x in d["diagnoses"]]) == ("before-optimizer-step", ["step-order"])
    assert (a["lr_read"], [x["code"] for x in a["diagnoses"]]) == ("after-scheduler-step", ["off-by-one"])
