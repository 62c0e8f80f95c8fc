"""The training loop of a job, as an object with named steps.

:class:`Loop` holds what changes while a job trains (the position, the last metrics, the schedule the
guard may lower, the open run store) and runs it step by step:

* :meth:`Loop.resume` — continue from a checkpoint: position, trackers, the schedule it really used,
  and the batch layout at another world size (:mod:`cosanneal.jobs.world_size`);
* :meth:`Loop.train_step` — one optimizer update from ``accumulate`` micro-batches;
* :meth:`Loop.after_update` — telemetry, then evaluate / checkpoint when the update calls for it;
* :meth:`Loop.evaluate_and_decide` — evaluate, then prune or stop early (one sequence, used at
  cycle ends, every ``eval.every_steps`` and at epoch ends);
* :meth:`Loop.roll_back` — back to the last good checkpoint on the schedule the guard lowered;
* :meth:`Loop.end_of_epoch`, :meth:`Loop.finish`.

The pieces it drives are built by :class:`~cosanneal.jobs.trainer.Trainer` (:class:`Parts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cosanneal.errors import ConfigError
from cosanneal.jobs import optimizer_modes
from cosanneal.jobs import replan as replans
from cosanneal.jobs.config import TrainConfig, check_metric_names
from cosanneal.jobs.loading import END_OF_EPOCH, TrainLoader, eval_batches
from cosanneal.jobs.progress import Progress
from cosanneal.jobs.tasks import Task, batch_samples, check_metrics, split_batch, step_loss, to_device
from cosanneal.jobs.world_size import Layout, Resize, plan_resize
from cosanneal.runtime import distributed, requeue
from cosanneal.runtime.checkpoints import Checkpoints, ends_cycle, is_cycle_end
from cosanneal.runtime.guard import NonFiniteGuard, adjust_schedule
from cosanneal.runtime.preemption import Preemption
from cosanneal.runtime.runstore import RunStore, run_relative
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.schedules import Schedule, from_dict
from cosanneal.schedules.rebatch import Rebatch, rebound
from cosanneal.schedules.replan import Replanned, map_plans, plan_origin
from cosanneal.torch import Scheduler

Log = Callable[[str], None]


@dataclasses.dataclass
class Position:
    """Where the loop is: ``updates`` done, and the next batch ``batch`` of ``epoch``."""

    updates: int = 0
    epoch: int = 0
    batch: int = 0
    attempts: int = 0  # update attempts so far, skipped ones included (fault injection counts these)
    data_state: dict[str, Any] | None = None  # an iterable data set's position (None: map-style)


@dataclasses.dataclass
class Parts:
    """Everything a job is made of, as :class:`~cosanneal.jobs.trainer.Trainer` built it."""

    config: TrainConfig
    run_dir: Path
    log: Log
    device: torch.device
    world: distributed.World
    task: Task
    model: nn.Module
    train_model: nn.Module  # the model under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    optimizer_step: Callable[[], Any]  # optimizer.step, compiled under compile = true
    schedule: Schedule
    make_scheduler: Callable[[Schedule], Scheduler]
    train: TrainLoader
    val_set: Any
    total: int
    checkpoints: Checkpoints | None
    guard: NonFiniteGuard | None
    stopper: RestartAwareEarlyStopping | None
    on_eval: Callable[[int, dict[str, float], bool], bool] | None
    resume_hint: str
    #: the batch layout this session trains with (world size, per-rank batch, accumulation, length)
    layout: Layout | None = None
    #: the config's schedule and run length as bound at another world size (a resized run's first one)
    bind_at: Callable[[int], tuple[Schedule, int]] | None = None
    #: this rank's training batches with another per-rank batch size
    make_loader: Callable[[int], TrainLoader] | None = None


class Loop:
    """One job's training loop over the :class:`Parts` a trainer built (see the module docstring)."""

    def __init__(self, parts: Parts, progress: bool) -> None:
        self.p = parts
        self.cfg = parts.config
        self.schedule = parts.schedule
        self.scheduler = parts.make_scheduler(parts.schedule)
        self.position = Position()
        self.last_metrics: dict[str, float] = {}
        self.saved_at = -1  # updates done at the newest checkpoint this session wrote or resumed from
        self.last_eval_at = -1
        self.status, self.message, self.exit_code = "finished", "", 0
        self.store: RunStore | None = None
        self.telemetry: Telemetry | None = None
        self.early_events: list[tuple[int, str, dict[str, Any]]] = []
        self.rank_trace: list[list[float]] = []
        self.metrics_checked = False
        self.preempt: Preemption | None = None
        self.bar = Progress(
            progress and parts.world.is_main,
            parts.total,
            every_seconds=self.cfg.telemetry.progress_seconds,
            metric=self.cfg.checkpoint.best_metric,
        )
        self._stream: Generator[Any, None, None] | None = None
        self.replans: list[str] = []  # the replan requests this run has taken (ids), kept by its checkpoints
        self._request_seen: tuple[int, int] | None = None  # (mtime_ns, size) of the request file last parsed
        self._next_look = 0.0  # time.monotonic() from which one process looks for a request again
        amp = self.cfg.amp
        self.scaler = torch.amp.GradScaler(parts.device.type) if amp == "fp16" else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.initial_state = {
            "model": {k: v.detach().clone() for k, v in parts.model.state_dict().items()},
            "optimizer": parts.optimizer.state_dict(),
        }

    # ---- events and checkpoints ------------------------------------------------------------
    def on_event(self, kind: str, **payload: Any) -> None:
        """Where the checkpoints' and the guard's events go (held until the run store is open)."""
        at = int(payload.pop("step", self.position.updates))
        fields = {k: run_relative(v, self.p.run_dir) if k == "path" else v for k, v in payload.items()}
        fields = {k: v for k, v in fields.items() if k not in ("kind", "wall")}
        if self.store is None:
            self.early_events.append((at, kind, fields))
        else:
            self.store.log_event(at, kind, **fields)

    def before_commit(self, _info: Any) -> None:
        """Every row up to a checkpoint is durable before the checkpoint exists."""
        if self.store is not None:
            self.store.flush(durable=True)

    def trackers(self) -> dict[str, Any]:
        """What a checkpoint keeps besides model, optimizer and scheduler."""
        guard, stopper = self.p.guard, self.p.stopper
        return {
            "guard": guard.state_dict() if guard else None,
            "early_stopping": stopper.state_dict() if stopper else None,
            "attempts": self.position.attempts,
            "last_metrics": self.last_metrics,
            "data_state": self.p.train.state(),
            "world": None if self.p.layout is None else self.p.layout.to_dict(),
            "replans": list(self.replans),
        }

    def save(self, reason: str, cycle_end: bool = False, metrics: dict[str, float] | None = None) -> None:
        """Checkpoint the state after ``position.updates`` updates (named by that count), once per count."""
        ckpts, pos = self.p.checkpoints, self.position
        if ckpts is None or self.saved_at == pos.updates:
            return
        with optimizer_modes.evaluating(self.p, calibrate=False):  # a schedule-free run saves x
            ckpts.save(
                pos.updates,
                model=self.p.model,
                optimizer=self.p.optimizer,
                scheduler=self.scheduler,
                epoch=pos.epoch,
                batch_index=pos.batch,
                metrics=metrics,
                trackers=self.trackers(),
                cycle_end=cycle_end,
                extra={"updates": pos.updates},
                reason=reason,
            )
        self.saved_at = pos.updates

    # ---- resume and roll back --------------------------------------------------------------
    def rebuild_scheduler(self, at: int) -> None:
        """A fresh scheduler on the current schedule at update count ``at``."""
        self.scheduler.close()
        self.scheduler = self.p.make_scheduler(self.schedule)
        if at:
            self.scheduler.load_state_dict({"version": 1, "step": at, "schedule": self.schedule.to_dict()})
        if self.telemetry is not None:
            self.telemetry.schedule = self.schedule

    def restore_position(self, loaded: Any) -> dict[str, Any]:
        """Data position, metrics and early stopping from a loaded checkpoint; returns its trackers."""
        tracked: dict[str, Any] = dict(loaded.trackers or {})
        pos = self.position
        pos.updates = int((loaded.extra or {}).get("updates", loaded.step))
        pos.epoch, pos.batch = loaded.epoch, loaded.batch_index
        pos.data_state = tracked.get("data_state")
        self.last_metrics = dict(tracked.get("last_metrics") or {})
        if self.p.stopper is not None and tracked.get("early_stopping"):
            self.p.stopper.load_state_dict(tracked["early_stopping"])
        self.close_stream()
        return tracked

    def resume(self, loaded: Any) -> None:
        """Continue an interrupted run: position, trackers, and the schedule it was really using.

        Raises:
            ConfigError: the run was trained with another schedule (and no guard lowered it).
        """
        from cosanneal.jobs.trainer import schedule_mismatch

        tracked = self.restore_position(loaded)
        self.position.attempts = int(tracked.get("attempts", self.position.updates))
        self.saved_at = self.position.updates
        state = loaded.scheduler_state
        saved = (
            from_dict(state["schedule"])
            if state and isinstance(state.get("schedule"), dict)
            else self.schedule
        )
        recorded = Layout.from_dict(tracked.get("world"))
        configured, configured_total = self._configured(recorded)
        lowered = bool((tracked.get("guard") or {}).get("rollbacks"))
        if plan_origin(saved) != configured and not lowered:
            raise ConfigError(schedule_mismatch(self.p.run_dir, plan_origin(saved), configured))
        if saved != self.schedule:
            self.schedule = saved  # the guard lowered it, a world-size change re-bound it, or a replan
        self.replans = [str(r) for r in tracked.get("replans") or []]
        if isinstance(saved, Replanned):  # the replanned length (a later resize records its own)
            configured_total = saved.total
            self._set_total(saved.total)
        if recorded is not None:
            self._resume_layout(recorded, configured_total)
        self._resume_guard(tracked)
        self.rebuild_scheduler(self.position.updates)
        self.check_replan(force=True)

    def _resume_guard(self, tracked: dict[str, Any]) -> None:
        """The guard's counters, on the schedule the run follows (a re-bound one is adjusted at its base)."""
        guard = self.p.guard
        if guard is None:
            return
        if tracked.get("guard"):
            guard.load_state_dict(tracked["guard"])
        self._guard_follows()

    def _guard_follows(self) -> None:
        """The guard adjusts the schedule the run follows now (a re-bound or replanned one at every plan)."""
        guard = self.p.guard
        if guard is None:
            return
        if isinstance(self.schedule, (Rebatch, Replanned)) and not callable(guard.adjust):
            how, factor = guard.adjust, guard.lr_factor
            guard.adjust = lambda s: map_plans(s, lambda b: adjust_schedule(b, how, factor))
        guard.schedule = self.schedule

    def _configured(self, recorded: Layout | None) -> tuple[Schedule, int]:
        """The config's schedule and run length as the run bound them: at its first session's world size."""
        if recorded is None or recorded.bound_at == self.p.world.size or self.p.bind_at is None:
            return self.schedule, self.p.total
        return self.p.bind_at(recorded.bound_at)

    def _resume_layout(self, recorded: Layout, configured_total: int) -> None:
        """Continue with the checkpoint's batch layout, changed by ``resume.world_size`` at another world size.

        ``configured_total``: the config's run length in updates of the batch it was bound at.

        Raises:
            ConfigError: the rule cannot resume at this world size (nothing is written to the run).
        """
        p, pos = self.p, self.position
        if not isinstance(self.schedule, (Rebatch, Replanned)):  # the config's length, in bound updates
            recorded = dataclasses.replace(recorded, total=configured_total)
        micro = self.cfg.batch_size // self.cfg.accumulate
        resize = plan_resize(
            recorded,
            world_size=p.world.size,
            micro_batch=micro,
            rule=self.cfg.resume.world_size,
            at=pos.updates,
            batch=pos.batch,
        )
        layout = recorded if resize is None else resize.after
        if resize is None and not recorded.resized:
            return  # the same world size and layout since the run began: nothing changes
        if resize is not None:
            self._apply_resize(resize)
        self._use_layout(layout)

    def _apply_resize(self, resize: Resize) -> None:
        """The schedule re-bound in samples (linear / sqrt), the data position, the event and its log line."""
        pos = self.position
        self.schedule = rebound(self.schedule, resize.at, resize.ratio, resize.lr_factor)
        if resize.batch != pos.batch:
            pos.batch, pos.data_state = resize.batch, None
        self.on_event("world_size_changed", step=resize.at, **resize.event())
        if self.p.world.is_main:
            self.p.log(resize.describe())

    def _remap_batch(self, saved: Layout | None) -> None:
        """A checkpoint from before this session's world-size change: its batch index in today's layout.

        The epoch's samples consumed, ``batch * B_saved``, start the batch ``ceil(batch * B_saved / B)``
        of the global batch ``B`` trained now (as :func:`~cosanneal.jobs.world_size.plan_resize` maps them).
        """
        now, pos = self.p.layout, self.position
        if saved is None or now is None or saved.global_batch == now.global_batch:
            return
        pos.batch, pos.data_state = -(-pos.batch * saved.global_batch // now.global_batch), None

    def _use_layout(self, layout: Layout) -> None:
        """Train with ``layout``: its per-rank batch (a new loader), accumulation and run length."""
        p = self.p
        if layout.batch_size != p.train.batch_size and p.make_loader is not None:
            p.train = p.make_loader(layout.batch_size)
        self.cfg = dataclasses.replace(self.cfg, batch_size=layout.batch_size, accumulate=layout.accumulate)
        p.config = self.cfg
        self._set_total(layout.total)
        p.layout = layout

    def _set_total(self, total: int) -> None:
        """Train ``total`` updates in all (the progress bar and the recorded layout follow)."""
        p = self.p
        if total != p.total:
            p.total = total
            self.bar.set_total(total)
        if p.layout is not None and p.layout.total != total:
            p.layout = dataclasses.replace(p.layout, total=total)

    # ---- replan ----------------------------------------------------------------------------
    def check_replan(self, force: bool = False) -> None:
        """Take a waiting ``cosanneal replan`` request at this step boundary (:mod:`cosanneal.jobs.replan`).

        One process looks at the first update after every evaluation and at least every
        :data:`~cosanneal.jobs.replan.POLL_SECONDS` (a clock read per update, a ``stat`` of the request
        file per look; it is parsed only when it changed); under torchrun rank 0 looks every
        :data:`~cosanneal.jobs.replan.POLL_EVERY` updates (and at a resume) and broadcasts what it read,
        so every rank switches at the same update.
        """
        p, pos = self.p, self.position
        many = p.world.size > 1
        if many and not force and pos.updates % replans.POLL_EVERY:
            return
        if not many and not force:
            now = time.monotonic()
            if now < self._next_look:
                return
            self._next_look = now + replans.POLL_SECONDS
        request = self._read_request(force) if p.world.is_main else None
        if many:
            request = distributed.broadcast_object(request, p.world)
        if request is None or request.id in self.replans:
            return
        self._take(request)

    def _read_request(self, force: bool) -> replans.ReplanRequest | None:
        """The request file, parsed only when it changed since the last look (or ``force``)."""
        try:
            st = os.stat(self.p.run_dir / replans.REQUEST)
        except OSError:
            return None
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self._request_seen and not force:
            return None
        self._request_seen = seen
        try:
            return replans.read_request(self.p.run_dir)
        except ConfigError as exc:
            self.p.log(f"replan: {exc}")
            return None

    def _take(self, request: replans.ReplanRequest) -> None:
        """Switch to the request's plan at the current update, or set it aside with the reason."""
        p, at = self.p, self.position.updates
        before, total_before = self.schedule, p.total
        new = replans.take(request, before, at)
        self.replans.append(request.id)  # taken or refused, never looked at again in this session
        if isinstance(new, str):
            self.on_event("replan_refused", step=at, request=request.id, reason=new)
            if p.world.is_main:
                p.log(f"replan refused at update {at}: {new}")
                replans.remove_request(p.run_dir, request.id, refused=True)
            return
        self.schedule = new
        self._set_total(new.total)
        self._guard_follows()
        self.rebuild_scheduler(at)
        self.on_event(
            "schedule_replanned", step=at, **replans.replan_event(before, new, request, total_before)
        )
        if p.world.is_main:
            p.log(
                f"replanned at update {at} ({request.mode}): {total_before} -> {new.total} updates, "
                f"LR {float(new(at)):.6g} at the switch"
            )
        if self.store is not None:
            self.save("replan", metrics=self.last_metrics or None)

    def roll_back(self, message: str) -> None:
        """Back to the last good checkpoint (or the start), on the schedule the guard just lowered."""
        self.p.log(f"guard: {message}")
        guard, ckpts, p = self.p.guard, self.p.checkpoints, self.p
        self.schedule = (guard.schedule if guard else None) or self.schedule
        back = ckpts.load_latest(p.model, p.optimizer, None, restore_rng=False) if ckpts else None
        if back is not None:
            tracked = self.restore_position(back)
            self._remap_batch(Layout.from_dict(tracked.get("world")))
        else:
            p.model.load_state_dict(self.initial_state["model"])
            p.optimizer.load_state_dict(self.initial_state["optimizer"])
            self.position = Position(attempts=self.position.attempts)
            self.close_stream()
        self.rebuild_scheduler(self.position.updates)
        optimizer_modes.train_mode(p.optimizer)  # a checkpoint holds a schedule-free optimizer in eval mode

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Run the task's evaluation in eval mode without gradients; record it; return ``val_<name>``."""
        model, p = self.p.model, self.p
        was_training = model.training
        model.eval()
        batches = (
            to_device(b, p.device)
            for b in eval_batches(
                p.val_set, self.cfg.eval.batch_size, seed=self.cfg.seed, num_workers=self.cfg.data.num_workers
            )
        )
        try:
            with optimizer_modes.evaluating(p), torch.no_grad():  # a schedule-free run evaluates x
                metrics = check_metrics(p.task.evaluate(model, batches))
        finally:
            model.train(was_training)
        self.last_eval_at = self.position.updates
        self._next_look = 0.0  # a request written during an evaluation is taken at the next update
        assert self.telemetry is not None
        self.telemetry.on_eval(self.position.updates, metrics)
        val = {f"val_{k}": v for k, v in metrics.items()}
        if not self.metrics_checked:  # the names the task really reports, before any checkpoint needs one
            check_metric_names(self.cfg, val)
            self.metrics_checked = True
        self.last_metrics = val
        return val

    def evaluate_and_decide(self, cycle_end: bool) -> bool:
        """Evaluate, then stop when the ``on_eval`` callback prunes or early stopping says so.

        Returns True when the job stops here (its checkpoint written, ``status`` set).
        """
        val = self.evaluate()
        updates = self.position.updates
        if self.p.on_eval is not None and bool(self.p.on_eval(updates, dict(val), cycle_end)):
            self.status, self.message = "pruned", "stopped by the on_eval callback"
        elif self.p.stopper is not None and self.p.stopper.update(updates, val, self.schedule):
            self.status = "early_stopped"
            self.message = self.p.stopper.reason or "no improvement at cycle ends"
        else:
            return False
        self.save("eval", cycle_end, val)
        return True

    def end_of_epoch(self) -> bool:
        """Move to the next epoch; evaluate and checkpoint unless this update was just evaluated.

        Returns True when the job stops here.
        """
        pos = self.position
        pos.epoch, pos.batch, pos.data_state = pos.epoch + 1, 0, None
        if self.cfg.eval.every_steps is not None or self.last_eval_at == pos.updates:
            return False  # a cycle end on the epoch boundary was evaluated and checkpointed already
        ended = ends_cycle(pos.updates, self.schedule)
        if self.evaluate_and_decide(ended):
            return True
        self.save("epoch", ended, self.last_metrics)
        return False

    # ---- one update ------------------------------------------------------------------------
    def next_batch(self) -> Any:
        """The next batch of the stream (restarted at the position after a resume or roll back)."""
        if self._stream is None:
            pos = self.position
            self._stream = self.p.train.stream(pos.epoch, pos.batch, pos.data_state)
        return next(self._stream)

    def close_stream(self) -> None:
        """Stop the batch stream and its worker processes (a new one starts at the position)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def train_step(self, batch: Any) -> tuple[str, Any, Any, dict[str, Any]]:
        """Forward and backward over ``accumulate`` micro-batches, then the guard and the optimizer step.

        Returns ``(outcome, loss, grad_norm, extra)``: outcome ``"updated"``, ``"skipped"`` (the
        guard skipped it, or GradScaler did), ``"rollback"`` or ``"stop"``.
        """
        p, cfg, pos = self.p, self.cfg, self.position
        k = cfg.accumulate
        micro = split_batch(to_device(batch, p.device, non_blocking=True), k)
        nan = pos.attempts in cfg.debug.inject_nan_at
        pos.attempts += 1
        p.optimizer.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        extra_sum: dict[str, Any] = {}
        ddp: Any = getattr(
            p.train_model, "_orig_mod", p.train_model
        )  # under torch.compile: the module it wraps
        for j, mb in enumerate(micro):
            defer = j < k - 1 and isinstance(ddp, nn.parallel.DistributedDataParallel)
            with (
                ddp.no_sync() if defer else contextlib.nullcontext()
            ):  # gradients all-reduced once per update
                with torch.autocast(p.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, extra = step_loss(p.task.training_step(p.train_model, mb))
                if nan:
                    loss = loss * float("nan")
                part = loss if k == 1 else loss / k
                if self.scaler is not None:
                    self.scaler.scale(part).backward()  # type: ignore[no-untyped-call]
                else:
                    part.backward()  # type: ignore[no-untyped-call]
            losses.append(loss.detach())
            for name, value in extra.items():
                extra_sum[name] = extra_sum.get(name, 0.0) + value / k
        loss = losses[0] if k == 1 else torch.stack(losses).mean()
        if self.scaler is not None:
            self.scaler.unscale_(p.optimizer)
        grads = [q.grad for q in p.model.parameters() if q.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None
        if cfg.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), cfg.optimizer.grad_clip)
        pos.batch += 1
        if k > 1:
            extra_sum["micro_batches"] = k
        if p.guard is not None:
            decision = p.guard.check(loss, None if self.scaler is not None else p.model, step=pos.updates)
            if decision.action == "skip":
                return "skipped", loss, grad_norm, extra_sum
            if decision.action == "rollback":
                self.roll_back(decision.message)
                return "rollback", loss, grad_norm, extra_sum
            if decision.action == "stop":
                self.status, self.message, self.exit_code = "stopped_nonfinite", decision.message, 1
                assert self.store is not None
                self.store.log_event(
                    pos.updates, "run_failed", error="NonFiniteStop", message=decision.message
                )
                return "stop", loss, grad_norm, extra_sum
        if self.scaler is not None:
            self.scaler.step(p.optimizer)
            self.scaler.update()
        else:
            p.optimizer_step()
        if cfg.scheduler.count == "manual":
            self.scheduler.step()
        if (
            self.scheduler.last_epoch == pos.updates
        ):  # GradScaler skipped the update: the schedule did not move
            return "skipped", loss, grad_norm, extra_sum
        return "updated", loss, grad_norm, extra_sum

    def after_update(
        self,
        step: int,
        lrs: list[float],
        loss: Any,
        grad_norm: Any,
        extra: dict[str, Any],
        t0: float,
        samples: int,
    ) -> bool:
        """Record update ``step``, then evaluate and checkpoint when it is due. True: the job stops."""
        cfg, pos = self.cfg, self.position
        pos.updates += 1
        assert self.telemetry is not None
        momentum = _momenta(self.p.optimizer) if cfg.scheduler.momentum else None
        self.telemetry.on_update(
            step, lrs, loss=loss, grad_norm=grad_norm, samples=samples,
            step_time=time.perf_counter() - t0, momentum=momentum, extra=extra or None,
        )  # fmt: skip
        self.bar.update(pos.updates, lrs[0], self.schedule, step, loss=loss, metrics=self.last_metrics)
        if cfg.debug.lr_trace_dir is not None:
            self.rank_trace.append([step, *lrs])
        if cfg.debug.sleep_per_step:
            time.sleep(cfg.debug.sleep_per_step)
        cycle_end = is_cycle_end(step, self.schedule)
        eval_due = cycle_end or (cfg.eval.every_steps is not None and pos.updates % cfg.eval.every_steps == 0)
        if eval_due and self.evaluate_and_decide(cycle_end):
            return True
        ckpts = self.p.checkpoints
        if ckpts is None or pos.updates >= self.p.total:
            return False  # the final checkpoint is written once, after the loop
        per_epoch = self.p.train.batches_per_epoch
        # an epoch that ends here is evaluated and checkpointed right after (with its metrics)
        epoch_end_follows = per_epoch is not None and pos.batch >= per_epoch and cfg.eval.every_steps is None
        if eval_due:
            self.save("restart" if cycle_end else "eval", cycle_end, self.last_metrics)
        elif not epoch_end_follows and ckpts.should_save(pos.updates, self.schedule):
            self.save("periodic")
        return False

    def preempted(self) -> bool:
        """Checkpoint and stop when any rank got SIGTERM/SIGINT (status ``preempted``)."""
        preempt = self.preempt
        if not distributed.any_rank(preempt is not None and preempt.requested, self.p.world):
            return False
        self.save("preempted", metrics=self.last_metrics or None)
        signum = preempt.signal if preempt is not None else None
        name = _signal_name(signum)
        self.exit_code = preempt.exit_code if preempt is not None and preempt.exit_code else 143
        assert self.store is not None
        self.store.log_event(self.position.updates, "preempted", signal=name, exit_code=self.exit_code)
        self.status, self.message = "preempted", f"preempted by {name}; {self.p.resume_hint}"
        if name == self.cfg.slurm.signal:
            self._requeue()
        return True

    def _requeue(self) -> None:
        """Under SLURM, rank 0 requeues the job once its preemption checkpoint is committed (``[slurm]``)."""
        job_id = requeue.slurm_job_id()
        if not self.cfg.slurm.requeue or job_id is None or not self.p.world.is_main:
            return
        assert self.store is not None
        result = requeue.requeue(job_id, self.cfg.slurm.scontrol)
        command = " ".join(result.command)
        if result.ok:
            self.store.log_event(self.position.updates, "requeued", job_id=job_id, command=command)
            self.message = (
                f"preempted by {self.cfg.slurm.signal}; requeued SLURM job {job_id}: it resumes from here"
            )
        else:
            self.store.log_event(
                self.position.updates, "requeue_failed", job_id=job_id, command=command, reason=result.detail
            )
            self.message += f"; the requeue failed ({command}: {result.detail}), so resubmit the job"

    # ---- the whole loop --------------------------------------------------------------------
    def train(self) -> None:
        """Run updates until the budget, a stop or a preemption."""
        p, pos = self.p, self.position
        p.train_model.train()
        optimizer_modes.train_mode(p.optimizer)
        while pos.updates < p.total:
            self.check_replan()
            if pos.updates >= p.total:
                break
            if self.preempted():
                return
            batch = self.next_batch()
            if batch is END_OF_EPOCH:
                if self.end_of_epoch():
                    return
                continue
            lrs = [float(g["lr"]) for g in p.optimizer.param_groups]
            t0 = time.perf_counter()
            step = pos.updates
            outcome, loss, grad_norm, extra = self.train_step(batch)
            if outcome == "stop":
                return
            if outcome != "updated":
                continue
            if self.after_update(step, lrs, loss, grad_norm, extra, t0, batch_samples(batch)):
                return

    def finish(self, started: float) -> None:
        """After the loop: the final evaluation and checkpoint, and the closing event."""
        pos, store = self.position, self.store
        assert store is not None
        if self.status == "finished":
            per_epoch = self.p.train.batches_per_epoch
            if per_epoch is not None and pos.batch >= per_epoch:
                pos.epoch, pos.batch, pos.data_state = pos.epoch + 1, 0, None
            if self.last_eval_at != pos.updates:
                self.evaluate()
            # the end of the last cycle is the final model, not one of the cycle-end snapshots
            self.save("final", False, self.last_metrics)
            store.log_event(
                pos.updates, "run_finished", updates=pos.updates, seconds=round(time.time() - started, 3)
            )
            if self.p.world.is_main:
                for request_id in self.replans:  # spent: the final checkpoint holds the new plan
                    replans.remove_request(self.p.run_dir, request_id)
        elif self.status in ("early_stopped", "pruned"):
            by = "early_stopping" if self.status == "early_stopped" else "on_eval"
            store.log_event(pos.updates, "early_stop", reason=self.message, by=by)
        optimizer_modes.eval_mode(self.p.optimizer)  # a schedule-free model ends holding x


def _signal_name(signum: Any) -> str:
    """``15`` -> ``"SIGTERM"`` (a rank that only heard of another rank's signal has none: ``"None"``)."""
    import signal

    try:
        return signal.Signals(int(signum)).name
    except (TypeError, ValueError):
        return str(signum)


def _momenta(optimizer: torch.optim.Optimizer) -> list[float]:
    out = []
    for g in optimizer.param_groups:
        out.append(float(g["betas"][0]) if "betas" in g else float(g.get("momentum", 0.0)))
    return out


__all__ = ["Loop", "Parts", "Position"]
