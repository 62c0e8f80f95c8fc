"""Per-update and per-evaluation telemetry of a training run, recorded into a :class:`RunStore`.

The training thread only appends rows (the run store's queues); values may be tensors on any device
and are converted on the store's writer thread, so no call here synchronises with the GPU. The
expected LR and the phase come from the schedule's closed form and, being pure functions of the step,
are evaluated on the writer thread too; only the cycle index is computed on the training thread (once
per cycle: it is cached while the step stays inside it), because restart events need it at once.

Scalars written per logged update (``group`` is the param-group index where given):

=================  =======  ===============================================================
name               group    value
=================  =======  ===============================================================
``lr``             i        LR the optimizer used for group ``i``
``lr_expected``    i        ``expected(step)[i]``, or ``schedule(step)`` for every group
``momentum``       i        momentum / beta1 of group ``i`` (when given)
``cycle``          --       index of the schedule's cycle containing ``step``
``phase``          --       :data:`PHASE_CODES` code of ``schedule.phase(step)`` (-1: other)
``loss``           --       training loss
``grad_norm``      --       gradient norm (when given)
``nonfinite``      --       count of non-finite values this update (logged when given)
``step_time``      --       seconds for this update (given, or measured between calls)
``samples_per_s``  --       ``samples / step_time`` (when ``samples`` is given)
``val_<metric>``   --       each metric of :meth:`Telemetry.on_eval`
=================  =======  ===============================================================
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from cosanneal.runtime.runstore import RunStore, Sink

#: Codes of the ``phase`` scalar (``schedule.phase(step)``); any other phase name is stored as -1.
PHASE_CODES: dict[str, int] = {"warmup": 0, "anneal": 1, "hold": 2}

#: Event kinds :meth:`Telemetry.event` accepts, each with the payload fields the cosanneal runtime writes
#: (a trailing ``?`` marks a field written only sometimes). ``docs/runstore.md`` shows the same table;
#: a test checks both against the events a real run writes.
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "restart": ("cycle", "previous_cycle", "lr_expected"),
    "checkpoint_saved": ("path", "reason", "cycle_end", "seconds"),
    "checkpoint_failed": ("path", "reason"),
    "checkpoint_deleted": ("path", "reason"),
    "checkpoint_best": ("metric", "value", "path"),
    "checkpoint_loaded": ("path", "skipped"),
    "checkpoint_skipped_corrupt": ("path", "reason"),
    "preempted": ("signal", "exit_code"),
    "resumed": ("from_step", "checkpoint", "epoch", "batch", "discarded_rows"),
    "world_size_changed": (
        "from_world_size",
        "to_world_size",
        "rule",
        "global_batch_before",
        "global_batch_after",
        "batch_size",
        "accumulate_before",
        "accumulate",
        "ratio",
        "lr_factor",
        "total_steps_before",
        "total_steps",
        "batch",
        "skipped_samples",
    ),
    "schedule_replanned": (
        "request",
        "mode",
        "total_steps_before",
        "total_steps",
        "fingerprint_before",
        "fingerprint_after",
        "lr_before",
        "lr_after",
        "jump",
        "schedule",
    ),
    "replan_refused": ("request", "reason"),
    "nonfinite": ("loss", "nonfinite_grads", "consecutive", "where"),
    "rollback": ("message", "rollbacks", "lr_scale", "schedule?"),
    "stop": ("message", "nonfinite", "rollbacks"),
    "early_stop": ("reason", "by"),
    "run_finished": ("updates", "seconds"),
    "run_failed": ("error", "message"),
}

#: Event kinds whose ``step`` is a count of updates done: they describe the state *after* that many
#: updates (an evaluation, a checkpoint, the end of a session), unlike ``restart`` or ``nonfinite``,
#: whose step is the index of an update. A run resumed from the checkpoint at ``n`` updates keeps these
#: at step ``n`` and records every other row from step ``n`` on again (:meth:`Telemetry.resume`).
STATE_EVENTS: frozenset[str] = frozenset(
    {
        "checkpoint_saved", "checkpoint_failed", "checkpoint_deleted", "checkpoint_best",
        "checkpoint_loaded", "checkpoint_skipped_corrupt", "preempted", "resumed", "early_stop",
        "run_finished", "run_failed", "schedule_replanned",
    }
)  # fmt: skip

LRs = Sequence[Any] | float


def val_name(name: str) -> str:
    """The stored name of an evaluation metric: ``val_<name>``, unless it already starts with ``val_``.

    Example:
        >>> val_name("loss"), val_name("val_acc")
        ('val_loss', 'val_acc')
    """
    return name if name.startswith("val_") else f"val_{name}"


class _UpdateRows:
    """One update's rows as the run store's writer thread iterates them: the rows given, then the derived ones.

    The derived rows (``lr_expected`` of every group, ``phase``) are pure functions of the step, so they
    are computed here, at flush time on the writer thread, by one call of ``derive(step, n_lrs)``.
    """

    __slots__ = ("derive", "n_lrs", "rows", "step")

    def __init__(
        self,
        rows: list[tuple[str, int | None, Any]],
        derive: Callable[[int, int], list[tuple[str, int | None, float]]],
        step: int,
        n_lrs: int,
    ) -> None:
        self.rows, self.derive, self.step, self.n_lrs = rows, derive, step, n_lrs

    def __iter__(self) -> Iterator[tuple[str, int | None, Any]]:
        yield from self.rows
        yield from self.derive(self.step, self.n_lrs)


def _failed(what: str, step: int, exc: Exception) -> float:
    warnings.warn(f"cosanneal: {what} failed at step {step} ({exc!r}); stored NaN", stacklevel=2)
    return math.nan


class Telemetry:
    """Records what each optimizer update did, what it should have done, and the run's events.

    Args:
        store: Where rows go (a disabled store makes every call a no-op).
        schedule: The run's :class:`cosanneal.Schedule`: gives ``lr_expected`` (same value for every
            group) when ``expected`` is not given, and ``cycle``/``phase``/``restart`` events.
        expected: ``expected(step) -> list[float]``, the closed-form LR of every group (the trainer
            passes its scheduler's); takes precedence over ``schedule`` for ``lr_expected``. It must be
            a pure function of ``step``: it is called on the store's writer thread, at flush time.
        sinks: Extra sinks (e.g. :class:`cosanneal.sinks.tensorboard.TensorBoardSink`); attached to
            ``store`` so they receive the same batches on its writer thread.
        every: Record per-update scalars every ``every``-th step (``step % every == 0``); restart
            detection still runs at every update and events are always recorded.

    Formulas: ``samples_per_s = samples / step_time``; ``step_time`` defaults to the wall time since
    the previous :meth:`on_update` call (``time.perf_counter``).

    Example:
        >>> import tempfile
        >>> from cosanneal import Cosine, runs
        >>> d = tempfile.mkdtemp()
        >>> sched = Cosine(0.1, cycle_steps=4, max_cycles=None)
        >>> with RunStore(d) as store:
        ...     tel = Telemetry(store, schedule=sched)
        ...     for step in range(6):
        ...         tel.on_update(step, [sched(step)], loss=1.0 / (step + 1))
        >>> run = runs.open(d)
        >>> run.scalar("cycle")[1].tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
        >>> [(e["step"], e["cycle"]) for e in run.events("restart")]
        [(4, 1)]
    """

    def __init__(
        self,
        store: RunStore,
        *,
        schedule: Any = None,
        expected: Callable[[int], Sequence[float]] | None = None,
        sinks: Iterable[Sink] = (),
        every: int = 1,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if schedule is not None and not callable(schedule):
            raise ValueError(f"schedule must be a cosanneal Schedule (callable step -> lr), got {schedule!r}")
        self.store = store
        self.schedule = schedule
        self.expected = expected
        self.every = every
        self.enabled = store.enabled
        for sink in sinks:
            store.add_sink(sink)
        self._has_cycle = schedule is not None and hasattr(schedule, "cycle")
        self._has_phase = schedule is not None and hasattr(schedule, "phase")
        self._cycle = -1  # index of the cycle seen last
        self._cycle_end = -1.0  # cycle cache: [start, end) of that cycle
        self._cycle_start = 0.0
        self._last_time: float | None = None
        self._expected_len: int | None = None
        self._derives = expected is not None or schedule is not None
        self.last_step: int | None = None

    # ---- per update -------------------------------------------------------------------------
    def _cycle_of(self, step: int) -> int:
        """Cycle index of ``step`` (cached while ``step`` stays inside the same cycle)."""
        if self._cycle_start <= step < self._cycle_end:
            return self._cycle
        info = self.schedule.cycle(step)
        self._cycle_start, self._cycle_end = float(info.start), float(info.start + info.length)
        return int(info.index)

    def on_update(
        self,
        step: int,
        lrs: LRs,
        *,
        loss: Any = None,
        grad_norm: Any = None,
        nonfinite: Any = 0,
        samples: Any = None,
        step_time: float | None = None,
        momentum: Sequence[Any] | float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one optimizer update (call it after ``optimizer.step()``; ``step`` = updates done before).

        Args:
            step: The update's step (the schedule step its LR came from).
            lrs: The LR of every param group (``[g["lr"] for g in optimizer.param_groups]``) or one float.
            loss: Training loss (a float or a tensor; tensors are converted off the training thread).
            grad_norm: Gradient norm, when computed.
            nonfinite: Count of non-finite values seen this update (recorded when non-zero or a tensor).
            samples: Samples in this update (for ``samples_per_s``).
            step_time: Seconds this update took; default: time since the previous call.
            momentum: Momentum/beta1 of every group (or one float) when annealed.
            extra: More scalars of this update, stored under their own names (a task's extra training
                scalars as ``train_<name>``, ``micro_batches`` under gradient accumulation).
        """
        if not self.enabled:
            return
        now = time.perf_counter()
        if step_time is None and self._last_time is not None:
            step_time = now - self._last_time
        self._last_time = now
        self.last_step = step
        store = self.store
        if self._has_cycle:
            cycle = self._cycle_of(step)
            if cycle != self._cycle:
                if (
                    self._cycle >= 0
                    and cycle > self._cycle
                    and self.schedule.phase(self._cycle_start) != "hold"
                ):
                    self._restart(step, cycle)
                self._cycle = cycle
        if step % self.every:
            return
        rows: list[tuple[str, int | None, Any]] = []
        add = rows.append
        if isinstance(lrs, (int, float)):
            lrs = (lrs,)
        for i, lr in enumerate(lrs):
            add(("lr", i, lr))
        if self._has_cycle:
            add(("cycle", None, self._cycle))
        if loss is not None:
            add(("loss", None, loss))
        if grad_norm is not None:
            add(("grad_norm", None, grad_norm))
        if type(nonfinite) is not int or nonfinite:
            add(("nonfinite", None, nonfinite))
        if step_time is not None:
            add(("step_time", None, step_time))
            if samples is not None and step_time > 0:
                add(("samples_per_s", None, samples / step_time))
        if momentum is not None:
            if isinstance(momentum, (int, float)):
                momentum = (momentum,)
            for i, m in enumerate(momentum):
                add(("momentum", i, m))
        if extra:
            for name, value in extra.items():
                add((name, None, value))
        if self._derives:
            store.log_rows(step, _UpdateRows(rows, self._derived, step, len(lrs)))
        else:
            store.log_rows(step, rows)

    def _derived(self, step: int, n_lrs: int) -> list[tuple[str, int | None, float]]:
        """``lr_expected`` of every group and the ``phase`` code at ``step`` (run on the writer thread).

        A failing ``expected``/``schedule`` call stores NaN with a warning; the batch is written anyway.
        """
        out: list[tuple[str, int | None, float]] = []
        if self.expected is not None:
            try:
                values = [float(v) for v in self.expected(step)]
                self._expected_len = len(values)
            except Exception as exc:
                values = [_failed("expected(step)", step, exc)] * (self._expected_len or n_lrs)
            out.extend([("lr_expected", i, v) for i, v in enumerate(values)])
        elif self.schedule is not None:
            try:
                want = float(self.schedule(step))
            except Exception as exc:
                want = _failed("schedule(step)", step, exc)
            out.extend([("lr_expected", i, want) for i in range(n_lrs)])
        if self._has_phase:
            try:
                code = float(PHASE_CODES.get(self.schedule.phase(step), -1))
            except Exception as exc:
                code = _failed("schedule.phase(step)", step, exc)
            out.append(("phase", None, code))
        return out

    def _restart(self, step: int, cycle: int) -> None:
        start = int(self._cycle_start)
        payload: dict[str, Any] = {"cycle": cycle, "previous_cycle": self._cycle}
        if self.schedule is not None:
            payload["lr_expected"] = float(self.schedule(start))
        self.store.log_event(start, "restart", **payload)

    # ---- resuming ---------------------------------------------------------------------------
    def resume(self, updates: int) -> tuple[int, int]:
        """Continue a run from a checkpoint taken after ``updates`` updates; returns the rows discarded.

        Deletes from the store what the resumed run will record again (every per-update row from
        update index ``updates`` on, and every later evaluation and event; see
        :meth:`RunStore.discard_after` and :data:`STATE_EVENTS`), so each step keeps exactly one row,
        and sets the restart detection to the cycle of the last update done, so a restart at update
        ``updates`` is recorded once.

        Example:
            >>> import tempfile
            >>> from cosanneal import Cosine, runs
            >>> d, s = tempfile.mkdtemp(), Cosine(0.1, cycle_steps=4, max_cycles=None)
            >>> with RunStore(d) as store:
            ...     tel = Telemetry(store, schedule=s)
            ...     for t in range(6):                  # killed after 6 updates, checkpoint at 4
            ...         tel.on_update(t, [s(t)])
            ...     tel2 = Telemetry(store, schedule=s)
            ...     _ = tel2.resume(4)
            ...     for t in range(4, 8):
            ...         tel2.on_update(t, [s(t)])
            >>> run = runs.open(d)
            >>> run.scalar("lr", 0)[0].tolist(), [e["step"] for e in run.events("restart")]
            ([0, 1, 2, 3, 4, 5, 6, 7], [4])
        """
        discarded = self.store.discard_after(updates, keep_events_at=STATE_EVENTS)
        self._cycle_start, self._cycle_end = 0.0, -1.0
        self._cycle = self._cycle_of(updates - 1) if self._has_cycle and updates > 0 else -1
        self._last_time = None
        return discarded

    # ---- per evaluation ---------------------------------------------------------------------
    def on_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record validation metrics, each as ``val_<name>`` (see :func:`val_name`); tensors allowed."""
        if self.enabled:
            self.store.log_scalars(step, {val_name(k): v for k, v in metrics.items()})

    # ---- events -----------------------------------------------------------------------------
    def event(self, step: int, kind: str, /, **payload: Any) -> None:
        """Record an event of a documented kind (:data:`EVENT_KINDS`), with a JSON-ready payload.

        Raises:
            ValueError: ``kind`` is not one of :data:`EVENT_KINDS`.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {', '.join(EVENT_KINDS)}; got {kind!r}")
        self.store.log_event(step, kind, **payload)

    def flush(self) -> None:
        """Block until every row recorded so far is in the store and its sinks."""
        self.store.flush()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """On an exception record ``run_failed`` (error type and message) at the last step; always flush."""
        if exc_type is not None and self.enabled:
            step = self.last_step if self.last_step is not None else 0
            self.store.log_event(step, "run_failed", error=exc_type.__name__, message=str(exc))
        self.store.flush()
