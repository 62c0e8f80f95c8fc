"""Offline example data sets: nothing is downloaded.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the
scikit-learn package. Pixels are scaled to [0, 1] and shaped ``(N, 1, 8, 8)``; the train/validation split is
stratified and fixed by ``split_seed`` so every run (and every rank) sees the same split. ``blobs`` is
synthetic. ``pysource`` is the running Python's standard library sources as next-byte windows, for the
language-model demo (:mod:`cosanneal.zoo.text`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cosanneal.zoo.catalog import DATA_CHECKS, check_data_options
from cosanneal.zoo.options import raise_value_error

Split = tuple[TensorDataset, TensorDataset]

#: The check of every option a built-in data set takes.
OPTION_CHECKS = DATA_CHECKS


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
    if len(val_idx) == 0 or len(train_idx) == 0:
        side = "validation" if len(val_idx) == 0 else "training"
        raise ValueError(
            f"val_fraction: {val_fraction!r} of {n} samples leaves no {side} sample; change val_fraction or n"
        )
    return train_idx, val_idx


def _digits_table() -> np.ndarray:
    """The digits as scikit-learn ships them (``digits.csv.gz``: 64 pixels 0-16 and the label per row).

    Read straight from the installed scikit-learn's data folder, without importing scikit-learn (its
    import costs seconds, more than the demo's first epoch); ``load_digits`` is the fallback.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)])


def digits(val_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits as ``(train, val)`` TensorDatasets of ``(N, 1, 8, 8)`` float32 images.

    Example:
        >>> train, val = digits()
        >>> len(train) + len(val), tuple(train[0][0].shape)
        (1797, (1, 8, 8))
    """
    raise_value_error(OPTION_CHECKS, val_fraction=val_fraction, split_seed=split_seed)
    table = _digits_table()
    images = (table[:, :64].reshape(-1, 8, 8) / 16.0).astype(np.float32)
    labels = table[:, 64].astype(np.int64)
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
    raise_value_error(
        OPTION_CHECKS, n=n, classes=classes, dim=dim, val_fraction=val_fraction, split_seed=split_seed
    )
    rng = np.random.default_rng(1234)
    centers = rng.normal(0.0, 2.0, size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    x = centers[labels] + rng.normal(0.0, 1.0, size=(n, dim)).astype(np.float32)
    train_idx, val_idx = _split(n, labels, val_fraction, split_seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(xt[train_idx], yt[train_idx]), TensorDataset(xt[val_idx], yt[val_idx])


def pysource(block: int = 64, max_bytes: int = 3_000_000, val_fraction: float = 0.1) -> Any:
    """The Python standard library's sources as next-byte windows (:mod:`cosanneal.zoo.text`)."""
    from cosanneal.zoo.text import pysource as load

    return load(block=block, max_bytes=max_bytes, val_fraction=val_fraction)


DATASETS: dict[str, Callable[..., Any]] = {"digits": digits, "blobs": blobs, "pysource": pysource}


def load_dataset(name: str, **kwargs: Any) -> Any:
    """Build a built-in data set by name (``digits``, ``blobs`` or ``pysource``).

    Raises:
        ConfigError: the name or an option is invalid (:func:`check_data_options`).
    """
    check_data_options(name, kwargs)
    return DATASETS[name](**kwargs)
