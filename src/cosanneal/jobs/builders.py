"""Build the pieces a config names: model, data, optimizer with param groups (:mod:`.optimizers`), device.

Models and data are built-ins (:mod:`cosanneal.zoo`) or a user's ``module:function``
entry point; an entry that cannot be imported is a :class:`~cosanneal.errors.ConfigError`, and so is a
constructor that fails on the options it is given (a ``TypeError``, ``ValueError``, ``RuntimeError``,
``OverflowError`` or ``MemoryError`` becomes one line naming ``model.options`` or ``data.options``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cosanneal.errors import ConfigError, CosannealError
from cosanneal.jobs.config import DataConfig, ModelConfig
from cosanneal.jobs.data import EpochBatches
from cosanneal.zoo import load_dataset
from cosanneal.zoo.models import build_model as build_builtin_model


def resolve_entry(entry: str, key: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function.

    Example:
        >>> resolve_entry("math:sqrt", "model.entry")(9.0)
        3.0
    """
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: must look like 'package.module:function', got {entry!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import module {module_name!r} ({exc}); check PYTHONPATH") from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"{key}: {module_name!r} has no function {attr!r}")
    return func  # type: ignore[no-any-return]


#: What a model or data constructor raises when the options it was given cannot work.
_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, OverflowError, MemoryError)


def construct(key: str, what: str, build: Callable[..., Any], options: dict[str, Any]) -> Any:
    """``build(**options)``; a failure it raises because of the options is one line naming ``key``."""
    try:
        return build(**options)
    except CosannealError:
        raise
    except _BUILD_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{key}: {what} fails with these options ({type(exc).__name__}: {message})"
        ) from exc


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model a ``[model]`` section names.

    Raises:
        ConfigError: the entry cannot be imported, does not return a module, or the constructor fails
            on ``model.options`` (one line naming the key).
    """
    if cfg.entry is not None:
        model = construct(
            "model.options", repr(cfg.entry), resolve_entry(cfg.entry, "model.entry"), cfg.options
        )
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model.entry: {cfg.entry!r} must return a torch.nn.Module, got {type(model).__name__}"
            )
        return model
    built: nn.Module = construct(
        "model.options", f"model {cfg.name!r}", lambda **kw: build_builtin_model(cfg.name, **kw), cfg.options
    )
    return built


def build_data(cfg: DataConfig) -> tuple[Any, Any]:
    """``(train, val)`` datasets of ``(input, label)`` pairs from a ``[data]`` section.

    Raises:
        ConfigError: the entry cannot be imported, does not return a pair, or the loader fails on
            ``data.options`` (one line naming the key).
    """
    if cfg.entry is not None:
        out = construct("data.options", repr(cfg.entry), resolve_entry(cfg.entry, "data.entry"), cfg.options)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ConfigError(f"data.entry: {cfg.entry!r} must return (train_dataset, val_dataset)")
        return out
    split: tuple[Any, Any] = construct(
        "data.options", f"data set {cfg.name!r}", lambda **kw: load_dataset(cfg.name, **kw), cfg.options
    )
    return split


def training_batches(
    data: DataConfig, batch_size: int, seed: int, *, rank: int = 0, world: int = 1
) -> tuple[EpochBatches, Any]:
    """The seeded, resumable training batches of a config and its validation set.

    Raises:
        ConfigError: ``batch_size`` (times the number of ranks) is more than the training samples.
    """
    train_set, val_set = build_data(data)
    train = EpochBatches(train_set, batch_size, seed=seed, rank=rank, world=world)
    if train.batches_per_epoch < 1:
        ranks = f" x {world} ranks" if world > 1 else ""
        raise ConfigError(
            f"batch_size: {batch_size}{ranks} is more than the {len(train_set)} training samples; lower batch_size"
        )
    return train, val_set


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available (this rank's ``LOCAL_RANK`` device under torchrun)."""
    import os

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
