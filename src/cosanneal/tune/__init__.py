"""Tuning before training: the LR range test (:mod:`cosanneal.tune.lrfind`) and sweeps (``tune.sweep``).

Importing this package is light: the names below are loaded from their modules (which import torch) on
first use, and nothing here imports optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosanneal.tune.lrfind import LRFindResult, Suggestion, lr_find, lr_find_config

__all__ = ["LRFindResult", "Suggestion", "lr_find", "lr_find_config"]

_LAZY = {name: "cosanneal.tune.lrfind" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
