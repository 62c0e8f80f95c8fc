"""The built-in models and data sets by name, their options and checks, importable without torch.

Config loading checks ``model.name``/``model.options`` and ``data.name``/``data.options`` against this
catalog, so a config error is reported before torch (or numpy's data) is imported. The builders in
:mod:`cosanneal.zoo.models` and :mod:`cosanneal.zoo.data` take exactly these options (a test compares
the catalog with their signatures).

Example:
    >>> MODEL_OPTIONS["mlp"]
    ('in_features', 'hidden', 'classes', 'dropout')
"""

from __future__ import annotations

from typing import Any

from cosanneal.zoo.options import Check, check_options, count, fraction, probability
from cosanneal.zoo.options import seed as seed_check

__all__ = [
    "DATA_CHECKS",
    "DATA_OPTIONS",
    "MODEL_CHECKS",
    "MODEL_OPTIONS",
    "check_data_options",
    "check_model_options",
]

#: Built-in model -> the options its builder takes, in signature order.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "cnn": ("channels", "classes", "dropout"),
    "mlp": ("in_features", "hidden", "classes", "dropout"),
    "gpt": ("layers", "heads", "width", "block", "dropout"),
}

#: Built-in data set -> the options its loader takes, in signature order.
DATA_OPTIONS: dict[str, tuple[str, ...]] = {
    "digits": ("val_fraction", "split_seed"),
    "blobs": ("n", "classes", "dim", "val_fraction", "split_seed"),
    "pysource": ("block", "max_bytes", "val_fraction"),
}

#: The check of every model option.
MODEL_CHECKS: dict[str, Check] = {
    "channels": count,
    "classes": count,
    "dropout": probability,
    "in_features": count,
    "hidden": count,
    "layers": count,
    "heads": count,
    "width": count,
    "block": count,
}

#: The check of every data option.
DATA_CHECKS: dict[str, Check] = {
    "n": count,
    "classes": count,
    "dim": count,
    "val_fraction": fraction,
    "split_seed": seed_check,
    "block": count,
    "max_bytes": count,
}


def check_model_options(name: str, options: Any) -> None:
    """Check ``model.name`` and ``model.options`` of a config without building the model.

    Raises:
        ConfigError: one line naming ``model.name`` or ``model.options.<option>``.

    Example:
        >>> check_model_options("mlp", {"dropout": 2.0})
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: model.options.dropout: must be a number in [0, 1), got 2.0
    """
    check_options("model", name, MODEL_OPTIONS, MODEL_CHECKS, options)


def check_data_options(name: str, options: Any) -> None:
    """Check ``data.name`` and ``data.options`` of a config without loading the data.

    Raises:
        ConfigError: one line naming ``data.name`` or ``data.options.<option>``.

    Example:
        >>> check_data_options("digits", {"val_fraction": 1.5})
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: data.options.val_fraction: must be a number in (0, 1), got 1.5
    """
    check_options("data", name, DATA_OPTIONS, DATA_CHECKS, options)
