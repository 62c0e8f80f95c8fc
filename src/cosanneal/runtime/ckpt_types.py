"""The values the checkpoint API hands out, shared by the manager and the format.

:class:`CheckpointInfo` (what is known about a checkpoint without loading it), :class:`LoadedCheckpoint`
(the result of a load), :class:`SkippedCheckpoint` (one that loading passed over) and
:class:`CheckpointError`. They are re-exported by :mod:`cosanneal.runtime.checkpoints`, their public home.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Mapping
from typing import Any

from cosanneal.errors import CosannealError

__all__ = ["CheckpointError", "CheckpointInfo", "LoadedCheckpoint", "SkippedCheckpoint", "describe_os_error"]


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
    ``world_size`` is the number of ranks that saved it (1 for the single-file format, which rank 0
    writes alone; a sharded checkpoint's writer count, which may differ from the loading job's).
    """

    info: CheckpointInfo
    trackers: Mapping[str, Any]
    extra: Mapping[str, Any]
    scheduler_state: Mapping[str, Any] | None
    schedule_fingerprint: str | list[str] | None
    skipped: list[SkippedCheckpoint]
    world_size: int = 1

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


def describe_os_error(exc: BaseException) -> str:
    """``exc``'s message with what to do about the common causes (disk full, permissions, size limit).

    Example:
        >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
        '[Errno 28] No space left on device (disk full: free space or lower keep_last)'
    """
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left" in text:
        return f"{text} (disk full: free space or lower keep_last)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "ermission denied" in text:
        return f"{text} (no write permission on the checkpoint directory)"
    if code == errno.EFBIG or "File too large" in text:
        return f"{text} (file size limit reached)"
    return text or type(exc).__name__
