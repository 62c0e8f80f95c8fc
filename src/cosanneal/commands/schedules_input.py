"""The schedule a preview command works on: from a spec file, ``--set`` values, or a training config.

A file is a *training config* when it has a ``schedule`` table and a key of the run's length (``data``,
``epochs``, ``batch_size``, ``max_steps`` or ``task``). Its schedule is bound exactly as ``cosanneal
train`` binds it (:func:`cosanneal.jobs.preview.bind_run`: the data is built to count the updates of an
epoch), so ``--steps`` and ``--steps-per-epoch`` are not needed; ``--steps`` caps the run as
``max_steps`` does. Any other file is a schedule spec (:mod:`cosanneal.schedules.spec`; a ``schedule``
table in it is read as the spec).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

from cosanneal.errors import ScheduleError, SpecError
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.spec import load_spec, read_mapping

__all__ = ["Bound", "RUN_KEYS", "bind_spec", "is_training_config", "load_bound", "source_name"]

RUN_KEYS = frozenset({"data", "epochs", "batch_size", "max_steps", "task"})


@dataclasses.dataclass(frozen=True)
class Bound:
    """A schedule bound for a run of ``steps`` updates, and where it came from.

    Attributes:
        source: the file name, or ``--set``.
        schedule: every duration bound.
        steps: the run length.
        steps_per_epoch: updates per epoch, when known.
        from_config: True when a training config gave the run's length.
    """

    source: str
    schedule: Schedule
    steps: int
    steps_per_epoch: float | None
    from_config: bool = False


def source_name(spec: Path | None) -> str:
    """How a message names the input: the path as given, or ``--set``."""
    return str(spec) if spec is not None else "--set"


def is_training_config(data: Mapping[str, object]) -> bool:
    """True for a training config's mapping: a ``schedule`` table plus a key of the run's length.

    Example:
        >>> is_training_config({"epochs": 3, "schedule": {"kind": "cosine"}})
        True
        >>> is_training_config({"schedule": {"kind": "cosine"}, "optimizer": {"name": "sgd"}})
        False
    """
    return "kind" not in data and isinstance(data.get("schedule"), Mapping) and bool(RUN_KEYS & data.keys())


def bind_spec(
    schedule: Schedule, source: str, steps: int | None, steps_per_epoch: float | None
) -> tuple[Schedule, int]:
    """Bind a spec's durations and settle the run length (``steps`` or the schedule's end).

    Raises:
        SpecError: a duration needs ``--steps``/``--steps-per-epoch``, or the schedule never ends.
    """
    for name, value in schedule.unbound_fields().items():
        if value.endswith("ep") and steps_per_epoch is None:
            raise SpecError(f"{source}: {name}={value!r} is in epochs; pass --steps-per-epoch N")
        if value.endswith("dur") and steps is None:
            raise SpecError(f"{source}: {name}={value!r} is a fraction of the run; pass --steps N")
        if value.endswith(("sp", "tok")):
            raise SpecError(
                f"{source}: {name}={value!r} is in samples or tokens; preview the training config that "
                "uses it (its batch size and data give the updates)"
            )
    try:
        bound = schedule.bind(total_steps=steps, steps_per_epoch=steps_per_epoch)
        end = bound.horizon
    except ScheduleError as exc:
        raise SpecError(f"{source}: {exc}") from None
    if steps is not None:
        return bound, steps
    if end is None:
        raise SpecError(
            f"{source}: the schedule never ends (it restarts forever); pass --steps N, the run length"
        )
    if end < 1:
        raise SpecError(
            f"{source}: the schedule is constant from step {end:g}; pass --steps N, the run length"
        )
    return bound, math.ceil(end)


def _bind_config(spec: Path, sets: list[str], steps: int | None, steps_per_epoch: float | None) -> Bound:
    import sys

    from cosanneal.jobs.config import load_config
    from cosanneal.jobs.preview import bind_run

    if steps_per_epoch is not None:
        raise SpecError(
            f"{spec}: a training config's updates per epoch come from its data; drop --steps-per-epoch"
        )
    cfg = load_config(spec, [*sets, *([f"max_steps={steps}"] if steps is not None else [])])
    beside = str(spec.resolve().parent)  # as `cosanneal train` does: entry modules next to the config
    if beside not in sys.path:
        sys.path.append(beside)
    schedule, total, shape = bind_run(cfg)
    return Bound(str(spec), schedule, total, shape.steps_per_epoch, from_config=True)


def load_bound(
    spec: Path | None, sets: list[str] | None, steps: int | None, steps_per_epoch: float | None
) -> Bound:
    """The schedule of ``spec`` (a spec or a training config) and ``--set`` values, bound for the run.

    Raises:
        SpecError: nothing to build a schedule from, or it cannot be bound (one line).
        ConfigError: a training config is invalid or its data cannot be built (one line).
    """
    sets = sets or []
    if spec is None and not sets:
        raise SpecError("give a spec file (cosanneal show sgdr.toml) or --set kind=... to build one")
    if spec is not None and is_training_config(read_mapping(spec)):
        return _bind_config(spec, sets, steps, steps_per_epoch)
    source = source_name(spec)
    schedule, n = bind_spec(load_spec(spec, sets), source, steps, steps_per_epoch)
    return Bound(source, schedule, n, steps_per_epoch)
