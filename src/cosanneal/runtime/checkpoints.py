"""Atomic, verified, restart-aware checkpoints (``cosanneal.runtime.Checkpoints``).

Layout of ``directory`` (see ``docs/checkpoints.md``)::

    step-000001200/            one checkpoint per saved step
        model.safetensors      the model's tensors (tied weights stored once)
        optimizer.pt           optimizer.state_dict(), read back with torch.load(weights_only=True)
        state.json             step, epoch, batch index, scheduler state, RNG states, trackers, metrics
        MANIFEST.json          SHA-256 and size of every file above; written last
    best/step-000000900/       the best checkpoint by the chosen metric (hard links or a copy)

A checkpoint is written into a hidden temporary sibling, fsynced, and renamed into place (on object
stores the manifest, written last, is the commit marker). Loading verifies the manifest and falls back
to the previous good checkpoint; it never unpickles anything but plain data and tensors.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import json
import math
import os
import pickle
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch

from cosanneal.errors import CosannealError
from cosanneal.runtime import ckpt_dist
from cosanneal.runtime.ckpt_async import BackgroundWriter
from cosanneal.runtime.ckpt_commit import CommitStrategy, FileSource, open_strategy
from cosanneal.runtime.ckpt_policy import as_schedule, ends_cycle, is_better, is_cycle_end, to_delete
from cosanneal.runtime.ckpt_tensors import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    CpuStaging,
    clone_to_cpu,
    load_model_tensors,
    load_optimizer,
    model_tensors,
    save_optimizer,
    unwrap,
)
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, encode_manifest
from cosanneal.runtime.rng import capture_rng_state, restore_rng_state

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Checkpoints",
    "LoadedCheckpoint",
    "SkippedCheckpoint",
    "ends_cycle",
    "is_cycle_end",
]

FORMAT_VERSION = 1
STATE_FILE = "state.json"
BEST_DIR = "best"
STEP_WIDTH = 9
_STEP_DIR = re.compile(r"^step-(\d+)$")

EventHook = Callable[..., None]
CommitHook = Callable[["CheckpointInfo"], None]
#: Why a checkpoint was saved (the ``reason`` of its ``checkpoint_saved`` event).
SAVE_REASONS = ("periodic", "restart", "eval", "epoch", "final", "preempted", "manual")


class CheckpointError(CosannealError, RuntimeError):
    """A checkpoint cannot be written or loaded (disk full, permissions, nothing verifies, a mismatch)."""


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What is known about one checkpoint without loading it.

    Attributes:
        step: the number of optimizer updates done when it was saved (its directory is
            ``step-<step, 9 digits>``); training resumes with update index ``step``.
        path: its directory (a local path, or a URL for object stores).
        epoch: the epoch given to :meth:`Checkpoints.save`.
        batch_index: the batch index in that epoch given to :meth:`Checkpoints.save`.
        metrics: the metrics given to :meth:`Checkpoints.save`.
        cycle_end: whether it was saved as the last step of a schedule cycle.
        wall_time: when it was saved (seconds since the epoch).
    """

    step: int
    path: str
    epoch: int = 0
    batch_index: int = 0
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    cycle_end: bool = False
    wall_time: float = 0.0


