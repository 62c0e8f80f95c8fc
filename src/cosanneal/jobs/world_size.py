r"""A resume at another world size: the batch layout a checkpoint records, and the change a rule makes.

The schedule counts updates of a global batch :math:`B = b \cdot w` (``b = batch_size`` samples per
update on each of ``w`` ranks, split into ``k = accumulate`` micro-batches). Every checkpoint records
that layout (:class:`Layout`, in its trackers as ``"world"``). A job resumed by ``w'`` ranks from a
checkpoint saved by ``w`` ranks after ``d`` updates follows ``resume.world_size`` (:func:`plan_resize`):

* ``accumulate`` keeps :math:`B`: each rank takes :math:`b' = B / w'` samples per update, in
  :math:`k'` micro-batches, the fewest whose size :math:`b' / k'` is at most the config's micro-batch
  ``batch_size / accumulate`` (memory per rank never grows). The schedule, the LR and the run length are
  unchanged, and the data position is exact: the ranks together take the epoch's permutation in order,
  :math:`B` samples per update, so batch ``i`` of the epoch is the same samples at any world size.
  Refused when :math:`w'` does not divide :math:`B`.
* ``linear`` / ``sqrt`` keep :math:`b` and :math:`k`, so :math:`B' = b\,w'` and :math:`r = B' / B`.
  From update ``d`` on the LR is scaled by :math:`f = r` or :math:`\sqrt r` and the rest of the schedule
  is re-bound in samples: update :math:`u \ge d` trains at position :math:`d + (u - d)\,r`
  (:class:`~cosanneal.schedules.rebatch.Rebatch`). The run's length becomes
  :math:`T' = d + \lceil (T - d)\,B / B' \rceil` updates (never fewer samples than planned). The epoch
  resumes at batch :math:`\lceil S / B' \rceil` of the new layout, :math:`S = i\,B` the samples the
  epoch had consumed: exact when :math:`B'` divides :math:`S`, else the fewer than :math:`B'` samples up
  to the next batch boundary are skipped (never trained twice), and the event says how many.
* ``refuse`` refuses every other world size.

A checkpoint written before layouts were recorded has none: its resume keeps the earlier behaviour.

Example:
    >>> before = Layout(world_size=2, batch_size=32, accumulate=1, total=30)
    >>> plan = plan_resize(before, world_size=1, micro_batch=32, rule="accumulate", at=12, batch=2)
    >>> plan.after.batch_size, plan.after.accumulate, plan.after.total, plan.lr_factor, plan.batch
    (64, 2, 30, 1.0, 2)
    >>> plan = plan_resize(before, world_size=1, micro_batch=32, rule="sqrt", at=12, batch=2)
    >>> plan.after.global_batch, plan.after.total, round(plan.lr_factor, 6), plan.batch, plan.skipped_samples
    (32, 48, 0.707107, 4, 0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from cosanneal.errors import ConfigError

__all__ = ["Layout", "Resize", "plan_resize", "split_micro"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The batch layout a run trains with, as a checkpoint records it.

    Attributes:
        world_size: the ranks training.
        batch_size: samples of one update on one rank.
        accumulate: micro-batches per update on one rank.
        total: the run's length in updates.
        bound_world_size: the world size the config's schedule was bound at (the run's first session;
            ``None``: ``world_size``).
        resized: whether the run has changed its layout since (then ``total`` and the batch come from here).
    """

    world_size: int
    batch_size: int
    accumulate: int
    total: int
    bound_world_size: int | None = None
    resized: bool = False

    @property
    def global_batch(self) -> int:
        """Samples of one update over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    @property
    def bound_at(self) -> int:
        """The world size the schedule was bound at."""
        return self.world_size if self.bound_world_size is None else self.bound_world_size

    def to_dict(self) -> dict[str, Any]:
        """The layout as JSON-ready data (what a checkpoint's trackers hold under ``"world"``)."""
        return {
            **dataclasses.asdict(self),
            "bound_world_size": self.bound_at,
            "global_batch": self.global_batch,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Layout | None:
        """The layout a checkpoint recorded, or ``None`` when it recorded none (or an unreadable one).

        Example:
            >>> Layout.from_dict(None), Layout.from_dict(Layout(2, 32, 1, 30).to_dict()) == Layout(2, 32, 1, 30, 2)
            (None, True)
        """
        if not isinstance(data, Mapping):
            return None
        names = ("world_size", "batch_size", "accumulate", "total")
        values: dict[str, int] = {}
        for name in names:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return None
            values[name] = value
        bound = data.get("bound_world_size")
        return cls(
            **values,
            bound_world_size=bound
            if isinstance(bound, int) and not isinstance(bound, bool) and bound > 0
            else None,
            resized=bool(data.get("resized", False)),
        )


@dataclasses.dataclass(frozen=True)
class Resize:
    """What a resume at another world size changes (see the module docstring for the formulas).

    Attributes:
        rule: ``accumulate``, ``linear`` or ``sqrt``.
        at: the update count at the switch.
        before, after: the layouts.
        ratio: ``r = B' / B`` (1 for ``accumulate``).
        lr_factor: the LR's factor from the switch on (1, ``r`` or ``sqrt(r)``).
        batch: the epoch's batch index to resume at in the new layout.
        skipped_samples: samples of the epoch skipped to reach a batch boundary (0 when exact).
    """

    rule: str
    at: int
    before: Layout
    after: Layout
    ratio: float
    lr_factor: float
    batch: int
    skipped_samples: int

    def event(self) -> dict[str, Any]:
        """The ``world_size_changed`` event's payload.

        Example:
            >>> before = Layout(world_size=2, batch_size=32, accumulate=1, total=30)
            >>> e = plan_resize(before, world_size=1, micro_batch=32, rule="sqrt", at=12, batch=2).event()
            >>> e["global_batch_before"], e["global_batch_after"], e["ratio"], e["total_steps"]
            (64, 32, 0.5, 48)
        """
        return {
            "from_world_size": self.before.world_size,
            "to_world_size": self.after.world_size,
            "rule": self.rule,
            "global_batch_before": self.before.global_batch,
            "global_batch_after": self.after.global_batch,
            "batch_size": self.after.batch_size,
            "accumulate_before": self.before.accumulate,
            "accumulate": self.after.accumulate,
            "ratio": self.ratio,
            "lr_factor": self.lr_factor,
            "total_steps_before": self.before.total,
            "total_steps": self.after.total,
            "batch": self.batch,
            "skipped_samples": self.skipped_samples,
        }

    def describe(self) -> str:
        """One line for the job's log.

        Example:
            >>> before = Layout(world_size=1, batch_size=32, accumulate=1, total=60)
            >>> print(plan_resize(before, world_size=2, micro_batch=32, rule="linear", at=12, batch=12).describe())
            world size 1 -> 2 at update 12 (resume.world_size = linear): global batch 32 -> 64 (32 per rank, accumulate 1), LR x 2, 36 updates in the run
        """
        return (
            f"world size {self.before.world_size} -> {self.after.world_size} at update {self.at} "
            f"(resume.world_size = {self.rule}): global batch {self.before.global_batch} -> "
            f"{self.after.global_batch} ({self.after.batch_size} per rank, accumulate {self.after.accumulate}), LR x {self.lr_factor:.6g}, {self.after.total} updates in the run"
            + (f", {self.skipped_samples} samples of the epoch skipped" if self.skipped_samples else "")
        )


def split_micro(batch: int, micro_batch: int) -> int:
    """The fewest micro-batches ``k`` that split ``batch`` evenly into parts of at most ``micro_batch``.

    Example:
        >>> split_micro(64, 32), split_micro(16, 32), split_micro(48, 32), split_micro(7, 2)
        (2, 1, 2, 7)
    """
    k = max(1, -(-batch // micro_batch))
    while batch % k:
        k += 1
    return k


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0][:limit]


def _refuse(before: Layout, world_size: int, at: int, rule: str) -> ConfigError:
    if rule == "refuse":
        return ConfigError(
            f"resume.world_size: the checkpoint at update {at} was saved by {before.world_size} ranks and this "
            f"job has {world_size}, which 'refuse' does not allow; resume with {before.world_size} ranks, or set "
            "resume.world_size = accumulate (keep the global batch), linear or sqrt (scale the LR)"
        )
    sizes = _divisors(before.global_batch, limit=9)
    ok = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
    ranks = "1 rank" if before.world_size == 1 else f"{before.world_size} ranks"
    return ConfigError(
        f"resume.world_size: the checkpoint at update {at} has a global batch of {before.global_batch} samples "
        f"({ranks} x {before.batch_size}), which {world_size} ranks cannot split evenly; "
        f"resume with a world size that divides it ({ok}), or set resume.world_size = linear or sqrt"
    )


def plan_resize(
    before: Layout, *, world_size: int, micro_batch: int, rule: str, at: int, batch: int
) -> Resize | None:
    """The change a resume by ``world_size`` ranks makes to ``before`` under ``rule``; ``None``: none.

    Args:
        before: the layout the checkpoint recorded.
        world_size: the ranks of the resuming job (``w'``).
        micro_batch: the config's micro-batch, ``batch_size / accumulate`` (``accumulate`` keeps the
            micro-batches at most this large).
        rule: ``resume.world_size``: ``accumulate``, ``linear``, ``sqrt`` or ``refuse``.
        at: the update count of the checkpoint (``d``).
        batch: the checkpoint's batch index in its epoch (``i``).

    Raises:
        ConfigError: the rule cannot resume at ``world_size`` (one line naming the key and the fix).

    Example:
        >>> plan_resize(Layout(1, 32, 1, 60), world_size=1, micro_batch=32, rule="refuse", at=5, batch=5) is None
        True
        >>> plan_resize(Layout(2, 33, 1, 60), world_size=4, micro_batch=33, rule="accumulate", at=5, batch=5)
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: resume.world_size: the checkpoint at update 5 has a global batch of 66 samples (2 ranks x 33), which 4 ranks cannot split evenly; resume with a world size that divides it (1, 2, 3, 6, 11, 22, 33, 66), or set resume.world_size = linear or sqrt
    """
    if world_size == before.world_size:
        return None
    if rule == "accumulate":
        if before.global_batch % world_size:
            raise _refuse(before, world_size, at, rule)
        per_rank = before.global_batch // world_size
        after = dataclasses.replace(
            before,
            world_size=world_size,
            batch_size=per_rank,
            accumulate=split_micro(per_rank, micro_batch),
            bound_world_size=before.bound_at,
            resized=True,
        )
        return Resize(rule, at, before, after, 1.0, 1.0, batch, 0)
    if rule in ("linear", "sqrt"):
        new_batch = before.batch_size * world_size
        ratio = new_batch / before.global_batch
        factor = ratio if rule == "linear" else math.sqrt(ratio)
        remaining = max(0, before.total - at)
        total = at + -(-remaining * before.global_batch // new_batch)
        consumed = batch * before.global_batch
        index = -(-consumed // new_batch)
        after = dataclasses.replace(
            before, world_size=world_size, total=total, bound_world_size=before.bound_at, resized=True
        )
        return Resize(rule, at, before, after, ratio, factor, index, index * new_batch - consumed)
    raise _refuse(before, world_size, at, "refuse")
