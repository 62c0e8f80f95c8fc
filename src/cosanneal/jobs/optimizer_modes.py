r"""Schedule-free optimizers in the trainer: their train/eval mode switch, and the schedule they need.

A schedule-free optimizer (Defazio et al. 2024, the ``schedulefree`` package: ``AdamWScheduleFree``,
``SGDScheduleFree``, ``RAdamScheduleFree``) keeps two points per parameter. It trains at the
interpolation :math:`y = (1 - \beta_1) z + \beta_1 x` and its answer is the running average
:math:`x`; ``optimizer.train()`` puts :math:`y` into the parameters, ``optimizer.eval()`` puts
:math:`x` there (:math:`p \leftarrow p + (1 - 1/\beta_1)(z - p)`). So the trainer

* calls ``train()`` before the first update of a session and after a roll back (:func:`train_mode`);
* evaluates in eval mode and switches back after (:func:`evaluating`), first re-estimating the
  batch-norm statistics at :math:`x` when the model has batch norms (:func:`recalibrate_norms`: the
  running statistics were gathered at :math:`y`);
* writes every checkpoint in eval mode (:func:`evaluating` with ``calibrate=False``), so a checkpoint's
  weights are :math:`x`, the model to use, and its optimizer state says ``train_mode = False``; a
  resumed run loads :math:`x` and calls ``train()``, exactly the switch the uninterrupted run made after
  its save, so it stays bit-identical on CPU;
* leaves the model in eval mode when the run ends (:func:`eval_mode`), holding :math:`x`.

Any optimizer with ``train()`` and ``eval()`` methods is treated so (:func:`is_schedule_free`);
``torch.optim`` optimizers have neither and are never touched.

The LR of a schedule-free run is the schedule's (the optimizer's own ``warmup_steps`` is not used):
it must be constant after its warmup (:func:`check_schedule`), e.g. a join of a linear warmup and a
constant, or a cosine with ``min_ratio = 1``.

Example:
    >>> import torch
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    >>> is_schedule_free(opt), is_schedule_free(torch.optim.SGD)
    (False, False)
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cosanneal.errors import ConfigError

if TYPE_CHECKING:
    from cosanneal.jobs.loop import Parts
    from cosanneal.schedules import Schedule

__all__ = [
    "CALIBRATION_BATCHES",
    "check_schedule",
    "eval_mode",
    "evaluating",
    "has_norms",
    "is_schedule_free",
    "recalibrate_norms",
    "train_mode",
]

#: At most this many training batches re-estimate the batch-norm statistics before an evaluation.
CALIBRATION_BATCHES = 32


def is_schedule_free(optimizer: torch.optim.Optimizer | type[Any]) -> bool:
    """Whether an optimizer (or its class) has the schedule-free ``train()`` / ``eval()`` methods.

    Example:
        >>> import schedulefree
        >>> is_schedule_free(schedulefree.AdamWScheduleFree), is_schedule_free(torch.optim.AdamW)
        (True, False)
    """
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def _in_train_mode(optimizer: torch.optim.Optimizer) -> bool:
    return bool(optimizer.param_groups[0].get("train_mode", False))


def train_mode(optimizer: torch.optim.Optimizer) -> None:
    """Put a schedule-free optimizer in train mode (parameters at :math:`y`); no-op for any other.

    Example:
        >>> import schedulefree
        >>> opt = schedulefree.AdamWScheduleFree(torch.nn.Linear(2, 1).parameters(), lr=0.01)
        >>> train_mode(opt); opt.param_groups[0]["train_mode"]
        True
    """
    if is_schedule_free(optimizer):
        optimizer.train()  # type: ignore[attr-defined]


def eval_mode(optimizer: torch.optim.Optimizer) -> None:
    """Put a schedule-free optimizer in eval mode (parameters at :math:`x`); no-op for any other."""
    if is_schedule_free(optimizer):
        optimizer.eval()  # type: ignore[attr-defined]


def has_norms(model: nn.Module) -> bool:
    """Whether ``model`` has batch-norm layers that keep running statistics.

    Example:
        >>> has_norms(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))), has_norms(nn.Linear(2, 2))
        (True, False)
    """
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules()
    )


def recalibrate_norms(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]
) -> int:
    r"""Re-estimate every batch norm's running statistics at the model's current weights.

    The statistics are reset and recomputed as the plain average over ``batches``
    (``momentum = None``: :math:`\hat\mu = \frac1n \sum_b \mu_b`), each batch a forward pass in training
    mode without gradients (``forward(model, batch)``); momenta and the model's mode are restored. This
    is what ``torch.optim.swa_utils.update_bn`` does, with the task's own forward pass. The caller forks
    the RNG if the forward passes draw from it (dropout).

    Returns:
        The number of batches used (0 when the model has no batch norm: nothing is run).

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> recalibrate_norms(bn, [torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0], [7.0]])], lambda m, b: m(b))
        2
        >>> float(bn.running_mean[0])
        4.0
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
                used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


