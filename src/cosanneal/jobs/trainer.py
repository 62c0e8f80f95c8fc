"""The config-driven trainer: every runtime piece composed into one preemption-safe training job.

``Trainer(config, run_dir).run()`` trains, evaluates, checkpoints and records telemetry; it resumes from
the run directory automatically (model, optimizer, schedule counter, RNG states, data position and
tracker states), so a job interrupted at any step ends bit-identical on CPU to one that was not.
Under ``torchrun`` every rank computes the same LR at every step (the LR is a pure function of the
update counter) and only rank 0 writes the run store and checkpoints.

Each piece used here (:class:`~cosanneal.torch.Scheduler`, :class:`~cosanneal.runtime.runstore.RunStore`,
:class:`~cosanneal.runtime.telemetry.Telemetry`, :class:`~cosanneal.runtime.checkpoints.Checkpoints`,
:class:`~cosanneal.runtime.preemption.Preemption`, :class:`~cosanneal.runtime.guard.NonFiniteGuard`,
:class:`~cosanneal.runtime.stopping.RestartAwareEarlyStopping`) is usable alone from your own loop; see
``examples/custom_loop.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from cosanneal.errors import ConfigError, RunIOError, ScheduleError
from cosanneal.jobs.builders import build_model, pick_device, training_batches
from cosanneal.jobs.config import TrainConfig, check_metric_names
from cosanneal.jobs.data import EpochBatches
from cosanneal.jobs.optimizers import build_optimizer
from cosanneal.jobs.sink_factories import build_sinks, resolve_factories
from cosanneal.runtime import distributed
from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints, ends_cycle, is_cycle_end
from cosanneal.runtime.guard import NonFiniteGuard
from cosanneal.runtime.iofailure import device_of, io_failure
from cosanneal.runtime.preemption import Preemption
from cosanneal.runtime.runstore import RunStore, run_params, run_relative
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.schedules import Schedule, from_dict, lint
from cosanneal.torch import Scheduler

Log = Callable[[str], None]


@dataclasses.dataclass
class TrainResult:
    """What a training job did; ``exit_code`` is what ``cosanneal train`` exits with.

    ``status`` is ``finished``, ``early_stopped``, ``pruned`` (the ``on_eval`` callback asked to stop),
    ``preempted`` (exit 143/130) or ``stopped_nonfinite`` (exit 1, the guard ran out of rollbacks).
    """

    run_dir: Path
    status: str
    exit_code: int
    steps: int
    total_steps: int
    epochs_done: float
    final_metrics: dict[str, float]
    best_metric: float | None
    restarts: int
    checkpoints_kept: int
    nonfinite: int
    rollbacks: int
    wall_seconds: float
    message: str = ""


@dataclasses.dataclass
class _Position:
    """Where the loop is: ``updates`` done, and the next batch ``batch`` of ``epoch``."""

    updates: int = 0
    epoch: int = 0
    batch: int = 0
    attempts: int = 0  # forward passes so far, skipped updates included (fault injection counts these)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fresh_run_dir(run_dir: Path, log: Log) -> None:
    """Move an existing run directory aside (never delete it) so a ``--fresh`` run starts empty."""
    if run_dir.exists() and any(run_dir.iterdir()):
        aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(run_dir), str(aside))
        log(f"--fresh: moved the previous run to {aside}")


def _evaluate(
    model: nn.Module, data: EpochBatches, device: torch.device, batch_size: int
) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy over the validation set."""
    was_training = model.training
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for x, y in data.sequential(batch_size):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += float(functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += len(y)
    model.train(was_training)
    return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1)}


