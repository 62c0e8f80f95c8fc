# examples/getting_started/train.py: your own loop; records the LR of every update and checkpoints
import sys
import time

import torch
from torch.nn import functional
from toy_job import STEPS, build

from cosanneal.runtime import Checkpoints, RunStore, Telemetry, run_params

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/getting-started"
stop_at = int(sys.argv[2]) if len(sys.argv) > 2 else STEPS  # stop early, to resume later
model, optimizer, schedule, scheduler, (x, y), (x_val, y_val) = build()
parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
started = time.time()
with RunStore(run_dir) as store:
    store.log_params(run_params(schedule=schedule, seed=0))  # what `cosanneal verify` checks against
    telemetry = Telemetry(store, schedule=schedule, expected=scheduler.lrs_at)
    ckpts = Checkpoints(
        f"{run_dir}/checkpoints", keep_last=2, keep_cycle_ends=True,
        on_event=lambda kind, step, **payload: telemetry.event(step, kind, **payload),
    )  # fmt: skip
    resumed = ckpts.load_latest(**parts)  # None on the first run; else model, optimizer, scheduler, RNG
    telemetry.resume(resumed.step if resumed else 0)  # rows past the checkpoint are recorded again
    while (t := scheduler.last_epoch) < stop_at:  # t: the updates done so far
        batch = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(t))
        loss = functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        lrs = [group["lr"] for group in optimizer.param_groups]  # the LR this update uses
        optimizer.step()  # the scheduler sees this update and sets the next LR: no scheduler.step()
        telemetry.on_update(t, lrs, loss=loss.detach())
        if ckpts.should_save(t + 1, schedule) or t + 1 == stop_at:  # a cycle ends, or we stop
            with torch.no_grad():
                metrics = {"val_loss": functional.cross_entropy(model(x_val), y_val).item()}
            telemetry.on_eval(t + 1, metrics)
            end = ckpts.ends_cycle(t + 1, schedule)  # the low-LR snapshot before a restart
            ckpts.save(t + 1, **parts, metrics=metrics, cycle_end=end, reason="restart" if end else "final")
    ckpts.close()
    if scheduler.last_epoch == STEPS:
        telemetry.event(STEPS, "run_finished", updates=STEPS, seconds=round(time.time() - started, 3))
print(f"{scheduler.last_epoch} of {STEPS} updates done, run in {run_dir}")
