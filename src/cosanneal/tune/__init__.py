"""Tuning before training: the LR range test (:mod:`cosanneal.tune.lrfind`) and sweeps (``tune.sweep``).

Importing this package is light: the names below are loaded from their modules (which import torch) on
first use, and nothing here imports optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosanneal.tune.lrfind import LRFindResult, Suggestion, lr_find

# The range test of a training config (lr_find_config) builds its model, data and optimizer from the config,
# so it lives in the composition root: cosanneal.jobs.lrfind (tune is below jobs and never imports it).
__all__ = ["LRFindResult", "Suggestion", "lr_find"]

_LAZY = {name: "cosanneal.tune.lrfind" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
