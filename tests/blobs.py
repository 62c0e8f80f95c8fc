"""The shared fast training config for tests, and the helpers that read back a run it trained.

:data:`BLOBS` is an MLP on synthetic blobs, 160 updates in seconds: 640 training samples / batch 32 =
20 updates per epoch, 8 epochs = 160 updates; the schedule is 10 warmup + 30 + 60 + 60 steps (the
last cycle cut by the budget), restarts at updates 40 and 100.

The helpers read a run directory the way a user would (:func:`cosanneal.runs.open`, the newest
checkpoint's safetensors file) and start ``cosanneal train`` as a real process.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BLOBS: dict[str, Any] = {
    "name": "blobs",
    "seed": 3,
    "epochs": 8,
    "batch_size": 32,
    "device": "cpu",
    "model": {"name": "mlp", "options": {"dropout": 0.1}},
    "data": {"name": "blobs", "options": {"n": 800}},
    "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
    "schedule": {
        "kind": "cosine", "peak_lr": 0.2, "min_ratio": 0.01, "warmup_steps": 10,
        "cycle_steps": 30, "cycle_mult": 2, "max_cycles": 3, "peak_decay": 0.8,
    },
    "checkpoint": {"keep_last": 2, "every_steps": 10, "keep_cycle_ends": True},
    "eval": {"every_steps": 20},
    "telemetry": {"tensorboard": False, "flush_seconds": 0.2, "progress": False},
}  # fmt: skip


def blobs_config(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`BLOBS` with overrides; ``section__key=value`` reaches into a section."""
    data = copy.deepcopy(BLOBS)
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def lr_trace(run_dir: Path, group: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The run store's ``(steps, lr)`` of param group ``group``."""
    from cosanneal import runs

    with runs.open(run_dir) as run:
        return run.scalar("lr", group)


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The run store's events of ``kind``, in order."""
    from cosanneal import runs

    with runs.open(run_dir) as run:
        return list(run.events(kind))


def updates_done(run_dir: Path) -> int:
    """The last update the run store holds an LR for (-1: no store or no row yet)."""
    if not (run_dir / "run.db").exists():
        return -1
    try:
        steps, _ = lr_trace(run_dir)
    except Exception:  # the store or the series is being created this instant
        return -1
    return int(steps.max()) if len(steps) else -1


def last_weights(run_dir: Path) -> dict[str, Any]:
    """The model tensors of the run's newest checkpoint."""
    from safetensors.torch import load_file

    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return load_file(str(newest / "model.safetensors"))


def spawn_train(
    config: str | Path, run_dir: str | Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``cosanneal train CONFIG --run-dir RUN_DIR --no-progress`` as a real process (pipes for its output)."""
    cmd = [
        sys.executable,
        "-m",
        "cosanneal",
        "train",
        str(config),
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env or dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for_updates(
    run_dir: Path, at_least: int, proc: subprocess.Popen[bytes], timeout: float = 120
) -> None:
    """Wait until the run store holds update ``at_least`` while ``proc`` runs (fail if it exits first)."""
    deadline = time.monotonic() + timeout
    while updates_done(run_dir) < at_least:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else f"exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the job never reached update {at_least} in {timeout:g} s")
        time.sleep(0.05)


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """``cosanneal.cli.main(args)`` in this process: ``(exit code, stdout, stderr)``."""
    import contextlib
    import io

    from cosanneal.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bound to port 0 by the OS, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
