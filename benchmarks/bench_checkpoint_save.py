"""How long a checkpoint save blocks the training thread, side by side with the peers (issue #13).

One state (an MLP with SGD momentum buffers, 256 MiB of tensors by default) is saved by:

* ``torch.save`` of ``{"model", "optimizer", "scheduler", "step"}``: what most hand-written loops do.
  Not fsynced: the data may still be in the page cache when it returns.
* ``torch.save`` + ``os.fsync``: the same, durable (what a crash-safe hand-written save must add).
* ``Checkpoints(...).save``, synchronous: safetensors + optimizer file + ``state.json``, every file
  hashed (SHA-256) as it is written, fsynced once, the manifest written last, renamed into place.
* ``Checkpoints(async_write=True).save``: the blocking part only (copy into reused CPU buffers).
* ``torch.distributed.checkpoint.save`` (DCP, one process, ``no_dist``): not fsynced by default.
* ``torch.distributed.checkpoint.async_save``: the blocking part only (DCP stages to CPU, then writes
  on a thread).
* ``Checkpoints(sharded=True).save``: the sharded format (DCP's files with ``sync_files``, each
  hashed as DCP writes it, ``state.json``, the manifest, the rename), synchronous and async.

Background writes are waited for (not timed) before the next measurement. Variants run in shuffled
rounds after a discarded warm-up round; the figure per variant is the median, and the ratio is the
median of per-round ratios to ``torch.save`` (each round's variants ran back to back, so a slow phase
of a shared machine hits both sides of a ratio).

Targets (issue #13): synchronous verified save <= 1.3x ``torch.save``; our async blocking time <= DCP
``async_save``'s.

Usage::

    python benchmarks/bench_checkpoint_save.py            # 256 MiB state, 9 rounds
    python benchmarks/bench_checkpoint_save.py --quick    # 64 MiB, 3 rounds (a smoke test)
    python benchmarks/bench_checkpoint_save.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env

from cosanneal.runtime import Checkpoints
from cosanneal.schedules import Cosine
from cosanneal.torch import Scheduler

SYNC_TARGET = 1.3  # verified synchronous save / torch.save, lower is better
VARIANTS = [
    "torch.save",
    "torch.save + fsync",
    "Checkpoints.save (sync, verified)",
    "Checkpoints.save (async_write=True)",
    "dcp.save",
    "dcp.async_save",
    "Checkpoints.save (sharded=True, sync)",
    "Checkpoints.save (sharded=True, async_write=True)",
]


def mlp(width: int) -> nn.Module:
    """Three linear layers: 8 * width^2 parameters (width 2048: 33.6M, 128 MiB; 256 MiB with momentum)."""
    return nn.Sequential(
        nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, 2 * width), nn.ReLU(),
        nn.Linear(2 * width, width),
    )  # fmt: skip


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(rounds: int, width: int, root: Path) -> tuple[dict[str, list[float]], int]:
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    model = mlp(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(8, width)).square().mean().backward()
    optimizer.step()  # the momentum buffers
    schedule = Cosine(peak_lr=0.01, cycle_steps=1000)
    scheduler = Scheduler(optimizer, schedule)
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) * 2
    sync = Checkpoints(root / "sync", keep_last=2, best=None)
    background = Checkpoints(root / "async", keep_last=2, best=None, async_write=True)
    sharded = Checkpoints(root / "sharded", keep_last=2, best=None, sharded=True)
    sharded_bg = Checkpoints(root / "sharded-async", keep_last=2, best=None, sharded=True, async_write=True)
    (root / "plain").mkdir()
    pending: list[Any] = []

    def plain(step: int, durable: bool) -> None:
        path = root / "plain" / f"step-{step % 2}.pt"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
            },
            path,
        )
        if durable:
            fsync_file(path)

    def dcp_state(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}

    def dcp_dir(step: int, kind: str) -> Path:
        path = root / kind / f"step-{step % 2}"
        shutil.rmtree(path, ignore_errors=True)  # (not timed: done before the clock starts)
        return path

    savers: dict[str, Callable[[int], None]] = {
        VARIANTS[0]: lambda s: plain(s, durable=False),
        VARIANTS[1]: lambda s: plain(s, durable=True),
        VARIANTS[2]: lambda s: sync.save(s, model=model, optimizer=optimizer, scheduler=scheduler),
        VARIANTS[3]: lambda s: background.save(s, model=model, optimizer=optimizer, scheduler=scheduler),
        VARIANTS[4]: lambda s: dcp.save(dcp_state(s), checkpoint_id=str(_dirs[s]), no_dist=True),
        VARIANTS[5]: lambda s: pending.append(
            dcp.async_save(dcp_state(s), checkpoint_id=str(_dirs[s]), no_dist=True)
        ),
        VARIANTS[6]: lambda s: sharded.save(s, model=model, optimizer=optimizer, scheduler=scheduler),
        VARIANTS[7]: lambda s: sharded_bg.save(s, model=model, optimizer=optimizer, scheduler=scheduler),
    }
    _dirs: dict[int, Path] = {}
    out: dict[str, list[float]] = {v: [] for v in VARIANTS}
    step = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's notes about no_dist and the process group
        for r, order in bench_env.shuffled_rounds(VARIANTS, rounds, seed=13):
            for variant in order:
                step += 1
                if variant.startswith("dcp"):
                    _dirs[step] = dcp_dir(step, variant.replace(".", "-"))
                start = time.perf_counter()
                savers[variant](step)
                elapsed = time.perf_counter() - start
                background.wait()  # background writes end before the next measurement (not timed)
                sharded_bg.wait()
                while pending:
                    pending.pop().result()
                if r:
                    out[variant].append(elapsed)
    background.close()
    sharded_bg.close()
    sync.close()
    scheduler.close()
    return out, state_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 MiB state, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (after one warm-up)")
    parser.add_argument("--width", type=int, default=None, help="MLP width (2048: 256 MiB of state)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir on /work)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = args.rounds or (3 if args.quick else 9)
    width = args.width or (1024 if args.quick else 2048)
    base = args.dir or (Path("/work") if Path("/work").is_dir() else None)
    root = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=base))
    try:
        out, state_bytes = run(rounds + 1, width, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(bench_env.versions(["torch", "safetensors"]))
    print(f"state: {state_bytes / 2**20:.0f} MiB of tensors; {rounds} timed rounds; disk: {root.parent}")
    print()
    print("| save | blocks (ms, median) | min-max (ms) | ÷ torch.save (median of per-round ratios) |")
    print("|---|---:|---:|---:|")
    base_times = out[VARIANTS[0]]
    ratios: dict[str, float] = {}
    for variant in VARIANTS:
        times = out[variant]
        ratios[variant] = statistics.median(t / b for t, b in zip(times, base_times, strict=True))
        print(
            f"| {variant} | {statistics.median(times) * 1e3:.0f} | {min(times) * 1e3:.0f}-{max(times) * 1e3:.0f}"
            f" | {ratios[variant]:.3f} |"
        )
    sync_ratio = ratios[VARIANTS[2]]
    async_vs_dcp = statistics.median(a / d for a, d in zip(out[VARIANTS[3]], out[VARIANTS[5]], strict=True))
    sharded_vs_dcp = statistics.median(a / d for a, d in zip(out[VARIANTS[6]], out[VARIANTS[4]], strict=True))
    sharded_async = statistics.median(a / d for a, d in zip(out[VARIANTS[7]], out[VARIANTS[5]], strict=True))
    print()
    print(
        f"sharded sync save ÷ dcp.save = {sharded_vs_dcp:.3f} (the manifest, digests and commit on top of DCP)"
    )
    print(f"sharded async blocking ÷ dcp.async_save blocking = {sharded_async:.3f}")
    verdicts = [
        (
            f"sync verified save ÷ torch.save = {sync_ratio:.3f} (target <= {SYNC_TARGET})",
            sync_ratio <= SYNC_TARGET,
        ),
        (
            f"our async blocking ÷ dcp.async_save blocking = {async_vs_dcp:.3f} (target <= 1)",
            async_vs_dcp <= 1.0,
        ),
    ]
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print(f"load: {os.getloadavg()[0]:.2f} (1-minute average at the end)")
    return 1 if args.check and not all(ok for _, ok in verdicts) else 0


if __name__ == "__main__":
    raise SystemExit(main())