@dataclasses.dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint that loading passed over, and why (truncated, missing manifest, bad digest, ...)."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """The result of a load: where training resumes, and the checkpoints skipped on the way.

    The model, optimizer, scheduler and RNG states are already restored when you get this.
    """

    info: CheckpointInfo
    trackers: Mapping[str, Any]
    extra: Mapping[str, Any]
    scheduler_state: Mapping[str, Any] | None
    schedule_fingerprint: str | list[str] | None
    skipped: list[SkippedCheckpoint]

    @property
    def step(self) -> int:
        """The number of updates done when it was saved; the next update to train has index ``step``."""
        return self.info.step

    @property
    def epoch(self) -> int:
        """The saved epoch."""
        return self.info.epoch

    @property
    def batch_index(self) -> int:
        """The saved batch index within the epoch."""
        return self.info.batch_index

    @property
    def metrics(self) -> Mapping[str, float]:
        """The saved metrics."""
        return self.info.metrics


class _CorruptError(Exception):
    """Internal: this checkpoint does not verify or decode; skip it."""


@dataclasses.dataclass
class _Snapshot:
    step: int
    name: str
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    state_json: bytes
    info: CheckpointInfo
    reason: str = "manual"


def _step_name(step: int) -> str:
    return f"step-{step:0{STEP_WIDTH}d}"


def _step_of(name: str) -> int | None:
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (numpy and 0-d torch scalars become numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where} has key {key!r}; state.json needs string keys")
            out[key] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    raise CheckpointError(
        f"{where} is a {type(value).__name__}, which state.json cannot hold; pass numbers, strings, lists, dicts"
    )


def _metric_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"metrics[{key!r}] must be a number, got {value!r}") from exc
    return out


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ours = version("cosanneal")
    except Exception:  # not installed as a distribution
        ours = "unknown"
    return {"cosanneal": ours, "torch": torch.__version__, "python": sys.version.split()[0]}


def _fingerprint(scheduler: Any) -> str | list[str] | None:
    inner = getattr(scheduler, "schedule", None)
    if isinstance(inner, tuple):
        try:
            return [as_schedule(s).fingerprint() for s in inner]
        except TypeError:
            return None
    try:
        return as_schedule(scheduler).fingerprint()
    except TypeError:
        return None


def _refused_pickle(exc: BaseException) -> str:
    """Why ``optimizer.pt`` was refused, without torch's advice to retry with ``weights_only=False``.

    That advice would run whatever the file holds; an optimizer state never needs it, so a refusal
    means the file was not written by cosanneal (or was tampered with).
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = (
        f"it would call {found.group(1)}" if found else "it holds objects that are not tensors or plain data"
    )
    return (
        f"{OPTIMIZER_FILE} refused by torch.load(weights_only=True): {what}, which no optimizer state "
        "needs; the file was not written by cosanneal or was tampered with, so it is not loaded (never "
        "load it with weights_only=False)"
    )


