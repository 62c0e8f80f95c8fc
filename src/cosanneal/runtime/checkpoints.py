"""Atomic, verified, restart-aware checkpoints (``cosanneal.runtime.Checkpoints``): the manager.

Layout of ``directory`` (see ``docs/checkpoints.md``)::

    step-000001200/            one checkpoint per saved step
        model.safetensors      the model's tensors (tied weights stored once)
        optimizer.pt           optimizer.state_dict(), read back with torch.load(weights_only=True)
        state.json             step, epoch, batch index, scheduler state, RNG states, trackers, metrics
        MANIFEST.json          SHA-256 and size of every file above; written last
    best/step-000000900/       the best checkpoint by the chosen metric (hard links or a copy)

:class:`Checkpoints` is the manager: it decides when to save and which checkpoint to resume from,
emits the events and hands out the public values; its helpers are
:class:`~cosanneal.runtime.ckpt_retention.Retention` (rotation, ``best/``, cycle-end snapshots) and
:class:`~cosanneal.runtime.ckpt_writer.SaveWriter` (one save's ordered write, now or in the background).
One checkpoint's files (staging a snapshot, reading, verifying, decoding and applying it) are the
format's (:mod:`cosanneal.runtime.ckpt_format`); making a checkpoint visible and deleting it
atomically, on a local filesystem or an object store, is the commit strategy's
(:mod:`cosanneal.runtime.ckpt_commit`). Loading never unpickles anything but plain data and tensors.
"""

from __future__ import annotations

import builtins
import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from cosanneal.runtime import ckpt_dist, ckpt_format, ckpt_sharded, signing
from cosanneal.runtime.ckpt_commit import CommitStrategy, open_strategy
from cosanneal.runtime.ckpt_format import CorruptError, step_name, step_of
from cosanneal.runtime.ckpt_policy import ends_cycle, is_cycle_end
from cosanneal.runtime.ckpt_retention import Retention, check_retention
from cosanneal.runtime.ckpt_types import (
    CheckpointError,
    CheckpointInfo,
    LoadedCheckpoint,
    SkippedCheckpoint,
)
from cosanneal.runtime.ckpt_writer import SaveWriter
from cosanneal.runtime.manifest import signed_payload

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Checkpoints",
    "LoadedCheckpoint",
    "SkippedCheckpoint",
    "ends_cycle",
    "is_cycle_end",
]


EventHook = Callable[..., None]
CommitHook = Callable[["CheckpointInfo"], None]
#: Why a checkpoint was saved (the ``reason`` of its ``checkpoint_saved`` event).
SAVE_REASONS = ("periodic", "restart", "eval", "epoch", "final", "preempted", "manual")


