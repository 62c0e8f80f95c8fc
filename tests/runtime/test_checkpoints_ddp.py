"""Checkpoints under torch.distributed (gloo, 2 real processes on CPU): only rank 0 writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist
from gloo_ranks import run_ranks

from cosanneal.runtime.checkpoints import Checkpoints

TWO_RANKS = """
import torch
from cosanneal.runtime.checkpoints import Checkpoints


def rank_main(rank, world_size, args):
    directory = args[0]
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(rank + 1.0)  # tells whose weights were written
    events = []
    ck = Checkpoints(directory, keep_last=2, on_event=lambda kind, **p: events.append(kind))
    for step in range(3):
        ck.save(step, model=model, metrics={"val_loss": 1.0 / (step + 1)})
    loaded = ck.load_latest(model)
    timed = Checkpoints(directory, every_seconds=3600, at_restarts=False)
    if rank == 0:
        timed._last_save -= 7200  # only rank 0's clock says "due"
    agreed = timed.should_save(0)
    return {"rank": rank, "events": events, "loaded": loaded.step, "weight": model.weight[0, 0].item(),
            "agreed": agreed}
"""


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_only_rank_zero_writes_and_every_rank_loads_the_same(tmp_path: Path) -> None:
    directory = tmp_path / "ckpts"
    results = run_ranks(TWO_RANKS, tmp_path, str(directory))
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["events"].count("checkpoint_saved") == 3
    assert "checkpoint_saved" not in results[1]["events"]
    for r in results:
        # both ranks loaded rank 0's checkpoint (weights 1.0), the newest one
        assert (r["loaded"], r["weight"], r["agreed"]) == (2, 1.0, True)
    ck = Checkpoints(directory)
    assert [c.step for c in ck.list()] == [1, 2] and ck.best is not None and ck.best.step == 2
    assert sorted(p.name for p in directory.iterdir()) == ["best", "step-000000001", "step-000000002"]
