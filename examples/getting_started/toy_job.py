# examples/getting_started/toy_job.py: the model, data, optimizer, schedule and scheduler of the guide
import torch

from cosanneal import Cosine
from cosanneal.torch import Scheduler

STEPS = 200  # the budget, in optimizer updates


def build(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(2560, 16)
    y = (x[:, :4].sum(dim=1) > 0).long()  # a toy task: is the sum of the first 4 features positive?
    train, val = (x[:2048], y[:2048]), (x[2048:], y[2048:])
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    # 20 warmup updates, then cosine cycles of 60 and 120 updates (SGDR): 20 + 60 + 120 = STEPS
    schedule = Cosine(
        peak_lr=0.2, warmup_steps=20, cycle_steps=60, cycle_mult=2, max_cycles=2, min_ratio=0.01
    )
    scheduler = Scheduler(optimizer, schedule, count="optimizer")  # counts real optimizer updates itself
    return model, optimizer, schedule, scheduler, train, val
