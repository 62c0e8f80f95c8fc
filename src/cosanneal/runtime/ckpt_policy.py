"""The decisions behind checkpointing: when a step ends a cycle, which metric is better, what to delete.

Pure functions of their arguments (no I/O), so the rules are easy to test and to document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from cosanneal.schedules.base import Schedule


def as_schedule(schedule: Any) -> Schedule:
    """A :class:`Schedule` from a schedule or from anything with a ``schedule`` attribute (a Scheduler).

    For a scheduler driving one schedule per param group, the first group's schedule is used.
    """
    if isinstance(schedule, Schedule):
        return schedule
    inner = getattr(schedule, "schedule", None)
    if isinstance(inner, tuple) and inner and isinstance(inner[0], Schedule):
        return inner[0]
    if isinstance(inner, Schedule):
        return inner
    raise TypeError(f"schedule must be a cosanneal Schedule or Scheduler, got {type(schedule).__name__}")


def is_cycle_end(step: int, schedule: Any) -> bool:
    r"""Whether update ``step`` (0-based) is the last one of a cycle: the LR's low point before a restart.

    :func:`cosanneal.schedules.cycles.is_cycle_end` (where the rule lives: a restart or the finite
    horizon falls in :math:`(step, step + 1]`), for a schedule or a Scheduler (its first group's).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=2.0, max_cycles=3)
        >>> [t for t in range(100) if is_cycle_end(t, s)]
        [9, 29, 69]
    """
    from cosanneal.schedules import cycles

    return cycles.is_cycle_end(step, as_schedule(schedule))


def ends_cycle(updates: int, schedule: Any) -> bool:
    """Whether the ``updates``-th update (counting from 1) was the last of a cycle.

    The same test as :func:`is_cycle_end` in the checkpoint convention, where a checkpoint is named by
    the number of updates done: ``ends_cycle(n, s) == is_cycle_end(n - 1, s)``, and ``False`` for 0.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(peak_lr=1.0, cycle_steps=10, cycle_mult=2.0, max_cycles=3)
        >>> [n for n in range(101) if ends_cycle(n, s)]
        [10, 30, 70]
    """
    return updates > 0 and is_cycle_end(updates - 1, schedule)


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` strictly improves on ``best`` (``None`` = nothing yet); NaN never does.

    Example:
        >>> is_better(0.5, 0.7, "min"), is_better(0.9, 0.7, "min"), is_better(float("nan"), None, "min")
        (True, False, False)
    """
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def to_delete(steps: Sequence[int], keep_last: int, protected: Iterable[int] = ()) -> list[int]:
    """Steps rotation removes: all but the newest ``keep_last`` and the ``protected`` ones.

    Example:
        >>> to_delete([1, 2, 3, 4, 5], keep_last=2, protected=[2])
        [1, 3]
    """
    ordered = sorted(set(steps))
    keep = set(ordered[-keep_last:]) if keep_last > 0 else set()
    keep.update(protected)
    return [s for s in ordered if s not in keep]
