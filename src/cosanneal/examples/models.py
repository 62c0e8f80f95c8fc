"""Small example models for the built-in data sets (CPU-friendly, deterministic to build)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cosanneal.errors import ConfigError


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 single-channel digits: two conv blocks, dropout, a linear head.

    Example:
        >>> import torch
        >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, channels: int = 16, classes: int = 10, dropout: float = 0.1) -> None:
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
    """A two-layer perceptron for vector inputs (the ``blobs`` data set)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
    )


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": DigitsCNN, "mlp": mlp}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a built-in model by name (``cnn`` or ``mlp``)."""
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model options for {name!r} are invalid: {exc}") from exc
