r"""Explain why an LR trace differs from its schedule: known mistakes, each recognised by its shape.

Every detector states a hypothesis as a curve and checks the trace against it with the same tolerance
as :func:`cosanneal.analysis.verify` (a *fit*), or, when no exact curve can be built, recognises the
shape alone (a *heuristic*). Fits win: when any hypothesis fits, only the fitting diagnoses are given.

=====================  =====================================================================
code                   hypothesis (``s`` the schedule, ``y`` the trace)
=====================  =====================================================================
``never-stepped``      ``y(t) = y(0)`` for all ``t``
``per-epoch``          ``y(t) = s(floor(t / E))``, plateaus of ``E`` updates
``compressed``         ``y(t) = s(k t)`` or ``s(k t + k - 1)`` for an integer ``k >= 2``
``step-order``         ``y(t) = s(t + 1)``, LR read before ``optimizer.step()``: stepped too early
``off-by-one``         ``y(t) = s(t + 1)`` read after ``scheduler.step()``, or ``y(t) = s(t - 1)``
``warmup-handoff``     ``y = s`` with the other ``warmup_prefix`` (timm)
``warmup-missing``     ``y = s`` without its warmup (``warmup_steps = 0``)
``cycle-length``       ``y = s`` with another ``cycle_steps`` ``T``
``floor``              ``y = s`` with another floor (``min_lr`` / ``eta_min``)
``peak``               ``y = s`` with another peak (the optimizer's base LR)
``restarts``           restart steps differ (``y = s`` with another ``cycle_steps``/``cycle_mult``)
``resume-jump``        ``y = s`` up to step ``r``, then ``s(t - r)`` (restarted, possibly from the
                       LR at the resume) or constant (stuck)
``past-horizon``       ``y = s`` up to the end, then climbing back up
=====================  =====================================================================

PyTorch's ``CosineAnnealingLR`` and Hugging Face's cosine schedules do not hold their floor past their
end (``T_max``, ``num_training_steps``): they follow ``cos()`` back up. Every hypothesis that shifts or
stretches time (``compressed``, ``cycle-length``, ``warmup-missing``, ``floor``, ``peak``, ``resume-jump``)
is therefore checked twice: with the schedule as configured (holding its floor) and with its last
cosine continued past the end, the way those peers continue (:func:`continued`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError
from cosanneal.schedules.cycles import floor_lr, peak_lr

__all__ = ["LR_READS", "Diagnosis", "Fitter", "continued", "diagnose", "plateau_length", "restart_steps"]

FloatArray = npt.NDArray[np.float64]
_MAX_K = 64
_EPOCH_LIKE_K = 8  # from this k on, a compressed trace may as well be a length given in epochs
_SHOW = 8

#: How a trace's LR was read: just before ``optimizer.step()`` of update ``t`` (what ``docs/verify.md``
#: prescribes and cosanneal's telemetry records), or after ``scheduler.step()`` at the end of update ``t``.
LR_READS = ("before-optimizer-step", "after-scheduler-step")


def _is_cosine(schedule: Any) -> bool:
    return getattr(schedule, "kind", None) == "cosine"


def continued(schedule: Any, t: npt.ArrayLike) -> FloatArray | None:
    r"""The schedule as PyTorch's ``CosineAnnealingLR`` and Hugging Face's cosine continue it past its end.

    Before the horizon this is the schedule itself. From the horizon on, the last cycle's cosine goes
    on instead of holding the floor: with that cycle's start ``S``, length ``L``, peak ``P``, floor ``F``
    and restart warmup ``w``,

    .. math:: y(t) = F + \tfrac12 (P - F) (1 + \cos(\pi ((t - S - w) / (L - w))^k))

    so the LR climbs back to the peak over the next ``L - w`` steps, and so on (period ``2 (L - w)``).

    Args:
        schedule: A bound schedule.
        t: Steps.

    Returns:
        The continued curve, or ``None`` when the schedule is not a cosine with an end.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=10)
        >>> [round(float(v), 6) for v in continued(s, np.array([5.0, 10.0, 15.0, 20.0]))]
        [0.5, 0.0, 0.5, 1.0]
    """
    if not _is_cosine(schedule) or schedule.max_cycles is None:
        return None
    x = np.asarray(t, dtype=np.float64)
    out = np.asarray(schedule(np.maximum(x, 0.0)), dtype=np.float64).copy()
    horizon = float(schedule.horizon)
    past = x >= horizon
    if np.any(past):
        i = schedule.max_cycles - 1
        start = float(schedule.cycle_start(i)) if i else float(schedule.origin)
        length = horizon - start
        w = float(schedule.cycle_warmup_steps) if i else 0.0
        peak, floor = peak_lr(schedule, i), floor_lr(schedule, i)
        p = np.maximum(x[past] - start - w, 0.0) / (length - w)
        out[past] = floor + 0.5 * (peak - floor) * (1 + np.cos(math.pi * p ** float(schedule.k)))
    return out


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

    def continued(self, schedule: Any, t: FloatArray) -> FloatArray | None:
        """The schedule continued past its end as the peers do (:func:`continued`), times ``scale``."""
        out = continued(schedule, t)
        return None if out is None else out * self.scale

    def fits_schedule(self, schedule: Any) -> bool:
        """Whether the trace matches another schedule."""
        return self.fits_at(lambda t: self.curve(schedule, t))

    def fit_mode(self, schedule: Any, warp: Callable[[FloatArray], FloatArray] | None = None) -> str | None:
        """How the trace follows ``schedule`` at steps ``warp(t)``, if it does.

        Returns:
            ``"held"`` when ``y(t) = scale * schedule(warp(t))``; ``"continued"`` when it matches only with
            the schedule continued past its end (:func:`continued`, the peers' behaviour); else ``None``.
        """
        if schedule is None:
            return None
        at = (lambda t: t) if warp is None else warp
        if self.fits_at(lambda t: self.curve(schedule, at(t))):
            return "held"
        horizon = getattr(schedule, "horizon", None) if _is_cosine(schedule) else None
        if horizon is None or not np.any(at(self.t) >= horizon):
            return None  # never past the end: the continuation is the schedule itself

        def extended(t: FloatArray) -> FloatArray:
            out = self.continued(schedule, at(t))
            return self.curve(schedule, at(t)) if out is None else out

        return "continued" if self.fits_at(extended) else None

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


_CONTINUED_NOTE = (
    " Past its end the schedule followed the continued cosine back up, as PyTorch's CosineAnnealingLR "
    "and Hugging Face's cosine do past T_max / num_training_steps."
)


def _affine(k: int, c: int) -> Callable[[FloatArray], FloatArray]:
    """``t -> k t + c``."""
    return lambda t: t * k + c


def _compressed_fit(f: Fitter) -> tuple[int, int, str] | None:
    """The first ``(k, c, mode)`` with ``y(t) = s(k t + c)`` (``mode`` as in :meth:`Fitter.fit_mode`)."""
    # Under accumulation the first update already sees k - 1 steps, hence the offsets c in {0, k - 1}.
    candidates = [(k, c) for k in range(2, _MAX_K + 1) for c in sorted({0, k - 1})]
    sample = f.sample()
    grid = np.array([f.t[sample] * k + c for k, c in candidates]).ravel()  # every candidate in one call
    held = f.curve(f.schedule, grid).reshape(len(candidates), -1)
    extended = f.continued(f.schedule, grid)
    cont = None if extended is None else extended.reshape(len(candidates), -1)
    for n, (k, c) in enumerate(candidates):
        if not f.fits(held[n], sample) and not (cont is not None and f.fits(cont[n], sample)):
            continue
        mode = f.fit_mode(f.schedule, _affine(k, c))
        if mode is not None:
            return k, c, mode
    return None


def _compressed(f: Fitter, fit: tuple[int, int, str], steps_per_epoch: float | None) -> Diagnosis:
    k, c, mode = fit
    at = f"schedule({k} t + {c})" if c else f"schedule({k} t)"
    epochs = (
        ""
        if steps_per_epoch is not None or k < _EPOCH_LIKE_K
        else f" The same curve results from a length given in epochs (T_max / cycle_steps) while the "
        f"scheduler is stepped per update with {k} updates per epoch; pass the steps per epoch "
        "(--steps-per-epoch) to tell the two apart."
    )
    return Diagnosis(
        "compressed",
        f"Stepped {k} times per optimizer update (time compressed by {k})",
        f"The trace equals {at}: the schedule ran {k}x too fast (equivalently, every length in it "
        f"was {k}x too short). This happens when scheduler.step() is called {k} times per update "
        f"(in the loop and in a callback or hook), or once per micro-batch under gradient "
        f"accumulation over {k} micro-batches." + (_CONTINUED_NOTE if mode == "continued" else "") + epochs,
        "Call scheduler.step() exactly once per optimizer.step(): under gradient accumulation, only on "
        "the micro-batch that steps the optimizer (or use cosanneal's Scheduler with "
        "count='optimizer').",
        {"k": k, "offset": c, "continued": mode == "continued"},
    )


def _shifted(f: Fitter, lr_read: str) -> Diagnosis | None:
    """``y(t) = s(t + 1)`` (a step-order bug or a logging offset, by ``lr_read``) or ``s(t - 1)``."""
    if f.fits_at(lambda t: f.curve(f.schedule, t + 1)):
        evidence = {"shift": 1, "lr_read": lr_read}
        if lr_read == "before-optimizer-step":
            return Diagnosis(
                "step-order",
                "scheduler.step() is called before optimizer.step(): each update used the next step's LR",
                "The trace equals schedule(t + 1). It was read just before optimizer.step() (lr_read "
                "before-optimizer-step: what docs/verify.md prescribes and cosanneal's telemetry records), "
                "so the optimizer really used the LR of update t + 1 at update t: scheduler.step() runs "
                "before optimizer.step(), the schedule is one step ahead and its first value is never used. "
                "The numbers alone cannot tell this from a logging offset: if the LR was in fact read after "
                "scheduler.step(), training used the right LR and only the log is shifted; say so with "
                "--lr-read after-scheduler-step.",
                "Call scheduler.step() after optimizer.step(), once per update. (If the LR was read after "
                "scheduler.step(), the loop may be right: read the LR before optimizer.step() and verify "
                "again.)",
                evidence,
            )
        return Diagnosis(
            "off-by-one",
            "Logging offset: the LR was read after scheduler.step(), one update ahead",
            "The trace equals schedule(t + 1). Read after scheduler.step() (lr_read after-scheduler-step), "
            "the value logged for update t is the LR of update t + 1, which is what a correct loop logs "
            "this way: training used the right LR. A loop that calls scheduler.step() before "
            "optimizer.step() logs exactly the same values when read this way, so the trace cannot rule "
            "that bug out: check the order in the loop.",
            "Logging only: read the LR before optimizer.step() of update t (then verify checks the LR the "
            "optimizer used). If scheduler.step() comes before optimizer.step() in the loop, that is a real "
            "bug: call it after optimizer.step().",
            evidence,
        )
    if f.fits_at(lambda t: f.curve(f.schedule, t - 1)):
        return Diagnosis(
            "off-by-one",
            "Shifted by -1 step: the row of update t holds the LR of update t - 1",
            "The trace equals schedule(t - 1): the values are right but logged against the next step, "
            "as when updates are numbered from 1 or the step counter is advanced before logging.",
            "Log the LR of update t under step t, counting updates from 0 (the number of optimizer steps "
            "done before this one).",
            {"shift": -1, "lr_read": lr_read},
        )
    return None


def _estimate_cycle(f: Fitter, s: Any, trace_restarts: list[int]) -> list[float]:
    """Candidate first-cycle lengths from the trace: its first restart, and the inverted cosine."""
    origin = float(s.origin)
    out: list[float] = []
    if trace_restarts:
        out.append(trace_restarts[0] - origin)
    peak, floor = peak_lr(s, 0) * f.scale, floor_lr(s, 0) * f.scale
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


def _epochs_note(cand: float, configured: float, steps_per_epoch: float | None) -> bool:
    """Whether ``cand`` is the configured length read as epochs (``configured = cand * steps_per_epoch``)."""
    return (
        steps_per_epoch is not None and steps_per_epoch > 0 and abs(cand * steps_per_epoch - configured) < 0.5
    )


def _cycle_length(
    f: Fitter,
    trace_restarts: list[int],
    expected_restarts: list[int],
    steps_per_epoch: float | None = None,
    extra: tuple[float, ...] = (),
) -> Diagnosis | None:
    s = f.schedule
    if not _is_cosine(s):
        return None
    configured = float(s.cycle_steps)
    tried: set[float] = set()
    estimates = [*extra, *_estimate_cycle(f, s, trace_restarts)]
    for est in estimates:
        if not math.isfinite(est) or est <= 0:
            continue
        whole = sorted({round(est) + d for d in (0, -1, 1, -2, 2)}, key=lambda c: abs(c - est))
        for cand in [*whole, est]:
            if cand <= 0 or cand in tried or abs(cand - configured) <= 1e-6 * configured:
                continue  # (a length within rounding of the configured one is the configured one)
            tried.add(cand)
            other = _replaced(s, cycle_steps=int(cand) if float(cand).is_integer() else cand)
            mode = f.fit_mode(other)
            if mode is None:
                continue
            in_epochs = _epochs_note(cand, configured, steps_per_epoch)
            if in_epochs:
                title = (
                    f"Wrong cycle length: T_max / cycle_steps of {cand:g} is in epochs; the scheduler is "
                    f"stepped per update ({configured:g} updates configured)"
                )
                why = (
                    f"The trace is the configured schedule with a first cycle of {cand:g} steps instead of "
                    f"{configured:g}: {cand:g} x {steps_per_epoch:g} updates per epoch = {configured:g}, so "
                    "the length was given in epochs while the scheduler is stepped once per update."
                )
            else:
                title = f"Wrong cycle length: the LR followed cycle_steps={cand:g}, configured {configured:g}"
                why = (
                    f"The trace is the configured schedule with a first cycle of {cand:g} steps instead of "
                    f"{configured:g} (ratio {cand / configured:.4g}). Typical causes: T_max / cycle_steps "
                    "given in epochs where updates were meant (or the reverse), a stale value after changing "
                    "the batch size or the number of epochs, or warmup steps counted inside T_max."
                )
            return Diagnosis(
                "cycle-length",
                title,
                why + (_CONTINUED_NOTE if mode == "continued" else ""),
                "Set the cycle length in optimizer updates (cycle_steps = epochs * updates_per_epoch, "
                "minus the warmup when it comes before the cycle), or write it as '3ep' / '0.9dur' and "
                "bind the schedule to the real run length"
                + ("; or step the scheduler once per epoch." if in_epochs else "."),
                {
                    "fitted_cycle_steps": cand,
                    "configured_cycle_steps": configured,
                    "in_epochs": in_epochs,
                    "continued": mode == "continued",
                    "trace_restarts": trace_restarts,
                    "expected_restarts": expected_restarts,
                },
            )
    return None


def _warmup_missing(f: Fitter) -> Diagnosis | None:
    """The trace is the schedule without its warmup: it starts at the peak."""
    s = f.schedule
    if not _is_cosine(s) or int(s.warmup_steps) <= 0 or not s.warmup_prefix:
        return None
    w, cycle = int(s.warmup_steps), float(s.cycle_steps)
    for length in (cycle + w, cycle):  # the whole run as the cycle (T_max = N), or the warmup just dropped
        other = _replaced(s, warmup_steps=0, cycle_steps=int(length) if length.is_integer() else length)
        mode = f.fit_mode(other)
        if mode is None:
            continue
        start = float(s.warmup_start_lr) * f.scale
        return Diagnosis(
            "warmup-missing",
            f"Warmup missing: the trace starts at the peak; configured warmup of {w} steps",
            f"The LR starts at the peak ({float(f.y[0]):.6g} at step {int(f.t[0])}) and follows the "
            f"schedule without its warmup (warmup_steps=0, cycle_steps={length:g}): the configured "
            f"{s.warmup_shape} warmup of {w} steps from {start:.6g} never ran. Typical causes: a plain "
            "CosineAnnealingLR instead of SequentialLR([LinearLR, CosineAnnealingLR]), Hugging Face's "
            "get_cosine_schedule_with_warmup with num_warmup_steps=0, or a warmup option not passed on."
            + (_CONTINUED_NOTE if mode == "continued" else ""),
            f"Add the warmup of {w} updates: in PyTorch SequentialLR(opt, [LinearLR(opt, start_factor, "
            f"total_iters={w}), CosineAnnealingLR(opt, T_max={cycle:g})], milestones=[{w}]); in Hugging Face "
            f"get_cosine_schedule_with_warmup(opt, num_warmup_steps={w}, num_training_steps="
            f"{cycle + w:g}); in cosanneal Cosine(..., warmup_steps={w}).",
            {
                "warmup_steps": w,
                "warmup_start_lr": float(s.warmup_start_lr),
                "fitted_cycle_steps": length,
                "configured_cycle_steps": cycle,
                "continued": mode == "continued",
            },
        )
    return None


def _nice(x: float) -> list[float]:
    """``x`` rounded to 6 significant digits (what a user typed), then ``x`` itself."""
    if abs(x) < 1e-12:
        return [0.0, x]
    r = float(f"{x:.6g}")
    return [r, x] if r != x else [x]


def _peak_floor(f: Fitter) -> Diagnosis | None:
    """The trace is the schedule's shape between another peak and/or floor (fitted by least squares)."""
    s = f.schedule
    if not _is_cosine(s):
        return None
    peak, floor = peak_lr(s, 0), floor_lr(s, 0)
    if peak <= floor:
        return None
    end = float(s.cycle_start(1)) if s.max_cycles is None or s.max_cycles > 1 else float(s.horizon)
    mask = (f.t >= float(s.origin)) & (f.t < end) & (f.t >= float(s.warmup_steps)) & np.isfinite(f.y)
    if np.count_nonzero(mask) < 3:
        return None
    x = (f.e[mask] / f.scale - floor) / (peak - floor)  # 1 at the peak, 0 at the floor
    if float(np.ptp(x)) < 0.1:
        return None
    a = np.column_stack((1.0 - x, x))
    (fit_floor, fit_peak), *_ = np.linalg.lstsq(a, f.y[mask] / f.scale, rcond=None)
    fit_floor, fit_peak = float(fit_floor), float(fit_peak)
    if (
        not (math.isfinite(fit_peak) and math.isfinite(fit_floor))
        or fit_peak <= 0
        or fit_floor < -1e-12 * peak
    ):
        return None
    same_peak = abs(fit_peak - peak) <= 1e-9 * peak
    same_floor = abs(fit_floor - floor) <= 1e-9 * peak
    if same_peak and same_floor:
        return None
    candidates: list[Any] = []
    start = float(s.warmup_start_lr)
    for p in [float(s.peak_lr)] if same_peak else _nice(fit_peak * float(s.peak_lr) / peak):
        starts = sorted({start, start * p / float(s.peak_lr)}, reverse=True)  # a warmup scaled with the peak
        if s.min_ratio is not None:  # the same ratio under another peak
            candidates += [_replaced(s, peak_lr=p, warmup_start_lr=w) for w in starts]
        for fl in [floor] if same_floor else _nice(max(fit_floor, 0.0)):
            candidates += [
                _replaced(s, peak_lr=p, min_lr=fl, min_ratio=None, warmup_start_lr=w) for w in starts
            ]
    for other in candidates:
        if other is None or f.fit_mode(other) is None:
            continue
        got_peak, got_floor = peak_lr(other, 0), floor_lr(other, 0)
        peak_changed = got_peak != peak
        evidence = {
            "fitted_peak": got_peak,
            "configured_peak": peak,
            "fitted_floor": got_floor,
            "configured_floor": floor,
        }
        if not peak_changed:
            return Diagnosis(
                "floor",
                f"Wrong floor: the LR anneals to {got_floor:.6g}, configured {floor:.6g}",
                f"The trace is the configured schedule with the floor {got_floor:.6g} instead of {floor:.6g}: "
                "the scheduler's eta_min / min_lr (or min_lr_rate, min_ratio) differs from the configuration.",
                f"Give the scheduler the configured floor: CosineAnnealingLR(..., eta_min={floor:.6g}) in "
                f"PyTorch, get_cosine_with_min_lr_schedule_with_warmup(..., min_lr={floor:.6g}) in Hugging "
                "Face, min_lr / min_ratio in cosanneal; or configure the floor the job really used.",
                evidence,
            )
        also = f" and the floor {got_floor:.6g} instead of {floor:.6g}" if got_floor != floor else ""
        return Diagnosis(
            "peak",
            f"Wrong peak: the LR peaks at {got_peak:.6g}, configured {peak:.6g}",
            f"The trace is the configured schedule with the peak {got_peak:.6g} instead of {peak:.6g}{also} "
            f"(ratio {got_peak / peak:.4g}). PyTorch's and Hugging Face's schedulers take the peak from the "
            "optimizer's lr (LambdaLR multiplies it), so the optimizer was built with another lr, or a "
            "param group's lr differs.",
            f"Build the optimizer with lr={peak:.6g} (the peak the schedule is scaled from), or configure the "
            "peak the job really used.",
            evidence,
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


def _restart_fit(f: Fitter, i: int) -> tuple[float, str, float | None] | None:
    """How the tail from index ``i`` restarts the schedule: ``(resume step r, mode, lr it restarted from)``.

    ``y(t) = s(t - r)`` (the scheduler rebuilt at update ``r``; its first LR may coincide with the expected
    one when the optimizer's loaded LR was used first), or the same shape scaled between the floor and
    the LR at the resume (PyTorch's ``CosineAnnealingLR`` rebuilt on an optimizer whose state was loaded
    continues its recursive formula from that LR as if at step 0).
    """
    s, tail = f.schedule, slice(i, None)
    starts = [float(f.t[i])]
    if i and f.t[i - 1] == f.t[i] - 1:
        starts.append(float(f.t[i - 1]))
    for r in starts:
        held = f.curve(s, f.t[i:] - r)
        extended = f.continued(s, f.t[i:] - r)
        for curve, mode in ((held, "held"), (extended, "continued")):
            if curve is not None and f.fits(curve, tail):
                return r, mode, None
    if not _is_cosine(s) or not (i and f.t[i - 1] == f.t[i] - 1):
        return None
    peak, floor = peak_lr(s, 0) * f.scale, floor_lr(s, 0) * f.scale
    start = float(f.y[i - 1])
    r = float(f.t[i - 1])
    if peak <= floor or not math.isfinite(start):
        return None
    for curve, mode in ((f.curve(s, f.t[i:] - r), "held"), (f.continued(s, f.t[i:] - r), "continued")):
        if curve is not None and f.fits(floor + (start - floor) * (curve - floor) / (peak - floor), tail):
            return r, mode, start
    return None


def _resume(f: Fitter, bad: npt.NDArray[np.bool_]) -> Diagnosis | None:
    i = int(np.argmax(bad))
    horizon = f.schedule.horizon
    if i < 2 or (horizon is not None and f.t[i] >= horizon):
        return None
    fit = _restart_fit(f, i)
    restarted = fit is not None
    r = fit[0] if fit is not None else float(f.t[i])
    from_lr = fit[2] if fit is not None else None
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
        "restarted_from_lr": from_lr,
        "stuck": stuck,
    }
    if restarted and from_lr is not None:
        shape = (
            f"then the schedule's shape starts again from its first step, scaled down to begin at the LR of "
            f"the resume ({from_lr:.6g}): the scheduler was rebuilt at the resume without loading its state, "
            "on an optimizer whose state (and LR) was loaded, as PyTorch's CosineAnnealingLR does when it "
            "continues its recursive formula from the loaded LR as if at step 0"
        )
    elif restarted:
        shape = (
            "then the schedule starts again from its first step (LR(t) = schedule(t - "
            f"{int(r)})): the scheduler was rebuilt at the resume without loading its state"
        )
    elif stuck:
        shape = f"then it stays at {float(f.y[i]):.6g}: the scheduler is no longer stepped after the resume"
    else:
        shape = f"then it jumps from {float(f.y[i - 1]):.6g} to {float(f.y[i]):.6g} (expected {float(f.e[i]):.6g})"
    matched_to = int(f.t[i - 1]) if from_lr is None else int(r)
    return Diagnosis(
        "resume-jump",
        f"A jump at a resume around step {int(r)}",
        f"The LR matches the schedule up to step {matched_to}, {shape}.",
        "Save scheduler.state_dict() in every checkpoint and load it on resume (before the first step), "
        "or rebuild the scheduler at the resumed update count; cosanneal's Scheduler state holds the step "
        "and checks the schedule.",
        evidence,
        restarted or stuck,
    )


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
    extended = f.continued(f.schedule, f.t[after])
    fitted = extended is not None and f.fits(extended, slice(int(np.flatnonzero(after)[0]), None))
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


def diagnose(
    f: Fitter,
    bad: npt.NDArray[np.bool_],
    steps_per_epoch: float | None = None,
    lr_read: str = "before-optimizer-step",
) -> list[Diagnosis]:
    """Every known mistake whose shape the mismatching trace has; fitted hypotheses first and alone.

    Args:
        f: The trace, schedule and tolerance.
        bad: The mismatch mask of the trace against the schedule (at least one ``True``).
        steps_per_epoch: Updates per epoch, when known: compared with a staircase's plateaus, and it tells
            a length given in epochs from a scheduler stepped ``k`` times per update (the same curve when
            ``k`` is the number of updates per epoch).
        lr_read: How the trace's LR was read (one of :data:`LR_READS`); it decides whether a trace one step
            ahead is a scheduler stepped before ``optimizer.step()`` or only a logging offset.

    Returns:
        The diagnoses whose curve fits the trace; when none fits, the shapes recognised without a fit.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(1.0, cycle_steps=100)
        >>> t = np.arange(100)
        >>> f = Fitter(t, s(t + 1), s, 1e-9)  # one step ahead
        >>> [d.code for d in diagnose(f, f.bad(f.e))]  # read before optimizer.step(): stepped too early
        ['step-order']
        >>> [d.code for d in diagnose(f, f.bad(f.e), lr_read="after-scheduler-step")]
        ['off-by-one']
    """
    trace_restarts = restart_steps(f.t, f.y, f.ref)
    expected_restarts = restart_steps(f.t, f.e, f.ref)
    never = _never_stepped(f)
    if never is not None:
        return [never]
    found: list[Diagnosis] = []
    per_epoch = _per_epoch(f, steps_per_epoch)
    if per_epoch is not None:
        found.append(per_epoch)
    squeezed = _compressed_fit(f)
    if squeezed is not None:
        k, c, _ = squeezed
        if c == 0 and _is_cosine(f.schedule) and steps_per_epoch is not None and k == round(steps_per_epoch):
            # The same curve as a cycle length given in epochs: with the epoch known, that is the cause.
            in_epochs = _cycle_length(
                f, trace_restarts, expected_restarts, steps_per_epoch, (float(f.schedule.cycle_steps) / k,)
            )
            if in_epochs is not None:
                return [*[d for d in found if d.fitted], in_epochs]
        # a compressed trace is also a shorter cycle: one explanation is enough
        return [*[d for d in found if d.fitted], _compressed(f, squeezed, steps_per_epoch)]
    detectors: list[Callable[[], Diagnosis | None]] = [
        lambda: _shifted(f, lr_read),
        lambda: _warmup_handoff(f),
        lambda: _warmup_missing(f),
        lambda: _cycle_length(f, trace_restarts, expected_restarts, steps_per_epoch),
        lambda: _peak_floor(f),
        lambda: _past_horizon(f, bad),
        lambda: _resume(f, bad),
    ]
    for detect in detectors:
        d = detect()
        if d is not None:
            found.append(d)
    if not any(d.fitted for d in found) and not any(d.code == "past-horizon" for d in found):
        d = _restarts(f, trace_restarts, expected_restarts)
        if d is not None:
            found.append(d)
    fitted = [d for d in found if d.fitted]
    return fitted or found
