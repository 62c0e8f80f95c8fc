"""The trainer end to end: real training, real processes, real signals, real kills."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import BLOBS, blobs_config, free_port, last_weights, lr_trace, spawn_train, wait_for_updates

from cosanneal import ConfigError, from_dict, runs
from cosanneal.jobs.config import config_from_dict, load_config
from cosanneal.jobs.trainer import Trainer

# 640 training samples / 32 = 20 updates per epoch, 160 in all: 10 warmup + 30 + 60 + 60 (cut by the budget)


def _config(**changes: Any) -> Any:
    return config_from_dict(blobs_config(**changes))


def _write_config(path: Path, cfg: Any) -> Path:
    import json

    path.write_text(json.dumps(cfg.to_dict()))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run, shared by the parity tests."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = Trainer(_config(), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 160
    return run_dir


def test_lr_trace_is_the_closed_form(reference: Path) -> None:
    steps, lr = lr_trace(reference)
    assert steps.tolist() == list(range(160))
    schedule = from_dict(BLOBS["schedule"])
    np.testing.assert_array_equal(lr, schedule(steps))  # group 0 scale 1: exactly the schedule
    run = runs.open(reference)
    try:
        _, expected = run.scalar("lr_expected", 0)
        np.testing.assert_array_equal(expected, lr)
        assert [e["step"] for e in run.events("restart")] == schedule.restarts(160)
        assert run.params["schedule_fingerprint"] == schedule.fingerprint()
        assert run.events("run_finished")
    finally:
        run.close()
    from cosanneal.plotting import plot_run

    plot_run(reference, reference / "lr_loss.png")
    assert (reference / "lr_loss.png").read_bytes().startswith(b"\x89PNG")
    assert (reference / "lr_loss.png").stat().st_size > 10_000


def test_best_and_cycle_end_checkpoints_are_kept(reference: Path) -> None:
    names = {p.name for p in (reference / "checkpoints").glob("step-*")}
    schedule = from_dict(BLOBS["schedule"])
    cycle_ends = {f"step-{r:09d}" for r in schedule.restarts(160)}  # named by the updates done
    assert cycle_ends <= names
    assert any((reference / "checkpoints" / "best").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_and_resumed_run_is_bit_identical(
    reference: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    cfg = _config(debug__sleep_per_step=0.02)  # the delay widens the window; it changes no computation
    cfg_path = _write_config(tmp_path / "cfg.json", cfg)
    run_dir = tmp_path / "run"
    proc = spawn_train(cfg_path, run_dir)
    wait_for_updates(run_dir, random.Random(int(sig)).randint(25, 110), proc)
    os.kill(proc.pid, sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGTERM:
        assert code == 143, proc.stderr.read().decode() if proc.stderr else ""
        run = runs.open(run_dir)
        try:
            assert run.events("preempted")
        finally:
            run.close()
    else:
        assert code == -signal.SIGKILL
    resumed = Trainer(load_config(cfg_path), run_dir, progress=False, log=lambda _: None).run()
    assert resumed.status == "finished" and resumed.steps == 160
    ref_w, got_w = last_weights(reference), last_weights(run_dir)
    assert ref_w.keys() == got_w.keys()
    for name in ref_w:
        assert torch.equal(ref_w[name], got_w[name]), name
    ref_steps, ref_lr = lr_trace(reference)
    steps, lr = lr_trace(run_dir)
    np.testing.assert_array_equal(steps, ref_steps)
    np.testing.assert_array_equal(lr, ref_lr)
    run = runs.open(run_dir)
    try:
        assert run.events("resumed")
    finally:
        run.close()


def test_nan_is_skipped_then_rolled_back_with_a_lower_peak(tmp_path: Path) -> None:
    cfg = _config(debug__inject_nan_at=[45, 46, 47], guard__max_consecutive=3)
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 160
    assert result.nonfinite == 3 and result.rollbacks == 1
    run = runs.open(tmp_path / "run")
    try:
        kinds = [e["kind"] for e in run.events() if e["kind"] in ("nonfinite", "rollback")]
        assert kinds == ["nonfinite", "nonfinite", "nonfinite", "rollback"]
        _, lr = run.scalar("lr", 0)
        rollback = run.events("rollback")[0]
    finally:
        run.close()
    # after the rollback the schedule's peak is halved: the last LR follows the lowered schedule
    lowered = from_dict({**BLOBS["schedule"], "peak_lr": BLOBS["schedule"]["peak_lr"] * 0.5})
    assert lr[-1] == pytest.approx(lowered(159), rel=1e-12)
    assert rollback["step"] <= 45


def test_out_of_rollbacks_stops_with_a_message(tmp_path: Path) -> None:
    cfg = _config(
        debug__inject_nan_at=list(range(20, 200)), guard__max_rollbacks=1, checkpoint__every_steps=5
    )
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "stopped_nonfinite" and result.exit_code == 1
    assert "peak" in result.message or "floor" in result.message
    assert result.rollbacks == 1


def test_early_stopping_waits_for_cycle_ends(tmp_path: Path) -> None:
    cfg = _config(
        early_stopping__enabled=True, early_stopping__patience_cycles=1, early_stopping__min_delta=10.0
    )
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    # nothing improves by 10.0: it stops at the second cycle end, never at a post-restart spike
    assert result.status == "early_stopped"
    assert result.steps == from_dict(BLOBS["schedule"]).restarts(160)[1]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["optimizer.lrr=0.1"], "optimizer.lrr: unknown key; allowed:"),
        (["epochs=ten"], "epochs: must be an integer, got 'ten'"),
        (["batch_size=0"], "batch_size: must be > 0, got 0"),
        (["model.entry=nowhere.mod:build"], "model.entry: cannot import module 'nowhere.mod'"),
        (["schedule.cycle_steps=0"], "schedule.cycle_steps must be > 0, got 0"),
        (["device=tpu"], "device: must be one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
        (["telemetry.every=0"], "telemetry.every: must be > 0, got 0"),
        # a model that does not fit the data: refused before the first update, not a traceback in it
        (["model.options.in_features=7"], "model.options: model 'mlp' does not fit the data 'blobs'"),
        (["model.options.classes=2"], "Target 2 is out of bounds"),
    ],
)
def test_config_errors_exit_2_with_one_line(tmp_path: Path, sets: list[str], message: str) -> None:
    cfg_path = _write_config(tmp_path / "cfg.json", _config())
    args = [sys.executable, "-m", "cosanneal", "train", str(cfg_path), "--run-dir", str(tmp_path / "run")]
    for pair in sets:
        args += ["--set", pair]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )


def test_a_bad_config_with_fresh_leaves_the_old_run_in_place(reference: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    cfg_path = _write_config(tmp_path / "cfg.json", _config())
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(cfg_path), "--run-dir", str(run_dir), "--fresh",
         "--set", "model.options.in_features=7"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.glob("copy.old-*")) and (run_dir / "run.db").exists()


def test_changed_schedule_is_refused_on_resume(reference: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    with pytest.raises(ConfigError, match="trained with another schedule"):
        Trainer(_config(schedule__peak_lr=0.3), run_dir, progress=False, log=lambda _: None).run()
    fresh = Trainer(
        _config(schedule__peak_lr=0.3, epochs=1), run_dir, fresh=True, progress=False, log=lambda _: None
    )
    assert fresh.run().status == "finished"
    assert list(tmp_path.glob("copy.old-*"))  # the previous run was moved aside, not deleted


@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_torchrun_two_ranks_agree_and_resume(tmp_path: Path, sharded: bool) -> None:
    """torchrun --nproc-per-node 2 on CPU (gloo): same LR on every rank, rank 0 alone writes, resume works.

    ``checkpoint.sharded``: every rank writes its DCP shards and resumes from them.
    """
    import json
    import shutil

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun is not None
    trace_dir = tmp_path / "traces"
    cfg = _config(
        epochs=3, debug__lr_trace_dir=str(trace_dir), checkpoint__every_steps=4, checkpoint__sharded=sharded
    )
    cfg_path = _write_config(tmp_path / "cfg.json", cfg)
    run_dir = tmp_path / "run"
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "cosanneal", "train", str(cfg_path), "--run-dir", str(run_dir), "--no-progress"]  # fmt: skip
    first = subprocess.run([*cmd, "--set", "max_steps=12"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    rank0 = json.loads((trace_dir / "lr-rank0.json").read_text())
    rank1 = json.loads((trace_dir / "lr-rank1.json").read_text())
    assert rank0 == rank1 and len(rank0) > 0  # the resumed part: identical LRs on both ranks
    assert rank0[0][0] == 12  # the second launch resumed after the 12 updates of the first
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(30))  # 640 / (2 ranks x 32) = 10 updates per epoch, 3 epochs
    np.testing.assert_array_equal(lr, from_dict(BLOBS["schedule"])(steps))
    assert [p.name for p in run_dir.iterdir() if p.name.startswith("run.db")]  # rank 0 wrote the store
    ckpt = max((run_dir / "checkpoints").glob("step-*"))  # the newest one the resumed launch wrote
    state = json.loads((ckpt / "state.json").read_text())
    if sharded:
        assert (ckpt / ".metadata").is_file() and state["sharded"] == {"format": "dcp-1", "world_size": 2}
        assert sorted(p.name for p in ckpt.glob("rank-*.json")) == ["rank-00000.json", "rank-00001.json"]
    else:
        assert "sharded" not in state and not (ckpt / ".metadata").exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs_and_counts_only_real_updates(tmp_path: Path, amp: str) -> None:
    cfg = _config(amp=amp, epochs=2, checkpoint__enabled=False)
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 40
    steps, lr = lr_trace(tmp_path / "run")
    np.testing.assert_array_equal(
        lr, from_dict(BLOBS["schedule"])(steps)
    )  # updates GradScaler skipped are not counted


def test_telemetry_every_n_updates_keeps_restart_events_exact(tmp_path: Path) -> None:
    cfg = _config(epochs=3, checkpoint__enabled=False, telemetry__every=7)
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 60
    steps, lr = lr_trace(tmp_path / "run")
    assert steps.tolist() == list(range(0, 60, 7))
    schedule = from_dict(BLOBS["schedule"])
    np.testing.assert_array_equal(lr, schedule(steps))
    run = runs.open(tmp_path / "run")
    try:
        assert [e["step"] for e in run.events("restart")] == schedule.restarts(60)  # 40: not a multiple of 7
    finally:
        run.close()


def test_fp16_needs_optimizer_counting() -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.count: amp = 'fp16' needs count = 'optimizer'"):
        _config(amp="fp16", scheduler__count="manual")


def test_on_eval_callback_sees_cycle_ends_and_can_prune(tmp_path: Path) -> None:
    seen: list[tuple[int, bool]] = []

    def on_eval(updates: int, metrics: dict[str, float], cycle_end: bool) -> bool:
        assert "val_loss" in metrics
        seen.append((updates, cycle_end))
        return cycle_end and updates > 50  # prune at the second cycle end

    result = Trainer(_config(), tmp_path / "run", progress=False, log=lambda _: None, on_eval=on_eval).run()
    restarts = from_dict(BLOBS["schedule"]).restarts(160)
    assert result.status == "pruned" and result.steps == restarts[1]
    assert [u for u, end in seen if end] == restarts[:2]


def test_cycle_end_on_an_epoch_boundary_keeps_its_snapshot(tmp_path: Path) -> None:
    """Cycles of exactly one epoch, evaluation per epoch: every cycle end is kept as a snapshot, once."""
    cfg = _config(
        epochs=4, eval__every_steps=None, checkpoint__every_steps=None, checkpoint__keep_last=1,
        schedule={"kind": "cosine", "peak_lr": 0.2, "cycle_steps": 20, "max_cycles": 4},
    )  # fmt: skip
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "finished"
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert {"step-000000020", "step-000000040", "step-000000060"} <= set(names)
    run = runs.open(tmp_path / "run")
    try:
        steps, _ = run.scalar("val_loss")
    finally:
        run.close()
    assert len(steps) == len(set(steps.tolist()))  # no step evaluated twice


def test_distributed_timeout_bounds_a_group_that_never_forms(tmp_path: Path) -> None:
    """``distributed.timeout_seconds`` reaches ``init_process_group``: rank 0 alone gives up in seconds."""
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "cfg.json").write_text(json.dumps(blobs_config(distributed__timeout_seconds=2)))
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", "cfg.json", "--run-dir", "run", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    # the store gave up after the configured bound (torch reports it rounded up; the default is 1800 s)
    found = re.search(r"Timed out after (\d+) seconds waiting for clients\. 1/2 clients joined", done.stderr)
    assert found is not None and 2 <= int(found.group(1)) <= 3, done.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
