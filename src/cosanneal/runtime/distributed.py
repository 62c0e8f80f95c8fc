"""Process-group helpers: the trainer runs alone or under ``torchrun`` (gloo on CPU, nccl on GPU).

Every helper degrades to the single-process answer when ``torch.distributed`` is not initialised.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cosanneal.runtime.ckpt_dist import collective_device


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


def shutdown(world: World) -> None:
    """Leave the process group if this process joined one."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
