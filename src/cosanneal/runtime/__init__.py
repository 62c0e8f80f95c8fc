"""Runtime for training jobs: run store, telemetry, checkpoints, preemption, guards, early stopping.

Each piece works alone from your own loop; :class:`~cosanneal.runtime.trainer.Trainer` composes them.
Importing this package imports torch.
"""

from cosanneal.runtime.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    Checkpoints,
    LoadedCheckpoint,
    is_cycle_end,
)
from cosanneal.runtime.config import TrainConfig, load_config
from cosanneal.runtime.guard import Decision, NonFiniteGuard
from cosanneal.runtime.preemption import Preemption
from cosanneal.runtime.runstore import RunStore, run_params
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.runtime.trainer import Trainer, TrainResult

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
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "is_cycle_end",
    "load_config",
    "run_params",
]
