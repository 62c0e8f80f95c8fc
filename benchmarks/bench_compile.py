"""torch.compile recompiles per 1,000 training steps: cosanneal's Scheduler vs torch's schedulers (issue #10).

Every row trains the same tiny model with AdamW whose LR and betas are float64 tensors (so a new
value is an in-place change, never a new constant to guard on), in two loops:

* ``compiled step``: the whole training step, ``scheduler.step()`` included, is one
  ``torch.compile``'d function;
* ``compiled opt.step``: torch's recipe, ``torch.compile(optimizer.step)`` with the scheduler
  stepped eagerly.

Counts come from ``tests/torch/compile_probe.py``: dynamo's frame counter
(``torch._dynamo.utils.counters["frames"]["total"]``: every frame converted, first compiles and
recompiles, with or without a graph) and ``CompileCounter`` graphs. A recompile is a compile after
the 3 warm-up steps (the first update creates the optimizer state). Default recompile limits
apply: a frame that hits dynamo's limit stops recompiling and runs eagerly from then on, so a
count at the limit means "recompiled until dynamo gave up".

Target: 0 recompiles for every cosanneal row, in both loops.

Usage::

    python benchmarks/bench_compile.py            # 1,000 steps per run (~5 min on 2 cores)
    python benchmarks/bench_compile.py --steps 200
    python benchmarks/bench_compile.py --check    # exit 1 when a cosanneal row recompiles
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_env
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LinearLR,
    OneCycleLR,
    SequentialLR,
)

from cosanneal import Cosine
from cosanneal.schedules import compat
from cosanneal.torch import Scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "torch"))
from compile_probe import PATTERNS, WARMUP, Probe, measure

PEAK = 0.01
Make = Callable[[torch.optim.Optimizer], Any]


def rows(steps: int) -> list[tuple[str, Make | None, Make | None]]:
    """(schedule, ours, torch's or the peer's LRScheduler for the same curve, if it has one)."""
    from transformers import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_hard_restarts_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_wsd_schedule,
    )

    n, w = steps, steps // 20

    def ours(schedule: Any, **kwargs: Any) -> Make:
        return lambda opt: Scheduler(opt, schedule, **kwargs)

    sgdr = Cosine(PEAK, warmup_steps=w, cycle_steps=n // 20, cycle_mult=1.5, peak_decay=0.9, max_cycles=None)
    return [
        ("cosanneal Cosine SGDR, cycle_mult=1.5", ours(sgdr), None),
        ("cosanneal Cosine SGDR + beta1 annealing", ours(sgdr, momentum=(0.95, 0.85)), None),
        (
            "torch CosineAnnealingLR",
            ours(compat.torch_cosine_annealing_lr(PEAK, T_max=n)),
            lambda o: CosineAnnealingLR(o, T_max=n),
        ),
        (
            "torch CosineAnnealingWarmRestarts(T_mult=2)",
            ours(compat.torch_cosine_annealing_warm_restarts(PEAK, T_0=n // 40, T_mult=2)),
            lambda o: CosineAnnealingWarmRestarts(o, T_0=n // 40, T_mult=2),
        ),
        (
            "torch SequentialLR(LinearLR, CosineAnnealingLR)",
            ours(compat.torch_linear_warmup_cosine(PEAK, 0.01, w, T_max=n - w)),
            lambda o: SequentialLR(
                o, [LinearLR(o, 0.01, total_iters=w), CosineAnnealingLR(o, T_max=n - w)], milestones=[w]
            ),
        ),
        (
            "torch OneCycleLR (+ momentum)",
            ours(compat.torch_one_cycle_lr(PEAK, total_steps=n), momentum=(0.95, 0.85)),
            lambda o: OneCycleLR(o, max_lr=PEAK, total_steps=n),
        ),
        (
            "timm CosineLRScheduler, cycle_mul=1.5",
            ours(compat.timm_cosine(PEAK, t_initial=n // 10, warmup_t=w, cycle_mul=1.5, cycle_limit=6)),
            None,
        ),
        (
            "hf cosine_with_warmup",
            ours(compat.hf_cosine_with_warmup(PEAK, w, n)),
            lambda o: get_cosine_schedule_with_warmup(o, w, n),
        ),
        (
            "hf cosine_with_min_lr",
            ours(compat.hf_cosine_with_min_lr(PEAK, w, n, min_lr_rate=0.1)),
            lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, w, n, min_lr_rate=0.1),
        ),
        (
            "hf cosine_with_hard_restarts(8)",
            ours(compat.hf_cosine_with_hard_restarts(PEAK, w, n, num_cycles=8)),
            lambda o: get_cosine_with_hard_restarts_schedule_with_warmup(o, w, n, num_cycles=8),
        ),
        (
            "hf wsd",
            ours(compat.hf_wsd(PEAK, w, n // 2, n - n // 2 - w)),
            lambda o: get_wsd_schedule(o, w, n - n // 2 - w, num_stable_steps=n // 2),
        ),
        ("optax warmup_cosine_decay", ours(compat.optax_warmup_cosine_decay(0.0, PEAK, w, n, 1e-4)), None),
        (
            "optax sgdr (4 pieces)",
            ours(
                compat.optax_sgdr(
                    [dict(init_value=0.0, peak_value=PEAK, warmup_steps=w, decay_steps=n // 4)] * 4
                )
            ),
            None,
        ),
        ("keras CosineDecay + warmup", ours(compat.keras_cosine_decay(0.0, n, 0.01, PEAK, w)), None),
        (
            "keras CosineDecayRestarts(t_mul=1.5, m_mul=0.9)",
            ours(compat.keras_cosine_decay_restarts(PEAK, n // 20, t_mul=1.5, m_mul=0.9)),
            None,
        ),
        (
            "composer CosineAnnealingWithWarmup",
            ours(compat.composer_cosine_with_warmup(PEAK, f"{w}ba", t_max=f"{n}ba", alpha_f=0.01)),
            None,
        ),
    ]


def cell(probe: Probe | None) -> str:
    if probe is None:
        return "-"
    return f"{probe.recompiles} ({probe.graphs_after} graphs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run")
    parser.add_argument("--check", action="store_true", help="exit 1 when a cosanneal row recompiles")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # peers' deprecation chatter and dynamo's graph-break notes
    start = time.perf_counter()
    table = []
    exact = True
    for name, ours, peer in rows(args.steps):
        results: list[Probe | None] = []
        for make in (ours, peer):
            for pattern in PATTERNS:
                probe = measure(make, pattern, args.steps, peak=PEAK) if make is not None else None
                results.append(probe)
        mine = [p for p in results[:2] if p is not None]
        for p in mine:  # the LR each update used is the closed form (float64 tensor: bit for bit)
            exact &= p.lrs == [p.scheduler.lrs_at(t)[0] for t in range(args.steps)]
        table.append((name, results))
    elapsed = time.perf_counter() - start
    print(
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"{bench_env.versions(('cosanneal', 'torch', 'transformers'))}"
    )
    print(f"Command: python benchmarks/bench_compile.py --steps {args.steps} ({elapsed:.0f} s)")
    print(
        f"Recompiles in {args.steps} steps after {WARMUP} warm-up steps: frames dynamo compiled "
        "(graphs among them). `-`: no torch LRScheduler for that curve.\n"
    )
    print(
        "| schedule | cosanneal: compiled step | cosanneal: compiled opt.step "
        "| torch/peer: compiled step | torch/peer: compiled opt.step |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, results in table:
        print(f"| {name} | " + " | ".join(cell(p) for p in results) + " |")
    worst = max(p.recompiles + p.graphs_after for _, r in table for p in r[:2] if p is not None)
    warm = [
        (r[0].compiles_warm, r[2].compiles_warm) for _, r in table if r[0] is not None and r[2] is not None
    ]
    print(
        "\nWarm-up compiles (compiled step), cosanneal vs torch/peer, rows with both: "
        + ", ".join(f"{a} vs {b}" for a, b in warm)
    )
    ok = worst == 0 and exact
    print(
        f"\n{'PASS' if worst == 0 else 'FAIL'}: cosanneal recompiles after warm-up, worst row = {worst} (target 0)"
    )
    print(f"{'PASS' if exact else 'FAIL'}: every update's LR tensor == the closed form (max |dLR| = 0)")
    print(f"OVERALL: {'PASS' if ok else 'FAIL'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
