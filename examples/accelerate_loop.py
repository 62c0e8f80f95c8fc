"""A short accelerate training loop with a cosanneal Scheduler (count="manual", the default).

Run it on CPU with 2 processes (``accelerate launch`` works the same; ``--multi_gpu`` is accelerate's
multi-process launcher, on CPU it runs gloo):

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 examples/accelerate_loop.py

accelerate steps a prepared scheduler once per process per update (``split_batches=False``), not at
all while accumulating, and not after an update its GradScaler skipped; the Scheduler advances only
after an update that ran, so each update uses the closed form of the updates done, on every rank.
"""

import argparse
import os
import sys

import torch
from accelerate import Accelerator

from cosanneal import Cosine
from cosanneal.torch import Scheduler

parser = argparse.ArgumentParser()
parser.add_argument("--updates", type=int, default=30)
parser.add_argument("--accumulation", type=int, default=2)
args = parser.parse_args()

accelerator = Accelerator(cpu=True, gradient_accumulation_steps=args.accumulation)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
schedule = Cosine(peak_lr=3e-3, warmup_steps=5, cycle_steps=10, cycle_mult=1.5, max_cycles=None, min_lr=3e-5)
scheduler = Scheduler(optimizer, schedule)  # build it on the plain optimizer, before prepare()
used = []  # the LR of every update that ran, read by the optimizer itself
optimizer.register_step_pre_hook(lambda opt, a, k: used.append(opt.param_groups[0]["lr"]))

x = torch.randn(args.updates * args.accumulation * 4 * accelerator.num_processes, 8)
data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
loader = torch.utils.data.DataLoader(data, batch_size=4)
model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

for inputs, targets in loader:
    with accelerator.accumulate(model):
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()  # accelerate's wrapper: once per process per update
        optimizer.zero_grad()

max_dlr = max(abs(lr - schedule(t)) for t, lr in enumerate(used))  # lr == peak_lr: factor 1
print(
    f"rank {accelerator.process_index}/{accelerator.num_processes}: {len(used)} updates, "
    f"t = {scheduler.scheduler.last_epoch}, last loss {loss.item():.4f}, max |dLR| = {max_dlr}"
)
accelerator.end_training()  # leave the process group
# torch 2.13 on gloo: a worker thread that frees the last DDP all-reduce after Python began shutting
# down aborts the rank (SIGABRT) after all the work is done; end without that shutdown (docs/torch.md)
sys.stdout.flush()
os._exit(0)
