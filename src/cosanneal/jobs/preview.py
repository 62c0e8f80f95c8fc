"""The run a training config describes, without training it: its length and its bound schedule.

:func:`run_shape` builds only the data (no model, no optimizer, nothing written) to learn how many
updates an epoch has and how many samples and tokens an update takes; :func:`bind_run` then binds the
config's schedule to those numbers exactly as :class:`~cosanneal.jobs.trainer.Trainer` does, so
``cosanneal show/plot/lint/trace CONFIG`` and ``cosanneal train CONFIG --dry-run`` preview the schedule
the job will really follow.

The run length is ``epochs * updates_per_epoch``, capped by ``max_steps`` (updates or a duration in
epochs, samples or tokens, :func:`~cosanneal.jobs.checks.resolve_length`).
"""

from __future__ import annotations

import dataclasses
import os

from cosanneal.errors import ConfigError, ScheduleError
from cosanneal.jobs.checks import resolve_length
from cosanneal.jobs.config import TrainConfig
from cosanneal.schedules import Schedule, from_dict

__all__ = ["RunShape", "bind_run", "bind_schedule", "run_length", "run_shape", "schedule_free"]


@dataclasses.dataclass(frozen=True)
class RunShape:
    """What the data and the world size make of a config's durations.

    Attributes:
        steps_per_epoch: updates per pass over the training data (None: an iterable data set).
        samples_per_update: ``batch_size * world_size``.
        tokens_per_update: tokens the task counts in a batch, times the world size (None: not counted).
        world_size: the number of training processes.
    """

    steps_per_epoch: int | None
    samples_per_update: int
    tokens_per_update: int | None
    world_size: int = 1


def run_length(cfg: TrainConfig, shape: RunShape) -> int:
    """Updates in the run: ``epochs`` passes over the data, capped by ``max_steps``.

    Example:
        >>> from cosanneal.jobs.config import config_from_dict
        >>> cfg = config_from_dict({"epochs": 3, "max_steps": "2ep",
        ...     "schedule": {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"}})
        >>> run_length(cfg, RunShape(steps_per_epoch=10, samples_per_update=64, tokens_per_update=None))
        20

    Raises:
        ConfigError: the data set has no length and ``max_steps`` is not set, or ``max_steps`` cannot be
            resolved (:func:`~cosanneal.jobs.checks.resolve_length`).
    """
    per_epoch = shape.steps_per_epoch
    limit = (
        None
        if cfg.max_steps is None
        else resolve_length(cfg.max_steps, per_epoch, shape.samples_per_update, shape.tokens_per_update)
    )
    if per_epoch is None:
        if limit is None:
            raise ConfigError(
                "max_steps: the training data set has no length (an iterable data set), so epochs cannot "
                "set the run's length; set max_steps (e.g. 10000, '2e6sp' or '5e7tok')"
            )
        return limit
    return cfg.epochs * per_epoch if limit is None else min(limit, cfg.epochs * per_epoch)


def bind_schedule(cfg: TrainConfig, total: int, shape: RunShape) -> Schedule:
    """The config's schedule with every duration (``dur``, ``ep``, ``sp``, ``tok``) bound to the run.

    A schedule-free optimizer's schedule must be constant after its warmup
    (:func:`~cosanneal.jobs.optimizer_modes.check_schedule`).

    Raises:
        ConfigError: a duration cannot be bound (``schedule.<field>: ...``), or the optimizer is
            schedule-free and the schedule decays.
    """
    try:
        schedule = from_dict(cfg.schedule).bind(
            total_steps=total,
            steps_per_epoch=shape.steps_per_epoch,
            samples_per_update=shape.samples_per_update,
            tokens_per_update=shape.tokens_per_update,
        )
    except ScheduleError as exc:
        raise ConfigError(f"schedule.{exc}") from exc
    if schedule_free(cfg.optimizer.name):
        from cosanneal.jobs.optimizer_modes import check_schedule

        check_schedule(schedule, total, cfg.optimizer.name)
    return schedule


def schedule_free(name: str) -> bool:
    """Whether ``optimizer.name`` is schedule-free (a name that does not resolve is not: the builder says why)."""
    from cosanneal.jobs.optimizer_modes import is_schedule_free
    from cosanneal.jobs.optimizers import SCHEDULE_FREE, optimizer_class

    if name.lower() in SCHEDULE_FREE:
        return True
    try:
        return is_schedule_free(optimizer_class(name))
    except ConfigError:
        return False


def run_shape(cfg: TrainConfig, world_size: int | None = None) -> RunShape:
    """Build the config's data (only the data) and measure an epoch, a batch's samples and tokens.

    ``world_size`` defaults to ``$WORLD_SIZE`` (torchrun's), else 1: each rank takes ``1 / world_size``
    of every epoch.

    Raises:
        ConfigError: the data or the task cannot be built, as one line naming the key.
    """
    from cosanneal.jobs.builders import build_data
    from cosanneal.jobs.loading import TrainLoader
    from cosanneal.jobs.tasks import batch_tokens, build_task

    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1") or 1)
    train_set, _ = build_data(cfg.data)
    loader = TrainLoader(train_set, cfg.batch_size, seed=cfg.seed, rank=0, world=world)
    tokens = batch_tokens(build_task(cfg.task), loader.first())
    return RunShape(
        steps_per_epoch=loader.batches_per_epoch,
        samples_per_update=cfg.batch_size * world,
        tokens_per_update=None if tokens is None else tokens * world,
        world_size=world,
    )


def bind_run(cfg: TrainConfig, world_size: int | None = None) -> tuple[Schedule, int, RunShape]:
    """The bound schedule, the run length and the shape of ``cfg``'s run, as the trainer will see them.

    Raises:
        ConfigError: the data, the length or the schedule cannot be resolved (one line).
    """
    shape = run_shape(cfg, world_size)
    total = run_length(cfg, shape)
    return bind_schedule(cfg, total, shape), total, shape
