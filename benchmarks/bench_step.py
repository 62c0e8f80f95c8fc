"""Cost of one scheduler step, ours vs the peers, and of a 10**7-step vectorised LR trace (issue #2).

Every contender runs the same warmup + cosine schedule and is timed in interleaved rounds in one
process (the median over rounds is reported), so machine noise hits every row alike. Ratios are
against torch's ``CosineAnnealingLR``.

Each timed ``step()`` follows a real ``optimizer.step()`` (cosanneal's manual mode ignores a
``step()`` with no update since the last one, so stepping it alone would time the wrong path).
Two figures per contender: the ``step()`` call alone (``perf_counter_ns`` around the call, timer
overhead included for every row alike), and the whole cost per update it adds to the loop:
``optimizer.step() + step()`` minus a bare ``optimizer.step()`` on an optimizer no scheduler has
touched (process CPU time), which includes the optimizer hooks and wrappers each scheduler installs.

Targets: ours <= 0.5x torch ``CosineAnnealingLR`` per ``step()`` at 1 and at 10 param groups; a
10**7-step SGDR trace ``schedule(np.arange(10**7))`` in < 1 s.

Usage::

    python benchmarks/bench_step.py            # full run (~2-3 min)
    python benchmarks/bench_step.py --quick    # short run (~10 s)
    python benchmarks/bench_step.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_env
import numpy as np
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from cosanneal import Cosine
from cosanneal.torch import Scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import timm_scheduler_module

PEAK = 0.1
GROUPS = (1, 10)
BASELINE = "torch CosineAnnealingLR"
STEP_TARGET = 0.5  # ours / torch CosineAnnealingLR
TRACE_STEPS = 10**7
TRACE_TARGET_S = 1.0

Stepper = Callable[[], None]
BARE = "bare optimizer.step() (no scheduler)"


def noop() -> None:
    pass


def optimizer(groups: int) -> torch.optim.SGD:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=PEAK)
    return opt


def make_contenders(total: int, warmup: int) -> dict[str, Callable[[torch.optim.Optimizer], Stepper]]:
    """Factories: optimizer -> a zero-argument callable doing one scheduler step."""
    from transformers import get_cosine_schedule_with_warmup

    timm_cosine = timm_scheduler_module("cosine_lr").CosineLRScheduler
    ours_schedule = Cosine(PEAK, warmup_steps=warmup, cycle_steps=total - warmup)

    def ours(opt: torch.optim.Optimizer) -> Stepper:
        return Scheduler(opt, ours_schedule).step

    def torch_cosine(opt: torch.optim.Optimizer) -> Stepper:
        return CosineAnnealingLR(opt, T_max=total).step

    def torch_sequential(opt: torch.optim.Optimizer) -> Stepper:
        first = LinearLR(opt, start_factor=1e-3, total_iters=warmup)
        second = CosineAnnealingLR(opt, T_max=total - warmup)
        return SequentialLR(opt, [first, second], milestones=[warmup]).step

    def hf(opt: torch.optim.Optimizer) -> Stepper:
        return get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total).step

    def timm(opt: torch.optim.Optimizer) -> Stepper:
        sched = timm_cosine(opt, t_initial=total, warmup_t=warmup, warmup_lr_init=1e-5, t_in_epochs=False)
        counter = iter(range(1, 2**62))

        def step() -> None:
            sched.step_update(next(counter))

        return step

    return {
        "cosanneal Scheduler(Cosine+warmup)": ours,
        BASELINE: torch_cosine,
        "torch SequentialLR(LinearLR, CosineAnnealingLR)": torch_sequential,
        "transformers get_cosine_schedule_with_warmup": hf,
        "timm CosineLRScheduler.step_update": timm,
    }


def time_steps(step: Stepper, n: int) -> float:
    """CPU microseconds per call of ``step`` over ``n`` calls.

    Process CPU time, not wall time: on a shared machine the time other processes hold the CPU
    is not charged to whichever contender happened to be running (the loop is single-threaded,
    so on an idle machine the two agree).
    """
    start = time.process_time_ns()
    for _ in range(n):
        step()
    return (time.process_time_ns() - start) / n / 1e3


def time_updates(opt: torch.optim.Optimizer, step: Stepper, n: int) -> tuple[float, float]:
    """(µs per ``step()`` call, CPU µs per update) over ``n`` updates ``opt.step(); step()``."""
    clock = time.perf_counter_ns
    in_step = 0
    start = time.process_time_ns()
    for _ in range(n):
        opt.step()
        t0 = clock()
        step()
        in_step += clock() - t0
    return in_step / n / 1e3, (time.process_time_ns() - start) / n / 1e3


def bench_steps(rounds: int, n: int) -> dict[tuple[str, int], tuple[float, float]]:
    """Median (µs per step(), µs per update) for every (contender, groups), in interleaved, shuffled rounds."""
    contenders = make_contenders(total=100 * n, warmup=n // 2)  # each round covers warmup and decay
    contenders[BARE] = lambda opt: noop
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {
        (name, g): [] for name in contenders for g in GROUPS
    }
    for r, order in bench_env.shuffled_rounds(list(samples), rounds, seed=0):
        for name, groups in order:
            opt = optimizer(groups)
            step = contenders[name](opt)
            timed = time_updates(opt, step, n)
            if r:  # round 0 warms up
                samples[name, groups].append(timed)
    return {
        key: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for key, values in samples.items()
    }


def bench_trace(repeats: int, torch_steps: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of a 10**7-step SGDR trace, and torch's extrapolated time."""
    sgdr = Cosine(PEAK, warmup_steps=1000, cycle_steps=10_000, cycle_mult=2, peak_decay=0.9, max_cycles=None)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        trace = sgdr(np.arange(TRACE_STEPS))
        best = min(best, time.perf_counter() - start)
        assert trace.shape == (TRACE_STEPS,)
    opt = optimizer(1)
    step = CosineAnnealingLR(opt, T_max=TRACE_STEPS).step
    opt.step()
    per_step_us = time_steps(step, torch_steps)
    return best, per_step_us * 1e-6 * TRACE_STEPS


