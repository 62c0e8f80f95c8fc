"""torch.compile: the scheduler is never traced, and a tensor LR changes without recompiling.

Counts are dynamo's own (see ``compile_probe.py``): frames compiled, with or without a graph, and
graphs. A recompile is a compile after the warm-up steps. The full table over 1,000 steps and every
preset is ``benchmarks/bench_compile.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from compile_probe import PATTERNS, WARMUP, make_adamw, measure
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters
from torch.optim.lr_scheduler import CosineAnnealingLR, CosineAnnealingWarmRestarts, LRScheduler

from cosanneal import Cosine
from cosanneal.schedules.compat import (
    hf_cosine_with_hard_restarts,
    timm_cosine,
    torch_cosine_annealing_warm_restarts,
    torch_one_cycle_lr,
)
from cosanneal.torch import Scheduler

PEAK = 0.01
STEPS = 200

MakeScheduler = Callable[[torch.optim.Optimizer], LRScheduler]

OURS: dict[str, MakeScheduler] = {
    "sgdr cycle_mult=1.5": lambda o: Scheduler(
        o, Cosine(PEAK, warmup_steps=5, cycle_steps=7, cycle_mult=1.5, peak_decay=0.8, max_cycles=None)
    ),
    "torch warm restarts": lambda o: Scheduler(
        o, torch_cosine_annealing_warm_restarts(PEAK, T_0=9, T_mult=2)
    ),
    "timm cycles": lambda o: Scheduler(o, timm_cosine(PEAK, t_initial=30, warmup_t=4, cycle_limit=8)),
    "hf hard restarts": lambda o: Scheduler(o, hf_cosine_with_hard_restarts(PEAK, 10, STEPS, num_cycles=12)),
    "one-cycle + momentum": lambda o: Scheduler(
        o, torch_one_cycle_lr(PEAK, total_steps=STEPS), momentum=(0.95, 0.85)
    ),
}
PEERS: dict[str, MakeScheduler] = {
    "torch CosineAnnealingLR": lambda o: CosineAnnealingLR(o, T_max=40),
    "torch CosineAnnealingWarmRestarts": lambda o: CosineAnnealingWarmRestarts(o, T_0=9, T_mult=2),
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("name", list(OURS))
def test_no_recompiles_and_exact_lrs(name: str, pattern: str) -> None:
    probe = measure(OURS[name], pattern, STEPS, peak=PEAK)
    assert probe.graphs_warm >= 1
    assert (probe.recompiles, probe.graphs_after) == (0, 0)
    sched = probe.scheduler
    assert isinstance(sched, Scheduler)
    # the LR tensor holds the closed form at every update (a float64 tensor: bit for bit)
    assert probe.lrs == [sched.lrs_at(t)[0] for t in range(STEPS)]
    assert sched.last_epoch == STEPS


@pytest.mark.parametrize("name", list(PEERS))
def test_torch_schedulers_in_the_same_run_do_not_recompile_either(name: str) -> None:
    """The reference of the comparison: torch's own schedulers with a tensor LR, same loop."""
    probe = measure(PEERS[name], "compiled step", 60, peak=PEAK)
    assert (probe.recompiles, probe.graphs_after) == (0, 0)


def test_warm_up_compiles_as_few_frames_as_torchs_scheduler_plus_two() -> None:
    """dynamo sees only the entry checks of step() and of the hook: one frame each, no graph."""
    ours = measure(OURS["sgdr cycle_mult=1.5"], "compiled step", WARMUP, peak=PEAK)
    peer = measure(PEERS["torch CosineAnnealingLR"], "compiled step", WARMUP, peak=PEAK)
    assert ours.graphs_warm <= peer.graphs_warm
    assert ours.compiles_warm <= peer.compiles_warm + 2


def test_tensor_lr_and_betas_are_updated_in_place() -> None:
    model = torch.nn.Linear(4, 2)
    opt = make_adamw(model, PEAK)
    lr, beta1 = opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
    sched = Scheduler(opt, Cosine(PEAK, cycle_steps=10, min_lr=PEAK / 10), momentum=(0.95, 0.85))
    for t in range(1, 12):
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        sched.step()
        group = opt.param_groups[0]
        assert group["lr"] is lr and group["betas"][0] is beta1  # the same tensors, refreshed
        assert lr.item() == sched.lrs_at(t)[0] == sched.get_last_lr()[0]
        assert isinstance(sched.get_last_lr()[0], float)
    assert beta1.item() == pytest.approx(0.95)  # at the floor: max momentum


def test_scheduler_step_is_not_traced() -> None:
    """A compiled bare ``scheduler.step()``: its entry check and the resume after it, once; no graph."""
    torch._dynamo.reset()
    counters.clear()
    opt = make_adamw(torch.nn.Linear(2, 1), PEAK)
    sched = Scheduler(opt, Cosine(PEAK, warmup_steps=3, cycle_steps=5, cycle_mult=1.5, max_cycles=None))
    counter = CompileCounter()
    step = torch.compile(sched.step, backend=counter)
    opt.step()
    step()
    first = counters["frames"]["total"]
    for _ in range(39):  # warmup, restarts, cycles of 5, 7.5, 11.25, ...
        opt.step()
        step()
    assert counter.frame_count == 0 and counters["frames"]["total"] == first == 2
    assert sched.last_epoch == 40 and opt.param_groups[0]["lr"].item() == sched.lrs_at(40)[0]


def test_reading_get_last_lr_in_a_compiled_step_does_not_recompile() -> None:
    torch._dynamo.reset()
    counters.clear()
    model = torch.nn.Linear(4, 2)
    opt = make_adamw(model, PEAK)
    sched = Scheduler(opt, Cosine(PEAK, warmup_steps=3, cycle_steps=5, cycle_mult=1.5, max_cycles=None))

    @torch.compile(backend=CompileCounter())
    def train_step(x: torch.Tensor) -> float:
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        return sched.get_last_lr()[0]

    seen = [train_step(torch.randn(2, 4)) for _ in range(WARMUP)]
    warm = counters["frames"]["total"]
    seen += [train_step(torch.randn(2, 4)) for _ in range(40)]
    assert counters["frames"]["total"] == warm
    assert seen == [sched.lrs_at(t)[0] for t in range(1, 44)]
