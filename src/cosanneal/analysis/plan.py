r"""Budget planning: a cosine schedule whose last cycle ends exactly at the end of the budget.

:func:`plan` turns a budget of ``T`` optimizer steps, a warmup of ``W`` steps and a cycle structure into
a :class:`~cosanneal.schedules.cosine.Cosine` whose final cycle ends at step ``T`` (no restart is cut
short, no step is spent holding the floor), a table of its cycles with wall time and cost, and a
checkpoint interval for preemptible machines.

**Cycle lengths.** With ``n`` cycles, multiplier ``m`` and ``D = T - W`` steps after the warmup, the
first cycle lasts

.. math:: c = D \frac{m - 1}{m^n - 1} \quad (c = D / n \text{ when } m = 1),

so that :math:`c (1 + m + \dots + m^{n-1}) = D` (:func:`cosanneal.schedules.cycles.fit_cycle_steps`,
the same fit ``lint`` advises in CA002). Cycle ``i`` lasts :math:`c\,m^i` steps and peaks at
``peak * peak_decay**i``. The schedule computes its cycle boundaries in 60-digit decimal arithmetic
from the float64 ``c`` and rounds them to float64, so the planner tries the float64 values within 16
ulps of the formula's ``c`` and keeps the one (closest to the formula) whose
:attr:`~cosanneal.schedules.cosine.Cosine.horizon` is exactly ``T``. For about 5% of inputs no float64
``c`` lands exactly on ``T`` (neighbouring values of ``c`` move the end by more than one ulp of ``T``);
then the closest end *before* ``T`` is kept: never after the budget, and at most 4 ulps of ``T``
before it (:attr:`Plan.horizon_error`; for a budget of 10^6 steps an ulp is 1.2e-10 steps). No step
``0 .. T - 1`` changes cycle because of it.

**Number of cycles.** ``cycles=n`` fixes it. With only ``cycle_mult=m`` (``m != 1``) the planner takes the
largest ``n`` whose *shortest* cycle (the first when ``m > 1``, the last when ``m < 1``) still lasts at
least ``min_cycle`` steps (default: one epoch when ``steps_per_epoch`` is known, else 10 steps, the
length below which ``lint`` reports CA004), and at least one cycle, at most
:data:`~cosanneal.schedules.cycles.MAX_CYCLES` (:func:`~cosanneal.schedules.cycles.choose_cycles`).
``m = 1`` without ``cycles`` is an error (equal cycles: say how many). With neither, the plan is a single cosine decay.

**Checkpoint interval (Young/Daly).** With a checkpoint that costs ``δ`` seconds and a mean time between
failures (preemptions) ``M``, the interval that minimises the expected waste is

.. math:: \tau = \sqrt{2\,\delta\,M}

(Young 1974; Daly 2006, first order). A preemption lands on average half way through an interval, so
the expected work lost per preemption is :math:`\tau / 2 + R`, with ``R`` the restart cost (default
``R = δ``: reading a checkpoint back costs about what writing it did). Over a run of ``S`` seconds one
expects :math:`S / M` preemptions, and the expected overhead is
:math:`S (\delta / \tau + (\tau / 2 + R) / M)` seconds.

Example:
    >>> p = plan(35100, cycles=3, cycle_mult=2, warmup=780, peak=0.1, step_seconds=0.12)
    >>> p.schedule.horizon == 35100, p.schedule.max_cycles
    (True, 3)
    >>> [f"{r.length:g}" for r in p.rows]
    ['780', '4902.86', '9805.71', '19611.4']
    >>> round(p.wall_seconds / 3600, 3)
    1.17
    >>> young_daly_seconds(20.0, 6 * 3600.0)
    929.51600308978
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from cosanneal.errors import ScheduleError
from cosanneal.schedules import durations
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.cycles import choose_cycles, fit_cycle_steps, floor_lr, peak_lr, shortest_cycle
from cosanneal.schedules.lint import MIN_CYCLE_STEPS

__all__ = [
    "BranchPlan",
    "BranchRow",
    "CheckpointPlan",
    "CycleRow",
    "Plan",
    "fit_cycle_steps",
    "parse_seconds",
    "plan",
    "branch_plan",
    "measured_branch_plan",
    "young_daly_seconds",
]

_SECONDS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_SECONDS_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(s|m|min|h|d)?\s*$")


# ---- results ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CycleRow:
    """One row of the plan's table: the warmup (``index is None``) or cycle ``index``.

    Attributes:
        index: the cycle index, or ``None`` for the initial warmup.
        start: first step (may be fractional for cycles).
        end: step where the next cycle (or the end of the budget) begins.
        length: ``end - start`` in steps.
        peak: the highest LR of the row.
        floor: the lowest LR the row decays to (the warmup's start LR for the warmup).
        seconds: wall time ``length * step_seconds``, or ``None`` without a step time.
        cost: ``seconds / 3600 * price_per_hour``, or ``None`` without a price.
    """

    index: int | None
    start: float
    end: float
    length: float
    peak: float
    floor: float
    seconds: float | None
    cost: float | None


@dataclasses.dataclass(frozen=True)
class CheckpointPlan:
    r"""The Young/Daly checkpoint interval and what a preemption costs.

    Attributes:
        checkpoint_seconds: ``δ``, the cost of one checkpoint.
        mtbf_seconds: ``M``, the mean time between failures (preemptions).
        restart_seconds: ``R``, the cost of a restart (reload and warm up).
        interval_seconds: :math:`\tau = \sqrt{2 \delta M}`.
        interval_steps: ``max(1, round(τ / step_seconds))`` (what ``checkpoint.every_steps`` gets), or
            ``None`` without a step time.
        lost_seconds: expected work lost per preemption, :math:`\tau / 2 + R`.
        expected_preemptions: ``S / M`` for a run of ``S`` seconds, or ``None`` without a step time.
        overhead_seconds: :math:`S (\delta / \tau + (\tau / 2 + R) / M)`, or ``None`` without a step time.
    """

    checkpoint_seconds: float
    mtbf_seconds: float
    restart_seconds: float
    interval_seconds: float
    interval_steps: int | None
    lost_seconds: float
    expected_preemptions: float | None
    overhead_seconds: float | None


@dataclasses.dataclass(frozen=True)
class Plan:
    """A planned schedule for a budget, its cycles table and (optionally) its checkpoint interval.

    Attributes:
        schedule: the bound :class:`Cosine`; ``schedule.horizon == total_steps`` (see the module docs).
        total_steps: the budget ``T`` in optimizer steps.
        warmup_steps: ``W``.
        rows: the warmup (when ``W > 0``) and every cycle, in order.
        step_seconds: seconds per optimizer step, or ``None``.
        price_per_hour: price of the machine per hour, or ``None``.
        checkpoint: the checkpoint plan when an MTBF was given, else ``None``.
        steps_per_epoch: the steps per epoch the durations were read with, or ``None``.
        min_cycle: the shortest cycle allowed when the number of cycles was chosen by the planner.
    """

    schedule: Cosine
    total_steps: int
    warmup_steps: int
    rows: tuple[CycleRow, ...]
    step_seconds: float | None
    price_per_hour: float | None
    checkpoint: CheckpointPlan | None
    steps_per_epoch: float | None = None
    min_cycle: float | None = None

    @property
    def cycles(self) -> int:
        """Number of cosine cycles."""
        return int(self.schedule.max_cycles or 0)

    @property
    def horizon_error(self) -> float:
        """``schedule.horizon - total_steps``: 0.0, or (no float64 cycle length lands exactly) a few ulps below."""
        horizon = self.schedule.horizon
        assert horizon is not None  # planned schedules always end
        return float(horizon) - float(self.total_steps)

    @property
    def wall_seconds(self) -> float | None:
        """Wall time of the whole budget, ``total_steps * step_seconds``, or ``None``."""
        return None if self.step_seconds is None else self.total_steps * self.step_seconds

    @property
    def cost(self) -> float | None:
        """Cost of the whole budget, ``wall_seconds / 3600 * price_per_hour``, or ``None``."""
        wall = self.wall_seconds
        return None if wall is None or self.price_per_hour is None else wall / 3600.0 * self.price_per_hour

    def spec(self) -> dict[str, Any]:
        """The schedule as a spec mapping (parameters left at their defaults omitted)."""
        return self.schedule.canonical()

    def to_toml(self) -> str:
        """A training-config fragment: ``[schedule]`` and, with a checkpoint plan, ``[checkpoint]``.

        The text loads with :func:`cosanneal.schedules.spec.load_spec` and, merged into a training
        config (or alone), with :func:`cosanneal.jobs.config.load_config`. Floats are written with
        ``repr``, so the schedule read back is equal to :attr:`schedule`.

        Example:
            >>> print(plan(1000, cycles=2, peak=0.5).to_toml().split("[schedule]")[1].strip())
            kind = "cosine"
            peak_lr = 0.5
            cycle_steps = 500
            max_cycles = 2
        """
        lines = [
            "# written by `cosanneal plan`: the last cycle ends exactly at the end of the budget",
            f"# budget: {_num(self.total_steps)} optimizer steps"
            + (
                f" ({_num(self.total_steps / self.steps_per_epoch)} epochs of {_num(self.steps_per_epoch)} steps)"
                if self.steps_per_epoch
                else ""
            )
            + "; train with the same number of updates (epochs / max_steps)",
            "",
            "[schedule]",
        ]
        lines += [f"{key} = {_toml_value(value)}" for key, value in self.spec().items()]
        ck = self.checkpoint
        if ck is not None:
            lines += [
                "",
                f"# Young/Daly: sqrt(2 x {_num(ck.checkpoint_seconds)} s x {_num(ck.mtbf_seconds)} s) "
                f"= {ck.interval_seconds:.1f} s",
                "[checkpoint]",
            ]
            if ck.interval_steps is not None:
                lines.append(f"every_steps = {ck.interval_steps}")
            else:
                lines.append(f"every_seconds = {_toml_value(round(ck.interval_seconds, 3))}")
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} as a TOML value")  # schedule specs hold scalars only


# ---- helpers ------------------------------------------------------------------------------------
def parse_seconds(name: str, value: Any) -> float:
    """A duration in seconds from a number or a string like ``"6h"``, ``"30m"``, ``"3600s"``, ``"1d"``.

    Example:
        >>> parse_seconds("mtbf", "6h"), parse_seconds("mtbf", "30m"), parse_seconds("mtbf", 90)
        (21600.0, 1800.0, 90.0)

    Raises:
        ScheduleError: not a non-negative number or a duration with unit s, m/min, h or d.
    """
    if isinstance(value, bool):
        raise ScheduleError(f"{name} must be a duration like '6h', '30m' or '3600s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _SECONDS_PATTERN.match(str(value))
        if match is None:
            raise ScheduleError(f"{name} must be a duration like '6h', '30m' or '3600s', got {value!r}")
        seconds = float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise ScheduleError(f"{name} must be a finite duration >= 0, got {value!r}")
    return seconds


def young_daly_seconds(checkpoint_seconds: float, mtbf_seconds: float) -> float:
    r"""The Young/Daly checkpoint interval :math:`\tau = \sqrt{2\,\delta\,M}` in seconds.

    Example:
        >>> young_daly_seconds(20.0, 3600.0)
        379.4733192202055
    """
    return math.sqrt(2.0 * checkpoint_seconds * mtbf_seconds)


def _steps(
    name: str,
    value: Any,
    *,
    total: int | None,
    steps_per_epoch: float | None,
    samples_per_update: float | None = None,
    tokens_per_update: float | None = None,
) -> float:
    """A length in steps from a number or a duration (``"2ep"``, ``"0.05dur"``, ``"500st"``, ``"2e6sp"``)."""
    parsed = durations.parse(name, value)
    unit = durations.split(parsed)[0] if durations.is_unbound(parsed) else "st"
    if unit == "ep" and steps_per_epoch is None:
        raise ScheduleError(f"{name}={value!r} is in epochs; give steps_per_epoch (--steps-per-epoch N)")
    if unit == "dur" and total is None:
        raise ScheduleError(f"{name}={value!r} cannot be a fraction of the run; give steps or epochs")
    if unit == "sp" and samples_per_update is None:
        raise ScheduleError(f"{name}={value!r} is in samples; give samples_per_update (the global batch)")
    if unit == "tok" and tokens_per_update is None:
        raise ScheduleError(
            f"{name}={value!r} is in tokens; give tokens_per_update (global batch x tokens per sample)"
        )
    resolved = durations.resolve(
        name,
        parsed,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        samples_per_update=samples_per_update,
        tokens_per_update=tokens_per_update,
    )
    if isinstance(resolved, bool) or not isinstance(resolved, (int, float)) or not math.isfinite(resolved):
        raise ScheduleError(f"{name} must be a number of steps or a duration, got {value!r}")
    return float(resolved)


# ---- the planner --------------------------------------------------------------------------------
def plan(
    total_steps: int | float | str,
    *,
    cycles: int | None = None,
    cycle_mult: float | None = None,
    warmup: int | float | str = 0,
    peak: float = 0.1,
    min_ratio: float = 0.0,
    peak_decay: float = 1.0,
    min_cycle: int | float | str | None = None,
    steps_per_epoch: float | None = None,
    samples_per_update: float | None = None,
    tokens_per_update: float | None = None,
    step_seconds: float | None = None,
    price_per_hour: float | None = None,
    mtbf: float | str | None = None,
    checkpoint_seconds: float | str | None = None,
    restart_seconds: float | str | None = None,
) -> Plan:
    """Plan a warmup + cosine (+ restarts) schedule whose last cycle ends exactly at ``total_steps``.

    Formulas are in the module docs: first cycle ``c = D (m - 1) / (m^n - 1)`` (``D / n`` for
    ``m = 1``) with ``D = T - W``; checkpoint interval ``τ = sqrt(2 δ M)``; expected loss per
    preemption ``τ / 2 + R``.

    Args:
        total_steps: the budget ``T``: steps, ``"90ep"`` (needs ``steps_per_epoch``), ``"1000st"``,
            ``"2e9sp"`` (needs ``samples_per_update``) or ``"5e10tok"`` (needs ``tokens_per_update``);
            rounded to whole steps.
        cycles: number of cycles ``n`` (>= 1). Default: chosen from ``cycle_mult`` (see the module
            docs), or 1 without it.
        cycle_mult: each cycle is ``m`` times the previous one (> 0). Default 1.
        warmup: initial warmup ``W``: steps, ``"2ep"``, ``"0.05dur"`` (of ``T``), ``"1e6sp"`` or ``"2e9tok"``;
            rounded to whole steps.
        peak: peak LR of the first cycle (> 0).
        min_ratio: floor as a fraction of each cycle's peak (0..1).
        peak_decay: each restart's peak is ``peak_decay`` times the previous one (> 0).
        min_cycle: shortest cycle allowed when the planner picks ``n``; default one epoch (with
            ``steps_per_epoch``) or 10 steps.
        steps_per_epoch: optimizer steps per epoch, for ``"ep"`` durations and the epoch column.
        samples_per_update: training samples per optimizer step (the global batch), for ``"sp"``
            durations: ``"2e6sp"`` is ``ceil(2e6 / samples_per_update)`` steps.
        tokens_per_update: tokens per optimizer step, for ``"tok"`` durations (rounded up likewise).
        step_seconds: seconds per optimizer step (for wall time, cost and the interval in steps).
        price_per_hour: machine price per hour (needs ``step_seconds``).
        mtbf: mean time between preemptions (``"6h"``, ``"30m"``, seconds); enables the checkpoint plan.
        checkpoint_seconds: cost of one checkpoint ``δ`` (required with ``mtbf``).
        restart_seconds: restart cost ``R`` (default ``δ``).

    Returns:
        The :class:`Plan`.

    Raises:
        ScheduleError: an impossible budget (warmup as long as the budget, zero cycles, cycles
            shorter than one step) or an invalid argument, as one line naming it.

    Example:
        >>> p = plan("90ep", steps_per_epoch=390, cycle_mult=2)
        >>> p.cycles, round(p.schedule.cycle_steps, 2), p.schedule.horizon
        (6, 557.14, 35100.0)
    """
    if steps_per_epoch is not None and not (math.isfinite(steps_per_epoch) and steps_per_epoch > 0):
        raise ScheduleError(f"steps_per_epoch must be > 0, got {steps_per_epoch!r}")
    units = {"samples_per_update": samples_per_update, "tokens_per_update": tokens_per_update}
    raw_total = _steps("total", total_steps, total=None, steps_per_epoch=steps_per_epoch, **units)
    total = round(raw_total)
    if total < 1:
        raise ScheduleError(f"total must be at least 1 step, got {total_steps!r} ({_num(raw_total)} steps)")
    w_raw = _steps("warmup", warmup, total=total, steps_per_epoch=steps_per_epoch, **units)
    if w_raw < 0:
        raise ScheduleError(f"warmup must be >= 0 steps, got {warmup!r}")
    w = round(w_raw)
    span = total - w
    if span < 1:
        raise ScheduleError(
            f"warmup={warmup!r} ({w} steps) leaves no step for the cycles of a {total}-step budget; "
            "shorten warmup or raise total"
        )
    for name, value, lo, hi in (("peak", peak, 0.0, math.inf), ("peak_decay", peak_decay, 0.0, math.inf)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
            raise ScheduleError(f"{name} must be a finite number > 0, got {value!r}")
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or not 0.0 <= min_ratio <= 1.0:
        raise ScheduleError(f"min_ratio must be between 0 and 1, got {min_ratio!r}")
    if cycle_mult is not None and (
        isinstance(cycle_mult, bool)
        or not isinstance(cycle_mult, (int, float))
        or not (math.isfinite(cycle_mult) and cycle_mult > 0)
    ):
        raise ScheduleError(f"cycle_mult must be a finite number > 0, got {cycle_mult!r}")
    m = 1.0 if cycle_mult is None else float(cycle_mult)
    floor_len: float | None = None
    if cycles is None:
        if cycle_mult is None:
            n = 1
        elif m == 1.0:
            raise ScheduleError("cycle_mult=1 gives equal cycles; say how many with cycles (--cycles N)")
        else:
            if min_cycle is None:
                floor_len = max(float(MIN_CYCLE_STEPS), steps_per_epoch or 0.0)
            else:
                floor_len = _steps(
                    "min_cycle", min_cycle, total=total, steps_per_epoch=steps_per_epoch, **units
                )
                if floor_len <= 0:
                    raise ScheduleError(f"min_cycle must be > 0 steps, got {min_cycle!r}")
            n = choose_cycles(span, m, floor_len)
    else:
        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
            raise ScheduleError(f"cycles must be an integer >= 1, got {cycles!r}")
        n = cycles
    c = fit_cycle_steps(span, m, n, origin=w)
    shortest = shortest_cycle(c, m, n)
    if not (math.isfinite(c) and shortest >= 1.0):
        raise ScheduleError(
            f"cycles={n} with cycle_mult={_num(m)} in {span} steps after the warmup makes the shortest cycle "
            f"{shortest:.3g} steps (< 1); use fewer cycles or a cycle_mult closer to 1"
        )
    schedule = Cosine(
        peak_lr=float(peak),
        min_ratio=float(min_ratio) if min_ratio else None,
        warmup_steps=w,
        cycle_steps=c,
        cycle_mult=m,
        peak_decay=float(peak_decay),
        max_cycles=n,
    )
    if step_seconds is not None and not (math.isfinite(step_seconds) and step_seconds > 0):
        raise ScheduleError(f"step_seconds must be > 0, got {step_seconds!r}")
    if price_per_hour is not None:
        if not (math.isfinite(price_per_hour) and price_per_hour >= 0):
            raise ScheduleError(f"price_per_hour must be >= 0, got {price_per_hour!r}")
        if step_seconds is None:
            raise ScheduleError(
                "price_per_hour needs a step time: give step_seconds (--step-seconds or --measure)"
            )
    rows = _rows(schedule, total, step_seconds, price_per_hour)
    checkpoint = _checkpoint_plan(mtbf, checkpoint_seconds, restart_seconds, step_seconds, total)
    return Plan(
        schedule=schedule,
        total_steps=total,
        warmup_steps=w,
        rows=rows,
        step_seconds=step_seconds,
        price_per_hour=price_per_hour,
        checkpoint=checkpoint,
        steps_per_epoch=steps_per_epoch,
        min_cycle=floor_len,
    )


def _rows(s: Cosine, total: int, step_seconds: float | None, price: float | None) -> tuple[CycleRow, ...]:
    def row(index: int | None, start: float, end: float, top: float, bottom: float) -> CycleRow:
        length = end - start
        seconds = None if step_seconds is None else length * step_seconds
        cost = None if seconds is None or price is None else seconds / 3600.0 * price
        return CycleRow(index, start, end, length, top, bottom, seconds, cost)

    out: list[CycleRow] = []
    w = int(s.warmup_steps)
    if w:
        out.append(row(None, 0.0, float(w), peak_lr(s, 0), s(0)))
    n = int(s.max_cycles or 0)
    for i in range(n):
        start = s.origin if i == 0 else s.cycle_start(i)
        end = float(total) if i == n - 1 else s.cycle_start(i + 1)
        out.append(row(i, start, end, peak_lr(s, i), floor_lr(s, i)))
    return tuple(out)


def _checkpoint_plan(
    mtbf: float | str | None,
    checkpoint_seconds: float | str | None,
    restart_seconds: float | str | None,
    step_seconds: float | None,
    total: int,
) -> CheckpointPlan | None:
    if mtbf is None:
        if checkpoint_seconds is not None or restart_seconds is not None:
            raise ScheduleError("checkpoint_seconds needs mtbf (--mtbf 6h): the interval depends on both")
        return None
    m_s = parse_seconds("mtbf", mtbf)
    if m_s <= 0:
        raise ScheduleError(f"mtbf must be > 0, got {mtbf!r}")
    if checkpoint_seconds is None:
        raise ScheduleError(
            "mtbf needs checkpoint_seconds (--checkpoint-seconds S), the cost of one checkpoint"
        )
    delta = parse_seconds("checkpoint_seconds", checkpoint_seconds)
    if delta <= 0:
        raise ScheduleError(f"checkpoint_seconds must be > 0, got {checkpoint_seconds!r}")
    restart = delta if restart_seconds is None else parse_seconds("restart_seconds", restart_seconds)
    tau = young_daly_seconds(delta, m_s)
    lost = tau / 2.0 + restart
    steps = preemptions = overhead = None
    if step_seconds is not None:
        steps = max(1, round(tau / step_seconds))
        wall = total * step_seconds
        preemptions = wall / m_s
        overhead = wall * (delta / tau + lost / m_s)
    return CheckpointPlan(delta, m_s, restart, tau, steps, lost, preemptions, overhead)


# ---- cooldown branches vs separate cosine runs ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BranchRow:
    """One budget of :class:`BranchPlan`: a cooldown branch of the stable run, and the cosine run it replaces.

    Attributes:
        budget: ``T_k``, the branch's total (= the length of the separate cosine run).
        at: ``d_k = T_k - L_k``, the stable run's update the branch starts from.
        cooldown: ``L_k``, the branch's own updates.
        branch_loss: the branch's measured final ``val_loss`` (``None``: not trained).
        cosine_loss: the separate cosine run's measured final ``val_loss`` (``None``: not trained).
    """

    budget: int
    at: int
    cooldown: int
    branch_loss: float | None = None
    cosine_loss: float | None = None


@dataclasses.dataclass(frozen=True)
class BranchPlan:
    r"""The compute of one stable run with cooldown branches vs one cosine run per budget.

    With budgets :math:`T_k`, cooldowns :math:`L_k` and branch points :math:`d_k = T_k - L_k`, the
    stable run trains :math:`\max_k d_k` updates once and each branch :math:`L_k` (Hägele et al.
    2024), against :math:`\sum_k T_k` for separate runs:

    .. math:: U_{branch} = \max_k d_k + \sum_k L_k, \qquad U_{cosine} = \sum_k T_k.

    Attributes:
        rows: one per budget, by budget.
        step_seconds: seconds per update (for device-hours), or ``None``.
    """

    rows: tuple[BranchRow, ...]
    step_seconds: float | None = None

    @property
    def stable_updates(self) -> int:
        """The stable run's updates: up to the last branch point, ``max(d_k)``."""
        return max(r.at for r in self.rows)

    @property
    def branch_updates(self) -> int:
        """``U_branch``: the stable run plus every branch's cooldown."""
        return self.stable_updates + sum(r.cooldown for r in self.rows)

    @property
    def cosine_updates(self) -> int:
        """``U_cosine``: one separate run per budget."""
        return sum(r.budget for r in self.rows)

    @property
    def saved_fraction(self) -> float:
        """``1 - U_branch / U_cosine``."""
        return 1.0 - self.branch_updates / self.cosine_updates

    def hours(self, updates: int) -> float | None:
        """Device-hours of ``updates`` at :attr:`step_seconds` (``None`` without a step time)."""
        return None if self.step_seconds is None else updates * self.step_seconds / 3600.0


def _cooldown_of(budget: int, cooldown: float | int) -> int:
    if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not math.isfinite(cooldown):
        raise ScheduleError(f"cooldown must be updates or a fraction below 1, got {cooldown!r}")
    if 0 < cooldown < 1:
        length = round(cooldown * budget)
    elif cooldown >= 1 and float(cooldown).is_integer():
        length = int(cooldown)
    else:
        raise ScheduleError(f"cooldown must be whole updates or a fraction below 1, got {cooldown!r}")
    if not 1 <= length < budget:
        raise ScheduleError(
            f"cooldown {cooldown!r} is {length} updates of a {budget}-update branch; it must leave the stable "
            "run at least one update and last at least one"
        )
    return length


def branch_plan(
    total_steps: int,
    *,
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
    cooldown: float | int = 0.2,
    step_seconds: float | None = None,
) -> BranchPlan:
    """One stable run with cooldown branches at ``fractions`` of the budget vs a cosine run for each.

    Each budget is ``T_k = round(f_k T)``; its cooldown ``L_k`` is ``round(cooldown * T_k)`` for a
    fraction below 1, else ``cooldown`` updates; the branch starts at ``d_k = T_k - L_k``.

    Raises:
        ScheduleError: a budget, fraction or cooldown that leaves no stable phase or no cooldown.

    Example:
        >>> p = branch_plan(1000, cooldown=0.2)
        >>> [(r.budget, r.at, r.cooldown) for r in p.rows]
        [(250, 200, 50), (500, 400, 100), (750, 600, 150), (1000, 800, 200)]
        >>> p.stable_updates, p.branch_updates, p.cosine_updates, round(p.saved_fraction, 3)
        (800, 1300, 2500, 0.48)
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 2:
        raise ScheduleError(f"total must be a whole number of updates >= 2, got {total_steps!r}")
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ScheduleError(f"fractions must be in (0, 1], got {fractions!r}")
    rows = []
    for budget in sorted({round(f * total_steps) for f in fractions}):
        length = _cooldown_of(budget, cooldown)
        rows.append(BranchRow(budget, budget - length, length))
    return BranchPlan(tuple(rows), step_seconds)


def measured_branch_plan(
    branches: list[tuple[int, int, float | None]],
    *,
    cosine: dict[int, float | None] | None = None,
    step_seconds: float | None = None,
) -> BranchPlan:
    """The plan of branches that exist: ``(at, cooldown, final val_loss)`` each, and cosine runs by budget.

    Raises:
        ScheduleError: no branch, or a cosine run whose length is not the total of a branch.

    Example:
        >>> p = measured_branch_plan([(40, 10, 0.5), (80, 20, 0.4)], cosine={100: 0.41})
        >>> [(r.budget, r.branch_loss, r.cosine_loss) for r in p.rows], p.branch_updates, p.cosine_updates
        ([(50, 0.5, None), (100, 0.4, 0.41)], 110, 150)
    """
    if not branches:
        raise ScheduleError("no branches to plan with; train some with `cosanneal branch RUN --at STEP`")
    cosine = dict(cosine or {})
    totals = sorted(at + length for at, length, _ in branches)
    for budget in cosine:
        if budget not in totals:
            raise ScheduleError(
                f"--cosine: a run of {budget} updates matches no branch (they end at "
                f"{', '.join(map(str, totals))}); compare runs of a branch's length"
            )
    rows = [
        BranchRow(at + length, at, length, loss, cosine.get(at + length))
        for at, length, loss in sorted(branches, key=lambda b: (b[0] + b[1], b[0]))
    ]
    return BranchPlan(tuple(rows), step_seconds)
