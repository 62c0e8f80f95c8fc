"""Capturable Adam/AdamW under one CUDA graph for 1,000 steps, the LR tensor refreshed outside the graph.

The training step (forward, backward, ``optimizer.step()``) is captured once with
``torch.cuda.graph``; every step replays it, then ``scheduler.step()`` refreshes the group's LR
tensor in place (``fill_``, on the host side of the graph). Replays do not run ``optimizer.step()``
in Python, so the Scheduler uses ``count="calls"``.

Checks, per optimizer: one capture; the LR tensor the graph reads equals the closed form at every
step (``lrs_at(t)``, rounded to the tensor's float32); and the parameters after 1,000 replays equal
an eager run of the same capturable optimizer with the same scheduler and data (max abs diff
printed, <= 1e-6 required: the same kernels, though cuBLAS may pick others under capture).

Without CUDA it prints SKIP and exits 0.

Usage::

    python benchmarks/gpu_cuda_graph_check.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import sys

import torch

from cosanneal import Cosine
from cosanneal.torch import Scheduler

SCHEDULE = Cosine(1e-3, warmup_steps=50, cycle_steps=100, cycle_mult=1.5, peak_decay=0.8, max_cycles=None)


def make(
    opt_cls: type[torch.optim.Optimizer], device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1)).to(device)
    lr = torch.tensor(SCHEDULE.peak, device=device)
    return model, opt_cls(model.parameters(), lr=lr, capturable=True)  # type: ignore[call-arg]


def batches(steps: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(1)
    return [
        (torch.randn(32, 64, generator=g).to(device), torch.randn(32, 1, generator=g).to(device))
        for _ in range(steps)
    ]


def eager(
    opt_cls: type[torch.optim.Optimizer], data: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> list[torch.Tensor]:
    model, opt = make(opt_cls, device)
    sched = Scheduler(opt, SCHEDULE)  # manual: optimizer.step() runs in Python here
    for x, y in data:
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
    return [p.detach().clone() for p in model.parameters()]


def graphed(
    opt_cls: type[torch.optim.Optimizer], data: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[list[torch.Tensor], int, float]:
    model, opt = make(opt_cls, device)
    static_x, static_y = data[0][0].clone(), data[0][1].clone()
    # warm up on a side stream (creates the optimizer state), then restore the initial weights
    initial = [p.detach().clone() for p in model.parameters()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            torch.nn.functional.mse_loss(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for p, p0 in zip(model.parameters(), initial, strict=True):
            p.copy_(p0)
    for state in opt.state.values():  # fresh optimizer state, as in the eager run
        for value in state.values():
            value.zero_()
    sched = Scheduler(opt, SCHEDULE, count="calls")  # built after warm-up: t = 0, lr = schedule(0)
    graph = torch.cuda.CUDAGraph()
    captures = 0
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        captures += 1
        torch.nn.functional.mse_loss(model(static_x), static_y).backward()
        opt.step()
    lr = opt.param_groups[0]["lr"]
    worst = 0.0
    for t, (x, y) in enumerate(data):
        expected = torch.tensor(sched.lrs_at(t)[0], dtype=lr.dtype).item()  # as the float32 tensor holds it
        worst = max(worst, abs(lr.item() - expected))
        static_x.copy_(x)
        static_y.copy_(y)
        for p in model.parameters():
            assert p.grad is not None
            p.grad.zero_()
        graph.replay()
        sched.step()  # refresh the LR tensor in place, outside the graph
    torch.cuda.synchronize()
    assert sched.last_epoch == len(data)
    return [p.detach().clone() for p in model.parameters()], captures, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device (this check needs a GPU)")
        return 0
    device = torch.device("cuda")
    data = batches(args.steps, device)
    ok = True
    for opt_cls in (torch.optim.Adam, torch.optim.AdamW):
        params, captures, worst_lr = graphed(opt_cls, data, device)
        reference = eager(opt_cls, data, device)
        diff = max(float((a - b).abs().max()) for a, b in zip(params, reference, strict=True))
        passed = captures == 1 and worst_lr == 0.0 and diff <= 1e-6
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'}: {opt_cls.__name__}(capturable=True), {args.steps} replays of "
            f"{captures} capture: max |lr - closed form| = {worst_lr}, max |param - eager| = {diff:.3g}"
        )
    print(f"OVERALL: {'PASS' if ok else 'FAIL'} ({torch.cuda.get_device_name()}, torch {torch.__version__})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
