"""The LR range test of a training config: its model, data and optimizer, built as the trainer builds them.

:func:`lr_find_config` is what ``cosanneal lr-find CONFIG`` runs; the range test itself (the sweep, the
smoothing, the suggestion) is :mod:`cosanneal.tune.lrfind`, which works on any model, optimizer and batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cosanneal.runtime.rng import capture_rng_state, restore_rng_state
from cosanneal.tune.lrfind import LRFindResult, check_range, sweep_in_place

if TYPE_CHECKING:
    from cosanneal.jobs.config import TrainConfig

__all__ = ["lr_find_config"]


def lr_find_config(
    config: TrainConfig,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
) -> LRFindResult:
    """Range-test a training config's model, data and optimizer (what ``cosanneal lr-find`` runs).

    The model is built after seeding with ``config.seed`` (as ``cosanneal train`` does), batches come in the
    trainer's seeded order, the loss is cross-entropy, ``optimizer.grad_clip`` applies, and the optimizer is
    the one the trainer builds (:func:`cosanneal.jobs.optimizers.build_optimizer`: any optimizer the config names, param groups
    with their ``lr_scale`` and weight decay), swept in place over this call's own model. It runs in fp32 whatever ``amp`` says. The global RNG states are restored on return.

    Args:
        config: a :class:`~cosanneal.jobs.config.TrainConfig`.
        min_lr: first LR.
        max_lr: last LR.
        steps: number of updates.
        smoothing: EMA factor of the smoothed loss.
        diverge: divergence threshold (multiple of the best smoothed loss).

    Example:
        >>> from cosanneal.jobs.config import config_from_dict
        >>> cfg = config_from_dict({"model": {"name": "mlp"}, "data": {"name": "blobs", "options": {"n": 400}},
        ...                         "device": "cpu", "batch_size": 32})
        >>> res = lr_find_config(cfg, min_lr=1e-4, max_lr=10.0, steps=40)
        >>> len(res.lrs) <= 40 and res.suggestion is not None
        True
    """
    from torch.nn import functional

    from cosanneal.jobs.builders import build_model, pick_device, training_batches
    from cosanneal.jobs.optimizers import build_optimizer

    check_range(min_lr, max_lr, steps, smoothing, diverge)
    rng = capture_rng_state()
    try:
        torch.manual_seed(config.seed)
        device = pick_device(config.device)
        train, _ = training_batches(config.data, config.batch_size, config.seed)
        per_epoch = train.batches_per_epoch
        model = build_model(config.model).to(device)
        optimizer = build_optimizer(model, config.optimizer, 1.0)

        def batches() -> Iterator[Any]:
            for epoch in itertools.count():
                for index in range(per_epoch):
                    yield train.batch(epoch, index)

        def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return functional.cross_entropy(m(x.to(device)), y.to(device))

        # the model and the optimizer are this call's own, built as the trainer builds them (any optimizer
        # it can build, with its groups): sweep them in place, nothing to copy or rebuild
        return sweep_in_place(
            model,
            optimizer,
            batches(),
            loss_fn,
            min_lr,
            max_lr,
            steps,
            smoothing,
            diverge,
            config.optimizer.grad_clip,
        )
    finally:
        restore_rng_state(rng)
