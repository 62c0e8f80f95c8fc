"""The little of ``torch.distributed`` checkpoints need: who writes, barriers, one shared decision.

Everything is a pass-through when torch.distributed is not initialised (a single process).
"""

from __future__ import annotations

from typing import Any


def _initialised() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    return bool(dist.is_available() and dist.is_initialized())


def rank() -> int:
    """The global rank of this process (0 when not distributed).

    Example:
        >>> rank()
        0
    """
    if not _initialised():
        return 0
    import torch.distributed as dist

    return int(dist.get_rank())


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if _initialised():
        import torch.distributed as dist

        dist.barrier()


def collective_device() -> Any:
    """The device a collective's tensors must live on for the default process group's backend.

    NCCL only reduces CUDA tensors (on this rank's current device), XCCL only XPU ones; gloo and MPI
    take CPU tensors. Every small collective of the runtime (:func:`agree`,
    :func:`cosanneal.runtime.distributed.any_rank`) builds its tensor here, so none of them sends a
    CPU tensor to NCCL. ``cpu`` when not distributed.

    Example:
        >>> str(collective_device())
        'cpu'
    """
    import torch

    if not _initialised():
        return torch.device("cpu")
    import torch.distributed as dist

    backend = str(dist.get_backend()).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "xccl":
        return torch.device("xpu", torch.xpu.current_device())
    return torch.device("cpu")


def agree(flag: bool) -> bool:
    """Rank 0's ``flag``, broadcast so every rank takes the same branch (``flag`` when not distributed).

    Example:
        >>> agree(True)
        True
    """
    if not _initialised():
        return flag
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=collective_device())
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