def _model_source(tensors: dict[str, torch.Tensor]) -> FileSource:
    """The safetensors file of ``tensors``: saved straight to a local path, or serialised for a stream."""
    from safetensors.torch import save, save_file

    meta = {"format": "pt"}

    def to_stream(handle: IO[bytes]) -> None:
        handle.write(save(tensors, meta))

    def to_path(path: str) -> None:
        save_file(tensors, path, meta)

    return FileSource(to_stream, to_path)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return f"{text} (disk full: free space or lower keep_last)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "ermission denied" in text:
        return f"{text} (no write permission on the checkpoint directory)"
    if code == errno.EFBIG or "File too large" in text:
        return f"{text} (file size limit reached)"
    return text or type(exc).__name__


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
        *,
        storage_options: dict[str, Any] | None = None,
        on_event: EventHook | None = None,
        before_commit: CommitHook | None = None,
    ) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise CheckpointError(f"keep_last must be an int >= 1, got {keep_last!r}")
        spec: Any = tuple(best) if isinstance(best, list) else best  # a list comes from TOML/JSON configs
        if spec is not None and (
            not isinstance(spec, tuple)
            or len(spec) != 2
            or not isinstance(spec[0], str)
            or spec[1] not in ("min", "max")
        ):
            raise CheckpointError(f"best must be None or (metric name, 'min' | 'max'), got {best!r}")
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
        self._store: CommitStrategy = open_strategy(directory, storage_options)
        self._url = os.fspath(directory)
        self.keep_last = keep_last
        self.best_metric: tuple[str, str] | None = None if spec is None else (spec[0], spec[1])
        self.keep_cycle_ends = keep_cycle_ends
        self.every_steps = every_steps
        self.every_seconds = None if every_seconds is None else float(every_seconds)
        self.at_restarts = at_restarts
        self.async_write = async_write
        self._on_event = on_event
        self._before_commit = before_commit
        self._writer = BackgroundWriter() if async_write else None
        self._staging = CpuStaging() if async_write else None
        self._last_save = time.monotonic()
        self._cleaned = False
        self._cycle_end_cache: dict[str, bool] = {}

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

        Under DDP every rank must call it: all ranks meet at a barrier, then rank 0 alone writes.
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
        if self._writer is not None:
            self._writer.wait()
        ckpt_dist.barrier()
        self._last_save = time.monotonic()
        name = _step_name(step)
        info = CheckpointInfo(
            step=step,
            path=self._display(self._store.join(name)),
            epoch=int(epoch),
            batch_index=int(batch_index),
            metrics=_metric_values(metrics),
            cycle_end=bool(cycle_end),
            wall_time=time.time(),
        )
        if ckpt_dist.rank() != 0:
            return info
        snapshot = self._snapshot(info, name, model, optimizer, scheduler, trackers, extra, reason)
        if self._writer is not None:
            self._writer.submit(lambda: self._write(snapshot))
        else:
            self._write(snapshot)
        return info

    def _snapshot(
        self,
        info: CheckpointInfo,
        name: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        trackers: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None,
        reason: str,
    ) -> _Snapshot:
        copy = self.async_write
        try:
            tensors, aliases = model_tensors(model, copy=copy, staging=self._staging)
        except TypeError as exc:
            raise CheckpointError(f"model cannot be stored in safetensors: {exc}") from exc
        opt_state = None
        if optimizer is not None:
            opt_state = optimizer.state_dict()
            if copy:
                opt_state = clone_to_cpu(opt_state, self._staging, "optimizer")
        state = {
            "format_version": FORMAT_VERSION,
            "step": info.step,
            "epoch": info.epoch,
            "batch_index": info.batch_index,
            "cycle_end": info.cycle_end,
            "wall_time": info.wall_time,
            "metrics": info.metrics,
            "trackers": _jsonable(dict(trackers or {}), "trackers"),
            "extra": _jsonable(dict(extra or {}), "extra"),
            "scheduler": None
            if scheduler is None
            else _jsonable(scheduler.state_dict(), "scheduler.state_dict()"),
            "schedule_fingerprint": None if scheduler is None else _fingerprint(scheduler),
            "rng": capture_rng_state(),
            "model": {"file": MODEL_FILE, "aliases": aliases},
            "optimizer": None if optimizer is None else {"file": OPTIMIZER_FILE},
            "versions": _versions(),
        }
        state_json = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8")
        return _Snapshot(info.step, name, tensors, opt_state, state_json, info, reason)

    def _write(self, snap: _Snapshot) -> None:
        store = self._store
        final = store.join(snap.name)
        staging: str | None = None
        started = time.monotonic()
        announced = False
        try:
            self._clean_stale()
            staging = store.begin(final)
            digests: dict[str, tuple[str, int]] = {}
            digests[MODEL_FILE] = store.write(f"{staging}/{MODEL_FILE}", _model_source(snap.tensors))
            if snap.optimizer is not None:
                opt = snap.optimizer
                digests[OPTIMIZER_FILE] = store.write(
                    f"{staging}/{OPTIMIZER_FILE}", FileSource(lambda h: save_optimizer(opt, h))
                )
            digests[STATE_FILE] = store.write(f"{staging}/{STATE_FILE}", FileSource.of_bytes(snap.state_json))
            manifest = encode_manifest(build_manifest(snap.step, digests))
            # everything is written: announce it, and let the caller make its records durable, before
            # the commit marker (the manifest on object stores, the rename locally)
            announced = True
            self._emit(
                None,
                "checkpoint_saved",
                step=snap.step,
                path=snap.info.path,
                reason=snap.reason,
                cycle_end=snap.info.cycle_end,
                seconds=round(time.monotonic() - started, 6),
            )
            if self._before_commit is not None:
                self._before_commit(snap.info)
            store.commit(staging, final, manifest)
        except Exception as exc:
            if staging is not None:
                with contextlib.suppress(Exception):
                    store.abort(staging)
            if announced:
                with contextlib.suppress(Exception):
                    self._emit(
                        None, "checkpoint_failed", step=snap.step, path=snap.info.path, reason=str(exc)
                    )
            raise CheckpointError(
                f"could not write checkpoint {snap.name} to {self._url}: {_describe(exc)}; "
                "the partial write was removed and earlier checkpoints are intact"
            ) from exc
        except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then let it through
            if staging is not None:
                with contextlib.suppress(Exception):
                    store.abort(staging)
            raise
        self._cycle_end_cache[snap.name] = snap.info.cycle_end
        try:
            self._update_best(snap.info, final, [*digests, MANIFEST_NAME])
            self._rotate(snap.step)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {snap.name} was saved, but updating best/ or rotation failed: {_describe(exc)}"
            ) from exc

    def clean_stale(self) -> None:
        """Remove what killed writers left: ``.tmp-`` and ``.trash-`` dirs, and (object stores) uncommitted ones.

        Only the job that writes this directory may call it (a reader never deletes: another
        process's write in progress looks the same). The first :meth:`save` does it anyway; the
        trainer calls it at start, once its resume is settled.
        """
        self._cleaned = False
        self._clean_stale()

    def _clean_stale(self) -> None:
        if self._cleaned or ckpt_dist.rank() != 0:
            return
        store = self._store
        for where in (store.root, store.join(BEST_DIR)):
            for path in store.leftovers(where, _step_of):
                store.remove(path)
        self._cleaned = True

    def _update_best(self, info: CheckpointInfo, final: str, names: builtins.list[str]) -> None:
        if self.best_metric is None:
            return
        metric, mode = self.best_metric
        value = info.metrics.get(metric)
        if value is None:
            return
        current = self._best_entries()
        best_value = current[0][1].metrics.get(metric) if current else None
        if not is_better(value, best_value, mode):
            return
        target = self._store.join(BEST_DIR, _step_name(info.step))
        self._store.copy(final, target, names)
        for path, old in current:
            if old.step != info.step:
                self._store.remove(path)
        self._emit(
            None, "checkpoint_best", step=info.step, metric=metric, value=value, path=self._display(target)
        )

    def _rotate(self, saved_step: int) -> None:
        committed = self._committed(self._store.root)
        newer = [s for s in committed if s > saved_step]
        older = {s: p for s, p in committed.items() if s <= saved_step}
        protected = [s for s, p in older.items() if self.keep_cycle_ends and self._is_cycle_end_dir(p)]
        for step in newer:
            self._delete(committed[step], step, f"newer than the step just saved ({saved_step}): abandoned")
        for step in to_delete(list(older), self.keep_last, protected):
            self._delete(older[step], step, f"rotation (keep_last={self.keep_last})")

    def _delete(self, path: str, step: int, reason: str) -> None:
        self._store.remove(path)
        self._cycle_end_cache.pop(path.rsplit("/", 1)[-1], None)
        self._emit(None, "checkpoint_deleted", step=step, path=self._display(path), reason=reason)

    def _is_cycle_end_dir(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        if name not in self._cycle_end_cache:
            state = self._read_state(path)
            self._cycle_end_cache[name] = bool(state and state.get("cycle_end"))
        return self._cycle_end_cache[name]

    # ---- listing ------------------------------------------------------------------------------
    def _steps(self, where: str) -> dict[int, str]:
        return self._store.checkpoint_dirs(where, _step_of)

    def _committed(self, where: str) -> dict[int, str]:
        return self._store.committed(where, _step_of)

    def _read_state(self, path: str) -> dict[str, Any] | None:
        try:
            with self._store.storage.open_read(f"{path}/{STATE_FILE}") as handle:
                data = json.loads(handle.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _info(self, step: int, path: str, state: Mapping[str, Any]) -> CheckpointInfo:
        metrics = state.get("metrics") or {}
        return CheckpointInfo(
            step=step,
            path=self._display(path),
            epoch=int(state.get("epoch", 0)),
            batch_index=int(state.get("batch_index", 0)),
            metrics={str(k): float(v) for k, v in metrics.items()},
            cycle_end=bool(state.get("cycle_end", False)),
            wall_time=float(state.get("wall_time", 0.0)),
        )

    def _infos(self, where: str) -> builtins.list[tuple[str, CheckpointInfo]]:
        out = []
        for step, path in sorted(self._committed(where).items()):
            state = self._read_state(path)
            if state is not None:
                out.append((path, self._info(step, path, state)))
        return out

    def _best_entries(self) -> builtins.list[tuple[str, CheckpointInfo]]:
        """``best/`` entries, the best first (several exist only after a crash mid-update)."""
        if self.best_metric is None:
            return []
        metric, mode = self.best_metric
        entries = [(p, i) for p, i in self._infos(self._store.join(BEST_DIR)) if metric in i.metrics]
        sign = 1.0 if mode == "min" else -1.0
        entries.sort(key=lambda e: (sign * e[1].metrics[metric], -e[1].step))
        return entries

    def list(self) -> builtins.list[CheckpointInfo]:
        """The committed checkpoints (manifest present; not hash-verified), oldest first."""
        self.wait()
        return [info for _, info in self._infos(self._store.root)]

    @property
    def latest(self) -> CheckpointInfo | None:
        """The newest committed checkpoint, or ``None``."""
        infos = self.list()
        return infos[-1] if infos else None

    @property
    def best(self) -> CheckpointInfo | None:
        """The checkpoint in ``best/`` (by ``best=(metric, mode)``), or ``None``."""
        self.wait()
        entries = self._best_entries()
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
        steps = self._steps(self._store.root)
        newest = max(steps, default=None)
        # best/ entries fill gaps below the newest step-* directory; one above it is from an abandoned future
        extra = {
            s: p
            for s, p in self._steps(self._store.join(BEST_DIR)).items()
            if s not in steps and (newest is None or s < newest)
        }
        candidates = sorted({**extra, **steps}.items(), reverse=True)
        skipped: builtins.list[SkippedCheckpoint] = []
        for step, path in candidates:
            try:
                decoded = self._decode(path, step, map_location)
            except _CorruptError as exc:
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
        where = self._resolve(path.path if isinstance(path, CheckpointInfo) else os.fspath(path))
        match = _STEP_DIR.match(where.rstrip("/").rsplit("/", 1)[-1])
        if match is None:
            raise CheckpointError(f"path must name a step-<N> checkpoint directory, got {path!r}")
        step = int(match.group(1))
        if self._store.absent(where):
            names = ", ".join(_step_name(s) for s in sorted(self._steps(self._store.root)))
            raise CheckpointError(
                f"checkpoint {path!r} does not exist (looked for {where}); "
                f"checkpoints in {self._url}: {names or 'none'}"
            )
        try:
            decoded = self._decode(where, step, map_location)
        except _CorruptError as exc:
            self._emit(
                on_event, "checkpoint_skipped_corrupt", step=step, path=self._display(where), reason=str(exc)
            )
            raise CheckpointError(f"checkpoint {self._display(where)} cannot be loaded: {exc}") from exc
        return self._apply(decoded, step, where, model, optimizer, scheduler, restore_rng, [], on_event)

    def _skip(
        self,
        path: str,
        step: int,
        reason: str,
        skipped: builtins.list[SkippedCheckpoint],
        on_event: EventHook | None,
    ) -> None:
        shown = self._display(path)
        skipped.append(SkippedCheckpoint(shown, reason))
        warnings.warn(f"skipping checkpoint {shown}: {reason}", RuntimeWarning, stacklevel=3)
        self._emit(on_event, "checkpoint_skipped_corrupt", step=step, path=shown, reason=reason)

    def _decode(self, path: str, step: int, map_location: Any) -> dict[str, Any]:
        """Verify and decode a checkpoint without touching any live object; raise :class:`_CorruptError`."""
        try:
            source = self._store.read_verified(path, step).source
        except ValueError as exc:
            raise _CorruptError(str(exc)) from exc
        except FileNotFoundError as exc:
            raise _CorruptError(f"file vanished while verifying: {exc}") from exc
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {self._display(path)}: {_describe(exc)}") from exc

        try:
            raw = source(STATE_FILE)
            if isinstance(raw, str):
                with open(raw, "rb") as handle:
                    raw = handle.read()
            state = json.loads(raw.decode("utf-8"))
            if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
                raise _CorruptError(f"state.json is not format {FORMAT_VERSION}")
            if state.get("step") != step:
                raise _CorruptError(f"state.json says step {state.get('step')!r}, directory says {step}")
            aliases = state["model"]["aliases"]
            tensors = load_model_tensors(source(MODEL_FILE), map_location, aliases)
            opt_state = None
            if state.get("optimizer") is not None:
                opt_state = load_optimizer(source(OPTIMIZER_FILE), map_location)
        except _CorruptError:
            raise
        except pickle.UnpicklingError as exc:
            raise _CorruptError(_refused_pickle(exc)) from exc
        except Exception as exc:  # safetensors/json/key errors: the content does not decode
            raise _CorruptError(f"does not decode: {type(exc).__name__}: {exc}") from exc
        return {"state": state, "tensors": tensors, "optimizer": opt_state}

    def _apply(
        self,
        decoded: dict[str, Any],
        step: int,
        path: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        restore_rng: bool,
        skipped: builtins.list[SkippedCheckpoint],
        on_event: EventHook | None,
    ) -> LoadedCheckpoint:
        state = decoded["state"]
        shown = self._display(path)
        try:
            unwrap(model).load_state_dict(decoded["tensors"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {shown} does not fit the model: {exc}") from exc
        if optimizer is not None:
            if decoded["optimizer"] is None:
                raise CheckpointError(
                    f"checkpoint {shown} holds no optimizer state, but an optimizer was given"
                )
            try:
                optimizer.load_state_dict(decoded["optimizer"])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"checkpoint {shown} does not fit the optimizer: {exc}") from exc
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if restore_rng and state.get("rng") is not None:
            restore_rng_state(state["rng"])
        info = self._info(step, path, state)
        self._emit(on_event, "checkpoint_loaded", step=step, path=shown, skipped=len(skipped))
        return LoadedCheckpoint(
            info=info,
            trackers=state.get("trackers") or {},
            extra=state.get("extra") or {},
            scheduler_state=state.get("scheduler"),
            schedule_fingerprint=state.get("schedule_fingerprint"),
            skipped=skipped,
        )

    # ---- plumbing -----------------------------------------------------------------------------
    def _display(self, path: str) -> str:
        return self._store.display(path)

    def _resolve(self, path: str) -> str:
        return self._store.resolve(os.fspath(path))

    def _emit(self, override: EventHook | None, kind: str, **payload: Any) -> None:
        hook = override if override is not None else self._on_event
        if hook is not None:
            hook(kind, **payload)

    def wait(self) -> None:
        """Block until a background write is done; re-raise its error (as :class:`CheckpointError`)."""
        if self._writer is not None:
            self._writer.wait()

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
            f"keep_cycle_ends={self.keep_cycle_ends}, async_write={self.async_write})"
        )