def _calibration(p: Parts) -> Iterator[Any]:
    """The first :data:`CALIBRATION_BATCHES` training batches in stored order, on the device."""
    from cosanneal.jobs.loading import eval_batches
    from cosanneal.jobs.tasks import to_device

    cfg = p.config
    batches = eval_batches(p.train.dataset, cfg.eval.batch_size, seed=cfg.seed, num_workers=0)
    return (to_device(b, p.device) for b in itertools.islice(batches, CALIBRATION_BATCHES))


@contextlib.contextmanager
def evaluating(p: Parts, calibrate: bool = True) -> Iterator[None]:
    """Inside: a schedule-free optimizer in eval mode (parameters at :math:`x`); after: the mode before.

    With ``calibrate`` and a model with batch norms, the statistics are first re-estimated at
    :math:`x` over the first :data:`CALIBRATION_BATCHES` training batches (:func:`recalibrate_norms`,
    the task's ``training_step`` as the forward pass, the RNG forked so the run draws nothing). Any
    other optimizer: nothing happens.
    """
    optimizer = p.optimizer
    if not is_schedule_free(optimizer):
        yield
        return
    was_training = _in_train_mode(optimizer)
    eval_mode(optimizer)
    try:
        if calibrate and has_norms(p.model):
            devices = [p.device] if p.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                recalibrate_norms(p.model, _calibration(p), p.task.training_step)
        yield
    finally:
        if was_training:
            train_mode(optimizer)


def check_schedule(schedule: Schedule, total: int, optimizer: str) -> None:
    """A schedule-free run's LR must be constant after its warmup (rising or flat, then flat).

    Checked over the run's updates ``0 .. total - 1``: with ``P`` the largest LR and ``w`` the first
    update at it, the LR may not fall before ``w`` and must equal ``P`` (to 1e-12 relative) from ``w`` on.

    Raises:
        ConfigError: the schedule decays (it names the first update that leaves the peak and the fix).

    Example:
        >>> from cosanneal.schedules import from_dict
        >>> flat = from_dict({"kind": "cosine", "peak_lr": 0.01, "min_ratio": 1.0, "warmup_steps": 5, "cycle_steps": 95})
        >>> check_schedule(flat, 100, "adamw_schedulefree")
        >>> check_schedule(from_dict({"kind": "linear", "start_lr": 0.01, "end_lr": 0.0, "total_steps": 100}), 100, "adamw_schedulefree")
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: schedule: a schedule-free optimizer (optimizer.name = 'adamw_schedulefree') needs an LR that is constant after its warmup, but this linear schedule leaves its peak 0.01 at update 1 (lr 0.0099); use a warmup then a constant: kind = "join" of a linear warmup and a constant, or kind = "cosine" with min_ratio = 1
    """
    if total < 1:
        return
    lr = np.asarray(schedule(np.arange(total, dtype=np.float64)), dtype=np.float64)
    peak = float(lr.max())
    w = int(np.argmax(lr >= peak))
    rising = bool(np.all(np.diff(lr[: w + 1]) >= 0.0))
    off = np.flatnonzero(np.abs(lr[w:] - peak) > 1e-12 * max(abs(peak), 1e-300))
    if rising and off.size == 0:
        return
    at = int(w + off[0]) if off.size else int(np.argmax(np.diff(lr[: w + 1]) < 0.0) + 1)
    kind = schedule.to_dict().get("kind", type(schedule).__name__)
    raise ConfigError(
        f"schedule: a schedule-free optimizer (optimizer.name = {optimizer!r}) needs an LR that is constant "
        f"after its warmup, but this {kind} schedule leaves its peak {peak:.6g} at update {at} "
        f'(lr {float(lr[at]):.6g}); use a warmup then a constant: kind = "join" of a linear warmup and a '
        'constant, or kind = "cosine" with min_ratio = 1'
    )
