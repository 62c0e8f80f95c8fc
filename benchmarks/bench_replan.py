"""Replan: what the per-update check costs, how continuous the hand-off is, and what a replanned run ends at.

1. **Cost of the check.** ``Loop.check_replan`` with no request waiting (a ``stat`` of a missing file, the
   state of a job that is never replanned) against the peer's per-update scheduler work measured in the
   same process: ``torch.optim.lr_scheduler.CosineAnnealingLR.step()`` on a one-parameter SGD.
2. **Continuity.** 20,000 random replans (random cosine family member, switch, new total, mode, cooldown
   shape) and the largest relative LR jump at the switch (the tolerance is ``1e-12``).
3. **Quality.** The digits job (``digits_sgdr.toml``'s CNN, one cosine cycle, 1 warmup epoch), 3 seeds:
   a run planned for 12 epochs from the start, against runs planned for 6 epochs and given 12 at the
   end of epoch 3 by ``replan`` (``stretch``; ``cooldown`` with a 20% 1-sqrt cooldown). Final validation
   ``val_loss`` and accuracy, mean and 95% CI (Student t).

Usage: python benchmarks/bench_replan.py [--seeds 3] [--out runs/bench-replan] [--skip-quality]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import time
import timeit
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "cosanneal" / "zoo" / "configs" / "digits_sgdr.toml"


def check_cost(tmp: Path) -> tuple[float, float, float]:
    """Seconds per ``check_replan`` (no request), per look at the file, and per ``CosineAnnealingLR.step()``."""
    import torch

    from cosanneal.jobs.loop import Loop, Position
    from cosanneal.runtime.distributed import World

    fake: Any = types.SimpleNamespace(
        p=types.SimpleNamespace(world=World(), run_dir=tmp, log=print),
        position=Position(),
        replans=[],
        _request_seen=None,
        _next_look=0.0,
    )
    fake._read_request = lambda force: Loop._read_request(fake, force)
    n = 200_000
    ours = min(timeit.repeat(lambda: Loop.check_replan(fake), number=n, repeat=5)) / n
    look = min(timeit.repeat(lambda: Loop.check_replan(fake, force=True), number=n // 10, repeat=5)) / (
        n // 10
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10**9)
    m = 50_000
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step() before optimizer.step(): the warning is not the cost
        peer = min(timeit.repeat(sched.step, number=m, repeat=5)) / m
    return ours, look, peer


def continuity(n: int = 20_000, seed: int = 0) -> tuple[float, int, int]:
    """The largest relative jump over ``n`` random replans, how many were made and how many refused."""
    from cosanneal import Cosine
    from cosanneal.schedules.replan import ReplanError, continuity, replan

    rng = random.Random(seed)
    worst, made, refused = 0.0, 0, 0
    for _ in range(n):
        s = Cosine(
            peak_lr=10 ** rng.uniform(-5, 1),
            min_ratio=rng.choice([None, 0.0, 0.1]),
            warmup_steps=rng.randint(0, 500),
            cycle_steps=rng.randint(10, 10**6),
            cycle_mult=rng.choice([1.0, 1.5, 2.0]),
            peak_decay=rng.choice([1.0, 0.8]),
            max_cycles=rng.choice([1, 3, None]),
        )
        end = float(s.cycle(0).length) * 3
        at = rng.randint(0, int(min(end, 10**7)))
        total = at + rng.randint(1, 10**7)
        mode = rng.choice(["stretch", "cycles", "cooldown"])
        try:
            r = replan(s, at=at, total=total, mode=mode, shape=rng.choice(["linear", "cosine", "1-sqrt"]))
        except ReplanError:
            refused += 1
            continue
        made += 1
        worst = max(worst, continuity(s, r.after, at))
    return worst, made, refused


def _ci(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def quality(out: Path, seeds: int) -> dict[str, dict[str, list[float]]]:
    """Final ``val_loss`` and ``val_acc`` per variant and seed (see the module docstring)."""
    from cosanneal import runs
    from cosanneal.jobs.config import config_from_dict, load_config
    from cosanneal.jobs.replan import ReplanRequest, request_replan, run_plan
    from cosanneal.jobs.trainer import Trainer

    base = load_config(CONFIG).to_dict()
    schedule = {
        "kind": "cosine",
        "peak_lr": 0.1,
        "min_ratio": 0.01,
        "warmup_steps": "1ep",
        "cycle_steps": "0.0dur",
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"val_loss": [], "val_acc": []}
        for name in ("planned-12ep", "replan-stretch", "replan-cooldown-20%")
    }
    for seed in range(seeds):
        for name in results:
            epochs = 12 if name == "planned-12ep" else 6
            sched = {**schedule, "cycle_steps": f"{epochs - 1}ep"}
            cfg = {**base, "name": name, "seed": seed, "epochs": epochs, "schedule": sched}
            cfg["checkpoint"] = {**base.get("checkpoint", {}), "keep_cycle_ends": False}
            cfg["telemetry"] = {**base.get("telemetry", {}), "tensorboard": False, "progress": False}
            run_dir = out / f"{name}-seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            request = None
            if name != "planned-12ep":
                mode = "stretch" if name == "replan-stretch" else "cooldown"
                request = ReplanRequest(
                    total=12 * 22,
                    mode=mode,
                    **({"cooldown": "0.2", "shape": "1-sqrt"} if mode == "cooldown" else {}),
                )

            def on_eval(
                updates: int, _m: dict[str, float], _e: bool, run_dir: Path = run_dir, request: Any = request
            ) -> bool:
                if request is not None and updates == 3 * 22:
                    plan = run_plan(run_dir)
                    request_replan(run_dir, request, schedule=plan.schedule, at=[updates])
                return False

            result = Trainer(
                config_from_dict(cfg), run_dir, progress=False, log=lambda _: None, on_eval=on_eval
            ).run()
            assert result.steps == 12 * 22, (name, result.steps)
            with runs.open(run_dir) as run:
                for metric, values in results[name].items():
                    values.append(float(run.scalar(metric)[1][-1]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-replan"))
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ours, look, peer = check_cost(args.out)
    print(f"check_replan (no request): {ours * 1e9:.0f} ns per update ({look * 1e9:.0f} ns per look at the "
          f"file, one per {0.25:g} s); CosineAnnealingLR.step(): {peer * 1e9:.0f} ns; ratio {ours / peer:.3f}x")  # fmt: skip
    t0 = time.perf_counter()
    worst, made, refused = continuity()
    print(f"continuity: {made} replans ({refused} refused with a reason), largest relative jump {worst:.3g} "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    if not args.skip_quality:
        results = quality(args.out, args.seeds)
        for name, metrics in results.items():
            for metric, values in metrics.items():
                mean, half = _ci(values)
                print(f"{name:22s} {metric:8s} {mean:.4f} ± {half:.4f} (95% CI, n={len(values)}): "
                      + ", ".join(f"{v:.4f}" for v in values))  # fmt: skip
    print(f"cpus {os.cpu_count()}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
