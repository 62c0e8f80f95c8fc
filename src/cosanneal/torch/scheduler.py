r"""A PyTorch ``LRScheduler`` whose learning rate is a pure function of the update counter.

:class:`Scheduler` drives an optimizer from a cosanneal :class:`~cosanneal.schedules.base.Schedule`.
Its only state is ``t``, the number of optimizer updates done; the LR of group ``g`` for the next
update is the schedule's closed form at ``t``:

* one shared schedule ``s``: ``lr_g(t) = s(t) * f_g`` with ``f_g = initial_lr_g / s.peak``, the
  group's LR as given to the optimizer relative to the schedule's peak (floors scale the same way);
* a list of schedules, one per group: ``lr_g(t) = s_g(t)`` (absolute values).

No LR is ever derived from the previous one, so saving and loading ``t`` restores the LRs exactly.

Optional momentum annealing (SGD ``momentum`` or Adam/AdamW ``betas[0]``), inverse to the LR:

.. math:: m(t) = m_{max} - (m_{max} - m_{min})\,\mathrm{clip}\Big(\frac{s(t) - F}{P - F}, 0, 1\Big)

with ``P = s.peak`` and ``F`` the schedule's floor: for a :class:`~cosanneal.Cosine`, its lowest
cycle floor (``min_lr``, or ``min_ratio`` times the lowest cycle peak); for other schedules, the
smallest LR over the horizon, sampled once at construction. ``P == F`` gives ``m = m_min``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cosanneal.errors import ScheduleError, SchedulerUsageError, StateError
from cosanneal.schedules.base import Schedule, from_dict
from cosanneal.schedules.cosine import Cosine

__all__ = ["STATE_VERSION", "Count", "OnMismatch", "Scheduler", "StepIgnoredWarning"]

#: Version written by :meth:`Scheduler.state_dict` and the only one :meth:`Scheduler.load_state_dict` reads.
STATE_VERSION = 1
Count = Literal["manual", "optimizer", "calls"]
OnMismatch = Literal["error", "continue", "rescale"]
_COUNTS = ("manual", "optimizer", "calls")
_ON_MISMATCH = ("error", "continue", "rescale")
_STATE_KEYS = ("version", "step", "schedule")
_FLOOR_SAMPLES = 1_000_000  # steps sampled to find a non-cosine schedule's floor (once, at construction)
#: ``count="manual"``: this many ``step()`` calls in a row with no optimizer update is an error.
STALL_LIMIT = 100
_is_compiling = torch.compiler.is_compiling


def _callback_unknown() -> object:
    """Stand-in where torch has no ``get_eval_frame_callback``: every call then goes through _untraced."""
    return True


try:  # the frame-evaluation callback torch.compile installs while compiled code runs (None in eager)
    from torch._C._dynamo import eval_frame as _eval_frame

    _dynamo_callback: Callable[[], object] = _eval_frame.get_eval_frame_callback
except (ImportError, AttributeError):  # pragma: no cover - another torch build
    _dynamo_callback = _callback_unknown


class StepIgnoredWarning(UserWarning):
    """A ``scheduler.step()`` with no optimizer update since the previous one was ignored (warned once).

    Example:
        >>> import torch
        >>> from cosanneal import Cosine
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = Scheduler(opt, Cosine(1.0, cycle_steps=10))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     sched.step()  # no optimizer.step() since construction: t stays 0
        >>> sched.last_epoch, caught[0].category.__name__
        (0, 'StepIgnoredWarning')
    """


_on_host = False  # True while _untraced runs its function (which then must not route here again)


def _under_dynamo() -> bool:
    """Whether torch.compile is tracing or running the caller (the check ``step()`` inlines)."""
    return (_is_compiling() or _dynamo_callback() is not None) and not _on_host


def _run_on_host(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` outside any compiled graph: dynamo neither traces it nor guards on it.

    The scheduler's bookkeeping (its counter, the schedule's branches) is host-side Python; traced,
    dynamo would guard on the counter and recompile as it changes, and run natively inside a
    compiled region it would still offer every frame it calls (the schedule's) to dynamo.
    ``step()`` and the optimizer hook route through here only under torch.compile: while dynamo
    traces them (``torch.compiler.is_compiling()``, constant-folded to True) or while compiled
    code runs them natively (dynamo's frame callback is set). Eager calls pay those two cheap
    checks, not the cost of a disabled-function wrapper.
    """
    global _on_host
    prior, _on_host = _on_host, True
    try:
        return fn(*args)
    finally:
        _on_host = prior


