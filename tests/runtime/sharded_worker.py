"""One rank of a sharded-checkpoint test job (run as ``python sharded_worker.py OPTIONS_JSON``).

Options: ``role`` (``save`` | ``load``), ``directory``, ``store`` (a file:// rendezvous path; none for
one process), ``rank``, ``world``, ``wrap`` (``fsdp`` | ``ddp`` | ``none``), ``steps``, ``save_at``,
``async``, ``kill_at`` (SIGKILL this rank while DCP writes that step's shards), ``out``.

A save job trains a small MLP with AdamW on data every world size sees alike, saves at ``save_at``
and (rank 0) writes the full, unsharded state at each save to ``out/ref-<step>.pt``, then changes
the weights after an asynchronous save to show the checkpoint holds the state at save time. A load
job builds the same model at its own world size, loads the latest checkpoint and writes the full
state it got to ``out/loaded.pt`` and what the load said to ``out/loaded.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

from cosanneal.runtime import distributed
from cosanneal.runtime.checkpoints import Checkpoints


def build(wrap: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model: torch.nn.Module = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)
    )
    if wrap == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    elif wrap == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(inner, optimizer, options=options)
    return {"model": model_sd, "optim": optim_sd}


def main(opts: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    rank, world = int(opts["rank"]), int(opts["world"])
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{opts['store']}", rank=rank, world_size=world)
    model, optimizer = build(opts["wrap"])
    events: list[dict[str, Any]] = []
    ckpts = Checkpoints(
        opts["directory"],
        keep_last=2,
        best=None,
        sharded=True,
        async_write=bool(opts.get("async")),
        at_restarts=False,
        on_event=lambda kind, **p: events.append({"kind": kind, **p}),
    )
    out = opts["out"]
    if opts["role"] == "save":
        if opts.get("kill_at") is not None and rank == int(opts.get("victim", 1)):
            from torch.distributed.checkpoint.filesystem import FileSystemWriter

            original = FileSystemWriter.write_data
            kill_at = f"step-{int(opts['kill_at']):09d}"

            def write_data(self: Any, plan: Any, planner: Any) -> Any:
                if kill_at in str(self.path):
                    os.kill(os.getpid(), signal.SIGKILL)  # in the middle of the save: others wrote theirs
                return original(self, plan, planner)

            FileSystemWriter.write_data = write_data  # type: ignore[method-assign]
        gen = torch.Generator().manual_seed(1)
        for step in range(1, int(opts["steps"]) + 1):
            x = torch.randn(8, 16, generator=gen)  # the same batch on every rank: any world size agrees
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
            if step in opts["save_at"]:
                ckpts.save(step, model=model, optimizer=optimizer, extra={"tag": step})
                reference = full_state(model, optimizer)
                if rank == 0:
                    torch.save(reference, os.path.join(out, f"ref-{step}.pt"))
                if opts.get("async"):
                    with torch.no_grad():  # the write in flight must not see this
                        for p in model.parameters():
                            p.add_(1000.0)
                    ckpts.wait()
                    with torch.no_grad():
                        for p in model.parameters():
                            p.sub_(1000.0)
        ckpts.close()
    else:
        loaded = ckpts.load_latest(model, optimizer)
        got = full_state(model, optimizer)
        if rank == 0:
            torch.save(got, os.path.join(out, "loaded.pt"))
            summary = {
                "step": None if loaded is None else loaded.step,
                "world_size": None if loaded is None else loaded.world_size,
                "skipped": [] if loaded is None else [s.reason for s in loaded.skipped],
                "extra": {} if loaded is None else dict(loaded.extra),
            }
            with open(os.path.join(out, "loaded.json"), "w") as handle:
                json.dump(summary, handle)
    if rank == 0:
        with open(os.path.join(out, f"events-{opts['role']}.json"), "w") as handle:
            json.dump(events, handle, default=str)
    if world > 1:
        dist.barrier()  # no collective still in flight here when the group goes
        dist.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    # torch 2.13's gloo threads can free DCP's last broadcast after Python's shutdown began and abort
    # the rank (docs/torch.md); end as `cosanneal train` under torchrun does
    distributed.exit_process(0)
