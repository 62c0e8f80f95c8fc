"""Hugging Face Trainer: a cosanneal schedule in one line, and a ``TrainerCallback`` with the runtime's guarantees.

* :func:`cosanneal_trainer_schedule` returns the ``(optimizer, scheduler)`` pair for
  ``Trainer(optimizers=...)``; :func:`install_schedule` makes a Trainer that builds its own optimizer
  (``optim``, ``learning_rate``, ``lr_scheduler_type`` users) build a cosanneal
  :class:`~cosanneal.torch.Scheduler` in ``create_scheduler`` instead, with durations such as
  ``"0.05dur"`` bound to the Trainer's number of training steps.
* :class:`CosannealCallback` records every update that really ran (LR used and expected, cycle,
  phase; the Trainer's logged loss) into ``run_dir/run.db`` (TensorBoard/MLflow/Prometheus sinks as
  configured), keeps the best model and cycle-end snapshots with cosanneal's verified
  :class:`~cosanneal.runtime.checkpoints.Checkpoints`, stops early at cycle ends, and seals each of
  the Trainer's ``checkpoint-N`` folders with a SHA-256 manifest, so ``resume_from_checkpoint=True``
  never resumes from a folder a kill left half written.

The Trainer steps the scheduler once per optimizer update (after ``gradient_accumulation_steps``
micro-batches) and not when accelerate's ``GradScaler`` skipped it, and saves and reloads its state
in ``scheduler.pt``, so the schedule's count of real updates survives ``resume_from_checkpoint``.
The Trainer's ``global_step`` counts every attempt, skipped ones included.

The logged ``learning_rate`` (transformers 5.x): the Trainer reads ``get_last_lr()`` after
``optimizer.step()`` and before ``scheduler.step()``, so the ``learning_rate`` logged at
``global_step = G`` is the LR the G-th optimizer step used; with no skipped update that is
``schedule(G - 1)``, update index ``G - 1`` (tested in ``tests/integrations/test_hf.py``).
"""

from __future__ import annotations

import json
import os
import types
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from cosanneal.integrations._common import (
    IntegrationError,
    RunSession,
    ScheduleSpec,
    SessionOptions,
    SinkSpec,
    UpdateCounter,
    as_schedule,
    refuse_rollback,
    val_metrics,
)
from cosanneal.io import atomic_write_bytes, atomic_write_json, fsync_dir
from cosanneal.runtime.ckpt_policy import is_better
from cosanneal.runtime.guard import NonFiniteGuard
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, seal, verify
from cosanneal.runtime.stopping import RestartAwareEarlyStopping
from cosanneal.runtime.storage import LocalStorage, sha256_stream
from cosanneal.schedules.base import Schedule
from cosanneal.torch import Scheduler

__all__ = [
    "CosannealCallback",
    "cosanneal_trainer_schedule",
    "install_schedule",
    "seal_checkpoint",
    "verify_checkpoints",
]

STATE_FILE = "cosanneal.json"
_PREFIX = "checkpoint-"
_TIMINGS = ("_runtime", "_samples_per_second", "_steps_per_second")


