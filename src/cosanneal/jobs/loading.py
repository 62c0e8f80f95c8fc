"""Training and validation batches through ``torch.utils.data.DataLoader``, resumable at any batch.

Map-style data sets (``__getitem__`` + ``__len__``): epoch ``e``'s order is the seeded permutation of
:class:`~cosanneal.jobs.data.EpochBatches` (a function of ``(seed, e)`` alone), and the loader's
sampler hands out *batch keys* ``(e, b)``; a worker turns a key into the batch. Before it reads sample
``i`` for epoch ``e``, the worker seeds Python's, NumPy's and torch's global generators with
:func:`sample_seed` ``(seed, e, i)``, so random augmentation depends on the sample and the epoch, never
on which worker read it or when the worker started: the batches are bit-identical with 0, 2 or 4
workers, and a job resumed at batch ``b`` of epoch ``e`` sees exactly the batches the uninterrupted job
saw. In the training process itself (``num_workers = 0``) those generators are restored after each
batch, so the model's own randomness (dropout) is not disturbed. The DataLoader draws its worker base
seed from a generator of its own, never from the global one.

Iterable data sets (``torch.utils.data.IterableDataset``) keep their position themselves: their
``state_dict()``/``load_state_dict()`` (torchdata's ``StatefulDataLoader`` protocol). With torchdata
installed the loader is its ``StatefulDataLoader``, which tracks the state of every worker's replica;
without it, iterable data sets run with ``num_workers = 0`` and the data set's own state. An epoch is
one pass; ``set_epoch(e)`` is called first when the data set has it.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.arange(12.0), torch.arange(12))
    >>> loader = TrainLoader(ds, batch_size=4, seed=0)
    >>> loader.batches_per_epoch
    3
    >>> stream = loader.stream(epoch=1, batch=2)
    >>> x, _ = next(stream)
    >>> bool(torch.equal(x, loader.order_batch(1, 2)[0]))
    True
    >>> next(stream) is END_OF_EPOCH
    True
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    TensorDataset,
    default_collate,
    get_worker_info,
)

from cosanneal.errors import ConfigError
from cosanneal.jobs.data import EpochBatches

#: What a stream yields after the last batch of an epoch (before the next epoch's first batch).
END_OF_EPOCH: Any = type("EndOfEpoch", (), {"__repr__": lambda self: "END_OF_EPOCH"})()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s randomness in ``epoch``: a 63-bit mix of the three numbers.

    Formula: SplitMix64 of ``seed * 2**40 + epoch * 2**20 + index`` (mod ``2**64``), top bit cleared.

    Example:
        >>> sample_seed(0, 0, 1) != sample_seed(0, 1, 0), sample_seed(3, 2, 1) == sample_seed(3, 2, 1)
        (True, True)
    """
    z = (seed * 2**40 + (epoch + 1) * 2**20 + index) % 2**64
    z = (z + 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) >> 1


