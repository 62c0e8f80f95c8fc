r"""Verify an LR trace against its schedule: did the job use the LR it was configured for.

With ``y(t)`` the logged LR at update ``t`` and ``e(t) = scale * schedule(t)`` the expected one, a step
mismatches when

.. math:: |y(t) - e(t)| > \mathrm{tol} \cdot \max(|e(t)|,\ 10^{-3} \max_t |e(t)|)

(relative error, measured against at least 0.1 % of the largest expected LR so values near zero do not
blow it up). The verdict reports the largest absolute and relative errors, the first mismatching steps,
and the diagnoses of :mod:`cosanneal.analysis.diagnose` when the mismatch has a known shape.

The LR logged for update ``t`` is the one the optimizer used for that update: read
``optimizer.param_groups[g]["lr"]`` just before ``optimizer.step()``, as cosanneal's telemetry does
(``lr_read="before-optimizer-step"``). A trace read after ``scheduler.step()`` is compared the same way;
``lr_read="after-scheduler-step"`` only changes what a trace one step ahead is diagnosed as.

A trace must also be *complete*: every logged step from the run's first update (``first_step``) to the
last one recorded (or ``last_step``, when the run's end is known), every ``stride`` updates. Missing
steps make the verdict ``"incomplete"`` (never ``"match"``); the rows present are still compared, and a
mismatch among them makes it ``"mismatch"``. See :func:`find_gaps`.

A run resumed at another world size with ``resume.world_size = "linear"`` or ``"sqrt"`` changed its LR
on purpose; its ``world_size_changed`` events say where and how, and :func:`apply_world_size_changes`
rebuilds the schedule the run followed from them (each a
:class:`~cosanneal.schedules.rebatch.Rebatch`: from update ``d`` on, ``f * s(d + (u - d) r)``). An LR
changed without such an event still mismatches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.analysis.diagnose import LR_READS, Diagnosis, Fitter, diagnose
from cosanneal.errors import ScheduleError
from cosanneal.schedules.replan import apply_changes

__all__ = ["Gaps", "Mismatch", "Verdict", "apply_world_size_changes", "find_gaps", "format_gaps", "verify"]

_FIRST = 5
_RANGES_SHOWN = 10


@dataclasses.dataclass(frozen=True)
class Gaps:
    """The steps a trace should hold and does not (see :func:`find_gaps`).

    Attributes:
        stride: Updates between two logged steps (given, or the most common difference in the trace).
        expected: Number of steps the trace should hold from its first expected step to its last one.
        missing: Number of those steps absent.
        ranges: The absent steps as ``(first, last)`` pairs, ``stride`` apart inside a pair, in order.
    """

    stride: int
    expected: int
    missing: int
    ranges: list[tuple[int, int]]


def _common_stride(steps: npt.NDArray[np.int64]) -> int:
    """The most common difference between consecutive steps (the smallest among ties), at least 1."""
    diffs = np.diff(steps)
    if not len(diffs):
        return 1
    values, counts = np.unique(diffs, return_counts=True)
    return max(1, int(values[int(np.argmax(counts))]))


def find_gaps(
    steps: npt.ArrayLike,
    *,
    stride: int | None = None,
    first_step: int | None = 0,
    last_step: int | None = None,
) -> Gaps:
    """The steps missing from a trace: holes inside it, before its first row and after its last.

    With a known ``stride`` (cosanneal's telemetry records every ``stride``-th update, ``step % stride ==
    0``) the expected steps are ``first_step, first_step + stride, ...``. Without one, the stride is the
    most common difference between consecutive steps, and the first row may lie anywhere up to one
    stride after ``first_step`` (a log written every 10 updates may start at 0 or at 10).

    Args:
        steps: The logged steps (whole numbers).
        stride: Updates between logged steps, if known.
        first_step: The run's first update (0 for a run that started from scratch); ``None`` starts at the
            first logged step (nothing is missing before it).
        last_step: The run's last update, if known (a finished run's store records it); else the last
            logged step.

    Returns:
        The :class:`Gaps`.

    Example:
        >>> g = find_gaps(range(12, 66))  # a run of 66 updates that lost its first 12 rows
        >>> g.ranges, g.missing, g.expected
        ([(0, 11)], 12, 66)
        >>> find_gaps([0, 10, 20, 50, 60], last_step=79).ranges  # every 10 updates, inferred
        [(30, 40), (70, 70)]
        >>> find_gaps([10, 20, 30]).missing  # a log every 10 updates may start at 10
        0
    """
    s = np.unique(np.asarray(steps, dtype=np.int64).reshape(-1))
    if not len(s):
        return Gaps(stride or 1, 0, 0, [])
    exact = stride is not None
    d = int(stride) if stride is not None else _common_stride(s)
    if d < 1:
        raise ScheduleError(f"stride must be an integer >= 1, got {stride!r}")
    start = int(s[0]) if first_step is None else int(first_step)
    first = int(s[0])
    if exact or d == 1 or first < start:
        g0 = start
    else:
        g0 = first if first - start <= d else start + (first - start) % d
    on = s[(s >= g0) & ((s - g0) % d == 0)]
    end = int(on[-1]) if len(on) else g0 - d
    if last_step is not None and last_step >= g0:
        end = max(end, g0 + (int(last_step) - g0) // d * d)
    if end < g0:
        return Gaps(d, 0, 0, [])
    on = on[on <= end]
    bounds = np.concatenate(([g0 - d], on, [end + d]))
    jumps = np.flatnonzero(np.diff(bounds) > d)
    ranges = [(int(bounds[j]) + d, int(bounds[j + 1]) - d) for j in jumps.tolist()]
    missing = sum((b - a) // d + 1 for a, b in ranges)
    return Gaps(d, (end - g0) // d + 1, missing, ranges)


def format_gaps(gaps: Gaps) -> str:
    """The missing steps in words: ``"missing updates 0-11 (12 of 66)"``.

    Example:
        >>> format_gaps(find_gaps([0, 1, 5, 6, 7, 9], last_step=9))
        'missing updates 2-4, 8 (4 of 10)'
        >>> format_gaps(find_gaps([0, 20, 30], stride=10, last_step=50))
        'missing updates 10, 40-50 every 10 (3 of 6 rows logged every 10 updates)'
    """
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in gaps.ranges[:_RANGES_SHOWN]]
    more = len(gaps.ranges) - _RANGES_SHOWN
    text = ", ".join(shown) + (f" and {more} more ranges" if more > 0 else "")
    if gaps.stride == 1:
        return f"missing updates {text} ({gaps.missing} of {gaps.expected})"
    return (
        f"missing updates {text} every {gaps.stride} "
        f"({gaps.missing} of {gaps.expected} rows logged every {gaps.stride} updates)"
    )


def apply_world_size_changes(schedule: Any, events: Sequence[Mapping[str, Any]]) -> Any:
    """The schedule a run followed after the ``world_size_changed`` events it recorded, in step order.

    An event with ``ratio = r`` and ``lr_factor = f`` at step ``d`` makes the LR from update ``d`` on
    ``f * schedule(d + (u - d) r)``; an event with ``r = f = 1`` (``accumulate``) changes nothing.

    Args:
        schedule: the run's configured (bound) schedule.
        events: the run's events (any kinds; only ``world_size_changed`` ones are used).

    Raises:
        ScheduleError: an event's ``ratio`` or ``lr_factor`` is not a number > 0.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> e = {"kind": "world_size_changed", "step": 40, "ratio": 0.5, "lr_factor": 0.5}
        >>> changed = apply_world_size_changes(s, [e])
        >>> changed(39) == s(39), changed(60) == 0.5 * s(50)
        (True, True)
    """
    resizes = [e for e in events if e.get("kind", "world_size_changed") == "world_size_changed"]
    return apply_changes(schedule, [{**e, "kind": "world_size_changed"} for e in resizes])


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One mismatching step: the logged LR and the expected one."""

    step: int
    lr: float
    expected: float


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`.

    Attributes:
        matches: The trace is complete and every step is within tolerance (``status == "match"``).
        status: ``"match"``; ``"mismatch"`` (a step present is out of tolerance, whether or not steps are
            missing); ``"incomplete"`` (steps are missing and every step present is within tolerance).
        values_match: Every step present is within tolerance.
        steps: Number of steps compared.
        mismatched: Number of steps out of tolerance.
        max_abs_error: ``max |y - e|`` (NaN when the trace holds a NaN).
        max_rel_error: ``max |y - e| / max(|e|, 1e-3 max|e|)``.
        worst_step: Step of the largest relative error.
        first_mismatches: The first few mismatching steps.
        tolerance: The relative tolerance used.
        diagnoses: Known mistakes the trace's shape points to (empty when the values match).
        gaps: The steps missing from the trace (:func:`find_gaps`).
        lr_read: How the LR was read (one of :data:`cosanneal.analysis.diagnose.LR_READS`).
    """

    matches: bool
    status: str
    values_match: bool
    steps: int
    mismatched: int
    max_abs_error: float
    max_rel_error: float
    worst_step: int | None
    first_mismatches: list[Mismatch]
    tolerance: float
    diagnoses: list[Diagnosis]
    gaps: Gaps
    lr_read: str = "before-optimizer-step"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN errors become ``None``)."""
        out = dataclasses.asdict(self)
        for key in ("max_abs_error", "max_rel_error"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out

    def codes(self) -> list[str]:
        """The diagnosis codes, in order."""
        return [d.code for d in self.diagnoses]


def verify(
    trace_steps: npt.ArrayLike,
    trace_lrs: npt.ArrayLike,
    schedule: Any,
    tolerance: float = 1e-9,
    *,
    scale: float = 1.0,
    steps_per_epoch: float | None = None,
    lr_read: str = "before-optimizer-step",
    stride: int | None = None,
    first_step: int | None = 0,
    last_step: int | None = None,
) -> Verdict:
    """Compare the LR a job logged with ``scale * schedule``, check no step is missing, explain any difference.

    Args:
        trace_steps: Update indices (whole numbers >= 0), one per logged LR.
        trace_lrs: The LR used at each of those updates.
        schedule: A bound :class:`cosanneal.Schedule`.
        tolerance: Relative tolerance (see the module formula); float32 logs need about ``1.2e-7``.
        scale: Factor of the schedule for this param group (the group's base LR over the peak).
        steps_per_epoch: Updates per epoch, if known (reported next to a per-epoch staircase; it tells a
            cycle length given in epochs from a scheduler stepped that many times per update).
        lr_read: How the trace's LR was read: ``"before-optimizer-step"`` (the default, what cosanneal's
            telemetry records) or ``"after-scheduler-step"``. A trace one step ahead is a scheduler stepped
            before ``optimizer.step()`` in the first case, a logging offset in the second.
        stride: Updates between logged steps, if known (default: the most common difference).
        first_step: The run's first update (default 0); ``None``: do not check the start.
        last_step: The run's last update, if known (default: the last logged step).

    Returns:
        The :class:`Verdict`.

    Raises:
        ScheduleError: empty or mis-shaped trace, negative steps, a tolerance that is not >= 0, or an
            unknown ``lr_read``.

    Example:
        >>> import numpy as np
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, cycle_steps=100)
        >>> t = np.arange(100)
        >>> verify(t, s(t), s).matches
        True
        >>> v = verify(t, s(t // 10), s)  # stepped once per epoch of 10 updates
        >>> v.matches, v.codes(), v.diagnoses[0].evidence["plateau_steps"]
        (False, ['per-epoch'], 10)
        >>> v = verify(t[12:], s(t[12:]), s)  # the first 12 rows were lost
        >>> v.status, v.values_match, v.gaps.ranges
        ('incomplete', True, [(0, 11)])
    """
    if lr_read not in LR_READS:
        raise ScheduleError(f"lr_read must be one of {', '.join(LR_READS)}, got {lr_read!r}")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ScheduleError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    steps = np.asarray(trace_steps, dtype=np.float64).reshape(-1)
    lrs = np.asarray(trace_lrs, dtype=np.float64).reshape(-1)
    if steps.shape != lrs.shape:
        raise ScheduleError(
            f"trace_steps and trace_lrs must have the same length, got {len(steps)} and {len(lrs)}"
        )
    if len(steps) == 0:
        raise ScheduleError("the trace is empty: no (step, lr) pairs to verify")
    if not np.all(np.isfinite(steps)) or np.any(steps < 0):
        raise ScheduleError("trace_steps must be finite and >= 0")
    order = np.argsort(steps, kind="stable")
    steps, lrs = steps[order], lrs[order]
    fit = Fitter(steps, lrs, schedule, float(tolerance), scale)
    bad = fit.bad(fit.e)
    err = np.abs(lrs - fit.e)
    rel = err / fit.denominator(fit.e)
    nan = bool(np.any(np.isnan(err)))
    worst = None
    if len(rel):
        rel_for_argmax = np.where(np.isnan(rel), np.inf, rel)
        worst = int(steps[int(np.argmax(rel_for_argmax))])
    first = [
        Mismatch(int(steps[i]), float(lrs[i]), float(fit.e[i])) for i in np.flatnonzero(bad)[:_FIRST].tolist()
    ]
    values_match = not bool(np.any(bad))
    gaps = find_gaps(steps, stride=stride, first_step=first_step, last_step=last_step)
    status = "mismatch" if not values_match else "incomplete" if gaps.missing else "match"
    return Verdict(
        matches=status == "match",
        status=status,
        values_match=values_match,
        steps=len(steps),
        mismatched=int(np.count_nonzero(bad)),
        max_abs_error=math.nan if nan else float(np.max(err)),
        max_rel_error=math.nan if nan else float(np.max(rel)),
        worst_step=worst,
        first_mismatches=first,
        tolerance=float(tolerance),
        diagnoses=[] if values_match else diagnose(fit, bad, steps_per_epoch, lr_read),
        gaps=gaps,
        lr_read=lr_read,
    )


def format_verdict(verdict: Verdict, source: str = "") -> str:
    """The verdict as plain text for a terminal (what ``cosanneal verify`` prints).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=4)
        >>> print(format_verdict(verify([0, 1, 2], [1.0, 0.8535533905932737, 0.5], s)))
        MATCH: 3 steps within tolerance 1e-09
        max abs error 0, max rel error 0
        >>> print(format_verdict(verify([2, 3], [0.5, 0.14644660940672627], s)))
        INCOMPLETE: missing updates 0-1 (2 of 4); the 2 steps present are within tolerance 1e-09
        max abs error 0, max rel error 0
    """
    head = f"{source}: " if source else ""
    lines = []
    if verdict.status == "match":
        lines.append(f"{head}MATCH: {verdict.steps} steps within tolerance {verdict.tolerance:g}")
    elif verdict.status == "incomplete":
        lines.append(
            f"{head}INCOMPLETE: {format_gaps(verdict.gaps)}; the {verdict.steps} steps present are within "
            f"tolerance {verdict.tolerance:g}"
        )
    else:
        lines.append(
            f"{head}MISMATCH: {verdict.mismatched} of {verdict.steps} steps differ by more than tolerance "
            f"{verdict.tolerance:g}"
        )
        if verdict.gaps.missing:
            lines.append(f"incomplete too: {format_gaps(verdict.gaps)}")
    lines.append(f"max abs error {verdict.max_abs_error:.3g}, max rel error {verdict.max_rel_error:.3g}")
    if verdict.first_mismatches:
        lines.append("first mismatching steps:")
        lines.extend(
            f"  step {m.step}: lr {m.lr:.9g}, expected {m.expected:.9g}" for m in verdict.first_mismatches
        )
    if not verdict.values_match and not verdict.diagnoses:
        lines.append("diagnosis: no known shape; plot both curves with `cosanneal report`")
    for d in verdict.diagnoses:
        lines.append(f"diagnosis [{d.code}]: {d.title}")
        lines.append(f"  {d.explanation}")
        lines.append(f"  fix: {d.fix}")
    return "\n".join(lines)
