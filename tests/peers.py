"""Load peer schedulers that do not import cleanly here (shared by tests and benchmarks).

timm's package ``__init__`` imports its models, which need torchvision; its scheduler files need only
torch. They are loaded by file path into a synthetic package so the real timm code runs unchanged.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


def timm_scheduler_module(name: str = "cosine_lr") -> Any:
    """Return timm's ``timm/scheduler/<name>.py`` module, loaded without importing ``timm``."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed (pip install --no-deps timm==1.0.31)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "scheduler"
    package = "_timm_scheduler_by_path"
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(folder)]
        sys.modules[package] = pkg
    full = f"{package}.{name}"
    if full not in sys.modules:
        mod_spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[full] = module
        mod_spec.loader.exec_module(module)
    return sys.modules[full]
