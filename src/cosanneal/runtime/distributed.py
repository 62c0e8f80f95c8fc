"""Process-group helpers: the trainer runs alone or under ``torchrun`` (gloo on CPU, nccl on GPU).

Every helper degrades to the single-process answer when ``torch.distributed`` is not initialised.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from cosanneal.runtime.ckpt_dist import collective_device

_joined = False  # set once this process has joined a process group (read by the CLI at exit)


@dataclass(frozen=True)
class World:
    """The place of this process in the job: ``rank`` of ``size`` (``size == 1`` when alone)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        return self.rank == 0


def init_from_env(device: torch.device, timeout_seconds: float | None = None) -> World:
    """Join the process group ``torchrun`` describes in the environment, if there is one.

    Reads ``WORLD_SIZE``/``RANK`` (set by ``torchrun``); with ``WORLD_SIZE`` unset or 1 nothing is
    initialised. The backend is nccl on CUDA and gloo otherwise.

    Args:
        device: the job's device (picks the backend).
        timeout_seconds: the group's timeout (its formation and every collective); ``None``: the
            backend's default.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    global _joined
    _joined = True
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if timeout_seconds is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on at least one (one tiny all-reduce per call).

    The tensor lives on the backend's device (:func:`~cosanneal.runtime.ckpt_dist.collective_device`):
    NCCL rejects CPU tensors.
    """
    if world.size == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (one pickled broadcast; ``value`` itself when alone).

    Only small host-side values go through here (a replan request, a few hundred bytes).
    """
    if world.size == 1:
        return value
    box = [value if world.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Wait for every rank (no-op when alone)."""
    if world.size > 1:
        dist.barrier()


def shutdown(world: World, *, drain: bool = False) -> None:
    """Leave the process group if this process joined one.

    Args:
        world: this process's place in the job.
        drain: first wait at a barrier for every rank, so no collective is still in flight here
            when the group goes (the normal end of a job; not after a failure, when a peer may never
            reach the barrier).
    """
    if world.size > 1 and dist.is_initialized():
        if drain:
            dist.barrier()
        dist.destroy_process_group()


def joined_a_group() -> bool:
    """True once :func:`init_from_env` has joined a ``torchrun`` process group in this process."""
    return _joined


def exit_process(code: int) -> NoReturn:
    """End a process that ran collectives: exit handlers, flushed streams, then ``os._exit(code)``.

    torch 2.13's gloo worker threads free the last collective's work a moment after it completes;
    when that lands after Python's shutdown has begun, the thread cannot take the GIL and the C++
    runtime aborts the process (exit -6, ``terminate called without an active exception``) after the
    job has succeeded. Skipping the interpreter's shutdown, once everything the job wrote is closed
    and the ``atexit`` handlers (logging, the run stores) have run, keeps the exit code the job's.

    Args:
        code: the exit status.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing reaches it
            stream.flush()
    os._exit(code)