class Trainer:
    """Run one training job described by a :class:`~cosanneal.jobs.config.TrainConfig`.

    Args:
        config: the validated config.
        run_dir: the run directory (``run.db``, ``checkpoints/``, ``tb/``; the CLI adds ``lr_loss.png``).
        fresh: start over: an existing run directory is moved aside, never deleted.
        log: where one-line messages go (the CLI passes a rich console; default: ``print``).
        progress: show a rich progress bar (default: the config's ``telemetry.progress``).
        on_eval: called after every evaluation as ``on_eval(updates, {"val_loss": ..}, cycle_end)``;
            returning True stops the job with status ``pruned`` (sweeps prune at cycle ends with it).
        resume_hint: how to continue the job after an interruption, quoted in messages (the CLI
            passes the exact command line; default: "resume with the same command").

    Steps: a checkpoint, an evaluation and an event are named by the number of updates done
    (``step-000000528`` after 528 updates); a per-update row (LR, loss) by the index of its update
    (0 for the first), which is the schedule step its LR came from.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        fresh: bool = False,
        log: Log | None = None,
        progress: bool | None = None,
        on_eval: Callable[[int, dict[str, float], bool], bool] | None = None,
        resume_hint: str | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.fresh = fresh
        self.log: Log = log or print
        self.show_progress = config.telemetry.progress if progress is None else progress
        self.on_eval = on_eval
        self._resume_hint = resume_hint
        self._last_eval_at = -1

    # ---- setup ----------------------------------------------------------------------------
    def _schedule(self, total_steps: int, steps_per_epoch: int) -> Schedule:
        try:
            return from_dict(self.config.schedule).bind(
                total_steps=total_steps, steps_per_epoch=steps_per_epoch
            )
        except ScheduleError as exc:
            raise ConfigError(f"schedule.{exc}") from exc

    def _make_scheduler(
        self, optimizer: torch.optim.Optimizer, schedule: Schedule, scales: list[float]
    ) -> Scheduler:
        """A scheduler whose group ``g`` follows ``schedule * scales[g]`` (absolute schedule, per-group scale)."""
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["initial_lr"] = schedule.peak * scale
        cfg = self.config.scheduler
        if cfg.momentum is not None and not any(
            k in optimizer.param_groups[0] for k in ("momentum", "betas")
        ):
            raise ConfigError(
                f"scheduler.momentum: {type(optimizer).__name__} has no momentum or betas to anneal; remove "
                "scheduler.momentum or use an optimizer with momentum (sgd, RMSprop) or betas (adamw, Adam, ...)"
            )
        return Scheduler(optimizer, schedule, count=cfg.count, momentum=cfg.momentum)

    # ---- the job --------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to the end of the budget, an early stop, a preemption signal or a guard stop.

        Raises:
            ConfigError: the config cannot be built, or the run directory holds a run trained with
                another schedule (nothing is written to the run then).
            RunIOError: the run's files cannot be written (disk full, read-only or vanished run
                directory); earlier checkpoints and the run store's rows up to them are kept.
        """
        cfg = self.config
        started = time.time()
        device = pick_device(cfg.device)
        world = distributed.init_from_env(device)
        _seed_everything(cfg.seed)

        train, val_set = training_batches(
            cfg.data, cfg.batch_size, cfg.seed, rank=world.rank, world=world.size
        )
        val = EpochBatches(val_set, cfg.eval.batch_size)
        steps_per_epoch = train.batches_per_epoch
        total = (
            cfg.epochs * steps_per_epoch
            if cfg.max_steps is None
            else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
        )
        schedule = self._schedule(total, steps_per_epoch)

        model = build_model(cfg.model).to(device)
        _check_fits(model, train.batch(0, 0), device, cfg)
        train_model: nn.Module = model
        if world.size > 1:
            train_model = nn.parallel.DistributedDataParallel(model)
        optimizer = build_optimizer(model, cfg.optimizer, schedule.peak)
        scales = [g["lr"] / schedule.peak for g in optimizer.param_groups]
        scheduler = self._make_scheduler(optimizer, schedule, scales)
        factories = (
            resolve_factories(cfg) if world.is_main else []
        )  # imported now: a bad entry trains nothing
        # only once the whole job has been built without error: a bad config never moves a run aside
        if world.is_main and self.fresh:
            _fresh_run_dir(self.run_dir, self.log)
        distributed.barrier(world)

        # The run store is opened only once the checkpoint to resume from (if any) is known to fit, so
        # a refused resume writes nothing to the run. Until then events wait here.
        store: RunStore | None = None
        early_events: list[tuple[int, str, dict[str, Any]]] = []
        position = _Position()

        def on_event(kind: str, **payload: Any) -> None:
            at = int(payload.pop("step", position.updates))
            fields = {k: run_relative(v, self.run_dir) if k == "path" else v for k, v in payload.items()}
            fields = {k: v for k, v in fields.items() if k not in ("kind", "wall")}
            if store is None:
                early_events.append((at, kind, fields))
            else:
                store.log_event(at, kind, **fields)

        def before_commit(_info: Any) -> None:
            if store is not None:  # every row up to this checkpoint is durable before it exists
                store.flush(durable=True)

        ck_cfg = cfg.checkpoint
        ckpts = (
            Checkpoints(
                self.run_dir / "checkpoints",
                keep_last=ck_cfg.keep_last,
                best=(ck_cfg.best_metric, ck_cfg.best_mode),
                keep_cycle_ends=ck_cfg.keep_cycle_ends,
                every_steps=ck_cfg.every_steps,
                every_seconds=ck_cfg.every_seconds,
                at_restarts=ck_cfg.at_restarts,
                async_write=ck_cfg.async_write,
                on_event=on_event,
                before_commit=before_commit,
            )
            if ck_cfg.enabled
            else None
        )
        g_cfg = cfg.guard
        guard = (
            NonFiniteGuard(
                max_consecutive=g_cfg.max_consecutive,
                on_exhausted=g_cfg.on_exhausted,
                lr_factor=g_cfg.lr_factor,
                adjust=g_cfg.adjust,
                max_rollbacks=g_cfg.max_rollbacks,
                schedule=schedule,
                on_event=on_event,
            )
            if g_cfg.enabled
            else None
        )
        es_cfg = cfg.early_stopping
        stopper = (
            RestartAwareEarlyStopping(
                es_cfg.metric,
                mode=es_cfg.mode,
                patience_cycles=es_cfg.patience_cycles,
                min_delta=es_cfg.min_delta,
            )
            if es_cfg.enabled
            else None
        )
        use_scaler = cfg.amp == "fp16"
        scaler = torch.amp.GradScaler(device.type) if use_scaler else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

        rank_trace: list[list[float]] = []
        last_metrics: dict[str, float] = {}
        saved_at = -1  # updates done at the newest checkpoint this session wrote or resumed from
        initial_state = {
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
        }

        def trackers() -> dict[str, Any]:
            return {
                "guard": guard.state_dict() if guard else None,
                "early_stopping": stopper.state_dict() if stopper else None,
                "attempts": position.attempts,
                "last_metrics": last_metrics,
            }

        def save(reason: str, cycle_end: bool = False, metrics: dict[str, float] | None = None) -> None:
            """Checkpoint the state after ``position.updates`` updates (named by that count)."""
            nonlocal saved_at
            if ckpts is None or saved_at == position.updates:
                return
            ckpts.save(
                position.updates,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                epoch=position.epoch,
                batch_index=position.batch,
                metrics=metrics,
                trackers=trackers(),
                cycle_end=cycle_end,
                extra={"updates": position.updates},
                reason=reason,
            )
            saved_at = position.updates

        def rebuild_scheduler(at: int) -> None:
            """A fresh scheduler on the current ``schedule`` at update count ``at``."""
            nonlocal scheduler
            scheduler.close()
            scheduler = self._make_scheduler(optimizer, schedule, scales)
            if at:
                scheduler.load_state_dict({"version": 1, "step": at, "schedule": schedule.to_dict()})
            if telemetry is not None:
                telemetry.schedule = schedule

        def restore_position(loaded: Any) -> dict[str, Any]:
            """Data position, metrics and early stopping from a loaded checkpoint; returns its trackers."""
            tracked: dict[str, Any] = dict(loaded.trackers or {})
            position.updates = int((loaded.extra or {}).get("updates", loaded.step))
            position.epoch, position.batch = loaded.epoch, loaded.batch_index
            last_metrics.clear()
            last_metrics.update(tracked.get("last_metrics") or {})
            if stopper is not None and tracked.get("early_stopping"):
                stopper.load_state_dict(tracked["early_stopping"])
            return tracked

        def resume(loaded: Any) -> None:
            """Continue an interrupted run: position, trackers, and the schedule it was really using."""
            nonlocal schedule, saved_at
            tracked = restore_position(loaded)
            position.attempts = int(tracked.get("attempts", position.updates))
            saved_at = position.updates
            state = loaded.scheduler_state
            saved = (
                from_dict(state["schedule"])
                if state and isinstance(state.get("schedule"), dict)
                else schedule
            )
            if saved != schedule:
                if not (tracked.get("guard") or {}).get("rollbacks"):
                    raise ConfigError(_schedule_mismatch(self.run_dir, saved, schedule))
                schedule = saved  # the guard lowered it before the interruption
            if guard is not None and tracked.get("guard"):
                guard.load_state_dict(tracked["guard"])
                guard.schedule = schedule
            rebuild_scheduler(position.updates)

        telemetry: Telemetry | None = None
        loaded = None
        if ckpts is not None:
            loaded = ckpts.load_latest(model, optimizer, None)
            if loaded is not None:
                resume(loaded)
            if world.is_main:
                with contextlib.suppress(OSError):  # a read-only directory keeps them; the save says why
                    ckpts.clean_stale()

        sinks = (
            build_sinks(factories, cfg, Path(os.path.abspath(self.run_dir)), schedule)
            if world.is_main
            else []
        )
        try:
            store = (
                RunStore(
                    self.run_dir,
                    flush_rows=cfg.telemetry.flush_rows,
                    flush_seconds=cfg.telemetry.flush_seconds,
                )
                if world.is_main
                else RunStore.disabled()
            )
        except (OSError, sqlite3.Error) as exc:
            for sink in sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            raise self._io_error(exc, "opening the run store", ckpts) from exc
        telemetry = Telemetry(
            store,
            schedule=schedule,
            expected=lambda t: scheduler.lrs_at(t),
            sinks=sinks,
            every=cfg.telemetry.every,
        )
        status, message, exit_code = "finished", "", 0
        bar = _Progress(self.show_progress and world.is_main, total)
        preempt: Preemption | None = None
        metrics_checked = False
        train_model.train()
        try:
            if loaded is not None:
                # rows past the checkpoint are recorded again from here: drop the old ones first
                discarded = telemetry.resume(position.updates)
                for at, kind, fields in early_events:
                    store.log_event(at, kind, **fields)
                store.log_event(
                    position.updates,
                    "resumed",
                    from_step=position.updates,
                    checkpoint=run_relative(loaded.info.path, self.run_dir),
                    epoch=position.epoch,
                    batch=position.batch,
                    discarded_rows=sum(discarded),
                )
                self.log(
                    f"resumed from update {position.updates} (epoch {position.epoch}, batch {position.batch})"
                )
            else:
                for at, kind, fields in early_events:
                    store.log_event(at, kind, **fields)
                if position.updates == 0:
                    params = run_params(cfg.to_dict(), schedule=schedule, seed=cfg.seed)
                    store.log_params({**params, "steps_per_epoch": steps_per_epoch, "total_steps": total})
            early_events.clear()
            if world.is_main:  # once the whole config is built and the resume settled
                for warning in lint(schedule, total, steps_per_epoch=steps_per_epoch):
                    self.log(f"lint {warning.code}: {warning.message}")
            preempt = Preemption()
            try:
                preempt.install()
            except Exception:  # not the main thread (e.g. a notebook worker): run without signal handling
                preempt = None

            def evaluate() -> dict[str, float]:
                nonlocal metrics_checked
                metrics = self._eval_and_record(model, val, device, telemetry, position)
                if not metrics_checked:  # names the task really reports, before any checkpoint needs one
                    check_metric_names(cfg, _val(metrics))
                    metrics_checked = True
                return metrics

            while position.updates < total:
                if position.batch >= steps_per_epoch:
                    position.epoch, position.batch = position.epoch + 1, 0
                    # epoch end: evaluate and checkpoint, unless this very update was just evaluated
                    # (a cycle end on the epoch boundary), whose checkpoint is already marked cycle_end
                    if cfg.eval.every_steps is None and self._last_eval_at != position.updates:
                        ended = ends_cycle(position.updates, schedule)
                        last_metrics = evaluate()
                        if self._prune(position.updates, last_metrics, ended):
                            save("eval", ended, _val(last_metrics))
                            status, message = "pruned", "stopped by the on_eval callback"
                            break
                        if stopper is not None and stopper.update(
                            position.updates, _val(last_metrics), schedule
                        ):
                            status, message = (
                                "early_stopped",
                                stopper.reason or "no improvement at cycle ends",
                            )
                            break
                        save("epoch", ended, _val(last_metrics))
                    continue
                if distributed.any_rank(preempt is not None and preempt.requested, world):
                    save("preempted", metrics=_val(last_metrics) or None)
                    signum = preempt.signal if preempt is not None else None
                    exit_code = preempt.exit_code if preempt is not None and preempt.exit_code else 143
                    store.log_event(position.updates, "preempted", signal=str(signum), exit_code=exit_code)
                    status, message = "preempted", f"preempted by {signum}; {self.resume_hint}"
                    break

                x, y = train.batch(position.epoch, position.batch)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lrs = [g["lr"] for g in optimizer.param_groups]
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = functional.cross_entropy(train_model(x), y)
                if position.attempts in cfg.debug.inject_nan_at:
                    loss = loss * float("nan")
                position.attempts += 1
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()  # type: ignore[no-untyped-call]
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grad_norm = (
                    torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None
                )
                if cfg.optimizer.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
                position.batch += 1
                if guard is not None:
                    decision = guard.check(loss, None if scaler is not None else model, step=position.updates)
                    if decision.action == "skip":
                        continue
                    if decision.action == "rollback":
                        # back to the last good checkpoint, on the schedule the guard just lowered
                        self.log(f"guard: {decision.message}")
                        schedule = guard.schedule or schedule
                        back = ckpts.load_latest(model, optimizer, None, restore_rng=False) if ckpts else None
                        if back is not None:
                            restore_position(back)
                        else:
                            model.load_state_dict(initial_state["model"])
                            optimizer.load_state_dict(initial_state["optimizer"])
                            position.updates = position.epoch = position.batch = 0
                        rebuild_scheduler(position.updates)
                        continue
                    if decision.action == "stop":
                        status, message, exit_code = "stopped_nonfinite", decision.message, 1
                        store.log_event(
                            position.updates, "run_failed", error="NonFiniteStop", message=decision.message
                        )
                        break
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if cfg.scheduler.count == "manual":
                    scheduler.step()
                step = position.updates
                if scheduler.last_epoch == step:  # GradScaler skipped the update: the schedule did not move
                    continue
                position.updates += 1
                momentum = _momenta(optimizer) if cfg.scheduler.momentum else None
                telemetry.on_update(
                    step, lrs, loss=loss.detach(), grad_norm=grad_norm, samples=len(y),
                    step_time=time.perf_counter() - t0, momentum=momentum,
                )  # fmt: skip
                bar.update(position.updates, lrs[0], schedule, step)
                if cfg.debug.lr_trace_dir is not None:
                    rank_trace.append([step, *lrs])
                if cfg.debug.sleep_per_step:
                    time.sleep(cfg.debug.sleep_per_step)

                cycle_end = is_cycle_end(step, schedule)
                eval_due = cycle_end or (
                    cfg.eval.every_steps is not None and position.updates % cfg.eval.every_steps == 0
                )
                if eval_due:
                    last_metrics = evaluate()
                    if self._prune(position.updates, last_metrics, cycle_end):
                        save("eval", cycle_end, _val(last_metrics))
                        status, message = "pruned", "stopped by the on_eval callback"
                        break
                    if stopper is not None and stopper.update(position.updates, _val(last_metrics), schedule):
                        save("eval", cycle_end, _val(last_metrics))
                        status, message = "early_stopped", stopper.reason or "no improvement at cycle ends"
                        break
                if ckpts is None or position.updates >= total:
                    continue  # the final checkpoint is written once, after the loop
                # an epoch that ends here is evaluated and checkpointed right after (with its metrics)
                epoch_end_follows = position.batch >= steps_per_epoch and cfg.eval.every_steps is None
                if eval_due:
                    save("restart" if cycle_end else "eval", cycle_end, _val(last_metrics))
                elif not epoch_end_follows and ckpts.should_save(position.updates, schedule):
                    save("periodic")
            if status == "finished":
                if position.batch >= steps_per_epoch:
                    position.epoch, position.batch = position.epoch + 1, 0
                if self._last_eval_at != position.updates:
                    last_metrics = evaluate()
                # the end of the last cycle is the final model, not one of the cycle-end snapshots
                save("final", False, _val(last_metrics))
                store.log_event(
                    position.updates, "run_finished", updates=position.updates,
                    seconds=round(time.time() - started, 3),
                )  # fmt: skip
            elif status in ("early_stopped", "pruned"):
                by = "early_stopping" if status == "early_stopped" else "on_eval"
                store.log_event(position.updates, "early_stop", reason=message, by=by)
        except BaseException as exc:
            failure = io_failure(exc)
            with contextlib.suppress(Exception):
                store.log_event(position.updates, "run_failed", error=type(exc).__name__, message=str(exc))
            _close_quietly(bar, preempt, ckpts, scheduler, store)
            distributed.shutdown(world)
            if failure is not None and not isinstance(exc, RunIOError):
                raise self._io_error(exc, f"training at update {position.updates}", ckpts) from exc
            raise
        bar.close()
        if preempt is not None:
            preempt.uninstall()
        try:
            if ckpts is not None:
                ckpts.close()
            scheduler.close()
            store.close()
        except (OSError, sqlite3.Error, CheckpointError) as exc:
            _close_quietly(store)
            if io_failure(exc) is None:
                raise
            raise self._io_error(exc, "closing the run", ckpts) from exc
        finally:
            distributed.shutdown(world)

        if cfg.debug.lr_trace_dir is not None:
            from cosanneal.io import atomic_write_json

            atomic_write_json(
                Path(cfg.debug.lr_trace_dir) / f"lr-rank{world.rank}.json", rank_trace, indent=None
            )
        return TrainResult(
            run_dir=self.run_dir,
            status=status,
            exit_code=exit_code,
            steps=position.updates,
            total_steps=total,
            epochs_done=position.updates / steps_per_epoch,
            final_metrics=_val(last_metrics),
            best_metric=(
                ckpts.best.metrics.get(ck_cfg.best_metric) if ckpts is not None and ckpts.best else None
            ),
            restarts=len(schedule.restarts(position.updates)),
            checkpoints_kept=len(ckpts.list()) if ckpts is not None else 0,
            nonfinite=guard.nonfinite if guard else 0,
            rollbacks=guard.rollbacks if guard else 0,
            wall_seconds=time.time() - started,
            message=message,
        )

    @property
    def resume_hint(self) -> str:
        """What to run to continue this job (the CLI sets it to the exact command line)."""
        return self._resume_hint or "resume with the same command"

    def _io_error(self, exc: BaseException, doing: str, ckpts: Checkpoints | None) -> RunIOError:
        """One line for a failed write: the cause, the device, what was kept, how to resume."""
        kind = io_failure(exc) or "I/O error"
        where = device_of(self.run_dir)
        kept = "no checkpoint"
        if not os.path.isdir(self.run_dir):
            return RunIOError(
                f"{kind} on {where} while {doing} in {self.run_dir}: the run directory is gone, with its "
                f"checkpoints and run store; nothing was recreated there. Restore it and {self.resume_hint} "
                "to resume, or start over"
            )
        if ckpts is not None:
            with contextlib.suppress(Exception):
                latest = ckpts.latest
                if latest is not None:
                    kept = (
                        f"checkpoint step-{latest.step:09d} ({latest.step} updates; the run store holds "
                        "every row up to it)"
                    )
        return RunIOError(
            f"{kind} on {where} while {doing} in {self.run_dir}; kept: {kept}; earlier checkpoints are "
            f"intact; fix the disk and {self.resume_hint} to resume"
        )

    def _prune(self, updates: int, metrics: dict[str, float], cycle_end: bool) -> bool:
        return self.on_eval is not None and bool(self.on_eval(updates, _val(metrics), cycle_end))

    def _eval_and_record(
        self,
        model: nn.Module,
        val: EpochBatches,
        device: torch.device,
        telemetry: Telemetry,
        position: _Position,
    ) -> dict[str, float]:
        metrics = _evaluate(model, val, device, self.config.eval.batch_size)
        self._last_eval_at = position.updates
        telemetry.on_eval(position.updates, metrics)
        return metrics


