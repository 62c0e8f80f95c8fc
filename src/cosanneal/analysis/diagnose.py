r"""Explain why an LR trace differs from its schedule: known mistakes, each recognised by its shape.

Every detector states a hypothesis as a curve and checks the trace against it with the same tolerance
as :func:`cosanneal.analysis.verify` (a *fit*), or, when no exact curve can be built, recognises the
shape alone (a *heuristic*). Fits win: when any hypothesis fits, only the fitting diagnoses are given.

=====================  =====================================================================
code                   hypothesis (``s`` the schedule, ``y`` the trace)
=====================  =====================================================================
``never-stepped``      ``y(t) = y(0)`` for all ``t``
``per-epoch``          ``y(t) = s(floor(t / E))``, plateaus of ``E`` updates
``compressed``         ``y(t) = s(k t)`` for an integer ``k >= 2``
``off-by-one``         ``y(t) = s(t + 1)`` or ``s(t - 1)``
``cycle-length``       ``y = s`` with another ``cycle_steps`` ``T``
``restarts``           restart steps differ (``y = s`` with another ``cycle_steps``/``cycle_mult``)
``warmup-handoff``     ``y = s`` with the other ``warmup_prefix`` (timm)
``resume-jump``        ``y = s`` up to step ``r``, then ``s(t - r)`` (restarted) or constant (stuck)
``past-horizon``       ``y = s`` up to the end, then climbing back up
=====================  =====================================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError

__all__ = ["Diagnosis", "Fitter", "diagnose", "plateau_length", "restart_steps"]

FloatArray = npt.NDArray[np.float64]
_MAX_K = 64
_SHOW = 8


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """One explanation of a mismatch.

    Attributes:
        code: Stable identifier (``"per-epoch"``, ``"compressed"``...; see the module table).
        title: One-line summary.
        explanation: What the trace shows and what caused it.
        fix: How to fix the training code or the configuration.
        evidence: The numbers found (fitted values, steps), JSON-ready.
        fitted: ``True`` when a curve built from the hypothesis matches the trace within tolerance.
    """

    code: str
    title: str
    explanation: str
    fix: str
    evidence: dict[str, Any]
    fitted: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The diagnosis as a JSON-ready dict."""
        return dataclasses.asdict(self)


class Fitter:
    """A trace, its schedule and the tolerance test shared by :func:`verify` and the detectors.

    A step mismatches when ``|y - e| > tol * max(|e|, 1e-3 * ref)``, with ``ref`` the largest
    expected LR over the trace (so LRs near zero are compared against 0.1 % of the peak, not 0).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=10)
        >>> f = Fitter(np.arange(10), s(np.arange(10) * 2), s, 1e-9)  # a trace stepped twice per update
        >>> f.fits(f.e), f.fits_at(lambda t: s(2 * t))
        (False, True)
    """

    def __init__(
        self, steps: npt.ArrayLike, lrs: npt.ArrayLike, schedule: Any, tolerance: float, scale: float = 1.0
    ):
        self.t = np.asarray(steps, dtype=np.float64)
        self.y = np.asarray(lrs, dtype=np.float64)
        self.schedule, self.tolerance, self.scale = schedule, tolerance, scale
        self.e = self.curve(schedule, self.t)
        finite = self.e[np.isfinite(self.e)]
        self.ref = float(np.max(np.abs(finite))) if finite.size else 0.0
        if self.ref == 0.0:
            self.ref = float(np.nanmax(np.abs(self.y))) if np.any(np.isfinite(self.y)) else 1.0

    def curve(self, schedule: Any, t: FloatArray) -> FloatArray:
        """``scale * schedule(t)`` (steps clipped at 0)."""
        return np.asarray(schedule(np.maximum(t, 0.0)), dtype=np.float64) * self.scale

    def denominator(self, expected: FloatArray) -> FloatArray:
        """The per-step scale errors are measured against."""
        return np.maximum(np.abs(expected), 1e-3 * self.ref)

    def bad(self, expected: FloatArray, y: FloatArray | None = None) -> npt.NDArray[np.bool_]:
        """Mask of mismatching steps (a NaN anywhere mismatches)."""
        y = self.y if y is None else y
        err = np.abs(y - expected)
        ok = err <= self.tolerance * self.denominator(expected)
        return ~ok

    def fits(self, expected: FloatArray, sl: slice | npt.NDArray[np.int64] = slice(None)) -> bool:
        """Whether the trace (or its part ``sl``) matches ``expected`` (same part) everywhere."""
        y = self.y[sl]
        return bool(len(y)) and not bool(np.any(self.bad(expected, y)))

    def fits_schedule(self, schedule: Any) -> bool:
        """Whether the trace matches another schedule."""
        return self.fits_at(lambda t: self.curve(schedule, t))

    def fits_at(self, expected: Callable[[FloatArray], FloatArray]) -> bool:
        """Whether the trace matches ``expected(t)``; a sample of steps is checked first (cheap rejection)."""
        if len(self.t) > 64:
            sample = self.sample()
            if not self.fits(expected(self.t[sample]), sample):
                return False
        return self.fits(expected(self.t))

    def sample(self) -> npt.NDArray[np.int64]:
        """Indices of a few steps (the first 8 and 32 spread over the trace) for cheap rejections."""
        n = len(self.t)
        return np.unique(
            np.concatenate((np.arange(min(n, 8)), np.linspace(0, n - 1, min(n, 32)).astype(np.int64)))
        )

    def constant(self, values: FloatArray) -> bool:
        """Whether every value equals the first within tolerance."""
        if not len(values) or not np.all(np.isfinite(values)):
            return False
        return bool(
            np.all(np.abs(values - values[0]) <= self.tolerance * max(abs(values[0]), 1e-3 * self.ref))
        )


