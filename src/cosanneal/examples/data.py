"""Offline example data sets: nothing is downloaded.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the
scikit-learn package. Pixels are scaled to [0, 1] and shaped ``(N, 1, 8, 8)``; the train/validation split is
stratified and fixed by ``split_seed`` so every run (and every rank) sees the same split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cosanneal.errors import ConfigError

Split = tuple[TensorDataset, TensorDataset]


def _split(n: int, labels: np.ndarray, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: the same fraction of every class goes to validation."""
    rng = np.random.default_rng(split_seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        val.append(idx[: round(len(idx) * val_fraction)])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return train_idx, val_idx


def digits(val_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits as ``(train, val)`` TensorDatasets of ``(N, 1, 8, 8)`` float32 images.

    Example:
        >>> train, val = digits()
        >>> len(train) + len(val), tuple(train[0][0].shape)
        (1797, (1, 8, 8))
    """
    from sklearn.datasets import load_digits

    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction!r}")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, val_idx = _split(len(labels), labels, val_fraction, split_seed)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx])


def blobs(
    n: int = 2000, classes: int = 4, dim: int = 16, val_fraction: float = 0.2, split_seed: int = 0
) -> Split:
    """A synthetic Gaussian-blobs classification set (vectors), for fast tests.

    Example:
        >>> train, val = blobs(n=100)
        >>> len(train) + len(val), tuple(train[0][0].shape)
        (100, (16,))
    """
    rng = np.random.default_rng(1234)
    centers = rng.normal(0.0, 2.0, size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    x = centers[labels] + rng.normal(0.0, 1.0, size=(n, dim)).astype(np.float32)
    train_idx, val_idx = _split(n, labels, val_fraction, split_seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(xt[train_idx], yt[train_idx]), TensorDataset(xt[val_idx], yt[val_idx])


DATASETS: dict[str, Callable[..., Split]] = {"digits": digits, "blobs": blobs}


def load_dataset(name: str, **kwargs: Any) -> Split:
    """Build a built-in data set by name (``digits`` or ``blobs``)."""
    if name not in DATASETS:
        raise ConfigError(f"data.name must be one of {', '.join(sorted(DATASETS))}, got {name!r}")
    try:
        return DATASETS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"data options for {name!r} are invalid: {exc}") from exc