#: :func:`_run_on_host` under ``torch.compiler.disable``: dynamo skips it and everything it calls.
#: Built through torch's lazy form of it, which imports ``torch._dynamo`` (0.6 s) only at the first
#: call: it is only ever called under torch.compile, when dynamo is loaded anyway.
_untraced: Callable[..., Any] = (
    torch._disable_dynamo(_run_on_host)  # type: ignore[assignment]
    if hasattr(torch, "_disable_dynamo")
    else torch.compiler.disable(_run_on_host)  # type: ignore[no-untyped-call]
)


def _accelerate_wrapper() -> Any:
    """The accelerate ``AcceleratedScheduler`` whose ``step()`` called the running one, or ``None``."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame.f_globals.get("__name__") == "accelerate.scheduler" and frame.f_code.co_name == "step":
            return frame.f_locals.get("self")
        if frame.f_back is None:
            return None
        frame = frame.f_back
    return None


# ---- construction helpers ---------------------------------------------------------------------
def _check_schedule(schedule: Any, where: str) -> Schedule:
    """Return ``schedule`` after checking it is a bound schedule with a finite peak > 0."""
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"{where} must be a cosanneal Schedule, got {schedule!r}")
    unbound = schedule.unbound_fields()
    if unbound:
        name, value = next(iter(unbound.items()))
        raise ScheduleError(
            f"{where}.{name}={value!r} is not in steps; pass schedule.bind(total_steps=..., "
            "steps_per_epoch=...) to the Scheduler"
        )
    peak = schedule.peak
    if not (math.isfinite(peak) and peak > 0.0):
        raise ScheduleError(
            f"{where}.peak must be a finite number > 0, got {peak!r}; an endless schedule with "
            "peak_decay > 1 grows without bound (set max_cycles)"
        )
    return schedule


def _group_schedules(schedule: Any, n_groups: int) -> tuple[tuple[Schedule, ...], bool]:
    """The per-group schedules and whether they were given as a list."""
    if isinstance(schedule, (list, tuple)):
        if len(schedule) != n_groups:
            raise ScheduleError(
                f"schedule must be one Schedule or a list of one per param group ({n_groups}), "
                f"got a list of {len(schedule)}"
            )
        return tuple(_check_schedule(s, f"schedule[{i}]") for i, s in enumerate(schedule)), True
    return (_check_schedule(schedule, "schedule"),), False


def _initial_lrs(optimizer: Optimizer) -> list[float]:
    """Each group's initial LR (``initial_lr`` if an earlier scheduler set it, else ``lr``)."""
    out = []
    for i, group in enumerate(optimizer.param_groups):
        value = group.get("initial_lr", group["lr"])
        lr = float(value.item()) if isinstance(value, Tensor) else value
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (0.0 <= float(lr) < math.inf):
            raise ScheduleError(f"optimizer.param_groups[{i}] lr must be a finite number >= 0, got {value!r}")
        out.append(float(lr))
    return out


def _cosine_floor(schedule: Cosine) -> float:
    """The lowest floor a :class:`Cosine` reaches over all its cycles."""
    decay = float(schedule.peak_decay)
    if schedule.min_ratio is None or schedule.peak_decay_mode == "amplitude" or decay >= 1.0:
        return schedule.cycle_floor(0)
    if schedule.max_cycles is None:
        return 0.0
    return schedule.cycle_floor(schedule.max_cycles - 1)