def plateau_length(values: FloatArray, tolerance: float, ref: float) -> int | None:
    """The common length of the runs of equal consecutive values (a staircase), or ``None``.

    The first and last runs may be cut by the trace's ends and are ignored when there are enough
    interior runs; at least 80 % of the runs considered must share the length.

    Example:
        >>> plateau_length(np.repeat([1.0, 0.8, 0.5, 0.2, 0.1], 4)[1:], 1e-9, 1.0)
        4
    """
    if len(values) < 4:
        return None
    step = np.abs(np.diff(values)) > tolerance * np.maximum(np.abs(values[1:]), 1e-3 * ref)
    edges = np.flatnonzero(step) + 1
    bounds = np.concatenate(([0], edges, [len(values)]))
    runs = np.diff(bounds)
    interior = runs[1:-1] if len(runs) >= 4 else runs[:-1]
    if len(interior) < 2:
        return None
    lengths, counts = np.unique(interior, return_counts=True)
    best = int(lengths[np.argmax(counts)])
    if best < 2 or counts.max() < 0.8 * len(interior):
        return None
    return best


def restart_steps(steps: FloatArray, values: FloatArray, ref: float) -> list[int]:
    """Steps where a decaying LR turns back up by more than 10 % of ``ref`` (a restart).

    Example:
        >>> y = np.array([1.0, 0.5, 0.1, 1.0, 0.5, 0.1, 1.0])
        >>> restart_steps(np.arange(7.0), y, 1.0)
        [3, 6]
    """
    out: list[int] = []
    n = len(values)
    j = 2
    while j < n:
        if values[j] > values[j - 1] and values[j - 1] <= values[j - 2]:
            k = j
            while k + 1 < n and values[k + 1] >= values[k]:
                k += 1
            if values[k] - values[j - 1] > 0.1 * ref:
                out.append(int(steps[j]))
            j = k + 1
        else:
            j += 1
    return out


def _show(values: Any) -> str:
    items = [f"{v:.6g}" if isinstance(v, float) else str(v) for v in values]
    return "[" + ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "") + "]"


