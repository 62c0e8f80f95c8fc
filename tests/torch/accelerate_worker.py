"""One rank of the accelerate exactness test (run under ``accelerate launch``; see test_accelerate.py).

For every configuration in the grid (count mode x gradient accumulation x split_batches) it trains a
tiny model with a real ``Accelerator`` and a real ``GradScaler`` on CPU, with inf/NaN gradients
injected at some updates so that accelerate's own AMP path skips them
(``accelerator.optimizer_step_was_skipped``). An optimizer step pre-hook records the LR of every
update that really ran. Each rank writes ``rank<i>.json`` into the output folder.

Usage: ``accelerate launch ... accelerate_worker.py OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

UPDATES = 10  # optimizer updates attempted per configuration (POISONED of them are skipped)
POISONED = (2, 5, 6)  # updates whose gradients are made inf: the scaler skips them
BATCH = 2  # samples per process per micro-batch
PEAK = 0.1


def schedule() -> Any:
    from cosanneal import Cosine

    # the LR changes at every update: warmup, then cycles of 3, 4, 6, ... (cycle_mult=1.5)
    return Cosine(PEAK, warmup_steps=2, warmup_start_lr=0.01, cycle_steps=3, cycle_mult=1.5, max_cycles=None)


def run(
    count: str,
    accumulation: int,
    split_batches: bool,
    prepare_scheduler: bool,
    step_with_optimizer: bool = True,
) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from cosanneal import SchedulerUsageError
    from cosanneal.torch import Scheduler

    accelerator = Accelerator(
        cpu=True,
        gradient_accumulation_steps=accumulation,
        dataloader_config=DataLoaderConfiguration(split_batches=split_batches),
        step_scheduler_with_optimizer=step_with_optimizer,
    )
    # accelerate makes a GradScaler only for fp16 on an accelerator; on CPU the same scaler path
    # (accelerator.backward -> scaler.scale, AcceleratedOptimizer.step -> scaler.step/update,
    # step_was_skipped) runs when the scaler is given to the Accelerator before prepare().
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    n = accelerator.num_processes
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=PEAK)
    scheduler = Scheduler(optimizer, schedule(), count=count)  # type: ignore[arg-type]
    used: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    micro_batches = UPDATES * accumulation
    data = torch.utils.data.TensorDataset(torch.randn(micro_batches * BATCH * n, 3))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH * n if split_batches else BATCH)
    if prepare_scheduler:
        model, optimizer, loader, prepared = accelerator.prepare(model, optimizer, loader, scheduler)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        prepared = None
    skipped: list[bool] = []
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (x,) in enumerate(loader):
            with accelerator.accumulate(model):
                loss = model(x).pow(2).mean()
                if i // accumulation in POISONED and (i + 1) % accumulation == 0:
                    loss = loss * float("inf")  # on every rank: inf/NaN gradients, the update is skipped
                accelerator.backward(loss)
                optimizer.step()
                if prepared is not None:
                    try:
                        prepared.step()
                    except SchedulerUsageError as exc:
                        error = str(exc)
                        break
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                skipped.append(accelerator.optimizer_step_was_skipped)
    return {
        "num_processes": n,
        "used": used,
        "t": scheduler.last_epoch,
        "last_lr": scheduler.get_last_lr()[0],
        "skipped": skipped,
        "error": error,
        "warnings": [f"{w.category.__module__}.{w.category.__name__}: {w.message}" for w in caught],
    }


GRID: list[dict[str, Any]] = (
    [
        {"count": count, "accumulation": acc, "split_batches": split, "prepare_scheduler": prep}
        for count, prep in (("manual", True), ("optimizer", False))
        for acc in (1, 4)
        for split in (False, True)
    ]
    + [
        # the wrapper forwards every call (here one per micro-batch): those without an update are ignored
        {
            "count": "manual",
            "accumulation": 4,
            "split_batches": False,
            "prepare_scheduler": True,
            "step_with_optimizer": False,
        }
    ]
    + [  # modes that cannot be exact under accelerate's wrapper: refused with the fix
        {"count": count, "accumulation": 1, "split_batches": False, "prepare_scheduler": True}
        for count in ("optimizer", "calls")
    ]
)


def main(out_dir: str) -> None:
    from accelerate import PartialState

    results = [{**cfg, **run(**cfg)} for cfg in GRID]  # type: ignore[arg-type]
    rank = PartialState().process_index
    path = Path(out_dir) / f"rank{rank}.json"
    path.write_text(json.dumps(results))
    PartialState().wait_for_everyone()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    # End without Python's finalization: torch's gloo worker threads can still hold the last
    # collective of a backward pass, whose captured thread-local state keeps a Python object; if a
    # worker frees it after finalization began, it cannot take the GIL and the rank aborts
    # ("terminate called without an active exception", SIGABRT; a gdb backtrace shows
    # ~AsyncAllreduceWork -> ~ThreadLocalState -> decref in ProcessGroupGloo::runLoop). The DDP
    # module keeps the process group alive past destroy_process_group, so its threads live on.
    # The results are written and flushed above; nothing is left to finalize.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