def versions() -> str:
    return bench_env.versions(("cosanneal", "torch", "numpy", "transformers", "timm"))


def report(
    results: dict[tuple[str, int], tuple[float, float]], trace_s: float, torch_trace_s: float, args: Any
) -> bool:
    """Print the markdown tables and the PASS/FAIL lines; return whether every target is met."""
    print(
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores; {versions()}"
    )
    print(f"Command: python benchmarks/bench_step.py{' --quick' if args.quick else ''}")
    print(
        f"Rounds: {args.rounds} interleaved, shuffled x {args.steps} updates per contender (after a "
        "warm-up round); medians over the rounds.\n"
    )
    names = [name for name in dict.fromkeys(name for name, _ in results) if name != BARE]
    print("`step()` alone, after each `optimizer.step()`:\n")
    print(
        "| scheduler | "
        + " | ".join(f"{g} group{'s' if g > 1 else ''}: µs/step (ratio)" for g in GROUPS)
        + " |"
    )
    print("|---|" + "---:|" * len(GROUPS))
    for name in names:
        cells = [
            f"{results[name, g][0]:.2f} ({results[name, g][0] / results[BASELINE, g][0]:.2f}x)"
            for g in GROUPS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    bare = {g: results[BARE, g][1] for g in GROUPS}
    print(
        "\nCost per update the scheduler adds (optimizer.step() + step() - a bare optimizer.step() of "
        + ", ".join(f"{bare[g]:.2f} µs at {g} group(s)" for g in GROUPS)
        + "; hooks and wrappers included):\n"
    )
    print(
        "| scheduler | "
        + " | ".join(f"{g} group{'s' if g > 1 else ''}: µs/update (ratio)" for g in GROUPS)
        + " |"
    )
    print("|---|" + "---:|" * len(GROUPS))
    for name in names:
        added = {g: results[name, g][1] - bare[g] for g in GROUPS}
        base = {g: results[BASELINE, g][1] - bare[g] for g in GROUPS}
        cells = [f"{added[g]:.2f} ({added[g] / base[g]:.2f}x)" for g in GROUPS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ours = names[0]
    print(
        f"\n10^7-step SGDR trace, vectorised `schedule(np.arange(10**7))` (best of {args.trace_repeats}): "
        f"{trace_s:.3f} s; torch CosineAnnealingLR stepped {args.torch_trace_steps} times, "
        f"extrapolated to 10^7: {torch_trace_s:.1f} s ({torch_trace_s / trace_s:.0f}x slower).\n"
    )
    ok = True
    for g in GROUPS:
        ratio = results[ours, g][0] / results[BASELINE, g][0]
        passed = ratio <= STEP_TARGET
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'}: step() at {g} group(s) = {ratio:.2f}x torch (target <= {STEP_TARGET}x)"
        )
    passed = trace_s < TRACE_TARGET_S
    ok &= passed
    print(f"{'PASS' if passed else 'FAIL'}: 10^7-step trace = {trace_s:.3f} s (target < {TRACE_TARGET_S} s)")
    print(f"OVERALL: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and steps)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.rounds, args.steps = (15, 2_000) if args.quick else (41, 5_000)
    args.trace_repeats, args.torch_trace_steps = (1, 20_000) if args.quick else (3, 100_000)
    warnings.simplefilter("ignore")  # peers' deprecation chatter is not what is measured
    results = bench_steps(args.rounds, args.steps)
    trace_s, torch_trace_s = bench_trace(args.trace_repeats, args.torch_trace_steps)
    ok = report(results, trace_s, torch_trace_s, args)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
