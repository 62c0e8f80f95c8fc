r"""Non-finite guard: skip updates with a NaN/Inf loss or gradient, roll back, and stop with advice.

Call :meth:`NonFiniteGuard.check` after ``loss.backward()`` and before ``optimizer.step()``:

.. code-block:: python

    decision = guard.check(loss, model, step=step)
    if decision.ok:
        optimizer.step()          # the schedule counts this update
    elif decision.stop:
        raise SystemExit(decision.message)
    # "skip": no update, so a Scheduler counting optimizer updates does not advance;
    # "rollback": the guard already called your rollback() callback; use decision.schedule.

Decisions, with ``K = max_consecutive`` and ``R = max_rollbacks``:

* a finite loss and finite gradients: ``"ok"`` and the run of non-finite steps is reset;
* a non-finite one: ``"skip"``, until ``K`` arrive in a row; then
* ``on_exhausted="rollback"`` and fewer than ``R`` rollbacks done: ``"rollback"``: the ``rollback()``
  callback runs (reload the last good checkpoint) and :attr:`Decision.schedule` is the schedule
  adjusted by :func:`adjust_schedule`; otherwise ``"stop"`` with a message saying what happened and
  what to change. ``policy="stop"`` stops at the first non-finite value (for debugging).

Cost: one host-device synchronisation per :meth:`NonFiniteGuard.check` when the loss or gradients are
tensors (the single ``.item()`` of one fused flag: ``max|g|`` of every gradient by
``torch._foreach_norm(grads, inf)``, stacked with the loss, reduced by ``isfinite().all()``). A plain
float loss without gradients costs no synchronisation. The non-finite path (rare) syncs again to
report the loss value and the number of bad gradient tensors.

Schedule adjustment (``f = lr_factor``, ``0 < f < 1``), by kind:

* ``adjust="peak"``: the peak-like fields are multiplied by ``f`` and absolute floors are clamped to
  the new peak: ``cosine``/``wsd`` ``peak_lr``; ``onecycle``/``cyclic`` ``max_lr``; ``constant``,
  ``step``, ``multistep``, ``exponential``, ``polynomial`` ``lr``; ``linear`` both ends; ``join``
  every piece. Relative floors (``min_ratio``) stay.
* ``adjust="floor"``: an absolute floor ``F`` becomes ``min(P, F / f)`` and a ratio ``r`` becomes
  ``min(1, r / f)``; a zero floor becomes ``0.01 P`` (ratio ``0.01``): ``cosine`` ``min_lr`` or
  ``min_ratio``; ``wsd`` ``min_lr_ratio``; ``exponential`` ``min_lr``; ``polynomial`` ``end_lr``;
  ``cyclic`` ``base_lr``; ``onecycle`` ``final_div_factor * f`` (at least 1); ``join`` every piece
  that has a floor. Kinds without a floor are an error at construction.
* a callable ``adjust(schedule) -> schedule`` for anything else.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from cosanneal.errors import ScheduleError, StateError
from cosanneal.schedules.base import Schedule, from_dict
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.join import Join
from cosanneal.schedules.onecycle import OneCycle

if TYPE_CHECKING:
    import torch

__all__ = ["STATE_VERSION", "ZERO_FLOOR_RATIO", "Decision", "NonFiniteGuard", "adjust_schedule"]

#: Version of :meth:`NonFiniteGuard.state_dict`.
STATE_VERSION = 1
#: A zero floor raised by ``adjust="floor"`` becomes this fraction of the peak.
ZERO_FLOOR_RATIO = 0.01

S = TypeVar("S", bound=Schedule)
Action = Literal["ok", "skip", "rollback", "stop"]
Adjust = Literal["peak", "floor"] | Callable[[Schedule], Schedule]

# kind -> (peak fields, absolute floor fields clamped to the peak, ratio floor fields)
_PEAK_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cosine": (("peak_lr",), ("min_lr", "warmup_start_lr")),
    "wsd": (("peak_lr",), ()),
    "onecycle": (("max_lr",), ()),
    "cyclic": (("max_lr",), ("base_lr",)),
    "constant": (("lr",), ()),
    "step": (("lr",), ()),
    "multistep": (("lr",), ()),
    "exponential": (("lr",), ("min_lr",)),
    "polynomial": (("lr",), ("end_lr",)),
    "linear": (("start_lr", "end_lr"), ()),
}
# kind -> (floor field, its peak field or None for a ratio)
_FLOOR_FIELDS: dict[str, tuple[str, str | None]] = {
    "wsd": ("min_lr_ratio", None),
    "exponential": ("min_lr", "lr"),
    "polynomial": ("end_lr", "lr"),
    "cyclic": ("base_lr", "max_lr"),
}


def _check_factor(lr_factor: Any) -> float:
    if (
        isinstance(lr_factor, bool)
        or not isinstance(lr_factor, numbers.Real)
        or not 0.0 < float(lr_factor) < 1.0
    ):
        raise ScheduleError(f"lr_factor must be a number in (0, 1), got {lr_factor!r}")
    return float(lr_factor)


def _lower_peak(schedule: Schedule, f: float) -> Schedule:
    if isinstance(schedule, Join):
        return dataclasses.replace(schedule, schedules=tuple(_lower_peak(p, f) for p in schedule.schedules))
    if schedule.kind not in _PEAK_FIELDS:
        raise ScheduleError(
            f"adjust='peak' does not know schedule kind {schedule.kind!r}; pass adjust=<callable "
            "returning the adjusted schedule>"
        )
    peaks, floors = _PEAK_FIELDS[schedule.kind]
    changes = {name: float(getattr(schedule, name)) * f for name in peaks}
    top = max(changes.values())
    for name in floors:
        changes[name] = min(float(getattr(schedule, name)), top)
    return dataclasses.replace(schedule, **changes)  # type: ignore[type-var]


def _raise_floor(schedule: Schedule, f: float) -> Schedule | None:
    """The schedule with its floor raised, or ``None`` if it has no floor."""

    def up(value: float, cap: float) -> float:
        return min(cap, value / f) if value > 0.0 else cap * ZERO_FLOOR_RATIO

    kind = schedule.kind
    if isinstance(schedule, Join):
        pieces = [_raise_floor(p, f) for p in schedule.schedules]
        if all(p is None for p in pieces):
            return None
        kept = tuple(new or old for new, old in zip(pieces, schedule.schedules, strict=True))
        return dataclasses.replace(schedule, schedules=kept)
    if isinstance(schedule, Cosine):
        if schedule.min_ratio is not None:
            return dataclasses.replace(schedule, min_ratio=up(float(schedule.min_ratio), 1.0))
        return dataclasses.replace(schedule, min_lr=up(float(schedule.min_lr), float(schedule.peak_lr)))
    if isinstance(schedule, OneCycle):
        return dataclasses.replace(schedule, final_div_factor=max(1.0, float(schedule.final_div_factor) * f))
    if kind in _FLOOR_FIELDS:
        name, peak = _FLOOR_FIELDS[kind]
        cap = 1.0 if peak is None else float(getattr(schedule, peak))
        return dataclasses.replace(schedule, **{name: up(float(getattr(schedule, name)), cap)})  # type: ignore[type-var]
    if kind in _PEAK_FIELDS:
        return None
    raise ScheduleError(
        f"adjust='floor' does not know schedule kind {kind!r}; pass adjust=<callable returning the "
        "adjusted schedule>"
    )


def adjust_schedule(schedule: S, adjust: Adjust = "peak", lr_factor: float = 0.5) -> S:
    """Return ``schedule`` with a lower peak or a higher floor (the rules are in the module docstring).

    Args:
        schedule: any built-in schedule kind.
        adjust: ``"peak"`` (multiply the peak by ``lr_factor``), ``"floor"`` (divide the floor by
            it, capped at the peak; a zero floor becomes ``0.01 * peak``) or a callable.
        lr_factor: the factor ``f`` in ``(0, 1)``.

    Raises:
        ScheduleError: a bad ``lr_factor`` or ``adjust``, an unknown kind, or ``"floor"`` on a
            schedule without a floor.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, min_lr=0.001, cycle_steps=100)
        >>> adjust_schedule(s, "peak", 0.5).peak_lr, adjust_schedule(s, "floor", 0.5).min_lr
        (0.05, 0.002)
    """
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"schedule must be a cosanneal Schedule, got {schedule!r}")
    f = _check_factor(lr_factor)
    if callable(adjust):
        out = adjust(schedule)
        if not isinstance(out, Schedule):
            raise ScheduleError(f"adjust callable must return a Schedule, got {out!r}")
        return cast(S, out)  # the callable's result is whatever kind the user returns
    if adjust == "peak":
        return cast(S, _lower_peak(schedule, f))
    if adjust == "floor":
        raised = _raise_floor(schedule, f)
        if raised is None:
            raise ScheduleError(
                f"adjust='floor' needs a schedule with a floor; kind {schedule.kind!r} has none "
                "(use adjust='peak')"
            )
        return cast(S, raised)
    raise ScheduleError(f"adjust must be 'peak', 'floor' or a callable, got {adjust!r}")


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the guard decided for one update.

    Attributes:
        action: ``"ok"`` (call ``optimizer.step()``), ``"skip"`` (don't), ``"rollback"`` (don't;
            the rollback callback ran, use :attr:`schedule` from now on) or ``"stop"`` (end the run).
        step: the step the decision is about.
        message: empty for ``"ok"``; otherwise what happened (and, for ``"stop"``, what to change).
        schedule: after a rollback, the adjusted schedule (``None`` if the guard has none).
        lr_scale: ``new.peak / old.peak`` after a rollback (1.0 otherwise). A shared schedule in
            :class:`cosanneal.torch.Scheduler` is normalised by its peak, so multiply each group's
            ``initial_lr`` by it before building the new Scheduler.
    """

    action: Action
    step: int
    message: str = ""
    schedule: Schedule | None = None
    lr_scale: float = 1.0

    @property
    def ok(self) -> bool:
        """``True`` when the optimizer update should run."""
        return self.action == "ok"

    @property
    def skip(self) -> bool:
        """``True`` when the optimizer update must not run (skip, rollback or stop)."""
        return self.action != "ok"

    @property
    def stop(self) -> bool:
        """``True`` when the run must end."""
        return self.action == "stop"


