"""Count what torch.compile does in a short training run (shared by test_compile.py and bench_compile.py).

Two counts, both dynamo's own:

* ``compiles``: frames dynamo converted (``torch._dynamo.utils.counters["frames"]["total"]``), every
  first compile and every recompile after a guard failure, with or without a graph. Python code
  with no tensor work (a scheduler's arithmetic) recompiles without producing a graph, so graphs
  alone would miss it.
* ``graphs``: graphs handed to the backend (``torch._dynamo.testing.CompileCounter``, which also
  runs them as captured, so no C++ compiler is needed).

A recompile is a compile after the warm-up steps: the first update creates the optimizer state,
which the graphs guard on, so the second step compiles again for every scheduler alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

PATTERNS = ("compiled step", "compiled optimizer.step")
WARMUP = 3


@dataclasses.dataclass
class Probe:
    compiles_warm: int  # frames compiled in the warm-up steps
    recompiles: int  # frames compiled after them
    graphs_warm: int
    graphs_after: int
    lrs: list[float]  # group 0's LR as each update read it
    scheduler: Any


def make_adamw(model: torch.nn.Module, peak: float) -> torch.optim.AdamW:
    """AdamW with a float64 tensor LR and betas: values change in place, and bit for bit."""

    def f64(x: float) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float64)

    return torch.optim.AdamW(model.parameters(), lr=f64(peak), betas=(f64(0.9), f64(0.999)))


def measure(
    make_scheduler: Callable[[torch.optim.Optimizer], Any], pattern: str, steps: int, peak: float = 0.01
) -> Probe:
    """Train a tiny model ``steps`` updates with ``pattern`` and count compiles and graphs.

    ``"compiled step"``: the whole training step, ``scheduler.step()`` included, is one compiled
    function. ``"compiled optimizer.step"``: torch's recipe, ``torch.compile(optimizer.step)`` with
    the scheduler stepped eagerly.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = make_adamw(model, peak)
    sched = make_scheduler(opt)
    counter = CompileCounter()
    lrs: list[float] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: lrs.append(float(o.param_groups[0]["lr"])))

    if pattern == "compiled step":

        @torch.compile(backend=counter)
        def train_step(x: torch.Tensor) -> None:
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            sched.step()

    else:
        compiled_opt_step = torch.compile(opt.step, backend=counter)

        def train_step(x: torch.Tensor) -> None:
            model(x).pow(2).mean().backward()
            compiled_opt_step()
            opt.zero_grad()
            sched.step()

    compiles_warm = graphs_warm = 0
    for i in range(steps):
        train_step(torch.randn(8, 4))
        if i + 1 == WARMUP:
            compiles_warm, graphs_warm = counters["frames"]["total"], counter.frame_count
    return Probe(
        compiles_warm=compiles_warm,
        recompiles=counters["frames"]["total"] - compiles_warm,
        graphs_warm=graphs_warm,
        graphs_after=counter.frame_count - graphs_warm,
        lrs=lrs,
        scheduler=sched,
    )
