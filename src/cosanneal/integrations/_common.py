"""What the Lightning and Hugging Face integrations share.

A schedule from a spec, the count of the optimizer updates that really ran, and the run session (run
store, telemetry, checkpoints of the model artifacts, non-finite guard, restart-aware early stopping).

Step convention (the trainer's): an evaluation, a checkpoint and an event are named by the number of
updates done; a per-update row by the index of its update (0 for the first), which is the schedule
step its LR came from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cosanneal.errors import CosannealError, ScheduleError
from cosanneal.runtime.checkpoints import Checkpoints, ends_cycle
from cosanneal.runtime.guard import NonFiniteGuard
from cosanneal.runtime.runstore import RunStore, Sink, run_params, run_relative
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.schedules.base import Schedule, from_dict
from cosanneal.schedules.spec import load_spec

ScheduleSpec = Schedule | Mapping[str, Any] | str | os.PathLike[str]
SinkSpec = Sequence[Sink] | Callable[[], Sequence[Sink]]
STATE_VERSION = 1


class IntegrationError(CosannealError, RuntimeError):
    """A framework is configured in a way that cannot give an exact LR trace; the message names the fix."""


def refuse_rollback(guard: Any, framework: str) -> None:
    """Refuse a skip guard that would roll back: a callback cannot rewind ``framework``'s loops.

    Raises:
        IntegrationError: ``guard`` is a skip-policy ``NonFiniteGuard`` with ``on_exhausted='rollback'``.
    """
    if isinstance(guard, NonFiniteGuard) and guard.policy == "skip" and guard.on_exhausted == "rollback":
        raise IntegrationError(
            f"guard: a NonFiniteGuard with on_exhausted='rollback' cannot rewind {framework} from a callback; "
            "pass NonFiniteGuard(on_exhausted='stop') and resume from the last checkpoint (with a lower "
            "peak_lr) after it stops"
        )


def as_schedule(
    spec: ScheduleSpec, *, total_steps: float | None = None, steps_per_epoch: float | None = None
) -> Schedule:
    """A bound :class:`~cosanneal.Schedule` from a schedule, a mapping (``to_dict()`` data) or a spec file.

    Durations in epochs (``"3ep"``) or fractions of the run (``"0.05dur"``) are resolved with
    ``total_steps`` (optimizer updates of the whole run) and ``steps_per_epoch`` (updates per epoch).

    Raises:
        ScheduleError: ``spec`` is none of those, or a duration needs a length that was not given.

    Example:
        >>> as_schedule({"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "0.5dur"}, total_steps=40).cycle_steps
        20
    """
    schedule = read_schedule(spec)
    if schedule.unbound_fields():
        schedule = schedule.bind(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return schedule


def read_schedule(spec: ScheduleSpec) -> Schedule:
    """The schedule ``spec`` describes, durations not bound yet (see :func:`as_schedule`).

    Example:
        >>> read_schedule({"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "0.5dur"}).cycle_steps
        '0.5dur'
    """
    if isinstance(spec, Schedule):
        schedule = spec
    elif isinstance(spec, Mapping):
        schedule = from_dict(dict(spec))
    elif isinstance(spec, (str, os.PathLike)):
        schedule = load_spec(Path(spec))
    else:
        raise ScheduleError(
            f"schedule must be a cosanneal Schedule, a mapping with a 'kind' key or a spec file path; got {spec!r}"
        )
    return schedule


def group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The LR every param group holds now, as floats (tensor LRs included)."""
    return [float(g["lr"]) for g in optimizer.param_groups]


class UpdateCounter:
    """Counts the optimizer updates that really ran, and the LRs each one used, with optimizer hooks.

    A step pre-hook notes the groups' LRs; the post-hook (which runs only when ``optimizer.step()``
    really ran, so never for an update ``GradScaler`` skipped) records ``(index, lrs)`` and counts
    it. ``skip_next`` makes the next post-hook not count (an update the non-finite guard emptied).
    ``on_update(index)`` is called from the post-hook of each counted update.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        >>> counter = UpdateCounter(opt)
        >>> opt.step(); opt.step()
        >>> counter.count, counter.take()
        (2, [(0, [0.5]), (1, [0.5])])
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        start: int = 0,
        on_update: Callable[[int], None] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.count = start
        self.skip_next = False
        self.on_update = on_update
        self._lrs: list[float] = []
        self._pending: list[tuple[int, list[float]]] = []
        self._handles = [
            optimizer.register_step_pre_hook(self._before),
            optimizer.register_step_post_hook(self._after),
        ]

    def _before(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._lrs = group_lrs(optimizer)

    def _after(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.skip_next:
            self.skip_next = False
            return
        index = self.count
        self.count += 1
        self._pending.append((index, self._lrs))
        if self.on_update is not None:
            self.on_update(index)

    def take(self) -> list[tuple[int, list[float]]]:
        """The updates counted since the last call: ``[(index, lrs), ...]``."""
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _jsonable_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """The run-recording options both framework callbacks take (see their ``Args``)."""

    sinks: SinkSpec = ()
    tensorboard: bool = True
    every: int = 1
    best: tuple[str, str] | None = ("val_loss", "min")
    keep_last: int = 1
    keep_cycle_ends: bool = True
    checkpoints: bool = True
    early_stopping: RestartAwareEarlyStopping | None = None


class RunSession:
    """One training run's cosanneal records, fed by a framework callback.

    Rank 0 writes the run store (``run_dir/run.db``), the TensorBoard events (``run_dir/tb``) and the
    sinks; every rank takes part in checkpoint saves (``Checkpoints`` meets at a barrier and rank 0
    writes). The checkpoints here are the model artifacts: the best by ``best=(metric, mode)`` in
    ``checkpoints/best/`` and the cycle-end snapshots; the framework's own checkpoint is the resume
    state.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        schedule: Schedule,
        *,
        is_main: bool,
        expected: Callable[[int], Sequence[float]] | None,
        options: SessionOptions = SessionOptions(),
        guard: NonFiniteGuard | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.schedule = schedule
        self.is_main = is_main
        self.guard = guard
        self.stopper = options.early_stopping
        self.updates = 0
        self.saved_at = -1
        store = RunStore(self.run_dir) if is_main else RunStore.disabled()
        self.store = store
        attached: list[Sink] = []
        if is_main:
            if options.tensorboard:
                from cosanneal.sinks.tensorboard import TensorBoardSink

                attached.append(TensorBoardSink(self.run_dir / "tb"))
            attached.extend(options.sinks() if callable(options.sinks) else options.sinks)
        self.telemetry = Telemetry(
            store, schedule=schedule, expected=expected, sinks=attached, every=options.every
        )
        if guard is not None:
            guard.on_event = self._guard_event
        self.ckpts = (
            Checkpoints(
                self.run_dir / "checkpoints",
                keep_last=options.keep_last,
                best=options.best,
                keep_cycle_ends=options.keep_cycle_ends,
                at_restarts=False,
                on_event=self._checkpoint_event,
                before_commit=lambda _info: self.store.flush(durable=True),
            )
            if options.checkpoints
            else None
        )

    # ---- events ---------------------------------------------------------------------------
    def _checkpoint_event(self, kind: str, **payload: Any) -> None:
        at = int(payload.pop("step", self.updates))
        if "path" in payload:
            payload["path"] = run_relative(payload["path"], self.run_dir)
        self.store.log_event(at, kind, **payload)

    def _guard_event(self, kind: str, **payload: Any) -> None:
        at = int(payload.pop("step", self.updates))
        self.store.log_event(at, kind, **payload)

    # ---- lifecycle ------------------------------------------------------------------------
    def start(
        self,
        updates: int,
        *,
        resumed: bool,
        config: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
        epoch: int | None = None,
        batch: int | None = None,
    ) -> None:
        """Begin (or continue) the run after ``updates`` updates.

        Every per-update row from index ``updates`` on (and every later evaluation and event) is
        deleted first: the run records them again (a fresh run, ``updates = 0``, starts empty).
        """
        self.updates = updates
        self.saved_at = updates if resumed else -1
        discarded = self.telemetry.resume(updates)
        if resumed:
            self.store.log_event(
                updates, "resumed", from_step=updates, checkpoint=run_relative(checkpoint, self.run_dir),
                epoch=epoch, batch=batch, discarded_rows=sum(discarded),
            )  # fmt: skip
        elif updates == 0:
            self.store.log_params(run_params(config, schedule=self.schedule))
        if self.ckpts is not None and self.is_main:
            self.ckpts.clean_stale()

    def record_update(self, index: int, lrs: Sequence[float], **fields: Any) -> None:
        """One update that ran: ``index`` (the updates done before it) and the LRs it used."""
        self.updates = index + 1
        self.telemetry.on_update(index, lrs, **fields)

    def record_eval(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Evaluation metrics measured after ``self.updates`` updates; returns them as ``val_<name>`` floats."""
        values = {_val(k): _jsonable_float(v) for k, v in metrics.items()}
        self.telemetry.on_eval(self.updates, values)
        return values

    def ends_cycle(self) -> bool:
        """Whether the last update done ended a cycle of the schedule."""
        return ends_cycle(self.updates, self.schedule)

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        *,
        reason: str,
        metrics: Mapping[str, float] | None = None,
        trackers: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint the model artifacts after ``self.updates`` updates (every rank calls this)."""
        if self.ckpts is None:
            return
        if self.saved_at == self.updates and not metrics:
            return
        self.ckpts.save(
            self.updates, model=model, optimizer=optimizer, scheduler=scheduler, metrics=metrics,
            trackers=trackers, cycle_end=self.ends_cycle(), reason=reason,
        )  # fmt: skip
        self.saved_at = self.updates

    def early_stop(self, metrics: Mapping[str, float]) -> str | None:
        """The early-stopping reason when ``metrics`` (after ``self.updates`` updates) stop the run."""
        if self.stopper is None or self.stopper.metric not in metrics:
            return None
        if self.stopper.update(self.updates, metrics, self.schedule):
            reason = self.stopper.reason or "no improvement at cycle ends"
            return reason
        return None

    def trackers(self) -> dict[str, Any]:
        """The JSON states of the guard and early stopping."""
        return {
            "guard": self.guard.state_dict() if self.guard is not None else None,
            "early_stopping": self.stopper.state_dict() if self.stopper is not None else None,
        }

    def load_trackers(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`trackers` returned."""
        if self.guard is not None and state.get("guard"):
            self.guard.load_state_dict(state["guard"])
            self.guard.schedule = self.schedule
        if self.stopper is not None and state.get("early_stopping"):
            self.stopper.load_state_dict(state["early_stopping"])

    def flush(self, *, durable: bool = False) -> None:
        """Write every queued row; ``durable`` also fsyncs (call it before a checkpoint is written)."""
        self.store.flush(durable=durable)

    def finish(self, event: str | None = "run_finished", **payload: Any) -> None:
        """Record the end of the run and close the store and checkpoints."""
        if event is not None:
            self.store.log_event(self.updates, event, **payload)
        self.close()

    def close(self) -> None:
        """Close the checkpoints (finishing a pending write) and the store; idempotent."""
        if self.ckpts is not None:
            self.ckpts.close()
        self.store.close()


def _val(name: str) -> str:
    """``eval_loss`` (Hugging Face) and ``val/loss`` -> ``val_loss``; ``val_loss`` stays."""
    for prefix in ("eval_", "val/", "val_"):
        if name.startswith(prefix):
            return "val_" + name[len(prefix) :]
    return f"val_{name}"


def val_metrics(metrics: Mapping[str, Any], names: Iterable[str] = ()) -> dict[str, Any]:
    """The evaluation metrics among ``metrics``: names starting with ``val_``, ``val/`` or ``eval_``, plus ``names``.

    Example:
        >>> sorted(val_metrics({"val_loss": 1, "eval_acc": 2, "train_loss": 3, "lr": 4}, ["lr"]))
        ['eval_acc', 'lr', 'val_loss']
    """
    wanted = set(names)
    return {k: v for k, v in metrics.items() if k.startswith(("val_", "val/", "eval_")) or k in wanted}


__all__ = [
    "IntegrationError",
    "RunSession",
    "ScheduleSpec",
    "UpdateCounter",
    "as_schedule",
    "group_lrs",
    "read_schedule",
    "val_metrics",
]
