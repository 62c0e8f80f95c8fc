"""The runtime's small collectives put their tensor on the backend's device (NCCL takes no CPU tensor).

``any_rank`` (the trainer's preemption vote) and ``agree`` (the checkpoints' shared decision) share
one helper, :func:`~cosanneal.runtime.ckpt_dist.collective_device`. On CPU they run in a real
2-process gloo group; the NCCL/XCCL choice is checked by the device it picks, and by the CUDA
tests on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo_ranks import run_ranks

from cosanneal.runtime import ckpt_dist, distributed

RANKS = """
from cosanneal.runtime import ckpt_dist, distributed


def rank_main(rank, world_size, args):
    world = distributed.World(rank=rank, size=world_size)
    return {
        "device": str(ckpt_dist.collective_device()),
        "any_one": distributed.any_rank(rank == 1, world),
        "any_none": distributed.any_rank(False, world),
        "agree_rank0_true": ckpt_dist.agree(rank == 0),
        "agree_rank0_false": ckpt_dist.agree(rank == 1),
    }
"""


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_any_rank_and_agree_in_a_real_gloo_group(tmp_path: Path) -> None:
    for result in run_ranks(RANKS, tmp_path):
        assert result == {
            "device": "cpu",
            "any_one": True,  # rank 1 alone said yes: every rank hears it
            "any_none": False,
            "agree_rank0_true": True,  # rank 0's flag wins on every rank
            "agree_rank0_false": False,
        }


def test_alone_the_collectives_are_the_flag_itself() -> None:
    assert str(ckpt_dist.collective_device()) == "cpu"
    assert distributed.any_rank(True, distributed.World()) is True
    assert ckpt_dist.agree(False) is False


@pytest.mark.parametrize(
    ("backend", "want"), [("nccl", "cuda:3"), ("NCCL", "cuda:3"), ("gloo", "cpu"), ("mpi", "cpu")]
)
def test_the_device_follows_the_backend(monkeypatch: pytest.MonkeyPatch, backend: str, want: str) -> None:
    monkeypatch.setattr(ckpt_dist, "_initialised", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert str(ckpt_dist.collective_device()) == want


def test_any_rank_builds_its_tensor_on_the_collective_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # with NCCL the vote's tensor must be a CUDA one: the device comes from the shared helper
    seen: list[torch.device] = []
    monkeypatch.setattr(distributed, "collective_device", lambda: torch.device("meta"))
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: seen.append(tensor.device))
    with pytest.raises((NotImplementedError, RuntimeError)):  # .item() of a meta tensor, after the reduce
        distributed.any_rank(True, distributed.World(rank=0, size=2))
    assert seen == [torch.device("meta")]
