"""Training jobs from a config: the composition root above the runtime's components.

:class:`Trainer` builds everything one ``cosanneal train CONFIG`` job needs (model, data, task,
optimizer, schedule, run store, sinks, checkpoints, preemption, guard, early stopping) from a
:class:`TrainConfig`. Every piece it composes also works alone from your own loop
(:mod:`cosanneal.runtime`). The names below are imported on first use (PEP 562), so reading a
config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosanneal.jobs.config import TrainConfig, config_from_dict, load_config
    from cosanneal.jobs.trainer import Trainer, TrainResult

_WHERE = {
    "TrainConfig": "config",
    "config_from_dict": "config",
    "load_config": "config",
    "Trainer": "trainer",
    "TrainResult": "trainer",
}

__all__ = ["TrainConfig", "TrainResult", "Trainer", "config_from_dict", "load_config"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cosanneal.jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cosanneal.jobs.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
