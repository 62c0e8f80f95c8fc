"""SLURM: SIGUSR1 before the time limit -> checkpoint -> ``scontrol requeue`` -> the requeued job resumes exactly.

A stand-in ``scontrol`` on ``PATH`` records its arguments (and can fail like the real one); the
trainer is the real ``cosanneal train`` in a subprocess, started from the job's working directory
with a relative run directory as an sbatch script would, and the signal is a real SIGUSR1. The
"requeued" job is the same command run again with the same environment: it must end bit-identical
(weights and LR trace) to a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config, events, spawn_train, updates_done
from safetensors.torch import load_file

from cosanneal import runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.trainer import Trainer

SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
{tail}
"""


def _stand_in(bin_dir: Path, log: Path, *, fail: bool = False) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    tail = 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1' if fail else "exit 0"
    path = bin_dir / "scontrol"
    path.write_text(SCONTROL.format(log=log, tail=tail))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _signal_after(proc: subprocess.Popen[bytes], run_dir: Path, updates: int, sig: int) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while updates_done(run_dir) < updates:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the job never got that far"
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def _job(tmp_path: Path, **changes: Any) -> Path:
    cwd = tmp_path / "job"
    cwd.mkdir(parents=True)
    cfg = blobs_config(debug__sleep_per_step=0.02, **changes)
    (cwd / "cfg.json").write_text(json.dumps(config_from_dict(cfg).to_dict()))
    return cwd


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = Trainer(config_from_dict(blobs_config()), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished"
    return run_dir


def _same_run(reference: Path, run_dir: Path) -> None:
    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    ref_last = sorted((reference / "checkpoints").glob("step-*"))[-1]
    assert last.name == ref_last.name
    want, got = load_file(str(ref_last / "model.safetensors")), load_file(str(last / "model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    ref_run, run = runs.open(reference), runs.open(run_dir)
    try:
        (ref_steps, ref_lr), (steps, lr) = ref_run.scalar("lr", 0), run.scalar("lr", 0)
    finally:
        ref_run.close()
        run.close()
    np.testing.assert_array_equal(steps, ref_steps)
    np.testing.assert_array_equal(lr, ref_lr)


def test_sigusr1_checkpoints_requeues_and_the_requeued_job_resumes_exactly(
    reference: Path, tmp_path: Path
) -> None:
    cwd = _job(tmp_path)
    log = tmp_path / "scontrol.log"
    _stand_in(tmp_path / "bin", log)
    env = _env(tmp_path / "bin", SLURM_JOB_ID="4242")
    run_dir = cwd / "runs" / "job"

    code, err = _signal_after(
        spawn_train("cfg.json", "runs/job", cwd=cwd, env=env), run_dir, 60, signal.SIGUSR1
    )
    assert code == 128 + signal.SIGUSR1, err
    assert log.read_text().splitlines() == ["requeue 4242"]  # once, by rank 0, after the checkpoint
    (preempted,) = events(run_dir, "preempted")
    (requeued,) = events(run_dir, "requeued")
    assert preempted["signal"] == "SIGUSR1" and requeued["job_id"] == "4242"
    assert requeued["command"] == "scontrol requeue 4242"
    saved = [e for e in events(run_dir, "checkpoint_saved") if e["reason"] == "preempted"]
    assert len(saved) == 1 and saved[0]["step"] == requeued["step"]
    assert "requeued SLURM job 4242" in err and "Traceback" not in err

    again = subprocess.run(  # SLURM starts the same script again: the same command, the same environment
        [sys.executable, "-m", "cosanneal", "train", "cfg.json", "--run-dir", "runs/job", "--no-progress"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert log.read_text().splitlines() == ["requeue 4242"]  # a finished job is not requeued
    assert events(run_dir, "resumed")
    _same_run(reference, run_dir)


def test_a_failed_requeue_is_recorded_and_the_checkpoint_is_kept(tmp_path: Path) -> None:
    cwd = _job(tmp_path)
    log = tmp_path / "scontrol.log"
    _stand_in(tmp_path / "bin", log, fail=True)
    env = _env(tmp_path / "bin", SLURM_JOB_ID="4250", SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="7")
    run_dir = cwd / "runs" / "job"
    code, err = _signal_after(
        spawn_train("cfg.json", "runs/job", cwd=cwd, env=env), run_dir, 40, signal.SIGUSR1
    )
    assert code == 138, err
    assert log.read_text().splitlines() == ["requeue 4242_7"]  # the array task, not the whole array
    (failed,) = events(run_dir, "requeue_failed")
    assert failed["reason"] == "exit 1: slurm_load_jobs error: Invalid job id specified"
    assert "the requeue failed" in err and "resubmit" in err
    (preempted,) = events(run_dir, "preempted")  # the checkpoint of the preemption is there to resume from
    assert (run_dir / "checkpoints" / f"step-{preempted['step']:09d}" / "MANIFEST.json").is_file()


def test_outside_slurm_or_with_requeue_off_the_signal_only_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "scontrol.log"
    _stand_in(tmp_path / "bin", log)
    for name, env, changes in [
        ("no-slurm", _env(tmp_path / "bin"), {}),
        ("off", _env(tmp_path / "bin", SLURM_JOB_ID="1"), {"slurm__requeue": False}),
    ]:
        cwd = _job(tmp_path / name, **changes)
        code, err = _signal_after(
            spawn_train("cfg.json", "runs/job", cwd=cwd, env=env), cwd / "runs" / "job", 30, signal.SIGUSR1
        )
        assert code == 138, err
        assert not events(cwd / "runs" / "job", "requeued")
    assert not log.exists()


def test_a_configured_signal_requeues_and_sigterm_does_not(tmp_path: Path) -> None:
    log = tmp_path / "scontrol.log"
    _stand_in(tmp_path / "bin", log)
    env = _env(tmp_path / "bin", SLURM_JOB_ID="77")
    cwd = _job(tmp_path / "usr2", slurm__signal="SIGUSR2")
    code, err = _signal_after(
        spawn_train("cfg.json", "runs/job", cwd=cwd, env=env), cwd / "runs" / "job", 30, signal.SIGUSR2
    )
    assert code == 128 + signal.SIGUSR2, err
    assert log.read_text().splitlines() == ["requeue 77"]
    cwd = _job(tmp_path / "term")  # SIGTERM is a preemption (Kubernetes, scancel): no requeue
    code, err = _signal_after(
        spawn_train("cfg.json", "runs/job", cwd=cwd, env=env), cwd / "runs" / "job", 30, signal.SIGTERM
    )
    assert code == 143, err
    assert log.read_text().splitlines() == ["requeue 77"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("signal", "SIGKILL", "slurm.signal: must be one of"),
        ("signal", 10, "slurm.signal: must be one of"),
        ("requeue", "yes", "slurm.requeue:"),
        ("scontrol", "", "slurm.scontrol: must name a command"),
        ("scontrol", "'unbalanced", "slurm.scontrol: must name a command"),
        ("partition", "gpu", "slurm.partition"),
    ],
)
def test_bad_slurm_settings_exit_2_in_one_line(tmp_path: Path, key: str, value: Any, message: str) -> None:
    cfg = blobs_config()
    cfg["slurm"] = {key: value}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", "cfg.json", "--run-dir", "run", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()
