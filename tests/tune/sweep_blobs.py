"""What the sweep tests and the sweep benchmark share: the blobs config of a trial, and a worker process.

640 training samples / 32 = 20 updates an epoch; the cycles of 12 and 24 updates end at updates 12 and
36, so a 4-epoch trial (80 updates) reports two cycle ends and its third cycle is cut by the budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any


def sweep_blobs(name: str, *, epochs: int = 4, max_cycles: int = 3) -> dict[str, Any]:
    """A fresh blobs trial config: an MLP, SGD, SGDR cycles of 12 and 24 updates, no checkpoints."""
    return {
        "name": name,
        "seed": 3,
        "epochs": epochs,
        "batch_size": 32,
        "device": "cpu",
        "model": {"name": "mlp"},
        "data": {"name": "blobs", "options": {"n": 800}},
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"kind": "cosine", "peak_lr": 0.2, "min_ratio": 0.01, "cycle_steps": 12, "cycle_mult": 2,
                     "max_cycles": max_cycles},
        "checkpoint": {"enabled": False},
        "telemetry": {"tensorboard": False, "progress": False},
    }  # fmt: skip


def sweep_worker(
    config: Path,
    space: Path,
    runs_dir: Path,
    *extra: str,
    study: str = "w",
    output: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """One ``cosanneal sweep`` worker process (one thread; output to ``output``, default nowhere)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cosanneal", "sweep", str(config), "--space", str(space), "--study", study,
           "--output", str(runs_dir), *extra]  # fmt: skip
    sink = subprocess.DEVNULL if output is None else output
    return subprocess.Popen(
        cmd, env=env, stdout=sink, stderr=subprocess.STDOUT if output is not None else sink
    )
