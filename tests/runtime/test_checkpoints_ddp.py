"""Checkpoints under torch.distributed (gloo, 2 real processes on CPU): only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist

from cosanneal.runtime.checkpoints import Checkpoints

ROOT = Path(__file__).resolve().parents[2]

TWO_RANKS = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from cosanneal.runtime.checkpoints import Checkpoints

    directory, store = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    pids = []
    for rank in range(2):
        pid = os.fork()  # before any torch op: safe to fork
        if pid == 0:
            code = 1
            try:
                dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
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
                result = {"rank": rank, "events": events, "loaded": loaded.step,
                          "weight": model.weight[0, 0].item(), "agreed": agreed}
                # one file per rank: two forked ranks printing to one pipe can interleave
                with open(f"{store}-result-{rank}.json", "w") as handle:
                    json.dump(result, handle)
                dist.destroy_process_group()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    sys.exit(0 if all(os.waitpid(p, 0)[1] == 0 for p in pids) else 1)
    """
)


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_only_rank_zero_writes_and_every_rank_loads_the_same(tmp_path: Path) -> None:
    directory = tmp_path / "ckpts"
    done = subprocess.run(
        [sys.executable, "-c", TWO_RANKS, str(directory), str(tmp_path / "store")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads((tmp_path / f"store-result-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["events"].count("checkpoint_saved") == 3
    assert "checkpoint_saved" not in results[1]["events"]
    for r in results:
        # both ranks loaded rank 0's checkpoint (weights 1.0), the newest one
        assert (r["loaded"], r["weight"], r["agreed"]) == (2, 1.0, True)
    ck = Checkpoints(directory)
    assert [c.step for c in ck.list()] == [1, 2] and ck.best is not None and ck.best.step == 2
    assert sorted(p.name for p in directory.iterdir()) == ["best", "step-000000001", "step-000000002"]
