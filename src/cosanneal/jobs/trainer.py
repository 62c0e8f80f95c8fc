"""The config-driven trainer: every runtime piece composed into one preemption-safe training job.

``Trainer(config, run_dir).run()`` trains, evaluates, checkpoints and records telemetry; it resumes from
the run directory automatically (model, optimizer, schedule counter, RNG states, data position and
tracker states), so a job interrupted at any step ends bit-identical on CPU to one that was not.
Under ``torchrun`` every rank computes the same LR at every step (the LR is a pure function of the
update counter) and only rank 0 writes the run store and checkpoints. A run resumed by another number of
ranks follows ``resume.world_size`` (:mod:`cosanneal.jobs.world_size`): keep the global batch by
accumulation, or scale the LR and re-bind the rest of the schedule in samples, recorded as a
``world_size_changed`` event.

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

from cosanneal.errors import ConfigError, RunIOError
from cosanneal.jobs.builders import build_data, build_model, pick_device
from cosanneal.jobs.checks import check_task
from cosanneal.jobs.config import TrainConfig
from cosanneal.jobs.loading import TrainLoader
from cosanneal.jobs.loop import Loop, Parts
from cosanneal.jobs.optimizers import build_optimizer
from cosanneal.jobs.preview import RunShape, bind_schedule, run_length
from cosanneal.jobs.sink_factories import build_sinks, resolve_factories
from cosanneal.jobs.tasks import batch_tokens, build_task
from cosanneal.jobs.world_size import Layout
from cosanneal.runtime import distributed
from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints
from cosanneal.runtime.guard import NonFiniteGuard
from cosanneal.runtime.iofailure import device_of, io_failure
from cosanneal.runtime.preemption import DEFAULT_SIGNALS, Preemption
from cosanneal.runtime.requeue import signal_number
from cosanneal.runtime.runstore import RunStore, run_params, run_relative
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.schedules import Schedule, lint
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

    # ---- setup ----------------------------------------------------------------------------
    def _make_scheduler(
        self, optimizer: torch.optim.Optimizer, schedule: Schedule, scales: list[float]
    ) -> Scheduler:
        """A scheduler whose group ``g`` follows ``schedule * scales[g]`` (absolute schedule, per-group scale)."""
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["initial_lr"] = schedule.peak * scale
        cfg = self.config.scheduler
        return Scheduler(optimizer, schedule, count=cfg.count, momentum=cfg.momentum)

    def _check_momentum(self, optimizer: torch.optim.Optimizer) -> None:
        """``scheduler.momentum`` on an optimizer without momentum or betas is a config error, not a traceback."""
        if self.config.scheduler.momentum is not None and not any(
            k in optimizer.param_groups[0] for k in ("momentum", "betas")
        ):
            raise ConfigError(
                f"scheduler.momentum: {type(optimizer).__name__} has no momentum or betas to anneal; remove "
                "scheduler.momentum or use an optimizer with momentum (sgd, RMSprop) or betas (adamw, Adam, ...)"
            )

    # ---- the job --------------------------------------------------------------------------
    def build(self) -> Parts:
        """Build every piece of the job from the config, before anything is written to the run.

        Raises:
            ConfigError: a piece cannot be built (one line naming the key and the fix).
        """
        cfg = self.config
        device = pick_device(cfg.device)
        world = distributed.init_from_env(device, cfg.distributed.timeout_seconds)
        _seed_everything(cfg.seed)
        train_set, val_set = build_data(cfg.data)

        def make_loader(batch_size: int) -> TrainLoader:
            return TrainLoader(
                train_set,
                batch_size,
                seed=cfg.seed,
                rank=world.rank,
                world=world.size,
                num_workers=cfg.data.num_workers,
                pin_memory=cfg.data.pin_memory and device.type == "cuda",
                prefetch_factor=cfg.data.prefetch_factor,
            )

        train = make_loader(cfg.batch_size)
        task = build_task(cfg.task)
        model = build_model(cfg.model).to(device)
        first = train.first()
        check_task(task, model, first, val_set, device, cfg)
        tokens = batch_tokens(task, first)
        samples_per_update = cfg.batch_size * world.size
        tokens_per_update = None if tokens is None else tokens * world.size
        per_epoch = train.batches_per_epoch
        shape = RunShape(per_epoch, samples_per_update, tokens_per_update, world.size)
        total = run_length(cfg, shape)
        schedule = bind_schedule(cfg, total, shape)

        def bind_at(world_size: int) -> tuple[Schedule, int]:
            """The schedule and length the config binds to when ``world_size`` ranks train it."""
            at = _shape_at(shape, train, cfg.batch_size, world_size, tokens)
            length = run_length(cfg, at)
            return bind_schedule(cfg, length, at), length

        train_model: nn.Module = model
        if world.size > 1:
            train_model = nn.parallel.DistributedDataParallel(model)
        optimizer = build_optimizer(model, cfg.optimizer, schedule.peak)
        scales = [g["lr"] / schedule.peak for g in optimizer.param_groups]
        optimizer_step: Callable[[], Any] = optimizer.step
        if cfg.compile:
            train_model, optimizer_step = _compiled(train_model, optimizer, cfg.compile_backend)
        self._check_momentum(optimizer)
        return Parts(
            config=cfg,
            run_dir=self.run_dir,
            log=self.log,
            device=device,
            world=world,
            task=task,
            model=model,
            train_model=train_model,
            optimizer=optimizer,
            optimizer_step=optimizer_step,
            schedule=schedule,
            make_scheduler=lambda sched: self._make_scheduler(optimizer, sched, scales),
            train=train,
            val_set=val_set,
            total=total,
            checkpoints=None,
            guard=None,
            stopper=None,
            on_eval=self.on_eval,
            resume_hint=self.resume_hint,
            layout=Layout(world.size, cfg.batch_size, cfg.accumulate, total),
            bind_at=bind_at,
            make_loader=make_loader,
        )

    def _runtime(self, parts: Parts, loop: Loop) -> None:
        """The runtime components of the job: checkpoints, guard, early stopping (events into ``loop``)."""
        cfg = self.config
        ck = cfg.checkpoint
        if ck.enabled:
            parts.checkpoints = Checkpoints(
                self.run_dir / "checkpoints",
                keep_last=ck.keep_last,
                best=(ck.best_metric, ck.best_mode),
                keep_cycle_ends=ck.keep_cycle_ends,
                every_steps=ck.every_steps,
                every_seconds=ck.every_seconds,
                at_restarts=ck.at_restarts,
                async_write=ck.async_write,
                sharded=ck.sharded,
                on_event=loop.on_event,
                before_commit=loop.before_commit,
            )
        g = cfg.guard
        if g.enabled:
            parts.guard = NonFiniteGuard(
                max_consecutive=g.max_consecutive,
                on_exhausted=g.on_exhausted,
                lr_factor=g.lr_factor,
                adjust=g.adjust,
                max_rollbacks=g.max_rollbacks,
                schedule=parts.schedule,
                on_event=loop.on_event,
            )
        es = cfg.early_stopping
        if es.enabled:
            parts.stopper = RestartAwareEarlyStopping(
                es.metric, mode=es.mode, patience_cycles=es.patience_cycles, min_delta=es.min_delta
            )

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
        parts = self.build()
        world = parts.world
        factories = (
            resolve_factories(cfg) if world.is_main else []
        )  # imported now: a bad entry trains nothing
        # only once the whole job has been built without error: a bad config never moves a run aside
        if world.is_main and self.fresh:
            _fresh_run_dir(self.run_dir, self.log)
        distributed.barrier(world)

        loop = Loop(parts, self.show_progress)
        self._runtime(parts, loop)
        ckpts = parts.checkpoints
        # The run store is opened only once the checkpoint to resume from (if any) is known to fit, so
        # a refused resume writes nothing to the run. Until then events wait in the loop.
        loaded = None
        if ckpts is not None:
            loaded = ckpts.load_latest(parts.model, parts.optimizer, None)
            if loaded is not None:
                loop.resume(loaded)
            if world.is_main:
                with contextlib.suppress(OSError):  # a read-only directory keeps them; the save says why
                    ckpts.clean_stale()
        store = self._open_store(cfg, parts, loop, factories)
        per_epoch = parts.train.batches_per_epoch
        try:
            self._start(loop, loaded, per_epoch)
            loop.train()
            loop.finish(started)
        except BaseException as exc:
            failure = io_failure(exc)
            with contextlib.suppress(Exception):
                store.log_event(
                    loop.position.updates, "run_failed", error=type(exc).__name__, message=str(exc)
                )
            _close_quietly(loop.bar, loop.preempt, ckpts, loop.scheduler, store)
            with contextlib.suppress(Exception):
                loop.close_stream()
            distributed.shutdown(world)
            if failure is not None and not isinstance(exc, RunIOError):
                raise self._io_error(exc, f"training at update {loop.position.updates}", ckpts) from exc
            raise
        loop.bar.close(loop.last_metrics)
        loop.close_stream()
        if loop.preempt is not None:
            loop.preempt.uninstall()
        try:
            if ckpts is not None:
                ckpts.close()
            loop.scheduler.close()
            store.close()
        except (OSError, sqlite3.Error, CheckpointError) as exc:
            _close_quietly(store)
            if io_failure(exc) is None:
                raise
            raise self._io_error(exc, "closing the run", ckpts) from exc
        finally:
            distributed.shutdown(world, drain=True)

        if cfg.debug.lr_trace_dir is not None:
            from cosanneal.io import atomic_write_json

            atomic_write_json(
                Path(cfg.debug.lr_trace_dir) / f"lr-rank{world.rank}.json", loop.rank_trace, indent=None
            )
        return self._result(loop, started)

    def _open_store(self, cfg: TrainConfig, parts: Parts, loop: Loop, factories: list[Any]) -> RunStore:
        """The run store and the telemetry that writes into it (rank 0; other ranks get a disabled store)."""
        is_main = parts.world.is_main
        sinks = (
            build_sinks(factories, cfg, Path(os.path.abspath(self.run_dir)), loop.schedule) if is_main else []
        )
        try:
            store = (
                RunStore(
                    self.run_dir,
                    flush_rows=cfg.telemetry.flush_rows,
                    flush_seconds=cfg.telemetry.flush_seconds,
                )
                if is_main
                else RunStore.disabled()
            )
        except (OSError, sqlite3.Error) as exc:
            for sink in sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            raise self._io_error(exc, "opening the run store", parts.checkpoints) from exc
        loop.store = store
        loop.telemetry = Telemetry(
            store,
            schedule=loop.schedule,
            expected=lambda t: loop.scheduler.lrs_at(t),
            sinks=sinks,
            every=cfg.telemetry.every,
        )
        return store

    def _start(self, loop: Loop, loaded: Any, per_epoch: int | None) -> None:
        """The first records of a session (params or the resume), the lint, the signal handlers."""
        cfg, store, pos = self.config, loop.store, loop.position
        assert store is not None and loop.telemetry is not None
        if loaded is not None:
            # rows past the checkpoint are recorded again from here: drop the old ones first
            discarded = loop.telemetry.resume(pos.updates)
            for at, kind, fields in loop.early_events:
                store.log_event(at, kind, **fields)
            store.log_event(
                pos.updates,
                "resumed",
                from_step=pos.updates,
                checkpoint=run_relative(loaded.info.path, self.run_dir),
                epoch=pos.epoch,
                batch=pos.batch,
                discarded_rows=sum(discarded),
            )
            self.log(f"resumed from update {pos.updates} (epoch {pos.epoch}, batch {pos.batch})")
        else:
            for at, kind, fields in loop.early_events:
                store.log_event(at, kind, **fields)
            if pos.updates == 0:
                params = run_params(cfg.to_dict(), schedule=loop.schedule, seed=cfg.seed)
                store.log_params(
                    {
                        **params,
                        "steps_per_epoch": per_epoch,
                        "total_steps": loop.p.total,
                        "accumulate": cfg.accumulate,
                    }
                )
        loop.early_events.clear()
        if loop.p.world.is_main:  # once the whole config is built and the resume settled
            for warning in lint(loop.schedule, loop.p.total, steps_per_epoch=per_epoch):
                self.log(f"lint {warning.code}: {warning.message}")
        wanted = signal_number(self.config.slurm.signal)
        signals = (*DEFAULT_SIGNALS, *([wanted] if wanted not in DEFAULT_SIGNALS else []))
        loop.preempt = Preemption(signals)
        try:
            loop.preempt.install()
        except Exception:  # not the main thread (e.g. a notebook worker): run without signal handling
            loop.preempt = None

    def _result(self, loop: Loop, started: float) -> TrainResult:
        parts, pos = loop.p, loop.position
        ckpts, guard = parts.checkpoints, parts.guard
        per_epoch = parts.train.batches_per_epoch
        best_metric = self.config.checkpoint.best_metric
        return TrainResult(
            run_dir=self.run_dir,
            status=loop.status,
            exit_code=loop.exit_code,
            steps=pos.updates,
            total_steps=parts.total,
            epochs_done=pos.updates / per_epoch if per_epoch else float(pos.epoch),
            final_metrics=dict(loop.last_metrics),
            best_metric=ckpts.best.metrics.get(best_metric) if ckpts is not None and ckpts.best else None,
            restarts=len(loop.schedule.restarts(pos.updates)),
            checkpoints_kept=len(ckpts.list()) if ckpts is not None else 0,
            nonfinite=guard.nonfinite if guard else 0,
            rollbacks=guard.rollbacks if guard else 0,
            wall_seconds=time.time() - started,
            message=loop.message,
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


def _shape_at(
    shape: RunShape, train: TrainLoader, batch_size: int, world_size: int, tokens: int | None
) -> RunShape:
    """``shape`` as ``world_size`` ranks of ``batch_size`` samples see it (an iterable data set splits itself)."""
    per_epoch = shape.steps_per_epoch
    if train.order is not None:
        per_epoch = (len(train.dataset) // world_size) // batch_size
    return RunShape(
        per_epoch, batch_size * world_size, None if tokens is None else tokens * world_size, world_size
    )


def _set_value(value: Any) -> str:
    """``value`` as the text of a ``--set key=value`` that reads back as ``value``."""
    return value if isinstance(value, str) else json.dumps(value)


def schedule_mismatch(run_dir: Path, saved: Schedule, configured: Schedule) -> str:
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


def _compiled(
    model: nn.Module, optimizer: torch.optim.Optimizer, backend: str
) -> tuple[nn.Module, Callable[[], Any]]:
    """The model and ``optimizer.step`` under ``torch.compile``, with float64 tensor LRs.

    The scheduler fills a tensor LR in place, so the compiled step reads each update's LR without a
    recompile (the LR is not a constant baked into the graph).
    """
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float64)
    compiled_step: Callable[[], Any] = torch.compile(optimizer.step, backend=backend)
    return torch.compile(model, backend=backend), compiled_step  # type: ignore[return-value]


def _close_quietly(*things: Any) -> None:
    """Close what an aborted run holds; errors here would only hide the one that stopped it."""
    for thing in things:
        if thing is None:
            continue
        closer = getattr(thing, "uninstall", None) or thing.close
        with contextlib.suppress(Exception):
            closer()


__all__ = ["TrainResult", "Trainer"]
