"""Runtime for training jobs: run store, telemetry, checkpoints, preemption, guards, early stopping.

Each piece works alone from your own loop; :class:`cosanneal.jobs.Trainer` composes them from a config.
The names below are imported on first use (PEP 562), so reading a run store
(``cosanneal.runtime.runstore``, ``cosanneal verify run.db``) does not import torch; the checkpoint,
guard and telemetry names do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosanneal.runtime.checkpoints import (
        CheckpointError,
        CheckpointInfo,
        Checkpoints,
        LoadedCheckpoint,
        is_cycle_end,
    )
    from cosanneal.runtime.guard import Decision, NonFiniteGuard
    from cosanneal.runtime.preemption import Preemption
    from cosanneal.runtime.runstore import RunStore, run_params
    from cosanneal.runtime.stopping import RestartAwareEarlyStopping
    from cosanneal.runtime.telemetry import Telemetry

_WHERE = {
    "CheckpointError": "checkpoints",
    "CheckpointInfo": "checkpoints",
    "Checkpoints": "checkpoints",
    "LoadedCheckpoint": "checkpoints",
    "is_cycle_end": "checkpoints",
    "Decision": "guard",
    "NonFiniteGuard": "guard",
    "Preemption": "preemption",
    "RunStore": "runstore",
    "run_params": "runstore",
    "RestartAwareEarlyStopping": "stopping",
    "Telemetry": "telemetry",
}

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Checkpoints",
    "Decision",
    "LoadedCheckpoint",
    "NonFiniteGuard",
    "Preemption",
    "RestartAwareEarlyStopping",
    "RunStore",
    "Telemetry",
    "is_cycle_end",
    "run_params",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cosanneal.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cosanneal.runtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