def schedule_floor(schedule: Schedule) -> float:
    """The floor ``F`` used by momentum annealing.

    For a :class:`~cosanneal.Cosine`, its lowest cycle floor. For any other schedule, the smallest
    LR at the integer steps ``0..horizon`` (the first 10**6 steps if it has no horizon; an even grid
    of 10**6 + 1 points over ``[0, horizon]`` for longer horizons), computed once.

    Example:
        >>> schedule_floor(Cosine(1.0, cycle_steps=100, min_lr=0.01))
        0.01
    """
    if isinstance(schedule, Cosine):
        return _cosine_floor(schedule)
    horizon = schedule.horizon
    if horizon is None or horizon <= _FLOOR_SAMPLES:
        end = _FLOOR_SAMPLES if horizon is None else math.ceil(horizon)
        steps = np.arange(end + 1, dtype=np.float64)
    else:
        steps = np.linspace(0.0, horizon, _FLOOR_SAMPLES + 1)
    return float(np.min(schedule(steps)))


@dataclasses.dataclass(frozen=True)
class _Momentum:
    """Precomputed momentum annealing: which key to set and each group's ``(F, P - F)``."""

    key: str  # "momentum" (SGD) or "betas" (Adam, AdamW)
    high: float
    low: float
    floors: tuple[float, ...]  # one per schedule
    spans: tuple[float, ...]

    def value(self, lr: float, i: int) -> float:
        """``m`` for unscaled schedule value ``lr`` of schedule ``i``."""
        span = self.spans[i]
        frac = (lr - self.floors[i]) / span if span > 0.0 else 1.0
        frac = 0.0 if frac < 0.0 else 1.0 if frac > 1.0 else frac
        return self.high - (self.high - self.low) * frac


def _momentum_plan(optimizer: Optimizer, momentum: Any, schedules: Sequence[Schedule]) -> _Momentum | None:
    if momentum is None:
        return None
    if (
        not isinstance(momentum, (tuple, list))
        or len(momentum) != 2
        or not all(isinstance(m, numbers.Real) and not isinstance(m, bool) for m in momentum)
        or not 0.0 <= float(momentum[1]) <= float(momentum[0]) < 1.0
    ):
        raise ScheduleError(
            f"momentum must be a pair (max_m, min_m) with 0 <= min_m <= max_m < 1, got {momentum!r}"
        )
    defaults = optimizer.defaults
    if "betas" in defaults:
        key = "betas"
    elif "momentum" in defaults:
        key = "momentum"
    else:
        raise ScheduleError(
            f"momentum={tuple(momentum)!r} needs an optimizer with 'momentum' (SGD) or 'betas' (Adam, "
            f"AdamW); {type(optimizer).__name__} has neither"
        )
    floors = tuple(schedule_floor(s) for s in schedules)
    spans = tuple(s.peak - f for s, f in zip(schedules, floors, strict=True))
    return _Momentum(key, float(momentum[0]), float(momentum[1]), floors, spans)


# ---- state helpers ----------------------------------------------------------------------------
def _parse_state(state: Any) -> tuple[int, tuple[Schedule, ...]]:
    """Validate a saved state and return its step and schedules."""
    if not isinstance(state, Mapping):
        raise StateError(f"scheduler state must be a mapping, got {type(state).__name__}")
    if "version" not in state:
        keys = ", ".join(sorted(map(str, state))) or "none"
        raise StateError(
            f"not a cosanneal Scheduler state: expected keys version, step, schedule; got keys: {keys}"
        )
    version = state["version"]
    if version != STATE_VERSION or isinstance(version, bool):
        raise StateError(f"scheduler state version must be {STATE_VERSION}, got {version!r}")
    extra = [str(k) for k in state if k not in _STATE_KEYS]
    if extra or len(state) != len(_STATE_KEYS):
        missing = [k for k in _STATE_KEYS if k not in state]
        what = f"unexpected key {extra[0]!r}" if extra else f"missing key {missing[0]!r}"
        raise StateError(f"scheduler state has {what}; expected keys version, step, schedule")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise StateError(f"scheduler state step must be an integer >= 0, got {step!r}")
    raw = state["schedule"]
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    try:
        schedules = tuple(from_dict(item) for item in items)
    except ScheduleError as exc:
        raise StateError(f"scheduler state schedule is invalid: {exc}") from exc
    if not schedules:
        raise StateError("scheduler state schedule is an empty list")
    return int(step), schedules


