"""Telemetry cost on a CUDA device: cosanneal's sync-free ``Telemetry`` vs per-step ``.item()`` logging.

The same training loop (an MLP on data already on the GPU, SGD + the cosanneal scheduler counting real
optimizer updates) runs with:

- no telemetry;
- ``Telemetry`` into a ``RunStore`` + ``TensorBoardSink`` every step, given the loss and gradient norm
  as CUDA tensors (converted on the writer thread at flush time, one transfer per flush);
- ``SummaryWriter.add_scalar`` of the loss, LR and gradient norm every step, the usual hand-written
  logging, whose ``.item()`` calls wait for the GPU at every step.

Variants run interleaved in shuffled rounds after a warm-up round; the table shows median updates/s and
the median paired ratio to no telemetry. Needs CUDA (exits 0 with a message without it).

    python benchmarks/bench_gpu_telemetry.py [--steps 3000] [--rounds 7] [--width 1024] [--batch 256]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_env
import torch
from torch import nn

from cosanneal import Cosine
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.sinks.tensorboard import TensorBoardSink
from cosanneal.torch import Scheduler

VARIANTS = ["no telemetry", "cosanneal Telemetry (RunStore + TensorBoardSink)", "SummaryWriter + .item()"]


def run(variant: str, steps: int, width: int, batch: int, root: Path) -> float:
    """Updates per second of ``steps`` updates with ``variant``'s logging (closing included)."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).to(dev)  # fmt: skip
    x = torch.randn(batch, width, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    schedule = Cosine(0.05, warmup_steps=steps // 20, cycle_steps=steps // 4, cycle_mult=1.0, max_cycles=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = Scheduler(opt, schedule, count="optimizer")
    log: Callable[[int, torch.Tensor, torch.Tensor], None]
    close: Callable[[], None]
    if variant == VARIANTS[1]:
        store = RunStore(root / "a")
        tel = Telemetry(
            store, schedule=schedule, expected=sched.lrs_at, sinks=[TensorBoardSink(root / "a" / "tb")]
        )

        def log(step: int, loss: torch.Tensor, gn: torch.Tensor) -> None:
            tel.on_update(
                step, [g["lr"] for g in opt.param_groups], loss=loss.detach(), grad_norm=gn, samples=batch
            )

        close = store.close
    elif variant == VARIANTS[2]:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(root / "sw"))

        def log(step: int, loss: torch.Tensor, gn: torch.Tensor) -> None:
            writer.add_scalar("loss/train", loss.item(), step)
            writer.add_scalar("lr/group_0", opt.param_groups[0]["lr"], step)
            writer.add_scalar("train/grad_norm", gn.item(), step)

        close = writer.close
    else:

        def log(step: int, loss: torch.Tensor, gn: torch.Tensor) -> None:
            pass

        def close() -> None:
            pass

    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)  # the norm, as a CUDA tensor
        opt.step()
        log(step, loss, gn)
    torch.cuda.synchronize()
    close()
    elapsed = time.perf_counter() - start
    sched.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu_telemetry: no CUDA device; nothing to measure")
        return
    res: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r, order in bench_env.shuffled_rounds(VARIANTS, args.rounds, seed=0):
        for v in order:
            with tempfile.TemporaryDirectory() as d:
                ups = run(v, args.steps, args.width, args.batch, Path(d))
            if r:
                res[v].append(ups)
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Python {platform.python_version()}; "
        f"MLP width {args.width}, batch {args.batch}, {args.steps} updates x {args.rounds} rounds\n"
    )
    print("| variant | updates/s (median) | ÷ no telemetry (median paired ratio) | min-max |")
    print("|---|---:|---:|---:|")
    base = res[VARIANTS[0]]
    for v in VARIANTS:
        ratios = [a / b for a, b in zip(res[v], base, strict=True)]
        print(
            f"| {v} | {statistics.median(res[v]):,.0f} | {statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |"
        )


if __name__ == "__main__":
    main()
