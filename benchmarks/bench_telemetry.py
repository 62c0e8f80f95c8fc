"""Micro-benchmark: training-thread cost of one ``Telemetry.on_update`` vs per-step ``SummaryWriter.add_scalar``.

Every variant logs the same 10 scalars per update (lr and lr_expected for 2 groups, cycle, phase, loss,
grad norm, step time, samples/s), computed from the same schedule. Variants run interleaved, round after
round, in one process; the table shows the median over rounds of the microseconds one update costs the
training thread (loop time / updates), including the ``schedule(step)`` call a loop makes anyway.
Writer-thread work (SQLite, event files) is not on that thread but competes for the GIL while this tight
loop runs (a real step mostly runs in torch kernels that release it), so it is included as far as it
slows the loop; the "writer idle" row shows the call alone.

A second table shows the writer thread's own cost: CPU microseconds per logged update to convert the
queued rows, insert them into SQLite and (with the TensorBoard sink) encode and append the events, measured
with ``time.thread_time`` around one flush of all the updates (run on the calling thread).

    python benchmarks/bench_telemetry.py [--updates 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cosanneal import Cosine
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import PHASE_CODES, Telemetry
from cosanneal.sinks.tensorboard import TensorBoardSink

SCHED = Cosine(0.1, warmup_steps=100, cycle_steps=500, cycle_mult=2.0, max_cycles=None)


def ours(root: Path, updates: int, tb: bool, idle_writer: bool = False) -> float:
    sinks = [TensorBoardSink(root / "tb")] if tb else []
    if idle_writer:  # rows wait in memory until close(): the pure cost of the call itself
        store = RunStore(root, flush_rows=10**9, flush_seconds=0)
    else:
        store = RunStore(root, flush_rows=1000, flush_seconds=1.0)
    tel = Telemetry(store, schedule=SCHED, sinks=sinks)
    t0 = time.perf_counter()
    for step in range(updates):
        lr = SCHED(step)
        tel.on_update(step, [lr, lr * 0.1], loss=1.0 / (step + 1), grad_norm=2.0, samples=64, step_time=0.01)
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed / updates * 1e6


def writer_cost(root: Path, updates: int, tb: bool) -> float:
    """CPU µs per update of the flush that writes ``updates`` queued updates (run store, + TensorBoard)."""
    sinks = [TensorBoardSink(root / "tb")] if tb else []
    store = RunStore(root, flush_rows=10**9, flush_seconds=0, sinks=sinks)
    tel = Telemetry(store, schedule=SCHED)
    for step in range(updates):
        lr = SCHED(step)
        tel.on_update(step, [lr, lr * 0.1], loss=1.0 / (step + 1), grad_norm=2.0, samples=64, step_time=0.01)
    t0 = time.thread_time()
    store.flush()
    elapsed = time.thread_time() - t0
    store.close()
    return elapsed / updates * 1e6


def summary_writer(root: Path, updates: int) -> float:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(root / "sw"))
    t0 = time.perf_counter()
    for step in range(updates):
        lr = SCHED(step)
        want = SCHED(step)
        add: Any = writer.add_scalar
        add("lr/group_0", lr, step)
        add("lr/group_1", lr * 0.1, step)
        add("lr_expected/group_0", want, step)
        add("lr_expected/group_1", want, step)
        add("schedule/cycle", SCHED.cycle(step).index, step)
        add("schedule/phase", PHASE_CODES[SCHED.phase(step)], step)
        add("loss/train", 1.0 / (step + 1), step)
        add("train/grad_norm", 2.0, step)
        add("perf/step_time_s", 0.01, step)
        add("perf/samples_per_s", 6400.0, step)
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed / updates * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    variants = {
        "Telemetry, writer idle (call cost only)": lambda d: ours(
            d, args.updates, tb=False, idle_writer=True
        ),
        "Telemetry -> run store": lambda d: ours(d, args.updates, tb=False),
        "Telemetry -> run store + TensorBoard": lambda d: ours(d, args.updates, tb=True),
        "SummaryWriter.add_scalar x10": lambda d: summary_writer(d, args.updates),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            with tempfile.TemporaryDirectory() as d:
                results[name].append(fn(Path(d)))
    base = statistics.median(results["SummaryWriter.add_scalar x10"])
    print(
        f"{args.updates} updates x {args.rounds} rounds, 10 scalars per update; median us/update on the training thread"
    )
    print(f"{'variant':<40} {'us/update':>10} {'÷ SummaryWriter':>16}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<40} {med:>10.2f} {med / base:>16.3f}")
    writer: dict[str, list[float]] = {"run store": [], "run store + TensorBoard": []}
    for _ in range(args.rounds):
        for name in writer:
            with tempfile.TemporaryDirectory() as d:
                writer[name].append(writer_cost(Path(d), args.updates, tb="TensorBoard" in name))
    print(f"\nwriter thread, one flush of {args.updates} updates; median CPU us per update")
    for name, values in writer.items():
        print(f"{name:<40} {statistics.median(values):>10.2f}")


if __name__ == "__main__":
    main()
