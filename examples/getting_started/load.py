# examples/getting_started/load.py: load the state back in a fresh process, two ways
import sys

import torch
from toy_job import build

from cosanneal.runtime import Checkpoints

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/getting-started"

# 1. cosanneal's checkpoints: the newest one whose manifest verifies, restored in place
model, optimizer, schedule, scheduler, *_ = build()
loaded = Checkpoints(f"{run_dir}/checkpoints").load_latest(model, optimizer, scheduler)
t, lr = scheduler.last_epoch, optimizer.param_groups[0]["lr"]
print(f"loaded step-{loaded.step}: {t} updates done, next lr {lr:.6g} = schedule({t}) = {schedule(t):.6g}")

# 2. plain PyTorch: the scheduler's state is a small dict, {"version", "step", "schedule"}
torch.save(
    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
    f"{run_dir}/plain.pt",
)
state = torch.load(f"{run_dir}/plain.pt", weights_only=True)
model2, optimizer2, _, scheduler2, *_ = build(seed=1)  # fresh objects
model2.load_state_dict(state["model"])
optimizer2.load_state_dict(state["optimizer"])
scheduler2.load_state_dict(state["scheduler"])  # last: re-sets every group's LR from the closed form
print(f"plain load: step {scheduler2.last_epoch}, lr {optimizer2.param_groups[0]['lr']:.6g}")
