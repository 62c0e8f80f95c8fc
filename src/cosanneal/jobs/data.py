"""Deterministic, resumable batching: the batch at (epoch, index) depends only on the seed.

Each epoch's order is a permutation drawn from a generator seeded with ``(seed, epoch)`` alone, so a
resumed job can jump straight to batch ``index`` of ``epoch`` and see exactly the samples the
uninterrupted job saw; the global RNG is never touched. Any seed >= 0 works (:func:`generator_seed`
reduces ``(seed, epoch)`` into the generator's range). Under DDP rank ``r`` of ``w`` takes every
``w``-th sample of the permutation; the last incomplete batch is dropped so every rank runs the same
number of updates.

Batch ``i`` of every rank together is the permutation's positions ``[i B, (i + 1) B)`` with
``B = batch_size * world`` (rank ``r`` holds those congruent to ``r`` mod ``w``), and an epoch has
``len // B`` updates at any world size, so the samples of an update depend on the global batch alone:
a job resumed at another world size that keeps ``B`` (``resume.world_size = "accumulate"``,
:mod:`cosanneal.jobs.world_size`) trains exactly the samples the uninterrupted job would have.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.arange(24.0))
    >>> two = [EpochBatches(ds, 4, seed=1, rank=r, world=2).batch(0, 1)[0] for r in range(2)]
    >>> one = EpochBatches(ds, 8, seed=1).batch(0, 1)[0]
    >>> bool(torch.equal(torch.cat(two).sort().values, one.sort().values))
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import TensorDataset, default_collate


def generator_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation: ``(seed * 1_000_003 + epoch) mod 2**64``.

    ``torch.Generator.manual_seed`` takes at most ``2**64 - 1``, so the value is reduced into that
    range; every value already in range is unchanged, so the data orders of earlier runs stay the same.
    (The CPU generator keeps the low 32 bits: seeds that differ by a multiple of ``2**32`` share
    their data order.)

    Example:
        >>> generator_seed(3, 2), generator_seed(2**63 - 1, 0) < 2**64
        (3000011, True)
    """
    return (seed * 1_000_003 + epoch) % 2**64


class EpochBatches:
    """Batches of ``dataset`` in a seeded order per epoch.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10.0), torch.arange(10))
        >>> b = EpochBatches(ds, batch_size=4, seed=0)
        >>> b.batches_per_epoch
        2
        >>> bool((b.batch(3, 1)[0] == EpochBatches(ds, 4, seed=0).batch(3, 1)[0]).all())
        True
    """

    def __init__(
        self, dataset: Any, batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self._tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None
        self._cached: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def batches_per_epoch(self) -> int:
        """Whole batches this rank runs per epoch."""
        return (len(self.dataset) // self.world) // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The sample indices this rank takes in ``epoch``."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        generator = torch.Generator().manual_seed(generator_seed(self.seed, epoch))
        perm = torch.randperm(len(self.dataset), generator=generator)[self.rank :: self.world]
        self._cached = (epoch, perm)
        return perm

    def _gather(self, idx: torch.Tensor) -> Any:
        if self._tensors is not None:
            return tuple(t[idx] for t in self._tensors)
        return default_collate([self.dataset[int(i)] for i in idx])

    def batch(self, epoch: int, index: int) -> Any:
        """The ``index``-th batch of ``epoch``."""
        start = index * self.batch_size
        return self._gather(self.order(epoch)[start : start + self.batch_size])

    def sequential(self, batch_size: int) -> Iterator[Any]:
        """The whole dataset in its stored order (for evaluation), last batch included."""
        for start in range(0, len(self.dataset), batch_size):
            yield self._gather(torch.arange(start, min(start + batch_size, len(self.dataset))))