def _set_value(value: Any) -> str:
    """``value`` as the text of a ``--set key=value`` that reads back as ``value``."""
    return value if isinstance(value, str) else json.dumps(value)


def _schedule_mismatch(run_dir: Path, saved: Schedule, configured: Schedule) -> str:
    """One line naming every schedule key that differs, the ``--set`` that restores it, and the alternative."""
    old, new = saved.to_dict(), configured.to_dict()
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    differs = ", ".join(f"{k} = {old.get(k)!r} in the run, {new.get(k)!r} in the config" for k in keys)
    sets = " ".join(
        f"--set schedule.{k}={_set_value(old[k])}" for k in keys if old.get(k) is not None and k != "kind"
    )
    restore = f"to resume it, add {sets}; " if sets and "kind" not in keys else ""
    return (
        f"schedule: the run in {run_dir} was trained with another schedule ({differs}); "
        f"{restore}to start over, use --fresh (the old run is moved aside) or a new --run-dir"
    )


def _check_fits(model: nn.Module, batch: Any, device: torch.device, cfg: TrainConfig) -> None:
    """One forward pass and loss on the first batch, so a model that does not fit the data is a config error.

    Without it a model with the wrong input size or too few classes fails at the first training step
    with a traceback. Evaluation mode and no gradients: nothing the run computes later changes (no
    RNG is drawn, no running statistic is updated).
    """
    x, y = batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional.cross_entropy(model(x.to(device)), y.to(device))
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        what = cfg.model.entry or cfg.model.name
        data = cfg.data.entry or cfg.data.name
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"model.options: model {what!r} does not fit the data {data!r} (inputs {tuple(x.shape)}, "
            f"{int(y.max()) + 1 if y.numel() else 0} classes seen): {first}; check the model's input size "
            "and number of classes against the data"
        ) from exc
    finally:
        model.train(was_training)


def _close_quietly(*things: Any) -> None:
    """Close what an aborted run holds; errors here would only hide the one that stopped it."""
    for thing in things:
        if thing is None:
            continue
        closer = getattr(thing, "uninstall", None) or thing.close
        with contextlib.suppress(Exception):
            closer()


def _val(metrics: dict[str, float]) -> dict[str, float]:
    """``{"loss": .., "acc": ..}`` -> ``{"val_loss": .., "val_acc": ..}`` (the names checkpoints rank by)."""
    return {f"val_{k}": v for k, v in metrics.items()}


def _momenta(optimizer: torch.optim.Optimizer) -> list[float]:
    out = []
    for g in optimizer.param_groups:
        out.append(float(g["betas"][0]) if "betas" in g else float(g.get("momentum", 0.0)))
    return out


class _Progress:
    """A rich progress bar with LR, cycle and phase; updated a few times a second, not every step."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self._last = 0.0
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, info="")
        self._progress.start()

    def update(self, done: int, lr: float, schedule: Schedule, step: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        info = f"lr {lr:.3e}  cycle {schedule.cycle(step).index}  {schedule.phase(step)}"
        self._progress.update(self._task, completed=done, info=info)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()


__all__ = ["TrainResult", "Trainer"]
