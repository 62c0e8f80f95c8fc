r"""Verify an LR trace against its schedule: did the job use the LR it was configured for.

With ``y(t)`` the logged LR at update ``t`` and ``e(t) = scale * schedule(t)`` the expected one, a step
mismatches when

.. math:: |y(t) - e(t)| > \mathrm{tol} \cdot \max(|e(t)|,\ 10^{-3} \max_t |e(t)|)

(relative error, measured against at least 0.1 % of the largest expected LR so values near zero do not
blow it up). The verdict reports the largest absolute and relative errors, the first mismatching steps,
and the diagnoses of :mod:`cosanneal.analysis.diagnose` when the mismatch has a known shape.

The LR logged for update ``t`` is the one the optimizer used for that update: read
``optimizer.param_groups[g]["lr"]`` before ``optimizer.step()``, as cosanneal's telemetry does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.analysis.diagnose import Diagnosis, Fitter, diagnose
from cosanneal.errors import ScheduleError

__all__ = ["Mismatch", "Verdict", "verify"]

_FIRST = 5


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
        matches: Every step within tolerance.
        steps: Number of steps compared.
        mismatched: Number of steps out of tolerance.
        max_abs_error: ``max |y - e|`` (NaN when the trace holds a NaN).
        max_rel_error: ``max |y - e| / max(|e|, 1e-3 max|e|)``.
        worst_step: Step of the largest relative error.
        first_mismatches: The first few mismatching steps.
        tolerance: The relative tolerance used.
        diagnoses: Known mistakes the trace's shape points to (empty when it matches).
    """

    matches: bool
    steps: int
    mismatched: int
    max_abs_error: float
    max_rel_error: float
    worst_step: int | None
    first_mismatches: list[Mismatch]
    tolerance: float
    diagnoses: list[Diagnosis]

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
) -> Verdict:
    """Compare the LR a job logged with ``scale * schedule`` and explain any difference.

    Args:
        trace_steps: Update indices (whole numbers >= 0), one per logged LR.
        trace_lrs: The LR used at each of those updates.
        schedule: A bound :class:`cosanneal.Schedule`.
        tolerance: Relative tolerance (see the module formula); float32 logs need about ``1.2e-7``.
        scale: Factor of the schedule for this param group (the group's base LR over the peak).
        steps_per_epoch: Updates per epoch, if known (reported next to a per-epoch staircase).

    Returns:
        The :class:`Verdict`.

    Raises:
        ScheduleError: empty or mis-shaped trace, negative steps, or a tolerance that is not >= 0.

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
    """
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
    matches = not bool(np.any(bad))
    return Verdict(
        matches=matches,
        steps=len(steps),
        mismatched=int(np.count_nonzero(bad)),
        max_abs_error=math.nan if nan else float(np.max(err)),
        max_rel_error=math.nan if nan else float(np.max(rel)),
        worst_step=worst,
        first_mismatches=first,
        tolerance=float(tolerance),
        diagnoses=[] if matches else diagnose(fit, bad, steps_per_epoch),
    )


def format_verdict(verdict: Verdict, source: str = "") -> str:
    """The verdict as plain text for a terminal (what ``cosanneal verify`` prints).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=4)
        >>> print(format_verdict(verify([0, 1, 2], [1.0, 0.8535533905932737, 0.5], s)))
        MATCH: 3 steps within tolerance 1e-09
        max abs error 0, max rel error 0
    """
    head = f"{source}: " if source else ""
    lines = []
    if verdict.matches:
        lines.append(f"{head}MATCH: {verdict.steps} steps within tolerance {verdict.tolerance:g}")
    else:
        lines.append(
            f"{head}MISMATCH: {verdict.mismatched} of {verdict.steps} steps differ by more than tolerance "
            f"{verdict.tolerance:g}"
        )
    lines.append(f"max abs error {verdict.max_abs_error:.3g}, max rel error {verdict.max_rel_error:.3g}")
    if verdict.first_mismatches:
        lines.append("first mismatching steps:")
        lines.extend(
            f"  step {m.step}: lr {m.lr:.9g}, expected {m.expected:.9g}" for m in verdict.first_mismatches
        )
    if not verdict.matches and not verdict.diagnoses:
        lines.append("diagnosis: no known shape; plot both curves with `cosanneal report`")
    for d in verdict.diagnoses:
        lines.append(f"diagnosis [{d.code}]: {d.title}")
        lines.append(f"  {d.explanation}")
        lines.append(f"  fix: {d.fix}")
    return "\n".join(lines)
