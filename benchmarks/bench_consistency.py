"""What keeping the run store and the checkpoints in agreement costs (issue #9), side by side in one process.

(a) A checkpoint with the store made durable first: the trainer's ``Checkpoints.save`` whose
    ``before_commit`` hook writes the queued telemetry rows and fsyncs the store
    (``RunStore.flush(durable=True)``), divided by the same save without the hook (the rows then wait
    for the writer thread, and a kill can leave the store behind the checkpoint). Also shown: a plain
    ``torch.save`` of the same state, the peer's way to checkpoint. The state is a 4.2M-parameter MLP
    with SGD momentum (32 MiB of tensors); before each save, 500 updates' worth of telemetry rows
    (14 scalars per update, as the trainer logs) are queued, about one second of the demo's rows.
(b) Resuming: ``Telemetry.resume`` (one ``DELETE`` transaction) on a store of 10^6 rows with the last
    1% past the checkpoint, divided by opening that store (``RunStore(...)``), the cost every resume
    pays anyway.

Rounds are interleaved in shuffled order after a discarded warm-up round; the figures are medians.

Usage::

    python benchmarks/bench_consistency.py          # ~1 min on 2 cores
    python benchmarks/bench_consistency.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import bench_env
import torch
from torch import nn

from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry

ROWS_PER_UPDATE = 14


def _state() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1024)).sum().backward()
    opt.step()
    return model, opt


def _queue_rows(store: RunStore, start: int, updates: int) -> None:
    for t in range(start, start + updates):
        store.log_rows(t, [(f"s{i}", None, 0.001 * i) for i in range(ROWS_PER_UPDATE)])


def bench_save(rounds: int, updates: int) -> dict[str, float]:
    model, opt = _state()
    root = Path(tempfile.mkdtemp(prefix="bench-consistency-"))
    times: dict[str, list[float]] = {"durable": [], "plain": [], "torch.save": []}
    step = 0
    try:
        store = RunStore(root / "run", flush_rows=10**9, flush_seconds=3600)  # only explicit flushes
        hooked = Checkpoints(
            root / "a", keep_last=2, best=None, before_commit=lambda _: store.flush(durable=True)
        )
        bare = Checkpoints(root / "b", keep_last=2, best=None)
        for r, order in bench_env.shuffled_rounds(list(times), rounds, seed=9):
            for name in order:
                step += 1
                _queue_rows(store, step * updates, updates)
                t0 = time.perf_counter()
                if name == "durable":
                    hooked.save(step, model=model, optimizer=opt)
                elif name == "plain":
                    bare.save(step, model=model, optimizer=opt)
                else:
                    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, root / "t.pt")
                dt = time.perf_counter() - t0
                store.flush()  # the rows of a round never pile up into the next one
                if r:
                    times[name].append(dt)
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_resume(rounds: int, rows: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    updates = rows // ROWS_PER_UPDATE
    checkpoint = int(updates * 0.99)
    times: dict[str, list[float]] = {"open": [], "resume": []}
    try:
        with RunStore(root / "src", flush_rows=10**9, flush_seconds=3600) as store:
            _queue_rows(store, 0, updates)
        for r in range(rounds + 1):
            work = root / f"r{r}"
            shutil.copytree(root / "src", work)
            t0 = time.perf_counter()
            store = RunStore(work, flush_seconds=3600)
            t1 = time.perf_counter()
            Telemetry(store).resume(checkpoint)
            t2 = time.perf_counter()
            store.close()
            if r:
                times["open"].append(t1 - t0)
                times["resume"].append(t2 - t1)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 11
    print(bench_env.versions(["torch", "safetensors"]))
    save = bench_save(rounds, updates=500)
    print("\n### (a) checkpoint save, median of", rounds, "rounds (32 MiB state, 7,000 queued rows)\n")
    print("| variant | seconds | ratio to the save without the hook |")
    print("|---|---|---|")
    for name in ("durable", "plain", "torch.save"):
        print(f"| {name} | {save[name]:.4f} | {save[name] / save['plain']:.3f} |")
    resume = bench_resume(rounds, rows=1_000_000)
    print("\n### (b) resume on a store of 10^6 rows, 1% past the checkpoint\n")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| open the store | {resume['open']:.4f} |")
    print(f"| Telemetry.resume (discard) | {resume['resume']:.4f} |")
    print(f"\nresume / open = {resume['resume'] / resume['open']:.2f}")


if __name__ == "__main__":
    main()
