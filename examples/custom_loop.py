"""Your own training loop with cosanneal's pieces: Scheduler, RunStore + Telemetry, Checkpoints,
Preemption and the non-finite guard. Run it twice: the second run resumes where the first stopped.

    python examples/custom_loop.py runs/custom [--steps 200]
"""

import sys

import torch
from torch.nn import functional

from cosanneal import Cosine
from cosanneal.runtime import Checkpoints, NonFiniteGuard, Preemption, RunStore, Telemetry
from cosanneal.torch import Scheduler
from cosanneal.zoo import build_model, load_dataset

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/custom"
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 200
torch.manual_seed(0)
(x, y), _ = (d.tensors for d in load_dataset("blobs", n=1000))
model = build_model("mlp")
optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
schedule = Cosine(peak_lr=0.2, warmup_steps=10, cycle_steps=60, cycle_mult=2, max_cycles=2, min_ratio=0.01)
scheduler = Scheduler(optimizer, schedule, count="optimizer")  # advances only on real updates
ckpts = Checkpoints(f"{run_dir}/checkpoints", keep_last=2, every_steps=25)
parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
resumed = ckpts.load_latest(**parts)  # restores everything on a second run; None on the first
guard = NonFiniteGuard(max_consecutive=3, on_exhausted="stop")

with RunStore(run_dir) as store, Preemption() as preempt:
    telemetry = Telemetry(store, schedule=schedule, expected=scheduler.lrs_at)
    telemetry.resume(resumed.step if resumed else 0)  # drop rows past the checkpoint: they come again
    while (t := scheduler.last_epoch) < steps:
        if preempt.requested:  # SIGTERM/SIGINT: checkpoint at the step boundary, then exit 143/130
            ckpts.save(t, **parts, reason="preempted")  # named by the updates done
            store.close()
            sys.exit(preempt.exit_code)
        idx = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(t))
        loss = functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        decision = guard.check(loss, model, step=t)
        if decision.stop:
            sys.exit(f"stopped: {decision.message}")
        if not decision.ok:
            continue  # skipped: the schedule does not advance
        lrs = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        telemetry.on_update(t, lrs, loss=loss.detach())
        if ckpts.should_save(t + 1, schedule):  # t + 1 updates done
            ckpts.save(t + 1, **parts, cycle_end=ckpts.ends_cycle(t + 1, schedule), reason="periodic")
    if getattr(ckpts.latest, "step", None) != scheduler.last_epoch:  # not saved at this very update
        ckpts.save(scheduler.last_epoch, **parts, reason="final")
    ckpts.close()
print(
    f"done: {scheduler.last_epoch} updates, last lr {optimizer.param_groups[0]['lr']:.4g}, run in {run_dir}"
)