def _replaced(schedule: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that returns ``None`` when the changed schedule is invalid."""
    try:
        return dataclasses.replace(schedule, **changes)
    except (CosannealError, TypeError, ValueError):
        return None


def _is_cosine(schedule: Any) -> bool:
    return getattr(schedule, "kind", None) == "cosine"


# ---- detectors: each returns a Diagnosis or None -------------------------------------------------
def _never_stepped(f: Fitter) -> Diagnosis | None:
    if len(f.y) < 2 or not f.constant(f.y) or f.constant(f.e):
        return None
    flat = float(f.y[0])
    first = float(f.e[0])
    what = (
        "the schedule's first value"
        if abs(flat - first) <= f.tolerance * max(abs(first), 1e-3 * f.ref)
        else (
            "the optimizer's base LR (the schedule's peak)"
            if abs(flat - f.ref) <= 1e-6 * f.ref
            else "a constant"
        )
    )
    return Diagnosis(
        "never-stepped",
        "The scheduler was never stepped: the LR is flat",
        f"The LR stays at {flat:.6g} ({what}) for all {len(f.y)} logged steps, while the schedule goes "
        f"from {first:.6g} to {float(f.e[-1]):.6g}.",
        "Call scheduler.step() once after every optimizer.step() (or build cosanneal's Scheduler with "
        "count='optimizer' so it counts updates itself); check the scheduler is attached to the optimizer "
        "that trains the model.",
        {"flat_lr": flat, "expected_first": first, "expected_last": float(f.e[-1])},
    )


def _per_epoch(f: Fitter, steps_per_epoch: float | None) -> Diagnosis | None:
    length = plateau_length(f.y, f.tolerance, f.ref)
    if length is None:
        return None
    staircase = f.curve(f.schedule, np.floor(f.t / length))  # epoch index of update t
    fitted = f.fits(staircase)  # one evaluation: no sampling needed
    evidence: dict[str, Any] = {"plateau_steps": length, "steps_per_epoch": steps_per_epoch}
    note = ""
    if steps_per_epoch is not None and abs(steps_per_epoch - length) > 0.5:
        note = (
            f" (--steps-per-epoch is {steps_per_epoch:g}: the scheduler was stepped every {length} updates)"
        )
    return Diagnosis(
        "per-epoch",
        f"Stepped once per epoch instead of once per update (plateaus of {length} updates)",
        f"The LR is a staircase: it changes every {length} updates{note}, "
        + (
            f"and equals schedule(floor(t / {length})) at every step, so the schedule advanced one step per "
            "epoch and the run used only the first few steps of it."
            if fitted
            else "while the schedule changes at every update."
        ),
        "Move scheduler.step() into the batch loop, right after optimizer.step(), keeping the schedule in "
        "optimizer updates; or keep per-epoch stepping and give the schedule its lengths in epochs.",
        evidence,
        fitted,
    )


def _compressed(f: Fitter) -> Diagnosis | None:
    # Under accumulation the first update already sees k - 1 steps, hence the offsets c in {0, k - 1}.
    candidates = [(k, c) for k in range(2, _MAX_K + 1) for c in sorted({0, k - 1})]
    sample = f.sample()
    grid = np.array([f.t[sample] * k + c for k, c in candidates])  # every candidate in one schedule call
    curves = f.curve(f.schedule, grid.ravel()).reshape(grid.shape)
    for (k, c), curve in zip(candidates, curves, strict=True):
        if not f.fits(curve, sample) or not f.fits(f.curve(f.schedule, f.t * k + c)):
            continue
        at = f"schedule({k} t + {c})" if c else f"schedule({k} t)"
        return Diagnosis(
            "compressed",
            f"Stepped {k} times per optimizer update (time compressed by {k})",
            f"The trace equals {at}: the schedule ran {k}x too fast (equivalently, every length in it "
            f"was {k}x too short). This happens when scheduler.step() is called {k} times per update "
            f"(in the loop and in a callback or hook), or once per micro-batch under gradient "
            f"accumulation over {k} micro-batches.",
            "Call scheduler.step() exactly once per optimizer.step(): under gradient accumulation, only on "
            "the micro-batch that steps the optimizer (or use cosanneal's Scheduler with "
            "count='optimizer').",
            {"k": k, "offset": c},
        )
    return None


def _off_by_one(f: Fitter) -> Diagnosis | None:
    def shifted(by: int) -> Callable[[FloatArray], FloatArray]:
        return lambda t: f.curve(f.schedule, t + by)

    for shift, when in ((1, "after"), (-1, "before")):
        if f.fits_at(shifted(shift)):
            return Diagnosis(
                "off-by-one",
                f"Shifted by {shift:+d} step: the LR was logged {when} scheduler.step()",
                f"The trace equals schedule(t {'+' if shift > 0 else '-'} 1): the values are right but logged "
                f"against the neighbouring step.",
                "Log optimizer.param_groups[g]['lr'] for update t before optimizer.step() and "
                "scheduler.step() of that update (cosanneal's telemetry does this).",
                {"shift": shift},
            )
    return None


def _estimate_cycle(f: Fitter, s: Any, trace_restarts: list[int]) -> list[float]:
    """Candidate first-cycle lengths from the trace: its first restart, and the inverted cosine."""
    origin = float(s.origin)
    out: list[float] = []
    if trace_restarts:
        out.append(trace_restarts[0] - origin)
    peak, floor = float(s.cycle_peak(0)) * f.scale, float(s.cycle_floor(0)) * f.scale
    if peak <= floor:
        return out
    end = trace_restarts[0] if trace_restarts else math.inf
    mask = (f.t >= max(origin, float(s.warmup_steps))) & (f.t < end)
    t, y = f.t[mask], f.y[mask]
    if len(y) >= 2:
        y, t = y[: int(np.nanargmin(y)) + 1], t[: int(np.nanargmin(y)) + 1]  # before any climb back
        x = (y - floor) / (peak - floor)
        use = (x > 0.02) & (x < 0.98) & (t > origin)
        if np.any(use):
            p = np.arccos(np.clip(2 * x[use] - 1, -1.0, 1.0)) / math.pi
            p = p ** (1.0 / float(s.k))
            out.append(float(np.median((t[use] - origin) / p)))
        at_floor = np.flatnonzero(np.abs(y - floor) <= 1e-6 * (peak - floor) + f.tolerance * abs(floor))
        if len(at_floor):
            out.append(float(t[at_floor[0]]) - origin)
    return out


def _cycle_length(f: Fitter, trace_restarts: list[int], expected_restarts: list[int]) -> Diagnosis | None:
    s = f.schedule
    if not _is_cosine(s):
        return None
    configured = float(s.cycle_steps)
    tried: set[float] = set()
    for est in _estimate_cycle(f, s, trace_restarts):
        if not math.isfinite(est) or est <= 0:
            continue
        whole = sorted({round(est) + d for d in (0, -1, 1, -2, 2)}, key=lambda c: abs(c - est))
        for cand in [*whole, est]:
            if cand <= 0 or cand in tried or cand == configured:
                continue
            tried.add(cand)
            other = _replaced(s, cycle_steps=int(cand) if float(cand).is_integer() else cand)
            if other is not None and f.fits_schedule(other):
                return Diagnosis(
                    "cycle-length",
                    f"Wrong cycle length: the LR followed cycle_steps={cand:g}, configured {configured:g}",
                    f"The trace is the configured schedule with a first cycle of {cand:g} steps instead of "
                    f"{configured:g} (ratio {cand / configured:.4g}). Typical causes: T_max / cycle_steps given "
                    "in epochs where updates were meant (or the reverse), a stale value after changing the "
                    "batch size or the number of epochs, or warmup steps counted inside T_max.",
                    "Set the cycle length in optimizer updates (cycle_steps = epochs * updates_per_epoch, "
                    "minus the warmup when it comes before the cycle), or write it as '3ep' / '0.9dur' and "
                    "bind the schedule to the real run length.",
                    {
                        "fitted_cycle_steps": cand,
                        "configured_cycle_steps": configured,
                        "trace_restarts": trace_restarts,
                        "expected_restarts": expected_restarts,
                    },
                )
    return None


def _restarts(f: Fitter, trace_restarts: list[int], expected_restarts: list[int]) -> Diagnosis | None:
    if trace_restarts == expected_restarts:
        return None
    s = f.schedule
    fit: dict[str, Any] = {}
    if _is_cosine(s) and trace_restarts:
        cycle = trace_restarts[0] - float(s.origin)
        mults = [float(s.cycle_mult)]
        if len(trace_restarts) >= 2 and cycle > 0:
            mults.insert(0, (trace_restarts[1] - trace_restarts[0]) / cycle)
        cycles = [s.max_cycles] if s.max_cycles is None else [s.max_cycles, len(trace_restarts) + 1, None]
        for m in mults:
            for n in cycles:
                other = _replaced(
                    s, cycle_steps=int(cycle) if cycle.is_integer() else cycle, cycle_mult=m, max_cycles=n
                )
                if other is not None and f.fits_schedule(other):
                    fit = {"fitted_cycle_steps": cycle, "fitted_cycle_mult": m, "fitted_max_cycles": n}
                    break
            if fit:
                break
    found = (
        f" The trace is the schedule with cycle_steps={fit['fitted_cycle_steps']:g}, "
        f"cycle_mult={fit['fitted_cycle_mult']:g}, max_cycles={fit['fitted_max_cycles']}."
        if fit
        else ""
    )
    return Diagnosis(
        "restarts",
        "Restarts at the wrong steps",
        f"The LR restarts at steps {_show(trace_restarts)}; the schedule restarts at {_show(expected_restarts)}."
        + found
        + " Typical causes: T_0/T_mult (cycle_steps/cycle_mult) differing from the configuration, a restart "
        "period counted in epochs, or a warm-restart scheduler stepped with fractional epochs.",
        "Make the scheduler's restart period and multiplier match the configuration (both in optimizer "
        "updates), or configure the schedule you really want; `cosanneal show SPEC` lists its restarts.",
        {"trace_restarts": trace_restarts, "expected_restarts": expected_restarts, **fit},
        bool(fit),
    )


def _warmup_handoff(f: Fitter) -> Diagnosis | None:
    s = f.schedule
    if not _is_cosine(s) or int(s.warmup_steps) <= 0:
        return None
    other = _replaced(s, warmup_prefix=not s.warmup_prefix)
    if other is None or not f.fits_schedule(other):
        return None
    w = int(s.warmup_steps)
    at = f.t >= w
    where = int(np.argmax(at)) if np.any(at) else len(f.t) - 1
    used_prefix = not s.warmup_prefix
    return Diagnosis(
        "warmup-handoff",
        "Warmup hand-off mismatch: warmup_prefix=" + ("True" if used_prefix else "False") + " was used",
        (
            f"The trace follows the schedule with warmup_prefix={used_prefix}. With timm's "
            "warmup_prefix=False the cosine starts at step 0 under the warmup, so at the end of the warmup "
            f"(step {w}) the LR drops from the warmup ramp to the cosine already {w} steps in "
            f"(trace {float(f.y[where]):.6g} vs expected {float(f.e[where]):.6g} at step {int(f.t[where])})."
        ),
        "Use the same warmup_prefix on both sides: timm's CosineLRScheduler(warmup_prefix=True) matches "
        "cosanneal's default; Cosine(..., warmup_prefix=False) reproduces timm's default.",
        {
            "trace_warmup_prefix": used_prefix,
            "configured_warmup_prefix": bool(s.warmup_prefix),
            "warmup_steps": w,
        },
    )


def _resume(f: Fitter, bad: npt.NDArray[np.bool_]) -> Diagnosis | None:
    i = int(np.argmax(bad))
    horizon = f.schedule.horizon
    if i < 2 or (horizon is not None and f.t[i] >= horizon):
        return None
    r = float(f.t[i])
    tail = slice(i, None)
    restarted = f.fits(f.curve(f.schedule, f.t[i:] - r), tail)
    stuck = not restarted and len(f.y) - i >= 2 and f.constant(f.y[i:])
    if not (restarted or stuck):
        prev_gap = float(np.nanmedian(np.abs(np.diff(f.y[:i])))) if i >= 2 else 0.0
        jump = abs(float(f.y[i] - f.y[i - 1]))
        if not jump > 10 * prev_gap + f.tolerance * f.ref:
            return None
    evidence = {
        "resume_step": int(r),
        "lr_before": float(f.y[i - 1]),
        "lr_at_resume": float(f.y[i]),
        "expected_at_resume": float(f.e[i]),
        "restarted_from_start": restarted,
        "stuck": stuck,
    }
    shape = (
        "then the schedule starts again from its first step (LR(t) = schedule(t - "
        f"{int(r)})): the scheduler was rebuilt at the resume without loading its state"
        if restarted
        else f"then it stays at {float(f.y[i]):.6g}: the scheduler is no longer stepped after the resume"
        if stuck
        else f"then it jumps from {float(f.y[i - 1]):.6g} to {float(f.y[i]):.6g} (expected {float(f.e[i]):.6g})"
    )
    return Diagnosis(
        "resume-jump",
        f"A jump at a resume around step {int(r)}",
        f"The LR matches the schedule up to step {int(f.t[i - 1])}, {shape}.",
        "Save scheduler.state_dict() in every checkpoint and load it on resume (before the first step), "
        "or rebuild the scheduler at the resumed update count; cosanneal's Scheduler state holds the step "
        "and checks the schedule.",
        evidence,
        restarted or stuck,
    )


def _cosine_continued(f: Fitter, t: FloatArray) -> FloatArray | None:
    """The last cosine cycle continued past its end (PyTorch's CosineAnnealingLR / HF cosine)."""
    s = f.schedule
    if not _is_cosine(s) or s.max_cycles is None:
        return None
    i = s.max_cycles - 1
    start = float(s.cycle_start(i)) if i else float(s.origin)
    length = float(s.cycle_start(i + 1)) - start
    w = float(s.cycle_warmup_steps) if i else 0.0
    peak, floor = float(s.cycle_peak(i)), float(s.cycle_floor(i))
    p = np.maximum(t - start - w, 0.0) / (length - w)
    return (floor + 0.5 * (peak - floor) * (1 + np.cos(math.pi * p ** float(s.k)))) * f.scale


def _past_horizon(f: Fitter, bad: npt.NDArray[np.bool_]) -> Diagnosis | None:
    horizon = f.schedule.horizon
    if horizon is None:
        return None
    i = int(np.argmax(bad))
    if f.t[i] < horizon:
        return None
    after = f.t >= horizon
    y = f.y[after]
    floor = float(f.e[after][0])
    top = int(np.nanargmax(y))
    if not float(y[top]) - floor > 0.01 * f.ref:
        return None
    continued = _cosine_continued(f, f.t[after])
    fitted = continued is not None and f.fits(continued, slice(int(np.flatnonzero(after)[0]), None))
    return Diagnosis(
        "past-horizon",
        "The LR climbs back up after the end of the schedule",
        f"The schedule ends at step {horizon:g} and holds {floor:.6g}; the trace climbs back to "
        f"{float(y[top]):.6g} at step {int(f.t[after][top])}"
        + (" along the continued cosine" if fitted else "")
        + ". PyTorch's CosineAnnealingLR (and Hugging Face's cosine with more steps than num_training_steps) "
        "keep following cos() past T_max, so a run longer than T_max goes back up.",
        "Make T_max / num_training_steps equal the real number of updates (minus warmup), or stop stepping "
        "at the end; cosanneal's schedules hold the floor past their end.",
        {
            "horizon": horizon,
            "floor": floor,
            "max_lr_after_end": float(y[top]),
            "at_step": int(f.t[after][top]),
        },
        True,
    )


def diagnose(f: Fitter, bad: npt.NDArray[np.bool_], steps_per_epoch: float | None = None) -> list[Diagnosis]:
    """Every known mistake whose shape the mismatching trace has; fitted hypotheses first and alone.

    Args:
        f: The trace, schedule and tolerance.
        bad: The mismatch mask of the trace against the schedule (at least one ``True``).
        steps_per_epoch: Updates per epoch, when known, to compare with a staircase's plateaus.

    Returns:
        The diagnoses whose curve fits the trace; when none fits, the shapes recognised without a fit.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> t = np.arange(100)
        >>> f = Fitter(t, s(t + 1), s, 1e-9)  # logged after scheduler.step()
        >>> [d.code for d in diagnose(f, f.bad(f.e))]
        ['off-by-one']
    """
    trace_restarts = restart_steps(f.t, f.y, f.ref)
    expected_restarts = restart_steps(f.t, f.e, f.ref)
    detectors: list[Callable[[], Diagnosis | None]] = [
        lambda: _never_stepped(f),
        lambda: _per_epoch(f, steps_per_epoch),
        lambda: _compressed(f),
        lambda: _off_by_one(f),
        lambda: _warmup_handoff(f),
        lambda: _cycle_length(f, trace_restarts, expected_restarts),
        lambda: _past_horizon(f, bad),
        lambda: _resume(f, bad),
    ]
    found: list[Diagnosis] = []
    for detect in detectors:
        d = detect()
        if d is not None:
            found.append(d)
            if d.code in ("never-stepped", "compressed"):
                break  # a compressed trace is also a shorter cycle: one explanation is enough
    if not any(d.fitted for d in found) and not any(d.code == "past-horizon" for d in found):
        d = _restarts(f, trace_restarts, expected_restarts)
        if d is not None:
            found.append(d)
    fitted = [d for d in found if d.fitted]
    return fitted or found
