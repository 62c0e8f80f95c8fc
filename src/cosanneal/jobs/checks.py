"""Checks a job makes before it trains: the task runs on the data, the run's length resolves.

Each failure is one :class:`~cosanneal.errors.ConfigError` line naming the key and the fix, raised
before anything is written to the run: a task whose ``training_step`` fails on the first batch or
returns something other than a loss, a data set whose batches the built-in task cannot read, a model
that does not fit the data, an ``evaluate`` that does not return a dict of numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cosanneal.errors import ConfigError, CosannealError, ScheduleError
from cosanneal.jobs.config import TrainConfig, check_metric_names
from cosanneal.jobs.loading import eval_batches
from cosanneal.jobs.tasks import Task, check_metrics, step_loss, to_device


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _shape(batch: Any) -> str:
    if isinstance(batch, torch.Tensor):
        return f"tensor{tuple(batch.shape)}"
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (tuple, list)):
        return "(" + ", ".join(_shape(v) for v in batch) + ")"
    return type(batch).__name__


def check_task(
    task: Task, model: nn.Module, batch: Any, val_set: Any, device: torch.device, cfg: TrainConfig
) -> None:
    """One training step's forward pass and one evaluation, on the first batches, without training.

    The metric names that evaluation returns are checked against the ones checkpoints and early
    stopping rank by (:func:`~cosanneal.jobs.config.check_metric_names`).

    Evaluation mode, no gradients, and the random generators forked: nothing the run computes later
    changes (no RNG is drawn from the run's generators, no running statistic is updated).

    Raises:
        ConfigError: the data, the model or the task do not fit together (one line).
    """
    builtin = cfg.task.entry is None
    data = cfg.data.entry or cfg.data.name
    what = cfg.model.entry or cfg.model.name
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            moved = to_device(batch, device)
            try:
                out = task.training_step(model, moved)
            except TypeError as exc:
                if builtin and "task needs batches" in str(exc):
                    raise ConfigError(
                        f"data.entry: {_first_line(exc)} from {data!r} (first batch: {_shape(batch)}); return "
                        "those pairs from the data set, or set task.entry to a task that reads these batches"
                    ) from None
                raise
            try:
                step_loss(out)
            except TypeError as exc:
                raise ConfigError(f"task.entry: {_first_line(exc)}; return the loss of the batch") from None
            val_first = next(iter(eval_batches(val_set, cfg.eval.batch_size, seed=cfg.seed)), None)
            if val_first is None:
                raise ConfigError(
                    f"data.entry: the validation set of {data!r} is empty; give it at least one sample"
                )
            try:
                names = check_metrics(task.evaluate(model, [to_device(val_first, device)]))
            except TypeError as exc:
                if builtin and "task needs batches" in str(exc):
                    raise ConfigError(
                        f"data.entry: {_first_line(exc)} from {data!r}'s validation set; return those pairs"
                    ) from None
                if builtin:
                    raise
                raise ConfigError(f"task.entry: {_first_line(exc)}") from None
    except CosannealError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        if builtin:
            labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
            classes = (
                f", {int(labels.max()) + 1 if labels.numel() else 0} classes seen"
                if isinstance(labels, torch.Tensor) and cfg.task.name == "classification"
                else ""
            )
            raise ConfigError(
                f"model.options: model {what!r} does not fit the data {data!r} (inputs {_shape(batch)}{classes}): "
                f"{_first_line(exc)}; check the model's input size and number of classes against the data"
            ) from exc
        raise ConfigError(
            f"task.entry: {cfg.task.entry!r} fails on the first batch {_shape(batch)} with model {what!r} "
            f"({type(exc).__name__}: {_first_line(exc)}); fix the task, the model or the data"
        ) from exc
    finally:
        model.train(was_training)
    check_metric_names(cfg, [f"val_{name}" for name in names])


def resolve_length(value: int | str, per_epoch: int | None, samples: int, tokens: int | None) -> int:
    """``max_steps`` in updates: a number, or a duration in updates, epochs, samples or tokens.

    Example:
        >>> resolve_length(500, None, 64, None), resolve_length("3ep", 10, 64, None)
        (500, 30)

    Raises:
        ConfigError: the duration needs what the data cannot give (epochs of an iterable data set,
            tokens of a task that does not count them), or resolves to no update.
    """
    from cosanneal.schedules import durations

    if isinstance(value, int):
        return value
    try:
        parsed = durations.parse("max_steps", value)
        if isinstance(parsed, str) and parsed.endswith("ep") and per_epoch is None:
            raise ConfigError(
                f"max_steps: {value!r} is in epochs, but the training data set has no length; give updates, "
                "samples ('2e6sp') or tokens ('5e7tok')"
            )
        if isinstance(parsed, str) and parsed.endswith("tok") and tokens is None:
            raise ConfigError(
                f"max_steps: {value!r} is in tokens, but the task does not count tokens (a tokens(batch) method); "
                "give updates or samples, or add tokens(batch) to the task"
            )
        steps = durations.resolve(
            "max_steps",
            parsed,
            total_steps=None,
            steps_per_epoch=per_epoch,
            samples_per_update=samples,
            tokens_per_update=tokens,
        )
    except ScheduleError as exc:
        raise ConfigError(f"max_steps: {exc}") from None
    steps = round(steps) if isinstance(steps, float) else int(steps)
    if steps < 1:
        raise ConfigError(f"max_steps: {value!r} is less than one update; raise it")
    return steps


__all__ = ["check_task", "resolve_length"]