def cosanneal_trainer_schedule(
    schedule: ScheduleSpec,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
    momentum: tuple[float, float] | None = None,
) -> tuple[torch.optim.Optimizer, Scheduler]:
    """``(optimizer, Scheduler)`` for ``Trainer(optimizers=...)``: the optimizer driven by ``schedule``.

    Group ``g`` gets ``schedule(t) * lr_g / schedule.peak`` (a group created with ``lr`` equal to the
    peak follows the schedule exactly). Durations in epochs or fractions need ``steps_per_epoch`` or
    ``total_steps`` (optimizer updates).

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=3e-4)
        >>> pair = cosanneal_trainer_schedule({"kind": "cosine", "peak_lr": 3e-4, "cycle_steps": "0.5dur"},
        ...                                   opt, total_steps=100)
        >>> pair[1].schedule.cycle_steps, pair[0] is opt
        (50, True)
    """
    bound = as_schedule(schedule, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return optimizer, Scheduler(optimizer, bound, momentum=momentum)


def install_schedule(
    trainer: Trainer, schedule: ScheduleSpec, *, momentum: tuple[float, float] | None = None
) -> None:
    """Make ``trainer`` build a cosanneal ``Scheduler`` where it would build ``lr_scheduler_type``'s.

    The Trainer still builds its optimizer (``optim``, ``weight_decay``, ...); its
    ``create_scheduler`` then drives it with ``schedule``, whose durations are bound to the
    Trainer's ``num_training_steps``. The LRs are the schedule's own: a group keeps its ratio to
    ``args.learning_rate`` (1 for the Trainer's groups), so ``args.learning_rate``,
    ``lr_scheduler_type`` and the warmup arguments are not used.

    Example:
        >>> install_schedule(trainer, {"kind": "cosine", "peak_lr": 1e-3, "warmup_steps": "0.05dur",
        ...                            "cycle_steps": "0.95dur"})  # doctest: +SKIP
    """
    spec = schedule

    def create_scheduler(
        self: Trainer, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Scheduler:
        if self.lr_scheduler is None:
            given = optimizer if optimizer is not None else self.optimizer
            if given is None:
                raise IntegrationError("install_schedule: the Trainer has no optimizer yet")
            opt = _inner(given)  # the Trainer may pass accelerate's wrapper
            bound = as_schedule(spec, total_steps=num_training_steps)
            base = float(self.args.learning_rate) or 1.0
            for group in opt.param_groups:
                ratio = float(group.get("initial_lr", group["lr"])) / base  # 1.0 for the Trainer's groups
                group["initial_lr"] = bound.peak * ratio  # so their LR is the schedule's, bit for bit
            self.lr_scheduler = Scheduler(opt, bound, momentum=momentum)  # type: ignore[assignment]
        if not isinstance(self.lr_scheduler, Scheduler):
            raise IntegrationError(
                f"install_schedule: the Trainer already has a {type(self.lr_scheduler).__name__}; do not pass a "
                "scheduler in optimizers= as well"
            )
        return self.lr_scheduler

    trainer.create_scheduler = types.MethodType(create_scheduler, trainer)  # type: ignore[method-assign]


# ---- sealing the Trainer's checkpoint folders ----------------------------------------------
def _step_of(name: str) -> int | None:
    rest = name.removeprefix(_PREFIX)
    return int(rest) if name.startswith(_PREFIX) and rest.isdigit() else None


def seal_checkpoint(folder: str | os.PathLike[str], step: int) -> None:
    """Fsync every file of a Trainer ``checkpoint-N`` folder and write its ``MANIFEST.json`` last.

    The manifest (SHA-256 and size of each file, cosanneal's checkpoint manifest) is the commit
    marker :func:`verify_checkpoints` checks.
    """
    root = Path(folder)
    digests: dict[str, tuple[str, int]] = {}
    for path in sorted(p for p in root.iterdir() if p.is_file() and p.name != MANIFEST_NAME):
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
            handle.seek(0)
            digests[path.name] = sha256_stream(handle)
    fsync_dir(root)
    atomic_write_bytes(root / MANIFEST_NAME, seal(build_manifest(step, digests)))


def verify_checkpoints(output_dir: str | os.PathLike[str]) -> list[str]:
    """Move aside every ``checkpoint-N`` folder in ``output_dir`` that does not verify; return their names.

    A folder without a ``MANIFEST.json`` (a save a kill interrupted: the manifest is written last)
    or whose files do not match it is renamed to a hidden ``.incomplete-checkpoint-N-<random>``, which
    the Trainer's ``get_last_checkpoint`` no longer sees, so ``resume_from_checkpoint=True`` resumes
    from the newest complete one. Each is warned about.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()); (out / "checkpoint-4").mkdir()
        >>> (out / "checkpoint-4" / "model.safetensors").write_bytes(b"half")
        4
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     verify_checkpoints(out)
        ['checkpoint-4']
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    storage = LocalStorage(root)
    moved = []
    for path in sorted(root.iterdir()):
        step = _step_of(path.name)
        if step is None or not path.is_dir():
            continue
        reason = verify(storage, str(path), step)
        if reason is None:
            continue
        aside = root / f".incomplete-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, aside)
        moved.append(path.name)
        warnings.warn(
            f"cosanneal: {path} does not verify ({reason}); moved aside to {aside.name}", stacklevel=2
        )
    if moved:
        fsync_dir(root)
    return moved


def _output_dir(args: TrainingArguments) -> str:
    if args.output_dir is None:
        raise IntegrationError("TrainingArguments.output_dir is not set; cosanneal writes the run there")
    return str(args.output_dir)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise IntegrationError(
            f"the Trainer's optimizer is a {type(optimizer).__name__}, not a torch optimizer"
        )
    return inner


class CosannealCallback(TrainerCallback):  # type: ignore[misc]
    """Telemetry, best and cycle-end checkpoints, sealed resume checkpoints, early stopping for the HF Trainer.

    The Trainer's scheduler must be a cosanneal :class:`~cosanneal.torch.Scheduler`
    (:func:`cosanneal_trainer_schedule` or :func:`install_schedule`).

    Args:
        run_dir: the run directory (``run.db``, ``tb/``, ``checkpoints/``); default ``args.output_dir``.
        sinks: extra sinks (MLflow, Prometheus), or a function returning them, called on rank 0 only.
        tensorboard: write TensorBoard events to ``run_dir/tb``.
        every: record per-update rows every ``every``-th update.
        best: ``(metric, "min" | "max")`` of the best checkpoint; the Trainer's ``eval_loss`` is
            recorded as ``val_loss``.
        keep_last: newest artifact checkpoints kept besides ``best/`` and the cycle ends.
        keep_cycle_ends: keep a snapshot of the model at the end of every cycle.
        checkpoints: write the artifact checkpoints at all.
        guard: a :class:`~cosanneal.runtime.guard.NonFiniteGuard` with ``on_exhausted="stop"``, or
            ``None``. Without a GradScaler it checks the gradients before each optimizer step and
            skips a non-finite update (the optimizer step does not run, so neither its state nor the
            schedule moves); with one, the scaler's own skip is the skip.
        early_stopping: a :class:`~cosanneal.runtime.stopping.RestartAwareEarlyStopping` on an
            evaluation metric (``"val_loss"`` for the Trainer's ``eval_loss``).
        seal: write a manifest into each ``checkpoint-N`` the Trainer saves and, when the Trainer is
            built, move aside those in ``output_dir`` that do not verify (see :func:`verify_checkpoints`).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        sinks: SinkSpec = (),
        tensorboard: bool = True,
        every: int = 1,
        best: tuple[str, str] | None = ("val_loss", "min"),
        keep_last: int = 1,
        keep_cycle_ends: bool = True,
        checkpoints: bool = True,
        guard: NonFiniteGuard | None = None,
        early_stopping: RestartAwareEarlyStopping | None = None,
        seal: bool = True,
    ) -> None:
        refuse_rollback(guard, "the Trainer")
        self.run_dir = run_dir
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
        self.guard = guard
        self.seal = seal
        self.session: RunSession | None = None
        self.counter: UpdateCounter | None = None
        self.scheduler: Scheduler | None = None
        self.model: torch.nn.Module | None = None
        self._optimizer: Any = None
        self._last_index = -1

    # ---- start ----------------------------------------------------------------------------
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Move aside the ``checkpoint-N`` folders a kill left incomplete (before the Trainer picks one)."""
        if self.seal and state.is_world_process_zero:
            verify_checkpoints(_output_dir(args))
        _barrier()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Check the scheduler, count real updates from the restored scheduler state, start the records."""
        scheduler = kwargs.get("lr_scheduler")
        if not isinstance(scheduler, Scheduler):
            raise IntegrationError(
                f"the Trainer's scheduler is a {type(scheduler).__name__}, not a cosanneal Scheduler; pass "
                "Trainer(optimizers=cosanneal_trainer_schedule(spec, optimizer)) or call "
                "install_schedule(trainer, spec) before train()"
            )
        if scheduler.count != "manual":
            raise IntegrationError(
                f"the cosanneal Scheduler has count={scheduler.count!r} and the Trainer calls its step() after "
                "every update; build it with count='manual' (cosanneal_trainer_schedule does)"
            )
        self.scheduler = scheduler
        self.model = kwargs.get("model")
        self._optimizer = kwargs.get("optimizer")
        optimizer = _inner(self._optimizer)
        if optimizer is not scheduler.optimizer:
            raise IntegrationError("the cosanneal Scheduler drives another optimizer than the Trainer's")
        updates = scheduler.last_epoch  # restored from scheduler.pt on resume_from_checkpoint
        self.counter = UpdateCounter(optimizer, start=updates)
        schedule: Schedule = (
            scheduler.schedule[0] if isinstance(scheduler.schedule, tuple) else scheduler.schedule
        )
        run_dir = self.run_dir if self.run_dir is not None else _output_dir(args)
        self.session = RunSession(
            run_dir, schedule, is_main=state.is_world_process_zero, expected=scheduler.lrs_at,
            options=self.options, guard=self.guard,
        )  # fmt: skip
        resumed = state.global_step > 0
        folder = Path(_output_dir(args)) / f"{_PREFIX}{state.global_step}"
        if resumed and (folder / STATE_FILE).is_file():
            self.session.load_trackers(json.loads((folder / STATE_FILE).read_text()).get("trackers") or {})
        self.session.start(
            updates, resumed=resumed, checkpoint=str(folder) if resumed else None, epoch=None, batch=None,
            config={"framework": "transformers", "gradient_accumulation_steps": args.gradient_accumulation_steps,
                    "world_size": args.world_size, "max_steps": state.max_steps},
        )  # fmt: skip
        self._last_index = updates - 1

    # ---- per update -----------------------------------------------------------------------
    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """The non-finite guard (no GradScaler): a non-finite update's optimizer step does not run."""
        session, counter = self.session, self.counter
        if session is None or counter is None or session.guard is None or self.model is None:
            return
        if getattr(self._optimizer, "scaler", None) is not None:
            return  # the scaler skips non-finite updates itself
        decision = session.guard.check(None, self.model, step=counter.count)
        if decision.ok:
            return
        inner = _inner(self._optimizer)

        def skipped_step(*_args: Any, **_kwargs: Any) -> None:
            del inner.step  # back to the class's step (with its hooks) for the next update

        inner.step = skipped_step  # type: ignore[method-assign,assignment]
        if decision.stop:
            control.should_training_stop = True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record the update that ran; snapshot cycle ends; make the store durable before a checkpoint."""
        session, counter, scheduler = self.session, self.counter, self.scheduler
        if session is None or counter is None or scheduler is None:
            return
        for index, lrs in counter.take():
            session.record_update(index, lrs)
            self._last_index = index
        if scheduler.last_epoch != counter.count:
            raise IntegrationError(
                f"{counter.count} optimizer updates ran but the cosanneal Scheduler counted {scheduler.last_epoch}; "
                "something else steps this optimizer or scheduler"
            )
        if session.ends_cycle() and session.saved_at != session.updates and self.model is not None:
            session.save(
                self.model, scheduler.optimizer, scheduler, reason="restart", trackers=session.trackers()
            )
        if control.should_save:
            session.flush(durable=True)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """The Trainer's averaged ``loss`` and ``grad_norm``, at the index of the last update they cover."""
        logs = kwargs.get("logs") or {}
        if self.session is None or self._last_index < 0:
            return
        values = {k: logs[k] for k in ("loss", "grad_norm") if isinstance(logs.get(k), (int, float))}
        if values:
            self.session.store.log_scalars(self._last_index, values)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record the evaluation; checkpoint a new best; stop early at cycle ends."""
        session, scheduler = self.session, self.scheduler
        metrics = kwargs.get("metrics") or {}
        if session is None or scheduler is None or self.model is None:
            return
        wanted = {k: v for k, v in val_metrics(metrics).items() if not k.endswith(_TIMINGS)}
        if not wanted:
            return
        values = session.record_eval({k: v for k, v in wanted.items() if isinstance(v, (int, float))})
        if self.options.best is not None and session.ckpts is not None:
            metric, mode = self.options.best
            value = values.get(metric)
            current = session.ckpts.best if state.is_world_process_zero else None
            improves = value is not None and is_better(
                value, None if current is None else current.metrics.get(metric), mode
            )
            decided = [improves]  # rank 0 decides (it writes best/); every rank takes part in the save
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.broadcast_object_list(decided, src=0)
            if decided[0]:
                session.save(self.model, scheduler.optimizer, scheduler, reason="eval", metrics=values,
                             trackers=session.trackers())  # fmt: skip
        reason = session.early_stop(values)
        if reason is not None:
            control.should_training_stop = True
            session.store.log_event(session.updates, "early_stop", reason=reason, by="early_stopping")
        if control.should_save:
            session.flush(durable=True)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Add the cosanneal state and the manifest (written last) to the checkpoint the Trainer just saved."""
        if self.session is None:
            return
        folder = Path(_output_dir(args)) / f"{_PREFIX}{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            atomic_write_json(
                folder / STATE_FILE,
                {"version": 1, "updates": self.session.updates, "trackers": self.session.trackers()},
            )
            if self.seal:
                seal_checkpoint(folder, state.global_step)
        _barrier()

    # ---- end ------------------------------------------------------------------------------
    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Save the final model artifact, record the end of the run, close the records and hooks."""
        session, scheduler = self.session, self.scheduler
        if session is None or scheduler is None:
            return
        if self.model is not None:
            session.save(
                self.model, scheduler.optimizer, scheduler, reason="final", trackers=session.trackers()
            )
        guard = session.guard
        if guard is not None and guard.stopped:
            session.store.log_event(
                session.updates, "run_failed", error="NonFiniteStop", message=guard.stop_message
            )
        session.finish("run_finished", updates=session.updates, seconds=0.0)
        if self.counter is not None:
            self.counter.close()
        self.session = None
        self.counter = None
