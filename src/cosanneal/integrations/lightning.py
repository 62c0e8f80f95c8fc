"""PyTorch Lightning: callbacks that give a Lightning job what cosanneal's trainer gives its jobs.

:func:`callbacks` returns the set: a :class:`CosannealCallback` and a Lightning ``ModelCheckpoint``
that writes ``last.ckpt`` for ``trainer.fit(ckpt_path="last")``.

* **The schedule counts real updates.** Given ``schedule=``, the callback builds the
  :class:`~cosanneal.torch.Scheduler` on the optimizer ``configure_optimizers`` returns and advances
  it from an optimizer step hook after each update that really ran: once per
  ``accumulate_grad_batches`` micro-batches, never for an update AMP's ``GradScaler`` skipped or the
  non-finite guard emptied, and in manual optimization too. Lightning never steps it, so nobody has
  to override ``lr_scheduler_step``. A cosanneal ``Scheduler`` returned from ``configure_optimizers``
  instead (``count="manual"``, ``interval="step"``, ``frequency=1``) is checked and recorded; a
  configuration that cannot be exact is an :class:`~cosanneal.integrations.IntegrationError` naming
  the fix.
* **Telemetry** per real update (LR used and expected, cycle, phase, loss) into ``run_dir/run.db``,
  TensorBoard events in ``run_dir/tb``, and any MLflow/Prometheus sink, from rank 0.
* **Checkpoints.** Resume state is Lightning's own ``last.ckpt`` (the only file that restores
  Lightning's loops, precision plugin and other callbacks), written atomically (temporary file
  beside it, fsync, rename, fsync of the directory) and holding this callback's state (the update
  count, the guard, early stopping). The model artifacts go through cosanneal's
  :class:`~cosanneal.runtime.checkpoints.Checkpoints` in ``run_dir/checkpoints``: verified (SHA-256
  manifest), the best kept apart in ``best/`` and never replaced by a worse, a non-finite or a
  post-restart value nor at a job restart, and a snapshot at every cycle end.
* The non-finite guard (skip, then stop) and restart-aware early stopping.

Steps: per-update rows carry the index of the real update (0 for the first); evaluations, events
and checkpoints the number of real updates done. Lightning's ``global_step`` counts optimizer step
calls, including those AMP skipped, so the two differ after a skipped update.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.plugins.precision import MixedPrecision

from cosanneal.integrations._common import (
    STATE_VERSION,
    IntegrationError,
    RunSession,
    ScheduleSpec,
    SessionOptions,
    SinkSpec,
    UpdateCounter,
    read_schedule,
    refuse_rollback,
    val_metrics,
)
from cosanneal.io import atomic_save
from cosanneal.runtime.ckpt_policy import is_better
from cosanneal.runtime.guard import NonFiniteGuard
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.schedules.base import Schedule
from cosanneal.torch import Scheduler

__all__ = ["AtomicCheckpointIO", "CosannealCallback", "callbacks"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint IO, made atomic and durable for local paths.

    Lightning's own writer stages the file in the system's temporary directory and moves it into
    place, which is a copy (not atomic: a kill leaves half a ``last.ckpt``) when that directory is
    on another filesystem, and never fsyncs. This one writes a temporary sibling of the target,
    fsyncs it, renames it over the target and fsyncs the directory (:func:`cosanneal.io.atomic_save`),
    so ``last.ckpt`` is always the previous complete checkpoint or the new one. URLs go to
    Lightning's writer unchanged.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see the class docstring)."""
        target = os.fspath(path)
        if storage_options is not None or ("://" in target and not target.startswith("file://")):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(target.removeprefix("file://"), lambda tmp: torch.save(checkpoint, tmp))


def _pl_version() -> str:
    from importlib.metadata import version

    return version("pytorch-lightning")


def _momenta(optimizer: torch.optim.Optimizer) -> list[float]:
    return [
        float(g["betas"][0]) if "betas" in g else float(g.get("momentum", 0.0))
        for g in optimizer.param_groups
    ]


def _shared(schedule: Schedule | tuple[Schedule, ...]) -> Schedule:
    return schedule[0] if isinstance(schedule, tuple) else schedule