class _Fetch(Dataset[Any]):
    """Turns a batch key into the batch: ``("train", epoch, b)`` or ``("eval", start, stop)``."""

    def __init__(self, order: EpochBatches, seed: int) -> None:
        self.order = order
        self.seed = seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, key: tuple[str, int, int]) -> Any:
        kind, a, b = key
        if kind == "train":
            size = self.order.batch_size
            indices = self.order.order(a)[b * size : (b + 1) * size].tolist()
            epoch = a
        else:
            indices, epoch = list(range(a, b)), -1
        dataset = self.order.dataset
        if isinstance(dataset, TensorDataset):  # no per-sample code can draw randomness: gather at once
            idx = torch.as_tensor(indices)
            return tuple(t[idx] for t in dataset.tensors)
        in_worker = get_worker_info() is not None
        saved = (
            None if in_worker else (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        )
        try:
            samples = []
            for i in indices:
                s = sample_seed(self.seed, epoch, i)
                random.seed(s)
                np.random.seed(s % 2**32)
                torch.default_generator.manual_seed(
                    s
                )  # torch.manual_seed also queues CUDA seeding: 100x slower
                samples.append(dataset[i])
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.random.set_rng_state(saved[2])
        return default_collate(samples)


def _stateful_loader() -> Any:
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader  # type: ignore[import-untyped]
    except ImportError:
        return None
    return StatefulDataLoader


class TrainLoader:
    """The training batches of one rank, from any position, through a DataLoader.

    Args:
        dataset: a map-style or iterable data set.
        batch_size: samples per optimizer update on this rank.
        seed: the run's seed (epoch orders, per-sample randomness).
        rank, world: this rank and the number of ranks (map-style data is split between them; an
            iterable data set splits itself, e.g. by ``torch.distributed.get_rank()``).
        num_workers, pin_memory, prefetch_factor: the DataLoader's.

    Raises:
        ConfigError: an iterable data set with workers but without torchdata, or ``batch_size``
            (times the ranks) more than the samples.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.iterable = isinstance(dataset, IterableDataset)
        self._state: dict[str, Any] | None = None
        self._loader: Any = None
        if self.iterable:
            self._stateful = _stateful_loader()
            if self._stateful is None and num_workers > 0:
                raise ConfigError(
                    "data.num_workers: an iterable data set with worker processes resumes exactly only through "
                    "torchdata's StatefulDataLoader; pip install torchdata, or set data.num_workers = 0"
                )
            self.order: EpochBatches | None = None
            try:
                n = len(dataset)
            except TypeError:
                n = None
            self.batches_per_epoch: int | None = None if n is None else n // batch_size
        else:
            self.order = EpochBatches(dataset, batch_size, seed=seed, rank=rank, world=world)
            self.batches_per_epoch = self.order.batches_per_epoch
            if self.batches_per_epoch < 1:
                ranks = f" x {world} ranks" if world > 1 else ""
                raise ConfigError(
                    f"batch_size: {batch_size}{ranks} is more than the {len(dataset)} training samples; "
                    "lower batch_size"
                )

    # ---- the DataLoader --------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "generator": torch.Generator().manual_seed(self.seed % 2**63),
        }
        if self.num_workers > 0:
            options["prefetch_factor"] = self.prefetch_factor
        return options

    def _map_stream(self, epoch: int, batch: int) -> Generator[Any, None, None]:
        assert self.order is not None and self.batches_per_epoch is not None
        per_epoch = self.batches_per_epoch
        if batch >= per_epoch:  # resumed right after an epoch's last batch, before its end was handled
            yield END_OF_EPOCH
            epoch, batch = epoch + 1, 0

        def keys() -> Iterator[tuple[str, int, int]]:
            e, b = epoch, batch
            while True:
                for i in range(b, per_epoch):
                    yield ("train", e, i)
                e, b = e + 1, 0

        self._loader = DataLoader(
            _Fetch(self.order, self.seed), sampler=keys(), batch_size=None, **self._options()
        )  # type: ignore[arg-type]
        done = batch
        for item in self._loader:
            yield item
            done += 1
            if done == per_epoch:
                yield END_OF_EPOCH
                done = 0

    def _iterable_stream(self, epoch: int, state: dict[str, Any] | None) -> Generator[Any, None, None]:
        while True:
            setter = getattr(self.dataset, "set_epoch", None)
            if callable(setter):
                setter(epoch)
            if self._stateful is not None:
                self._loader = self._stateful(
                    self.dataset, batch_size=self.batch_size, drop_last=True, **self._options()
                )
                if state is not None:
                    self._loader.load_state_dict(state)
            else:
                if state is not None:
                    self.dataset.load_state_dict(state)
                self._loader = DataLoader(
                    self.dataset, batch_size=self.batch_size, drop_last=True, **self._options()
                )
            state = None
            for item in self._loader:
                self._state = (
                    self._loader.state_dict() if self._stateful is not None else _own_state(self.dataset)
                )
                yield item
            self._state = None
            yield END_OF_EPOCH
            epoch += 1

    def stream(
        self, epoch: int, batch: int, state: dict[str, Any] | None = None
    ) -> Generator[Any, None, None]:
        """Batches from batch ``batch`` of ``epoch`` on, with :data:`END_OF_EPOCH` after each epoch's last.

        ``state`` is what :meth:`state` returned at that position (iterable data sets; ignored for
        map-style ones, whose position is the key alone).
        """
        self._state = state
        if self.iterable:
            return self._iterable_stream(epoch, state)
        return self._map_stream(epoch, batch)

    def state(self) -> dict[str, Any] | None:
        """The iterable data set's position after the last batch the stream yielded.

        None for a map-style data set (its position is the key alone) and at the start of an epoch.
        """
        return self._state

    def first(self) -> Any:
        """The first batch of epoch 0 (for the checks before training), read in this process."""
        if self.order is not None:
            return _Fetch(self.order, self.seed)[("train", 0, 0)]
        loader = DataLoader(self.dataset, batch_size=self.batch_size)
        return next(iter(loader))

    def order_batch(self, epoch: int, batch: int) -> Any:
        """Batch ``batch`` of ``epoch`` of a map-style data set, read in this process."""
        assert self.order is not None, "an iterable data set has no random access"
        return _Fetch(self.order, self.seed)[("train", epoch, batch)]


def _own_state(dataset: Any) -> dict[str, Any] | None:
    getter = getattr(dataset, "state_dict", None)
    return getter() if callable(getter) else None


def eval_batches(dataset: Any, batch_size: int, *, seed: int = 0, num_workers: int = 0) -> Iterator[Any]:
    """The validation set in its stored order (last batch included), through a DataLoader.

    Per-sample randomness is seeded from ``(seed, -1, index)``: every evaluation sees the same batches.
    """
    if isinstance(dataset, TensorDataset):
        num_workers = 0  # a gather per batch: worker processes would only add their start-up
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "generator": torch.Generator().manual_seed(seed % 2**63),
    }
    if isinstance(dataset, IterableDataset):
        yield from DataLoader(dataset, batch_size=batch_size, **options)
        return
    n = len(dataset)
    keys = [("eval", start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    order = EpochBatches(dataset, batch_size, seed=seed)
    yield from DataLoader(_Fetch(order, seed), sampler=keys, batch_size=None, **options)  # type: ignore[arg-type]


__all__ = ["END_OF_EPOCH", "TrainLoader", "eval_batches", "sample_seed"]