def _differing_keys(a: Schedule, b: Schedule) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [k for k in {**da, **db} if da.get(k, ...) != db.get(k, ...)]


def _mismatch(saved: Sequence[Schedule], current: Sequence[Schedule]) -> str | None:
    """A one-line description of how ``saved`` differs from ``current``, or ``None`` if equal."""
    if len(saved) != len(current):
        return f"saved {len(saved)} schedule(s), this scheduler has {len(current)}"
    parts = []
    for i, (old, new) in enumerate(zip(saved, current, strict=True)):
        if old.fingerprint() != new.fingerprint():
            where = f"schedule[{i}] " if len(current) > 1 else ""
            parts.append(
                f"{where}saved fingerprint {old.fingerprint()} != current {new.fingerprint()} "
                f"(differing keys: {', '.join(_differing_keys(old, new))})"
            )
    return "; ".join(parts) or None


def _horizon(schedules: Sequence[Schedule], which: str) -> float:
    """The step where the last of ``schedules`` stops changing (for ``on_mismatch='rescale'``)."""
    horizons = [s.horizon for s in schedules]
    if any(h is None for h in horizons):
        raise StateError(
            f"on_mismatch='rescale' needs a finite horizon, but the {which} schedule restarts forever "
            "(max_cycles=None); use on_mismatch='continue'"
        )
    horizon = max(h for h in horizons if h is not None)
    if not horizon > 0:
        raise StateError(f"on_mismatch='rescale' needs a horizon > 0, the {which} schedule has {horizon!r}")
    return float(horizon)


# ---- the scheduler ----------------------------------------------------------------------------
def _count_hook(ref: weakref.ReferenceType[Scheduler]) -> Callable[[Optimizer, Any, Any], None]:
    """An optimizer step post-hook telling the scheduler behind ``ref`` (if it still exists) an update ran."""

    def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if (_is_compiling() or _dynamo_callback() is not None) and not _on_host:  # see _untraced
            _untraced(hook, optimizer, args, kwargs)
            return
        scheduler = ref()
        if scheduler is not None:
            scheduler._on_update()

    return hook