class CosannealCallback(Callback):
    """Exact cosine schedules, LR-trace telemetry, safe checkpoints, the guard and early stopping for Lightning.

    Args:
        schedule: the schedule (a :class:`~cosanneal.Schedule`, ``to_dict()`` data or a spec file);
            the callback builds and steps the :class:`~cosanneal.torch.Scheduler` itself
            (``configure_optimizers`` then returns only the optimizer). Durations in epochs or
            fractions are bound to ``trainer.estimated_stepping_batches``. ``None``: use the cosanneal
            ``Scheduler`` that ``configure_optimizers`` returns (``count="manual"``,
            ``interval="step"``, ``frequency=1``).
        run_dir: the run directory (``run.db``, ``tb/``, ``checkpoints/``); default
            ``<default_root_dir>/cosanneal``.
        momentum: ``(max_m, min_m)`` momentum annealing of the built scheduler.
        sinks: extra sinks (MLflow, Prometheus), or a function returning them, called on rank 0 only.
        tensorboard: write TensorBoard events to ``run_dir/tb``.
        every: record per-update rows every ``every``-th update (restart events are never thinned).
        best: ``(metric, "min" | "max")`` of the best checkpoint, the name as logged
            (``"val_loss"``), or ``None``.
        keep_last: newest artifact checkpoints kept besides ``best/`` and the cycle ends.
        keep_cycle_ends: keep a snapshot of the model at the end of every cycle.
        checkpoints: write the artifact checkpoints at all.
        guard: a :class:`~cosanneal.runtime.guard.NonFiniteGuard` (``on_exhausted="stop"``), ``True``
            for the default one (skip a non-finite update, stop after 3 in a row), or ``False``/``None``.
            A skipped update does not advance the schedule. Needs ``schedule=``.
        early_stopping: a :class:`~cosanneal.runtime.stopping.RestartAwareEarlyStopping` on a logged
            validation metric, compared at cycle ends only.

    Raises:
        IntegrationError: a guard that rolls back (a callback cannot rewind Lightning's loops: stop,
            then resume from the last checkpoint with a lower peak), or at fit start a configuration
            that cannot be exact (see :func:`check_scheduler_config`).

    Example:
        >>> from cosanneal import Cosine
        >>> cb = CosannealCallback(Cosine(0.1, warmup_steps=10, cycle_steps=100), "runs/demo")
        >>> trainer = pl.Trainer(max_steps=110, callbacks=[cb])  # doctest: +SKIP
        >>> trainer.fit(model, loader, ckpt_path="last")  # doctest: +SKIP
    """

    def __init__(
        self,
        schedule: ScheduleSpec | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        momentum: tuple[float, float] | None = None,
        sinks: SinkSpec = (),
        tensorboard: bool = True,
        every: int = 1,
        best: tuple[str, str] | None = ("val_loss", "min"),
        keep_last: int = 1,
        keep_cycle_ends: bool = True,
        checkpoints: bool = True,
        guard: NonFiniteGuard | bool | None = True,
        early_stopping: RestartAwareEarlyStopping | None = None,
    ) -> None:
        refuse_rollback(guard, "Lightning's loops")
        self.spec = schedule
        self.run_dir = run_dir
        self.momentum = momentum
        self.options = SessionOptions(
            sinks=sinks,
            tensorboard=tensorboard,
            every=every,
            best=best,
            keep_last=keep_last,
            keep_cycle_ends=keep_cycle_ends,
            checkpoints=checkpoints,
            early_stopping=early_stopping,
        )
        self.guard_option = guard
        self.scheduler: Scheduler | None = None
        self.owned = False
        self.session: RunSession | None = None
        self.counter: UpdateCounter | None = None
        self._restored: dict[str, Any] | None = None
        self._losses: list[torch.Tensor] = []
        self._attempts = -1

    # ---- setup ----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Make Lightning's default checkpoint writer atomic (:class:`AtomicCheckpointIO`)."""
        if stage == "fit" and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def _guard(self) -> NonFiniteGuard | None:
        option = self.guard_option
        if option is None or option is False:
            return None
        if not self.owned:
            raise IntegrationError(
                "guard: skipping a non-finite update needs the schedule counted by CosannealCallback "
                "(Lightning steps a Scheduler returned from configure_optimizers even when the update was "
                "skipped); pass CosannealCallback(schedule=...) and return only the optimizer, or guard=None"
            )
        return option if isinstance(option, NonFiniteGuard) else NonFiniteGuard(on_exhausted="stop")

    def _bind(self, trainer: pl.Trainer, spec: ScheduleSpec) -> Schedule:
        schedule = read_schedule(spec)
        if not schedule.unbound_fields():
            return schedule
        total = int(trainer.estimated_stepping_batches)
        batches = trainer.num_training_batches
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None
        return schedule.bind(total_steps=total, steps_per_epoch=per_epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build (or adopt and check) the scheduler, then start or continue the run's records."""
        configs = list(trainer.lr_scheduler_configs)
        restored = self._restored
        if self.spec is not None:
            if configs:
                raise IntegrationError(
                    f"configure_optimizers returns an LR scheduler ({type(configs[0].scheduler).__name__}) and "
                    "CosannealCallback(schedule=...) drives the LR too; return only the optimizer, or drop "
                    "schedule= and return a cosanneal.torch.Scheduler"
                )
            if len(trainer.optimizers) != 1:
                raise IntegrationError(
                    f"CosannealCallback(schedule=...) drives one optimizer, configure_optimizers returns "
                    f"{len(trainer.optimizers)}; return one optimizer (with param groups for different LRs)"
                )
            optimizer = trainer.optimizers[0]
            self.scheduler = Scheduler(optimizer, self._bind(trainer, self.spec), momentum=self.momentum)
            self.owned = True
            if restored and restored.get("scheduler"):
                self.scheduler.load_state_dict(restored["scheduler"])
        else:
            self.scheduler = check_scheduler_config(configs, pl_module.automatic_optimization)
            self.owned = False
            optimizer = self.scheduler.optimizer
        updates = int(restored["updates"]) if restored else 0
        self.counter = UpdateCounter(
            optimizer, start=updates, on_update=self._advance if self.owned else None
        )
        schedule = _shared(self.scheduler.schedule)
        run_dir = self.run_dir if self.run_dir is not None else Path(trainer.default_root_dir) / "cosanneal"
        self.session = RunSession(
            run_dir, schedule, is_main=trainer.is_global_zero, expected=self.scheduler.lrs_at,
            options=self.options, guard=self._guard(),
        )  # fmt: skip
        if restored:
            self.session.load_trackers(restored.get("trackers") or {})
        ckpt = trainer.ckpt_path
        self.session.start(
            updates, resumed=restored is not None, checkpoint=None if ckpt is None else os.fspath(ckpt),
            config={"framework": "lightning", "pytorch_lightning": _pl_version(),
                    "accumulate_grad_batches": trainer.accumulate_grad_batches,
                    "world_size": trainer.world_size, "precision": str(trainer.precision)},
        )  # fmt: skip
        self._attempts = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Re-set the groups' LRs from the closed form once Lightning restored the optimizer state."""
        if self.owned and self.scheduler is not None:
            self.scheduler.load_state_dict(self.scheduler.state_dict())
        self._attempts = trainer.global_step

    def _advance(self, index: int) -> None:
        """An update ran (and the guard kept it): the schedule moves to the next update."""
        assert self.scheduler is not None
        self.scheduler.step()

    # ---- per batch ------------------------------------------------------------------------
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Keep the micro-batch loss (for telemetry and the guard); no host sync."""
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """The non-finite guard: a skipped update gets no gradients and is not counted."""
        session, counter = self.session, self.counter
        if session is None or counter is None or session.guard is None:
            return
        loss = torch.stack([x.float().mean() for x in self._losses]).mean() if self._losses else None
        plugin = trainer.precision_plugin
        scaled = isinstance(plugin, MixedPrecision) and plugin.scaler is not None
        decision = session.guard.check(loss, None if scaled else pl_module, step=counter.count)
        if decision.ok:
            return
        for p in pl_module.parameters():
            p.grad = None
        counter.skip_next = True
        if decision.stop:
            trainer.should_stop = True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Record the updates this batch made; check a user scheduler kept pace; snapshot cycle ends."""
        session, counter, scheduler = self.session, self.counter, self.scheduler
        if session is None or counter is None or scheduler is None:
            return
        counter.skip_next = False
        done = counter.take()
        attempted = trainer.global_step != self._attempts
        self._attempts = trainer.global_step
        if not done:
            if attempted:
                self._losses.clear()
            return
        loss = torch.stack([x.float().mean() for x in self._losses]).mean() if self._losses else None
        self._losses.clear()
        momentum = _momenta(scheduler.optimizer) if scheduler._momentum is not None else None
        for i, (index, lrs) in enumerate(done):
            last = i == len(done) - 1
            session.record_update(index, lrs, loss=loss if last else None, momentum=momentum)
        if not self.owned and scheduler.last_epoch != counter.count:
            manual = not pl_module.automatic_optimization
            raise IntegrationError(
                f"{counter.count} optimizer updates ran but the cosanneal Scheduler counted "
                f"{scheduler.last_epoch}: "
                + (
                    "in manual optimization call self.lr_schedulers().step() right after each opt.step() "
                    "in training_step, or pass the schedule to CosannealCallback(schedule=...), which "
                    "counts updates itself"
                    if manual
                    else "something else steps this optimizer or scheduler; pass the schedule to "
                    "CosannealCallback(schedule=...), which counts real updates itself"
                )
            )
        if session.ends_cycle():
            session.save(
                pl_module, scheduler.optimizer, scheduler, reason="restart", trackers=session.trackers()
            )

    # ---- evaluation -----------------------------------------------------------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the validation metrics; a new best is checkpointed; early stopping at cycle ends."""
        session, scheduler = self.session, self.scheduler
        if session is None or scheduler is None or trainer.sanity_checking:
            return
        names = [
            n
            for n in (
                self.options.best[0] if self.options.best else None,
                getattr(session.stopper, "metric", None),
            )
            if n
        ]
        metrics = val_metrics(dict(trainer.callback_metrics), names)
        if not metrics:
            return
        values = session.record_eval(metrics)
        if self.options.best is not None and session.ckpts is not None:
            metric, mode = self.options.best
            value = values.get(metric if metric.startswith("val_") else f"val_{metric}")
            if value is None:
                value = values.get(metric)
            improves = False
            if value is not None and trainer.is_global_zero:
                current = session.ckpts.best
                improves = is_better(value, None if current is None else current.metrics.get(metric), mode)
            if trainer.strategy.broadcast(improves, src=0):
                session.save(
                    pl_module, scheduler.optimizer, scheduler, reason="eval",
                    metrics={metric: float(value or 0.0), **values}, trackers=session.trackers(),
                )  # fmt: skip
        reason = session.early_stop(values)
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            trainer.should_stop = True
            session.store.log_event(session.updates, "early_stop", reason=reason or "", by="early_stopping")

    # ---- checkpoint state ----------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Make every row recorded so far durable before Lightning writes the checkpoint."""
        if self.session is not None:
            self.session.flush(durable=True)

    def state_dict(self) -> dict[str, Any]:
        """The update count, the built scheduler's state and the trackers (saved in Lightning's checkpoint)."""
        if self.counter is None or self.session is None:
            return dict(self._restored or {})
        return {
            "version": STATE_VERSION,
            "updates": self.counter.count,
            "scheduler": self.scheduler.state_dict() if self.owned and self.scheduler is not None else None,
            "trackers": self.session.trackers(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the state of a resumed checkpoint for :meth:`on_fit_start`."""
        if state_dict.get("version") != STATE_VERSION:
            raise IntegrationError(
                f"CosannealCallback state version {state_dict.get('version')!r} in the checkpoint; this "
                f"version reads {STATE_VERSION}"
            )
        self._restored = dict(state_dict)

    # ---- the end --------------------------------------------------------------------------
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final model artifact and record the end of the run."""
        session, scheduler = self.session, self.scheduler
        if session is None or scheduler is None:
            return
        session.save(pl_module, scheduler.optimizer, scheduler, reason="final", trackers=session.trackers())
        guard = session.guard
        if guard is not None and guard.stopped:
            session.store.log_event(
                session.updates, "run_failed", error="NonFiniteStop", message=guard.stop_message
            )
        session.finish("run_finished", updates=session.updates, seconds=0.0)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Record ``run_failed`` and close the records."""
        if self.session is not None:
            self.session.store.log_event(
                self.session.updates, "run_failed", error=type(exception).__name__, message=str(exception)
            )
            self.session.close()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the hooks and close what this fit opened."""
        if stage != "fit":
            return
        if self.counter is not None:
            self.counter.close()
        if self.owned and self.scheduler is not None:
            self.scheduler.close()
        if self.session is not None:
            self.session.close()
        self.counter = None
        self.session = None
        self._restored = None


def check_scheduler_config(configs: Sequence[Any], automatic_optimization: bool = True) -> Scheduler:
    """The cosanneal ``Scheduler`` among Lightning's scheduler configs, checked to be stepped exactly.

    Lightning steps a scheduler after every optimizer step when ``interval="step"`` and
    ``frequency=1``, only at epoch ends with ``interval="epoch"``, every ``frequency``-th
    *micro-batch* otherwise, and never in manual optimization (your ``training_step`` does).

    Raises:
        IntegrationError: no cosanneal ``Scheduler``, another scheduler beside it, ``interval="epoch"``,
            ``frequency`` other than 1, or ``count`` other than ``"manual"`` (Lightning calls
            ``step()``); each message names the fix.
    """
    ours = [c for c in configs if isinstance(c.scheduler, Scheduler)]
    if not ours:
        raise IntegrationError(
            "no cosanneal schedule: pass CosannealCallback(schedule=...) (it builds and steps the "
            "Scheduler), or return a cosanneal.torch.Scheduler from configure_optimizers"
        )
    if len(configs) > 1:
        names = ", ".join(type(c.scheduler).__name__ for c in configs)
        raise IntegrationError(
            f"configure_optimizers returns {len(configs)} LR schedulers ({names}); return one cosanneal "
            "Scheduler per optimizer, so one closed form sets each LR"
        )
    config = ours[0]
    scheduler: Scheduler = config.scheduler
    fix = "return {'scheduler': scheduler, 'interval': 'step'} (frequency 1), or pass the schedule to CosannealCallback(schedule=...)"
    if config.interval != "step":
        raise IntegrationError(
            f"the cosanneal Scheduler has interval={config.interval!r}: Lightning would step a per-update "
            f"schedule once per epoch; {fix}"
        )
    if config.frequency != 1:
        raise IntegrationError(
            f"the cosanneal Scheduler has frequency={config.frequency}: Lightning counts it in micro-batches, "
            f"not updates, so it would advance at most every {config.frequency}th batch; {fix}"
        )
    if scheduler.count != "manual" and automatic_optimization:
        raise IntegrationError(
            f"the cosanneal Scheduler has count={scheduler.count!r} and Lightning calls its step() after every "
            "optimizer step; build it with count='manual' (a step() after a skipped update is ignored), or "
            "pass the schedule to CosannealCallback(schedule=...)"
        )
    return scheduler


def callbacks(
    schedule: ScheduleSpec | None = None,
    run_dir: str | os.PathLike[str] = "runs/lightning",
    *,
    every_steps: int = 100,
    **options: Any,
) -> list[Callback]:
    """The callback set: :class:`CosannealCallback` and the ``ModelCheckpoint`` writing ``last.ckpt``.

    ``last.ckpt`` goes to ``run_dir/lightning`` every ``every_steps`` optimizer steps (Lightning's
    ``global_step``) and is what ``trainer.fit(..., ckpt_path="last")`` resumes from. ``options``
    are :class:`CosannealCallback`'s.

    Example:
        >>> from cosanneal import Cosine
        >>> cbs = callbacks(Cosine(0.1, cycle_steps=50), "runs/demo", every_steps=10)
        >>> [type(c).__name__ for c in cbs]
        ['CosannealCallback', 'ModelCheckpoint']
    """
    return [
        CosannealCallback(schedule, run_dir, **options),
        ModelCheckpoint(
            dirpath=Path(run_dir) / "lightning",
            filename="step-{step}",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_steps,
        ),
    ]
