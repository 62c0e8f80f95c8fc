"""Built-in example models and offline data sets, used by the demo, the tests and the benchmarks.

The names below are imported on first use, so ``import cosanneal.zoo.catalog`` (what config loading
checks options with) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DATASETS", "MODELS", "build_model", "load_dataset"]

_HOMES = {"DATASETS": "data", "load_dataset": "data", "MODELS": "models", "build_model": "models"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"cosanneal.zoo.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'cosanneal.zoo' has no attribute {name!r}")
