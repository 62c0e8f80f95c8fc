"""The shared fast training config for tests: an MLP on synthetic blobs, 160 updates in seconds.

640 training samples / batch 32 = 20 updates per epoch, 8 epochs = 160 updates; the schedule is
10 warmup + 30 + 60 + 60 steps (the last cycle cut by the budget), restarts at updates 40 and 100.
"""

from __future__ import annotations

import copy
from typing import Any

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
