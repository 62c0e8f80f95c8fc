"""Your own task and data set for `cosanneal train`: digits with random-shift augmentation, label smoothing.

`shifted_digits.toml` names them (`data.entry`, `task.entry`); `cosanneal train` imports modules that
sit next to the config file. The augmentation draws from torch's global generator in `__getitem__`,
in DataLoader worker processes: the trainer seeds it per (seed, epoch, sample), so the run is the
same with 0, 2 or 4 workers and resumes bit-identically mid-epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset, TensorDataset

from cosanneal.zoo.data import digits


class Shifted(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """8x8 digits shifted by up to `shift` pixels in each direction, a new shift every time."""

    def __init__(self, data: TensorDataset, shift: int) -> None:
        self.x, self.y = data.tensors
        self.shift = shift

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        dx, dy = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
        return torch.roll(self.x[i], shifts=(dy, dx), dims=(1, 2)), self.y[i]


def shifted_digits(shift: int = 1) -> tuple[Shifted, TensorDataset]:
    """(augmented training set, plain validation set)."""
    train, val = digits()
    return Shifted(train, shift), val


class SmoothedClassification:
    """Cross-entropy with label smoothing; reports loss, top-1 and top-2 accuracy."""

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        loss = functional.cross_entropy(logits, y, label_smoothing=self.smoothing)
        return {"loss": loss, "confidence": logits.softmax(1).amax(1).mean()}  # logged as train_confidence

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        n = top1 = top2 = 0
        loss = 0.0
        for x, y in batches:
            logits = model(x)
            loss += float(functional.cross_entropy(logits, y, reduction="sum"))
            best = logits.topk(2, dim=1).indices
            top1 += int((best[:, 0] == y).sum())
            top2 += int((best == y[:, None]).any(1).sum())
            n += len(y)
        return {"loss": loss / n, "top1": top1 / n, "top2": top2 / n}


def make_task(smoothing: float = 0.1) -> SmoothedClassification:
    return SmoothedClassification(smoothing)
