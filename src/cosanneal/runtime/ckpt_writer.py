"""Carrying out one save for the manager: stage, announce, commit, then keep or rotate; now or in the background.

The order of one write is the guarantee the trainer builds on:

1. what killed writers left is removed (once per writer, rank 0 only);
2. every file is written into the strategy's staging path by the format;
3. ``checkpoint_saved`` is emitted and ``before_commit(info)`` called (the trainer makes its run
   store durable there), on the thread that writes;
4. the commit marker: :meth:`~cosanneal.runtime.ckpt_commit.CommitStrategy.commit` (the rename
   locally, the manifest on object stores);
5. ``best/`` and rotation (:class:`~cosanneal.runtime.ckpt_retention.Retention`).

A failure before the commit removes the partial write (and emits ``checkpoint_failed`` if the save was
already announced); earlier checkpoints are untouched. With ``async_write`` the snapshot is copied into
reused CPU buffers when it is taken and written on one background thread; the next save waits for it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from cosanneal.runtime import ckpt_dist, ckpt_format
from cosanneal.runtime.ckpt_async import BackgroundWriter
from cosanneal.runtime.ckpt_commit import CommitStrategy
from cosanneal.runtime.ckpt_format import Snapshot, step_of
from cosanneal.runtime.ckpt_retention import BEST_DIR, Retention
from cosanneal.runtime.ckpt_tensors import CpuStaging
from cosanneal.runtime.ckpt_types import CheckpointError, CheckpointInfo, describe_os_error
from cosanneal.runtime.manifest import signed_payload


class SaveWriter:
    """Write snapshots into one checkpoint directory, in order, synchronously or on a background thread.

    Args:
        store: the directory's commit strategy.
        retention: what to keep after each commit.
        url: the directory as the user gave it (for error messages).
        async_write: write on a background thread (snapshots are copied to CPU when taken).
        emit: ``emit(kind, **payload)`` for ``checkpoint_saved`` and ``checkpoint_failed``.
        before_commit: ``before_commit(info)`` between ``checkpoint_saved`` and the commit marker.
    """

    def __init__(
        self,
        store: CommitStrategy,
        retention: Retention,
        *,
        url: str,
        async_write: bool,
        emit: Callable[..., None],
        before_commit: Callable[[CheckpointInfo], None] | None,
    ) -> None:
        self._store = store
        self._retention = retention
        self._url = url
        self._emit = emit
        self._before_commit = before_commit
        self._background = BackgroundWriter() if async_write else None
        self._staging = CpuStaging() if async_write else None
        self._cleaned = False

    def snapshot(
        self,
        info: CheckpointInfo,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        trackers: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None,
    ) -> Snapshot:
        """Take the state to write as ``info`` now (copied to CPU buffers when writing in the background)."""
        copy = self._background is not None
        return ckpt_format.take_snapshot(
            info, model, optimizer, scheduler, trackers, extra, copy=copy, staging=self._staging
        )

    def submit(self, snap: Snapshot, reason: str) -> None:
        """Write ``snap`` now, or start writing it in the background (after the previous write)."""
        if self._background is not None:
            self._background.submit(lambda: self._write(snap, reason))
        else:
            self._write(snap, reason)

    def wait(self) -> None:
        """Block until a background write is done; re-raise its error."""
        if self._background is not None:
            self._background.wait()

    def clean_leftovers(self, *, again: bool = False) -> None:
        """Remove what killed writers left (rank 0 only), once; ``again`` forces another pass."""
        if again:
            self._cleaned = False
        if self._cleaned or ckpt_dist.rank() != 0:
            return
        store = self._store
        for where in (store.root, store.join(BEST_DIR)):
            for path in store.leftovers(where, step_of):
                store.remove(path)
        self._cleaned = True

    def _write(self, snap: Snapshot, reason: str) -> None:
        store, step = self._store, snap.info.step
        final = store.join(snap.name)
        staging: str | None = None
        started = time.monotonic()
        announced = False
        try:
            self.clean_leftovers()
            staging = store.begin(final)
            staged = ckpt_format.write_snapshot(store, staging, snap)
            # everything is written: announce it, and let the caller make its records durable, before
            # the commit marker (the manifest on object stores, the rename locally)
            announced = True
            self._emit(
                "checkpoint_saved",
                step=step,
                path=snap.info.path,
                reason=reason,
                cycle_end=snap.info.cycle_end,
                seconds=round(time.monotonic() - started, 6),
                **signed_payload(),
            )
            if self._before_commit is not None:
                self._before_commit(snap.info)
            store.commit(staging, final, staged.manifest)
        except Exception as exc:
            if staging is not None:
                with contextlib.suppress(Exception):
                    store.abort(staging)
            if announced:
                with contextlib.suppress(Exception):
                    self._emit("checkpoint_failed", step=step, path=snap.info.path, reason=str(exc))
            raise CheckpointError(
                f"could not write checkpoint {snap.name} to {self._url}: {describe_os_error(exc)}; "
                "the partial write was removed and earlier checkpoints are intact"
            ) from exc
        except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then let it through
            if staging is not None:
                with contextlib.suppress(Exception):
                    store.abort(staging)
            raise
        try:
            self._retention.saved(snap.info, final, staged.files)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {snap.name} was saved, but updating best/ or rotation failed: {describe_os_error(exc)}"
            ) from exc