class Scheduler(LRScheduler):
    r"""Set each param group's LR (and optionally momentum) from a schedule's closed form.

    The counter ``t`` (``last_epoch``) is the number of optimizer updates done; right after
    construction ``t = 0`` and the groups hold the LRs for the first update. With one shared
    schedule ``s`` the LR of group ``g`` is ``s(t) * (initial_lr_g / s.peak)``; with a list of
    schedules, one per group, group ``g`` gets ``s_g(t)`` directly. See the module docstring for
    the momentum formula.

    Args:
        optimizer: the optimizer whose groups are driven. Each group's ``initial_lr`` (or ``lr``)
            at construction sets its factor ``f_g`` against the shared schedule's peak.
        schedule: a bound schedule (durations in steps) shared by all groups, or a list with one
            schedule per param group giving absolute LRs.
        count: ``"manual"``: call :meth:`step` after every ``optimizer.step()``, as with any torch
            scheduler (frameworks do it for you). An optimizer step post-hook notes each update
            that really ran, and a :meth:`step` with no update since the previous one is ignored:
            accelerate's extra per-process calls, an update ``GradScaler`` skipped. Outside
            accelerate that is warned once (:class:`StepIgnoredWarning`), and
            :data:`STALL_LIMIT` such calls in a row raise :class:`SchedulerUsageError`.
            ``"optimizer"``: the hook itself advances ``t`` after every update that really ran;
            calling :meth:`step` is then an error. ``"calls"``: every :meth:`step` advances ``t``,
            as with a torch scheduler, for loops whose updates do not run ``optimizer.step()`` in
            Python (a replayed CUDA graph).
        momentum: ``(max_m, min_m)`` to anneal SGD's ``momentum`` or Adam/AdamW's ``betas[0]``
            inversely to the LR, or ``None`` to leave momentum alone.

    Group LRs (and SGD ``momentum`` / Adam ``betas[0]`` when annealed) that are tensors are
    updated in place (``fill_``), so a compiled ``optimizer.step()`` sees a new value without a
    recompile; ``step()`` and the hook run outside any compiled graph.

    Raises:
        ScheduleError: an unbound schedule, a non-finite peak, a list of the wrong length, a bad
            ``count`` or ``momentum``, or momentum on an optimizer that has none.

    Example:
        >>> import torch
        >>> from cosanneal import Cosine
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        >>> sched = Scheduler(opt, Cosine(peak_lr=1.0, warmup_steps=2, cycle_steps=4))
        >>> lrs = []
        >>> for _ in range(7):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.0, 0.05, 0.1, 0.085355, 0.05, 0.014645, 0.0]
        >>> sched.state_dict()["step"]
        7
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        count: Count = "manual",
        momentum: tuple[float, float] | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if count not in _COUNTS:
            raise ScheduleError(f"count must be one of {', '.join(_COUNTS)}; got {count!r}")
        schedules, as_list = _group_schedules(schedule, len(optimizer.param_groups))
        self._schedules: tuple[Schedule, ...] = schedules
        self._as_list = as_list
        self._shared: Schedule | None = None if as_list else schedules[0]
        peak = schedules[0].peak
        self._factors: list[float] = [] if as_list else [lr / peak for lr in _initial_lrs(optimizer)]
        self._n_groups = len(optimizer.param_groups)
        self._tensor_lr = any(isinstance(g["lr"], Tensor) for g in optimizer.param_groups)
        self._momentum = _momentum_plan(optimizer, momentum, schedules)
        self._count: Count = count
        self._hook_handle: Any = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        # count="manual": optimizer updates noted by the hook, and their number at the last advance
        self._updates = 0
        self._seen = 0
        self._ignored = 0  # step() calls ignored since the update count was _ignored_at
        self._ignored_at = 0
        self._warned = False
        # The shared schedule when step() may take the lean path (float LRs, no momentum).
        self._lean = self._shared if not self._tensor_lr and self._momentum is None else None
        self._base = 0.0  # unscaled shared-schedule value at t
        self._list_lrs: list[float] = []
        super().__init__(optimizer)  # runs step() once in torch's initial mode: t = 0
        if count != "calls":
            self._attach()

    # ---- public API -----------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule | tuple[Schedule, ...]:
        """The shared schedule, or the tuple of per-group schedules."""
        return self._schedules if self._as_list else self._schedules[0]

    @property
    def count(self) -> Count:
        """``"manual"``, ``"optimizer"`` or ``"calls"`` (see the class docstring)."""
        return self._count

    def step(self, epoch: int | None = None) -> None:
        """Advance ``t`` by one update and set the groups' LRs for the next update.

        Call it after ``optimizer.step()`` when ``count="manual"``. A call with no optimizer
        update since the previous one does not advance ``t`` (see ``count``), so a wrapper that
        steps once per process still advances ``t`` once per update.

        Raises:
            SchedulerUsageError: with ``count="optimizer"`` (the optimizer hook already counts
                updates), when ``epoch`` is given (``t`` only moves one update at a time), or after
                :data:`STALL_LIMIT` calls in a row with no optimizer update.

        Example:
            >>> import torch
            >>> from cosanneal import Cosine
            >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            >>> sched = Scheduler(opt, Cosine(1.0, cycle_steps=10))
            >>> opt.step()
            >>> sched.step()
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", StepIgnoredWarning)
            ...     sched.step()  # a second call for the same update
            >>> sched.last_epoch
            1
        """
        if (_is_compiling() or _dynamo_callback() is not None) and not _on_host:  # see _untraced
            _untraced(self.step, epoch)
            return
        updates = self._updates
        if updates != self._seen and epoch is None:  # the hot path: an update ran since the last step
            self._seen = updates
            self._step_count += 1
            t = self.last_epoch + 1
            lean = self._lean
            if lean is None:
                self._apply(t)
                return
            base = lean._scalar(float(t))  # bound, and t is a whole count >= 0: no re-validation
            groups, factors = self.optimizer.param_groups, self._factors
            if len(groups) != len(factors):
                raise self._group_count_error()
            if len(factors) == 1:
                groups[0]["lr"] = base * factors[0]
            else:  # plain zip: a keyword argument (strict=) costs more than this whole loop
                for group, factor in zip(groups, factors):  # noqa: B905 (lengths checked above)
                    group["lr"] = base * factor
            self._base = base
            self.last_epoch = t
            return
        self._other_step(epoch)

    def _other_step(self, epoch: int | None) -> None:
        """Every ``step()`` but the hot path: torch's initial step, misuse, a call with no update."""
        if self._is_initial:  # LRScheduler.__init__'s own first step: set the LRs for t = 0
            self._step_count = 1
            self._apply(0)
            return
        if self._count == "optimizer":
            if _accelerate_wrapper() is not None:
                raise SchedulerUsageError(
                    "accelerate's AcceleratedScheduler called scheduler.step(), but count='optimizer' "
                    "already counts every optimizer update; build the Scheduler with count='manual' "
                    "(exact under accelerate), or do not pass it to accelerator.prepare()"
                )
            raise SchedulerUsageError(
                "scheduler.step() called with count='optimizer', which already counts every "
                "optimizer.step(); remove the call (or build the Scheduler with count='manual')"
            )
        if epoch is not None:
            raise SchedulerUsageError(
                f"scheduler.step(epoch={epoch!r}) is not supported: t counts optimizer updates; "
                "call step() once per update, or load_state_dict() to jump"
            )
        if self._finalizer is None or not self._finalizer.alive:  # "calls" or closed: like torch
            if _accelerate_wrapper() is not None:
                raise SchedulerUsageError(
                    f"accelerate's AcceleratedScheduler called scheduler.step() of a Scheduler with "
                    f"count={self._count!r}{' (closed)' if self._count != 'calls' else ''}, which "
                    "advances at every call, and accelerate calls once per process per update; build "
                    "the Scheduler with count='manual' (exact under accelerate)"
                )
            if self.last_epoch == 0:
                self._warn_if_before_optimizer()
            self._step_count += 1
            self._apply(self.last_epoch + 1)
            return
        self._ignore_step()

    def _ignore_step(self) -> None:
        """A manual ``step()`` with no optimizer update since the last one: ``t`` stays."""
        wrapper = _accelerate_wrapper()
        if wrapper is not None and any(
            getattr(o, "optimizer", o) is self.optimizer for o in getattr(wrapper, "optimizers", ())
        ):  # accelerate gates its calls on this optimizer: the other per-process calls of an update
            return
        if self._ignored_at != self._updates:
            self._ignored_at, self._ignored = self._updates, 0
        self._ignored += 1
        if self._ignored >= STALL_LIMIT:
            raise SchedulerUsageError(
                f"scheduler.step() was called {self._ignored} times in a row with no update of the "
                f"optimizer this Scheduler drives ({type(self.optimizer).__name__}); build the "
                "Scheduler on the optimizer your loop steps, and call step() once after each "
                "optimizer.step(); if updates run without optimizer.step() (a replayed CUDA graph) "
                "use count='calls'; to read LRs without training use scheduler.lrs_at(t)"
            )
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"scheduler.step() with no optimizer update since the previous step() was ignored "
                f"(t stays {self.last_epoch}): t counts updates that ran, and an update skipped by "
                "GradScaler or never run does not count. Call step() once after each "
                "optimizer.step(); to read LRs without training use scheduler.lrs_at(t). "
                "Warned once per scheduler.",
                StepIgnoredWarning,
                stacklevel=4,
            )

    def get_last_lr(self) -> list[float | Tensor]:
        """The LRs the groups hold: the closed form at ``t``, as floats (also for tensor LRs)."""
        if _under_dynamo():  # read on the host: no guard on the counter
            return list(_untraced(self.get_last_lr))
        return self._last_lr

    def get_lr(self) -> list[float | Tensor]:
        """The closed-form LRs at the current ``t`` (what the groups hold after :meth:`step`)."""
        return list(self._lrs(self.last_epoch))

    def close(self) -> None:
        """Remove the optimizer hook; later updates no longer count.

        With ``count="optimizer"`` ``t`` then stops; with ``count="manual"`` every later
        :meth:`step` advances ``t``, update or not, as a torch scheduler does.
        """
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._hook_handle = None

    def state_dict(self) -> dict[str, Any]:
        """``{"version": 1, "step": t, "schedule": <to_dict() or a list of them>}``, plain data only.

        Safe for ``torch.save`` and ``torch.load(weights_only=True)`` and for JSON.
        """
        configs: Any = (
            [s.to_dict() for s in self._schedules] if self._as_list else self._schedules[0].to_dict()
        )
        return {"version": STATE_VERSION, "step": self.last_epoch, "schedule": configs}

    def load_state_dict(self, state_dict: dict[str, Any], on_mismatch: OnMismatch = "error") -> None:
        """Restore ``t`` from :meth:`state_dict` output and re-set every group from the closed form.

        Args:
            state_dict: a state written by :meth:`state_dict`.
            on_mismatch: what to do when the saved schedule differs from this scheduler's:
                ``"error"`` raises; ``"continue"`` runs this scheduler's schedule from the saved
                step; ``"rescale"`` keeps the fraction of progress,
                ``t = round(t_saved / horizon_saved * horizon_new)`` (Python rounding; for lists,
                the horizon is the largest of the list's horizons; both must be finite).

        Raises:
            StateError: an unknown version, a malformed state, a mismatch with
                ``on_mismatch="error"``, or ``"rescale"`` with an endless schedule.
        """
        if on_mismatch not in _ON_MISMATCH:
            raise StateError(f"on_mismatch must be one of {', '.join(_ON_MISMATCH)}; got {on_mismatch!r}")
        step, saved = _parse_state(state_dict)
        difference = _mismatch(saved, self._schedules)
        if difference is not None:
            if on_mismatch == "error":
                raise StateError(
                    f"saved schedule differs from this scheduler's: {difference}; pass "
                    "on_mismatch='continue' or 'rescale' to load anyway"
                )
            if on_mismatch == "rescale":
                step = round(step / _horizon(saved, "saved") * _horizon(self._schedules, "current"))
        self._apply(step)
        self._seen = self._updates  # the next step() advances after the next update

    # ---- internals ------------------------------------------------------------------------
    @property
    def _last_lr(self) -> list[float | Tensor]:  # type: ignore[override]
        """The LRs set by the last step, built on demand (torch's ``get_last_lr()`` returns it)."""
        if self._shared is not None:
            base = self._base
            return [base * f for f in self._factors]
        return list(self._list_lrs)

    @_last_lr.setter
    def _last_lr(self, value: list[float | Tensor]) -> None:
        pass  # the LRs are a function of t; nothing to store

    def lrs_at(self, t: int) -> list[float]:
        """The closed-form LR of every group at update count ``t`` (what ``get_last_lr()`` will be then).

        A pure function of ``t``: telemetry records it as the expected LR next to the LR really used.

        Example:
            >>> import torch
            >>> from cosanneal import Cosine
            >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
            >>> Scheduler(opt, Cosine(1.0, cycle_steps=10)).lrs_at(5)
            [0.25]
        """
        return self._lrs(int(t))

    def _lrs(self, t: int) -> list[float]:
        """The closed-form LR of every group at ``t``."""
        # The schedules were checked bound at construction and t is a whole count >= 0, so the
        # validated scalar path is used directly (it is what Schedule.__call__ dispatches to).
        if self._shared is not None:
            base = self._shared._scalar(float(t))
            return [base * f for f in self._factors]
        return [s._scalar(float(t)) for s in self._schedules]

    def _apply(self, t: int) -> None:
        """Set ``t`` and every group's LR (and momentum) from the closed form."""
        groups = self.optimizer.param_groups
        if len(groups) != self._n_groups:
            raise self._group_count_error()
        shared = self._shared
        if shared is not None and not self._tensor_lr:  # the common case, kept lean
            base = shared._scalar(float(t))
            for group, factor in zip(groups, self._factors):  # noqa: B905 (lengths checked above)
                group["lr"] = base * factor
            lrs = None
        else:
            base = 0.0 if shared is None else shared._scalar(float(t))
            lrs = self._lrs(t) if shared is None else [base * f for f in self._factors]
            for group, lr in zip(groups, lrs, strict=True):
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
            self._list_lrs = lrs
        self._base = base
        self.last_epoch = t
        if self._momentum is not None:
            self._set_momentum(self._momentum, base, lrs or [])

    def _group_count_error(self) -> SchedulerUsageError:
        return SchedulerUsageError(
            f"optimizer has {len(self.optimizer.param_groups)} param groups but the Scheduler was "
            f"built for {self._n_groups}; build a new Scheduler after add_param_group()"
        )

    def _set_momentum(self, plan: _Momentum, base: float, lrs: list[float]) -> None:
        groups = self.optimizer.param_groups
        if self._as_list:
            values = [plan.value(lr, i) for i, lr in enumerate(lrs)]
        else:  # one shared shape: the unscaled schedule value drives every group
            values = [plan.value(base, 0)] * len(groups)
        for group, m in zip(groups, values, strict=True):
            if plan.key == "betas":
                betas = group["betas"]
                if isinstance(betas[0], Tensor):
                    betas[0].fill_(m)
                else:
                    group["betas"] = (m, betas[1])
            elif isinstance(group["momentum"], Tensor):
                group["momentum"].fill_(m)
            else:
                group["momentum"] = m

    def _on_update(self) -> None:
        """One real optimizer update ran (called by the step post-hook)."""
        if self._count == "optimizer":
            self._step_count += 1
            self._apply(self.last_epoch + 1)
        else:
            self._updates += 1

    def _attach(self) -> None:
        handle = self.optimizer.register_step_post_hook(_count_hook(weakref.ref(self)))
        self._hook_handle = handle
        self._finalizer = weakref.finalize(self, handle.remove)

    def _warn_if_before_optimizer(self) -> None:
        """Torch's check that the first ``step()`` follows an ``optimizer.step()``."""
        opt_step = self.optimizer.step
        if getattr(opt_step, "_wrapped_by_lr_sched", False) and not getattr(
            self.optimizer, "_opt_called", False
        ):
            warnings.warn(
                "Detected call of `scheduler.step()` before `optimizer.step()`: the LR of step 0 "
                "was skipped. Call optimizer.step() first, or use count='optimizer'.",
                UserWarning,
                stacklevel=3,
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hook_handle"] = None
        state["_finalizer"] = None
        state["_attached"] = self._finalizer is not None and self._finalizer.alive
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        attached = state.pop("_attached", False)
        self.__dict__.update(state)
        if attached:
            self._attach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, count={self._count!r}, t={self.last_epoch})"