class Checkpoints:
    """Write, rotate and load checkpoints of a training run, safely.

    Each :meth:`save` writes ``step-<step>/`` atomically (temporary sibling, fsync, rename, fsync of
    the parent) with a SHA-256 manifest written last. :meth:`load_latest` restores the newest
    checkpoint whose manifest verifies, warning about and skipping any that do not.

    Rotation after each save keeps the newest ``keep_last`` checkpoints, every cycle-end checkpoint
    when ``keep_cycle_ends`` is set, and deletes checkpoints with a step *larger* than the one just
    saved (an abandoned future, e.g. after a rollback). The best checkpoint by ``best=(metric, mode)``
    lives apart in ``best/``; it changes only when a checkpoint's metric is strictly better, so the
    spike after a warm restart never replaces it, and rotation never touches it.

    Args:
        directory: a local directory or an fsspec URL (``s3://bucket/run/checkpoints``).
        keep_last: how many of the newest checkpoints rotation keeps (>= 1).
        best: ``(metric name, "min" | "max")`` for ``best/``, or ``None`` for no best copy.
        keep_cycle_ends: also keep every checkpoint saved with ``cycle_end=True`` (snapshot ensembles).
        every_steps: :meth:`should_save` is true after every ``every_steps`` updates (a multiple of it).
        every_seconds: :meth:`should_save` is true when this long has passed since the last save
            (rank 0's clock decides for every rank under DDP).
        at_restarts: :meth:`should_save` is true after the last update of every cycle of the schedule.
        async_write: copy the state to CPU memory in :meth:`save` and write it on a background
            thread; the next save (and every load or accessor) waits for it first.
        sharded: write the sharded format (:mod:`cosanneal.runtime.ckpt_sharded`): every rank saves
            its own shards through ``torch.distributed.checkpoint``, for FSDP2 and large DDP jobs; a
            local or shared POSIX directory only. Loading reads either format, whatever this says,
            and reshards a sharded checkpoint to the loading job's world size.
        storage_options: passed to fsspec for URLs (credentials, ``endpoint_url``, ...).
        on_event: ``on_event(kind, **payload)`` for ``checkpoint_saved``, ``checkpoint_failed``,
            ``checkpoint_deleted``, ``checkpoint_best``, ``checkpoint_skipped_corrupt`` and
            ``checkpoint_loaded``. ``checkpoint_saved`` is emitted once every file of the checkpoint
            is written, just *before* its commit marker (the rename, or the manifest on object
            stores); a commit that then fails emits ``checkpoint_failed``.
        before_commit: ``before_commit(info)``, called right after ``checkpoint_saved`` and before
            the commit marker, on the thread that writes. The trainer makes its run store durable
            here, so the store holds every row up to a checkpoint before the checkpoint exists.

    Raises:
        CheckpointError: an argument is out of range.

    Example:
        >>> import tempfile, torch
        >>> ckpts = Checkpoints(tempfile.mkdtemp(), keep_last=2)
        >>> model = torch.nn.Linear(2, 1)
        >>> for updates in range(1, 5):
        ...     _ = ckpts.save(updates, model=model, metrics={"val_loss": 1.0 / updates})
        >>> [c.step for c in ckpts.list()], ckpts.best.step
        ([3, 4], 4)
        >>> ckpts.load_latest(model).step
        4
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        keep_last: int = 3,
        best: tuple[str, str] | list[str] | None = ("val_loss", "min"),
        keep_cycle_ends: bool = False,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        at_restarts: bool = True,
        async_write: bool = False,
        sharded: bool = False,
        *,
        storage_options: dict[str, Any] | None = None,
        on_event: EventHook | None = None,
        before_commit: CommitHook | None = None,
    ) -> None:
        keep_last, best_metric = check_retention(keep_last, best)
        if every_steps is not None and (
            isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1
        ):
            raise CheckpointError(f"every_steps must be None or an int >= 1, got {every_steps!r}")
        if every_seconds is not None and (
            isinstance(every_seconds, bool)
            or not isinstance(every_seconds, (int, float))
            or not math.isfinite(every_seconds)
            or every_seconds <= 0
        ):
            raise CheckpointError(f"every_seconds must be None or a number > 0, got {every_seconds!r}")
        signing.from_env()  # an unusable checkpoint key is a configuration error now, not at the first save
        self._store: CommitStrategy = open_strategy(directory, storage_options)
        self._url = os.fspath(directory)
        self.every_steps = every_steps
        self.every_seconds = None if every_seconds is None else float(every_seconds)
        self.at_restarts = at_restarts
        self.async_write = async_write
        self.sharded = bool(sharded)
        if self.sharded:
            ckpt_sharded.check_store(self._store, self._url)
        self._on_event = on_event
        self._last_save = time.monotonic()
        emit = functools.partial(self._emit, None)
        self._retention = Retention(self._store, keep_last, best_metric, keep_cycle_ends, emit)
        self._writer = SaveWriter(
            self._store,
            self._retention,
            url=self._url,
            async_write=async_write,
            emit=emit,
            before_commit=before_commit,
        )
        self._sharded = ckpt_sharded.ShardedWriter(
            self._store,
            self._retention,
            url=self._url,
            async_write=async_write,
            emit=emit,
            before_commit=before_commit,
            clean=self._writer.clean_leftovers,
            signed=signed_payload,
        )

    @property
    def keep_last(self) -> int:
        """How many of the newest checkpoints rotation keeps."""
        return self._retention.keep_last

    @keep_last.setter
    def keep_last(self, value: int) -> None:
        self._retention.keep_last = value

    @property
    def best_metric(self) -> tuple[str, str] | None:
        """``(metric, "min" | "max")`` that ``best/`` is judged on, or ``None``."""
        return self._retention.best_metric

    @best_metric.setter
    def best_metric(self, value: tuple[str, str] | None) -> None:
        self._retention.best_metric = value

    @property
    def keep_cycle_ends(self) -> bool:
        """Whether rotation keeps every cycle-end checkpoint."""
        return self._retention.keep_cycle_ends

    @keep_cycle_ends.setter
    def keep_cycle_ends(self, value: bool) -> None:
        self._retention.keep_cycle_ends = value

    # ---- deciding -----------------------------------------------------------------------------
    def should_save(self, updates: int, schedule: Any = None) -> bool:
        """Whether to checkpoint now that ``updates`` optimizer updates are done.

        True when ``updates`` is a positive multiple of ``every_steps``, when ``every_seconds`` have
        passed since the last save, or (with ``at_restarts`` and a ``schedule``) when the last update
        ended a cycle (:func:`~cosanneal.runtime.ckpt_policy.ends_cycle`): the low-LR snapshot before
        a restart. Save it as ``save(updates, ...)``: a checkpoint is named by the updates done.

        Args:
            updates: the number of updates done so far.
            schedule: a cosanneal ``Schedule`` or ``Scheduler`` (optional).

        Example:
            >>> from cosanneal import Cosine
            >>> c = Checkpoints("/tmp/unused-ckpts", every_steps=4)
            >>> s = Cosine(peak_lr=1.0, cycle_steps=6, max_cycles=2)
            >>> [n for n in range(13) if c.should_save(n, s)]
            [4, 6, 8, 12]
        """
        due = self.every_steps is not None and updates > 0 and updates % self.every_steps == 0
        if self.at_restarts and schedule is not None and not due:
            due = ends_cycle(updates, schedule)
        if self.every_seconds is not None:
            due = due or time.monotonic() - self._last_save >= self.every_seconds
            due = ckpt_dist.agree(due)
        return due

    @staticmethod
    def ends_cycle(updates: int, schedule: Any) -> bool:
        """Whether the ``updates``-th update ended a cycle (see :func:`ckpt_policy.ends_cycle`)."""
        return ends_cycle(updates, schedule)

    # ---- saving -------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        epoch: int = 0,
        batch_index: int = 0,
        metrics: Mapping[str, Any] | None = None,
        trackers: Mapping[str, Any] | None = None,
        cycle_end: bool = False,
        extra: Mapping[str, Any] | None = None,
        reason: str = "manual",
    ) -> CheckpointInfo:
        """Checkpoint the state after ``step`` updates; return its :class:`CheckpointInfo`.

        Under DDP every rank must call it: all ranks meet at a barrier, then rank 0 alone writes
        (``sharded``: every rank writes its shards, rank 0 commits).
        With ``async_write`` the state is copied to CPU here and written in the background; the
        returned info describes the checkpoint that will exist once :meth:`wait` returns.

        Args:
            step: the number of updates done (>= 0); the directory is ``step-<step>``, and a resumed
                job trains update index ``step`` next.
            model: the model (a DDP wrapper is unwrapped).
            optimizer: its optimizer, saved with ``torch.save``.
            scheduler: an LR scheduler; its ``state_dict()`` must be JSON data (cosanneal's is).
            epoch: the current epoch, for resuming the data position.
            batch_index: the index in the epoch of the next batch to train on.
            metrics: numbers such as ``{"val_loss": 0.31}``; ``best`` is judged on them.
            trackers: JSON-able states of the guard, early stopping and other helpers.
            cycle_end: whether update ``step`` ended a schedule cycle (kept with ``keep_cycle_ends``).
            extra: any other JSON-able data.
            reason: why it is saved, one of :data:`SAVE_REASONS` (recorded in ``checkpoint_saved``).

        Raises:
            CheckpointError: a write failed (disk full, permissions; earlier checkpoints are intact and
                the partial write is removed), or a value cannot be stored.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"step must be an int >= 0, got {step!r}")
        if reason not in SAVE_REASONS:
            raise CheckpointError(f"reason must be one of {', '.join(SAVE_REASONS)}; got {reason!r}")
        self._writer.wait()
        ckpt_dist.barrier()
        self._last_save = time.monotonic()
        info = CheckpointInfo(
            step=step,
            path=self._store.display(self._store.join(step_name(step))),
            epoch=int(epoch),
            batch_index=int(batch_index),
            metrics=ckpt_format.metric_values(metrics),
            cycle_end=bool(cycle_end),
            wall_time=time.time(),
        )
        if self.sharded:
            self._sharded.save(info, model, optimizer, scheduler, trackers, extra, reason)
            return info
        if ckpt_dist.rank() != 0:
            return info
        self._writer.submit(self._writer.snapshot(info, model, optimizer, scheduler, trackers, extra), reason)
        return info

    def clean_stale(self) -> None:
        """Remove what killed writers left: ``.tmp-`` and ``.trash-`` dirs, and (object stores) uncommitted ones.

        Only the job that writes this directory may call it (a reader never deletes: another
        process's write in progress looks the same). The first :meth:`save` does it anyway; the
        trainer calls it at start, once its resume is settled.
        """
        self._writer.clean_leftovers(again=True)

    # ---- listing ------------------------------------------------------------------------------
    def list(self) -> builtins.list[CheckpointInfo]:
        """The committed checkpoints (manifest present; not hash-verified), oldest first."""
        self.wait()
        return [info for _, info in self._retention.infos(self._store.root)]

    @property
    def latest(self) -> CheckpointInfo | None:
        """The newest committed checkpoint, or ``None``."""
        infos = self.list()
        return infos[-1] if infos else None

    @property
    def best(self) -> CheckpointInfo | None:
        """The checkpoint in ``best/`` (by ``best=(metric, mode)``), or ``None``."""
        self.wait()
        entries = self._retention.best_entries()
        return entries[0][1] if entries else None

    def cycle_end_snapshots(self) -> builtins.list[CheckpointInfo]:
        """The committed checkpoints saved with ``cycle_end=True``, oldest first (for ensembles)."""
        return [info for info in self.list() if info.cycle_end]

    # ---- loading ------------------------------------------------------------------------------
    def load_latest(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        map_location: Any = "cpu",
        restore_rng: bool = True,
        on_event: EventHook | None = None,
    ) -> LoadedCheckpoint | None:
        """Restore the newest checkpoint that verifies; ``None`` when the directory holds none.

        Candidates are the ``step-*`` directories and, as fallbacks, the ``best/`` entries older than
        the newest of them, newest first. A candidate whose manifest is missing or does not match
        (truncated, bit-flipped, tampered), or whose files do not decode, is skipped with a warning
        and a ``checkpoint_skipped_corrupt`` event; the previous one is tried.

        Args:
            model: restored with ``load_state_dict(strict=True)``.
            optimizer: restored from ``optimizer.pt`` (read with ``weights_only=True``) when given.
            scheduler: restored with ``load_state_dict`` when given.
            map_location: where tensors are loaded before being copied into the model/optimizer.
            restore_rng: also restore the Python, NumPy, torch (and CUDA) RNG states.
            on_event: overrides the constructor's hook for this call.

        Raises:
            CheckpointError: checkpoints exist but none verifies, a checkpoint does not fit the given
                model/optimizer, or the storage cannot be read.
        """
        self.wait()
        ckpt_dist.barrier()
        skipped: builtins.list[SkippedCheckpoint] = []
        candidates = self._retention.resume_candidates()
        if self.sharded:  # every rank walks rank 0's list: the same checkpoint, or the same skip
            candidates = self._sharded.group.broadcast(candidates)
        for step, path in candidates:
            try:
                if ckpt_sharded.is_sharded(self._store, path):
                    return self._load_sharded(
                        path, step, model, optimizer, scheduler, restore_rng, skipped, on_event
                    )
                decoded = ckpt_format.decode(self._store, path, step, map_location)
            except CorruptError as exc:
                self._skip(path, step, str(exc), skipped, on_event)
                continue
            return self._apply(
                decoded, step, path, model, optimizer, scheduler, restore_rng, skipped, on_event
            )
        if skipped:
            listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped)
            raise CheckpointError(
                f"no checkpoint in {self._url} verifies ({listed}); move the directory away to start fresh"
            )
        return None

    def load(
        self,
        path: str | os.PathLike[str] | CheckpointInfo,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        map_location: Any = "cpu",
        restore_rng: bool = True,
        on_event: EventHook | None = None,
    ) -> LoadedCheckpoint:
        """Restore one specific checkpoint (a :class:`CheckpointInfo`, its path, or a name in the directory).

        Raises:
            CheckpointError: it does not verify or decode (no fallback here), or does not fit.
        """
        self.wait()
        where = self._store.resolve(path.path if isinstance(path, CheckpointInfo) else os.fspath(path))
        found = step_of(where.rstrip("/").rsplit("/", 1)[-1])
        if found is None:
            raise CheckpointError(f"path must name a step-<N> checkpoint directory, got {path!r}")
        step = found
        if self._store.absent(where):
            names = ", ".join(
                step_name(s) for s in sorted(self._store.checkpoint_dirs(self._store.root, step_of))
            )
            raise CheckpointError(
                f"checkpoint {path!r} does not exist (looked for {where}); "
                f"checkpoints in {self._url}: {names or 'none'}"
            )
        try:
            if ckpt_sharded.is_sharded(self._store, where):
                return self._load_sharded(where, step, model, optimizer, scheduler, restore_rng, [], on_event)
            decoded = ckpt_format.decode(self._store, where, step, map_location)
        except CorruptError as exc:
            self._emit(
                on_event,
                "checkpoint_skipped_corrupt",
                step=step,
                path=self._store.display(where),
                reason=str(exc),
            )
            raise CheckpointError(f"checkpoint {self._store.display(where)} cannot be loaded: {exc}") from exc
        return self._apply(decoded, step, where, model, optimizer, scheduler, restore_rng, [], on_event)

    def _skip(
        self,
        path: str,
        step: int,
        reason: str,
        skipped: builtins.list[SkippedCheckpoint],
        on_event: EventHook | None,
    ) -> None:
        shown = self._store.display(path)
        skipped.append(SkippedCheckpoint(shown, reason))
        warnings.warn(f"skipping checkpoint {shown}: {reason}", RuntimeWarning, stacklevel=3)
        self._emit(on_event, "checkpoint_skipped_corrupt", step=step, path=shown, reason=reason)

    def _apply(
        self,
        decoded: ckpt_format.Decoded,
        step: int,
        path: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        restore_rng: bool,
        skipped: builtins.list[SkippedCheckpoint],
        on_event: EventHook | None,
    ) -> LoadedCheckpoint:
        shown = self._store.display(path)
        loaded = ckpt_format.apply(
            decoded, step, shown, model, optimizer, scheduler, restore_rng=restore_rng, skipped=skipped
        )
        self._emit(
            on_event, "checkpoint_loaded", step=step, path=shown, skipped=len(skipped), **signed_payload()
        )
        return loaded

    def _load_sharded(
        self,
        path: str,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        restore_rng: bool,
        skipped: builtins.list[SkippedCheckpoint],
        on_event: EventHook | None,
    ) -> LoadedCheckpoint:
        shown = self._store.display(path)
        loaded = ckpt_sharded.load(
            self._store,
            path,
            step,
            shown,
            model,
            optimizer,
            scheduler,
            group=self._sharded.group,
            restore_rng=restore_rng,
            skipped=skipped,
        )
        self._emit(
            on_event,
            "checkpoint_loaded",
            step=step,
            path=shown,
            skipped=len(skipped),
            sharded=loaded.world_size,
            world_size=self._sharded.group.size,
            **signed_payload(),
        )
        return loaded

    # ---- plumbing -----------------------------------------------------------------------------
    def _emit(self, override: EventHook | None, kind: str, **payload: Any) -> None:
        hook = override if override is not None else self._on_event
        if hook is not None:
            hook(kind, **payload)

    def wait(self) -> None:
        """Block until a background write is done; re-raise its error (as :class:`CheckpointError`)."""
        self._writer.wait()
        self._sharded.wait()

    def close(self) -> None:
        """Finish any background write (re-raising its error)."""
        self.wait()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpoints({self._url!r}, keep_last={self.keep_last}, best={self.best_metric!r}, "
            f"keep_cycle_ends={self.keep_cycle_ends}, async_write={self.async_write}, sharded={self.sharded})"
        )
