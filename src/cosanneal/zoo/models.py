"""Small example models for the built-in data sets (CPU-friendly, deterministic to build)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cosanneal.zoo.catalog import MODEL_CHECKS, check_model_options
from cosanneal.zoo.options import raise_value_error

#: The check of every option a built-in model takes (sizes >= 1, dropout in [0, 1)).
OPTION_CHECKS = MODEL_CHECKS


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 single-channel digits: two conv blocks, dropout, a linear head.

    Example:
        >>> import torch
        >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels: int = 16, classes: int = 10, dropout: float = 0.1) -> None:
        raise_value_error(OPTION_CHECKS, channels=channels, classes=classes, dropout=dropout)
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels * 16, classes))

    def forward(self, x: Any) -> Any:
        """Logits for a batch of ``(N, 1, 8, 8)`` images."""
        return self.head(self.features(x))


def mlp(in_features: int = 16, hidden: int = 64, classes: int = 4, dropout: float = 0.0) -> nn.Module:
    """A two-layer perceptron for vector inputs (the ``blobs`` data set).

    Raises:
        ValueError: a size below 1 or a dropout outside [0, 1), naming the option.
    """
    raise_value_error(OPTION_CHECKS, in_features=in_features, hidden=hidden, classes=classes, dropout=dropout)
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


def char_gpt(
    layers: int = 3, heads: int = 4, width: int = 128, block: int = 64, dropout: float = 0.0
) -> nn.Module:
    """The byte-level GPT of :mod:`cosanneal.zoo.gpt` (for the ``pysource`` data set)."""
    from cosanneal.zoo.gpt import CharGPT

    return CharGPT(layers=layers, heads=heads, width=width, block=block, dropout=dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": DigitsCNN, "mlp": mlp, "gpt": char_gpt}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a built-in model by name (``cnn``, ``mlp`` or ``gpt``).

    Raises:
        ConfigError: the name or an option is invalid (:func:`check_model_options`).
    """
    check_model_options(name, kwargs)
    return MODELS[name](**kwargs)
