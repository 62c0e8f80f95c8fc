"""Join: run schedules one after another, each from its own step 0.

With boundaries ``b_1 < ... < b_{n-1}`` (and ``b_0 = 0``), piece ``j`` is active on ``[b_j, b_{j+1})``
and is evaluated at the local step ``t - b_j``; the last piece runs forever. Every piece is any
schedule, including another join, so a warmup, a plateau and a decay compose without new classes.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules.base import (
    CycleInfo,
    FloatArray,
    Schedule,
    as_number,
    check_step,
    from_dict,
    register,
)
from cosanneal.schedules.baselines import bind_points, parse_points, unbound_points

J = TypeVar("J", bound="Join")

#: A boundary is a restart when the LR rises across it by more than this fraction.
JUMP_RTOL = 1e-9


@register("join")
@dataclasses.dataclass(frozen=True)
class Join(Schedule):
    """Schedules run back to back: piece ``j`` is active from boundary ``j - 1`` and restarts at step 0.

    Formula: with ``b_0 = 0`` and ``b_j = boundaries[j - 1]``, ``lr(t) = schedules[j](t - b_j)`` for
    ``b_j <= t < b_{j+1}`` (the last piece for every ``t >= b_{n-1}``). PyTorch equivalent:
    ``SequentialLR(optimizer, schedulers, milestones=boundaries)``, without its recursive drift.

    Boundaries may be durations (``"2ep"``, ``"0.05dur"``); :meth:`bind` resolves them and every piece's
    own durations with the same ``total_steps`` and ``steps_per_epoch`` (a piece's ``"0.5dur"`` is half
    of the whole run, not of its span).

    Introspection follows the active piece: :meth:`phase` is the piece's phase; :meth:`cycle` is the
    piece's cycle moved to absolute steps, cut at the next boundary and numbered on from the cycles of
    the earlier pieces (each piece starts a new cycle); :meth:`restarts` holds the pieces' restarts and
    every boundary where the LR rises (by more than ``JUMP_RTOL`` relative).

    Args:
        schedules: one or more schedules (from :func:`from_dict`: mappings with a ``kind`` key).
        boundaries: ``len(schedules) - 1`` strictly increasing steps ``> 0`` (numbers or durations).

    Example:
        >>> from cosanneal.schedules.baselines import Linear, Step
        >>> s = Join([Linear(0.0, 0.1, total_steps=100), Step(0.1, step_size=1000, gamma=0.5)], [100])
        >>> s(50), s(100), s(1099), s(1100), s.phase(50), s.phase(500)
        (0.05, 0.1, 0.1, 0.05, 'warmup', 'anneal')
        >>> s.cycle(500)
        CycleInfo(index=1, start=100, length=inf)
    """

    schedules: tuple[Schedule, ...]
    boundaries: tuple[float | str, ...] = ()

    def __post_init__(self) -> None:
        pieces = self.schedules
        if isinstance(pieces, (str, bytes, Mapping)) or not isinstance(pieces, Sequence) or not pieces:
            raise ScheduleError(f"schedules must be a non-empty list of schedules, got {pieces!r}")
        for i, piece in enumerate(pieces):
            if not isinstance(piece, Schedule):
                raise ScheduleError(f"schedules[{i}] must be a schedule, got {piece!r}")
        object.__setattr__(self, "schedules", tuple(pieces))
        bounds = parse_points("boundaries", self.boundaries, allow_empty=True)
        if len(bounds) != len(pieces) - 1:
            raise ScheduleError(
                f"boundaries must hold len(schedules) - 1 = {len(pieces) - 1} steps, got {len(bounds)}"
            )
        object.__setattr__(self, "boundaries", bounds)

    @classmethod
    def from_fields(cls: type[J], fields: Mapping[str, Any]) -> J:
        """Build from a parameter mapping whose pieces may be mappings with a ``kind`` key.

        Example:
            >>> s = Join.from_fields({"schedules": [{"kind": "constant", "lr": 0.1}], "boundaries": []})
            >>> s(5)
            0.1
        """
        pieces = fields.get("schedules")
        if isinstance(pieces, Sequence) and not isinstance(pieces, (str, bytes)):
            built: list[Any] = []
            for i, piece in enumerate(pieces):
                if isinstance(piece, Mapping):
                    try:
                        piece = from_dict(piece)
                    except ScheduleError as exc:
                        raise ScheduleError(f"schedules[{i}]: {exc}") from exc
                built.append(piece)
            fields = {**fields, "schedules": built}
        return super().from_fields(fields)

    # ---- durations --------------------------------------------------------------------------
    def unbound_fields(self) -> dict[str, str]:
        """Boundaries (``boundaries[i]``) and piece parameters (``schedules[j].name``) not in steps yet."""
        out = unbound_points("boundaries", self.boundaries)
        for j, piece in enumerate(self.schedules):
            out.update({f"schedules[{j}].{name}": value for name, value in piece.unbound_fields().items()})
        return out

    def bind(
        self: J,
        total_steps: float | None = None,
        steps_per_epoch: float | None = None,
        *,
        samples_per_update: float | None = None,
        tokens_per_update: float | None = None,
    ) -> J:
        """Return this join with its boundaries and every piece's durations resolved to steps.

        Every keyword is passed on to each piece (see :meth:`Schedule.bind`).

        Example:
            >>> from cosanneal.schedules.baselines import Constant, Linear
            >>> s = Join([Linear(0.0, 1.0, "1ep"), Constant(1.0)], ["1ep"]).bind(steps_per_epoch=10)
            >>> s.boundaries, s.schedules[0].total_steps
            ((10,), 10)
        """
        units = {"samples_per_update": samples_per_update, "tokens_per_update": tokens_per_update}
        pieces = tuple(
            p.bind(total_steps=total_steps, steps_per_epoch=steps_per_epoch, **units) for p in self.schedules
        )
        bounds = bind_points(
            "boundaries", self.boundaries, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **units
        )
        if bounds == self.boundaries and all(a is b for a, b in zip(pieces, self.schedules, strict=True)):
            return self
        return dataclasses.replace(self, schedules=pieces, boundaries=bounds)

    # ---- evaluation -------------------------------------------------------------------------
    @functools.cached_property
    def _start_list(self) -> list[float]:
        return [0.0, *(float(b) for b in self.boundaries)]

    def _starts(self) -> list[float]:
        """``b_0 = 0, b_1, ..., b_{n-1}``: the first step of every piece (boundaries must be bound)."""
        return self._start_list

    def _locate(self, t: float) -> tuple[int, float]:
        """Index of the piece active at ``t`` and its first step."""
        starts = self._starts()
        j = bisect.bisect_right(starts, t) - 1
        return j, starts[j]

    def _scalar(self, t: float) -> float:
        j, start = self._locate(t)
        return self.schedules[j]._scalar(t - start)

    def _vector(self, t: FloatArray) -> FloatArray:
        starts = self._starts()
        if len(starts) == 1:
            return self.schedules[0]._vector(t.copy())
        which = np.searchsorted(np.asarray(starts[1:]), t, side="right")
        out = np.empty(t.shape, dtype=np.float64)
        for j, (piece, start) in enumerate(zip(self.schedules, starts, strict=True)):
            mask = which == j
            if mask.any():
                out[mask] = piece._vector(t[mask] - start)
        return out

    # ---- introspection ----------------------------------------------------------------------
    @property
    def peak(self) -> float:
        """The largest of the pieces' peaks."""
        return max(piece.peak for piece in self.schedules)

    @property
    def horizon(self) -> float | None:
        """Last boundary plus the last piece's horizon, or ``None`` if the last piece never settles."""
        self.require_bound()
        last = self.schedules[-1].horizon
        if last is None:
            return None
        start = self._starts()[-1]
        end = start + last
        while end - start < last:  # the local step of every t >= end must reach the piece's horizon
            end = math.nextafter(end, math.inf)
        return end

    def phase(self, t: float) -> str:
        """The active piece's phase at its local step."""
        self.require_bound()
        j, start = self._locate(check_step(t))
        return self.schedules[j].phase(t - start)

    def _span(self, j: int) -> float:
        """Length of piece ``j``'s active span (inf for the last piece)."""
        starts = self._starts()
        return starts[j + 1] - starts[j] if j + 1 < len(starts) else math.inf

    def cycle(self, t: float) -> CycleInfo:
        """The active piece's cycle, in absolute steps, cut at the next boundary, numbered on.

        Example:
            >>> from cosanneal.schedules.baselines import Constant
            >>> from cosanneal.schedules.cosine import Cosine
            >>> s = Join([Cosine(1.0, cycle_steps=10, max_cycles=2), Constant(0.5)], [30])
            >>> s.cycle(5), s.cycle(25), s.cycle(40)
            (CycleInfo(index=0, start=0, length=10), CycleInfo(index=2, start=20, length=10), \
CycleInfo(index=3, start=30, length=inf))
        """
        self.require_bound()
        j, start = self._locate(check_step(t))
        offset = sum(self.schedules[i].cycle(math.nextafter(self._span(i), 0.0)).index + 1 for i in range(j))
        local = self.schedules[j].cycle(t - start)
        begin = start + float(local.start)
        end = min(begin + float(local.length), start + self._span(j))
        return CycleInfo(offset + local.index, as_number(begin), as_number(end - begin))

    def restarts(self, until: float) -> list[int | float]:
        """The pieces' restarts inside their spans and every boundary where the LR rises.

        Example:
            >>> from cosanneal.schedules.baselines import Constant, Linear
            >>> Join([Linear(1.0, 0.0, 10), Constant(0.0), Constant(0.5)], [10, 20]).restarts(100)
            [20]
        """
        self.require_bound()
        starts = self._starts()
        out: list[float] = []
        for j, (piece, start) in enumerate(zip(self.schedules, starts, strict=True)):
            if start >= until:
                break
            if j and self._rises(j):
                out.append(start)
            local_until = min(self._span(j), until - start)
            out.extend(start + float(r) for r in piece.restarts(local_until))
        return [as_number(r) for r in sorted(set(out)) if r < until]

    def _rises(self, j: int) -> bool:
        """True when the LR jumps up at the boundary where piece ``j >= 1`` starts."""
        before = self.schedules[j - 1]._scalar(math.nextafter(self._span(j - 1), 0.0))
        after = self.schedules[j]._scalar(0.0)
        return after > before + JUMP_RTOL * max(abs(before), abs(after))
