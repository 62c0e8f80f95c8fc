"""A user's own data sets and tasks, named by import path in the tests' configs (``tests/jobs`` is on sys.path).

* :func:`augmented_blobs`: the blobs split as a map-style data set whose ``__getitem__`` draws random
  augmentation from Python's, NumPy's and torch's global generators (as torchvision transforms do);
* :func:`streamed_blobs`: the same samples as an ``IterableDataset`` with its own ``state_dict`` and
  ``set_epoch``, sharding itself between DataLoader workers;
* :func:`make_margin_task`: a task with its own metric names (``err``, ``nll``) and an extra training
  scalar (``margin``);
* ``bad_*``: tasks and data sets that are wrong in the ways users get them wrong.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset, IterableDataset, TensorDataset, get_worker_info

from cosanneal.zoo.data import blobs


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Blobs with noise from all three global generators, drawn per sample."""

    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.3 * torch.randn(self.x.shape[1]) * (1.0 + random.random()) + float(np.random.rand())
        return self.x[i] + noise, self.y[i]


def augmented_blobs(n: int = 800) -> tuple[Any, Any]:
    train, val = blobs(n=n)
    return Augmented(train), val


class Streamed(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One pass per epoch in a seeded order; position kept in ``state_dict``; sharded by worker."""

    def __init__(self, data: TensorDataset, seed: int = 0) -> None:
        self.x, self.y = data.tensors
        self.seed = seed
        self.epoch = 0
        self.pos = 0

    def __len__(self) -> int:
        return len(self.y)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.pos = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = torch.randperm(
            len(self.y), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        )
        while self.pos < len(self.y):
            j = self.pos
            self.pos += 1
            if j % workers != worker:
                continue
            g = torch.Generator().manual_seed(self.epoch * 100_000 + j)
            i = int(order[j])
            yield self.x[i] + 0.3 * torch.randn(self.x.shape[1], generator=g), self.y[i]


class Unsized(Streamed):
    """A stream without a length: epochs cannot set the run's length."""

    __len__ = None  # type: ignore[assignment]


def streamed_blobs(n: int = 800) -> tuple[Any, Any]:
    train, val = blobs(n=n)
    return Streamed(train), val


def unsized_blobs(n: int = 800) -> tuple[Any, Any]:
    train, val = blobs(n=n)
    return Unsized(train), val


class MarginTask:
    """Cross-entropy, plus the mean logit margin as an extra scalar; reports error rate and NLL."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        top2 = logits.topk(2, dim=1).values
        return {
            "loss": self.scale * functional.cross_entropy(logits, y),
            "margin": (top2[:, 0] - top2[:, 1]).mean(),
        }

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        wrong = total = 0
        nll = 0.0
        for x, y in batches:
            logits = model(x)
            wrong += int((logits.argmax(1) != y).sum())
            nll += float(functional.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
        return {"err": wrong / total, "nll": nll / total}


def make_margin_task(scale: float = 1.0) -> MarginTask:
    return MarginTask(scale)


# ---- wrong in the ways users get it wrong ------------------------------------------------------
class OneArgument:
    def training_step(self, batch: Any) -> torch.Tensor:
        raise AssertionError("never called")

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return {}


def bad_signature() -> OneArgument:
    return OneArgument()


class PerSampleLoss(MarginTask):
    def training_step(self, model: nn.Module, batch: Any) -> torch.Tensor:  # type: ignore[override]
        x, y = batch
        return functional.cross_entropy(model(x), y, reduction="none")


def bad_loss() -> PerSampleLoss:
    return PerSampleLoss()


class ListMetrics(MarginTask):
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> list[float]:  # type: ignore[override]
        return [0.5]


def bad_metrics() -> ListMetrics:
    return ListMetrics()


class DictItems(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, data: TensorDataset) -> None:
        self.x, self.y = data.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.x[i], "label": self.y[i]}


def dict_blobs(n: int = 800) -> tuple[Any, Any]:
    train, val = blobs(n=n)
    return DictItems(train), DictItems(val)