def _plain_float(value: float | None) -> float | str | None:
    """A JSON-safe float: non-finite values as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _from_plain(value: Any) -> float | None:
    return None if value is None else float(value)


def _parameters(source: Any) -> list[torch.Tensor]:
    """The tensors whose ``.grad`` are checked: from a module, an optimizer or an iterable."""
    if source is None:
        return []
    if hasattr(source, "param_groups"):
        return [p for group in source.param_groups for p in group["params"]]
    if hasattr(source, "parameters") and callable(source.parameters):
        return list(source.parameters())
    if isinstance(source, Iterable):
        return list(source)
    raise TypeError(
        f"model_or_params must be a module, an optimizer or an iterable of tensors, got {source!r}"
    )


class NonFiniteGuard:
    """Skip updates with a non-finite loss or gradient; roll back after a run of them; stop with advice.

    Args:
        policy: ``"skip"`` (default): skip non-finite updates, escalate after ``max_consecutive``.
            ``"stop"``: stop at the first one.
        max_consecutive: non-finite updates in a row that trigger ``on_exhausted`` (>= 1).
        on_exhausted: ``"rollback"`` (call ``rollback`` and adjust the schedule, at most
            ``max_rollbacks`` times, then stop) or ``"stop"``.
        lr_factor: the adjustment factor in ``(0, 1)`` (see :func:`adjust_schedule`).
        adjust: ``"peak"``, ``"floor"`` or a callable ``schedule -> schedule``.
        max_rollbacks: rollbacks allowed before stopping (>= 0).
        rollback: called with no argument at each rollback (reload the last good checkpoint).
        schedule: the schedule in use, adjusted at each rollback (:attr:`schedule` holds the latest).
        on_event: ``on_event(kind, **payload)`` for ``"nonfinite"``, ``"rollback"`` and ``"stop"``.

    Every non-``"ok"`` decision is appended to :attr:`history` as a dict.

    Example:
        >>> from cosanneal import Cosine
        >>> guard = NonFiniteGuard(max_consecutive=2, max_rollbacks=1, schedule=Cosine(0.1, cycle_steps=10))
        >>> [guard.check(x).action for x in (1.0, float("nan"), 0.5, float("nan"), float("inf"))]
        ['ok', 'skip', 'ok', 'skip', 'rollback']
        >>> guard.schedule.peak_lr
        0.05
        >>> [guard.check(float("nan")).action for _ in range(2)]
        ['skip', 'stop']
    """

    def __init__(
        self,
        policy: Literal["skip", "stop"] = "skip",
        max_consecutive: int = 3,
        on_exhausted: Literal["rollback", "stop"] = "rollback",
        lr_factor: float = 0.5,
        adjust: Adjust = "peak",
        max_rollbacks: int = 2,
        *,
        rollback: Callable[[], object] | None = None,
        schedule: Schedule | None = None,
        on_event: Callable[..., object] | None = None,
    ) -> None:
        if policy not in ("skip", "stop"):
            raise ValueError(f"policy must be 'skip' or 'stop', got {policy!r}")
        if on_exhausted not in ("rollback", "stop"):
            raise ValueError(f"on_exhausted must be 'rollback' or 'stop', got {on_exhausted!r}")
        for name, value, low in (
            ("max_consecutive", max_consecutive, 1),
            ("max_rollbacks", max_rollbacks, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (callable(adjust) or adjust in ("peak", "floor")):
            raise ValueError(f"adjust must be 'peak', 'floor' or a callable, got {adjust!r}")
        self.policy = policy
        self.max_consecutive = max_consecutive
        self.on_exhausted = on_exhausted
        self.lr_factor = _check_factor(lr_factor)
        self.adjust = adjust
        self.max_rollbacks = max_rollbacks
        self.rollback = rollback
        self.on_event = on_event
        self.history: list[dict[str, Any]] = []
        self._schedule: Schedule | None = None
        self.schedule = schedule
        self.checks = 0  # updates checked
        self.consecutive = 0  # non-finite updates in a row
        self.nonfinite = 0  # non-finite updates in total
        self.rollbacks = 0
        self.stopped = False
        self.streak_start: int | None = None  # first step of the current run of non-finite updates
        self.last_loss: float | None = None  # loss of the last non-finite update
        self.stop_message = ""

    # ---- schedule ---------------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule | None:
        """The schedule in use: the one given, or the last adjusted one."""
        return self._schedule

    @schedule.setter
    def schedule(self, value: Schedule | None) -> None:
        if value is not None:
            adjust_schedule(value, self.adjust, self.lr_factor)  # fail now, not at the first rollback
        self._schedule = value

    def adjust_schedule(self, schedule: Schedule) -> Schedule:
        """``schedule`` adjusted with this guard's ``adjust`` and ``lr_factor``."""
        return adjust_schedule(schedule, self.adjust, self.lr_factor)

    # ---- the check --------------------------------------------------------------------------
    def check(self, loss: Any, model_or_params: Any = None, *, step: int | None = None) -> Decision:
        """Decide whether the update about to happen may run.

        Args:
            loss: the loss (a tensor of any shape, a float, or ``None`` to check gradients only).
            model_or_params: a module, an optimizer or an iterable of tensors whose ``.grad`` are
                checked (``None``: the loss only; use that with AMP's ``GradScaler``, which skips
                inf gradients itself and would otherwise count its normal scale search here).
            step: the step number for messages and events (default: the number of checks so far).

        Returns:
            The :class:`Decision`; only ``decision.ok`` means "call ``optimizer.step()``".
        """
        at = self.checks if step is None else int(step)
        self.checks += 1
        if self.stopped:
            return Decision("stop", at, self.stop_message)
        finite, loss_value, bad_grads = self._probe(loss, _parameters(model_or_params))
        if finite:
            self.consecutive = 0
            self.streak_start = None
            return Decision("ok", at)
        self.consecutive += 1
        self.nonfinite += 1
        self.last_loss = loss_value
        if self.streak_start is None:
            self.streak_start = at
        where = "loss" if loss_value is not None and not math.isfinite(loss_value) else "gradients"
        self._emit(
            "nonfinite", step=at, loss=_plain_float(loss_value), nonfinite_grads=bad_grads,
            consecutive=self.consecutive, where=where,
        )  # fmt: skip
        if self.policy == "skip" and self.consecutive < self.max_consecutive:
            return Decision("skip", at, f"non-finite {where} at step {at}; update skipped")
        if self.policy == "skip" and self.on_exhausted == "rollback" and self.rollbacks < self.max_rollbacks:
            return self._roll_back(at)
        return self._stop(at)

    def _probe(self, loss: Any, params: list[torch.Tensor]) -> tuple[bool, float | None, int]:
        """``(all finite, loss value if not finite, number of non-finite gradient tensors)``."""
        grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
        loss_is_tensor = loss is not None and hasattr(loss, "detach")
        if not grads and not loss_is_tensor:
            value = None if loss is None else float(loss)
            ok = value is None or math.isfinite(value)
            return ok, value, 0
        import torch

        flags: list[torch.Tensor] = []
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for g in grads:
            g = g.coalesce().values() if g.is_sparse else g
            by_device.setdefault(g.device, []).append(g)
        for tensors in by_device.values():
            flags.append(torch.isfinite(torch.stack(torch._foreach_norm(tensors, math.inf))).all())
        if loss_is_tensor:
            flags.append(torch.isfinite(loss.detach()).all())
        elif loss is not None:
            flags.append(torch.tensor(math.isfinite(float(loss))))
        home = flags[0].device
        if bool(torch.stack([f.to(home) for f in flags]).all().item()):  # the one sync
            return True, None, 0
        # rare path: describe what went wrong (more syncs are fine here)
        value = None
        if loss is not None:
            value = float(loss.detach().float().mean()) if loss_is_tensor else float(loss)
        bad = sum(1 for g in grads if not bool(torch.isfinite(g).all()))
        return False, value, bad

    def _roll_back(self, at: int) -> Decision:
        self.rollbacks += 1
        self.consecutive = 0
        self.streak_start = None
        old = self._schedule
        new = None if old is None else self.adjust_schedule(old)
        scale = 1.0 if old is None or new is None else new.peak / old.peak
        self._schedule = new
        if self.rollback is not None:
            self.rollback()
        how = "" if new is None else f"; schedule adjusted ({self._describe(old, new)})"
        message = (
            f"{self.max_consecutive} non-finite updates in a row up to step {at}; rollback "
            f"{self.rollbacks} of {self.max_rollbacks}{how}"
        )
        payload: dict[str, Any] = {"step": at, "rollbacks": self.rollbacks, "lr_scale": scale}
        if new is not None:
            payload["schedule"] = new.to_dict()
        self._emit("rollback", message=message, **payload)
        return Decision("rollback", at, message, new, scale)

    def _describe(self, old: Schedule | None, new: Schedule) -> str:
        if old is None:
            return ""
        a, b = old.to_dict(), new.to_dict()
        changed = [f"{k} {a[k]!r} -> {b[k]!r}" for k in b if a.get(k) != b[k] and k != "schedules"]
        return ", ".join(changed) or f"adjust={self.adjust!r}"

    def _stop(self, at: int) -> Decision:
        self.stopped = True
        first = at if self.streak_start is None else self.streak_start
        loss = "n/a" if self.last_loss is None else repr(self.last_loss)
        if self.policy == "stop":
            what = f"non-finite loss or gradients at step {at} (policy='stop')"
        else:
            what = (
                f"{self.consecutive} non-finite updates in a row (steps {first}..{at}) after "
                f"{self.rollbacks} of max_rollbacks={self.max_rollbacks} rollbacks"
            )
        self.stop_message = (
            f"stopping: {what}; {self.nonfinite} non-finite of {self.checks} updates checked, last loss "
            f"{loss}. To fix: lower peak_lr, raise the floor (min_lr/min_ratio), clip gradients "
            "(torch.nn.utils.clip_grad_norm_), use bf16 or a GradScaler instead of plain fp16, or "
            "inspect the data at those steps"
        )
        self._emit(
            "stop", step=at, message=self.stop_message, nonfinite=self.nonfinite, rollbacks=self.rollbacks
        )
        return Decision("stop", at, self.stop_message)

    def _emit(self, kind: str, **payload: Any) -> None:
        self.history.append({"kind": kind, **payload})
        if self.on_event is not None:
            self.on_event(kind, **payload)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The counters, the current schedule and the history, as JSON-ready data.

        Example:
            >>> import json
            >>> g = NonFiniteGuard()
            >>> _ = g.check(float("nan"))
            >>> h = NonFiniteGuard(); h.load_state_dict(json.loads(json.dumps(g.state_dict())))
            >>> h.consecutive, h.nonfinite, h.checks
            (1, 1, 1)
        """
        return {
            "version": STATE_VERSION,
            "checks": self.checks,
            "consecutive": self.consecutive,
            "nonfinite": self.nonfinite,
            "rollbacks": self.rollbacks,
            "stopped": self.stopped,
            "streak_start": self.streak_start,
            "last_loss": _plain_float(self.last_loss),
            "stop_message": self.stop_message,
            "schedule": None if self._schedule is None else self._schedule.to_dict(),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a resumed run keeps its counters and schedule).

        Raises:
            StateError: not a guard state, or a version this code does not read.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else type(state).__name__
            raise StateError(f"guard state version must be {STATE_VERSION}, got {got!r}")
        try:
            counters = {k: int(state[k]) for k in ("checks", "consecutive", "nonfinite", "rollbacks")}
            schedule = None if state["schedule"] is None else from_dict(state["schedule"])
            streak = None if state["streak_start"] is None else int(state["streak_start"])
            last = _from_plain(state["last_loss"])
            history = [dict(h) for h in state["history"]]
            stopped, message = bool(state["stopped"]), str(state["stop_message"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"guard state is malformed: {exc!r}") from exc
        for name, value in counters.items():
            setattr(self, name, value)
        self._schedule = schedule
        self.streak_start, self.last_loss, self.history = streak, last, history
        self.stopped, self.stop_message = stopped, message

    def __repr__(self) -> str:
        return (
            f"NonFiniteGuard(checks={self.checks}, nonfinite={self.nonfinite}, consecutive={self.consecutive}, "
            f"rollbacks={self.rollbacks}/{self.max_rollbacks}, stopped={self.stopped})"
        )
