"""Cooldown branches vs separate cosine runs: compute and final validation loss on the digits job.

The digits job (``digits_sgdr.toml``'s CNN, 22 updates per epoch, peak LR 0.1, floor 0.001, 1 warmup
epoch) and four budgets of 5, 10, 15 and 20 epochs (110, 220, 330 and 440 updates):

* **branches**: one stable run (warmup, then constant; a WSD schedule whose decay starts past its end)
  of 16 epochs (352 updates, a checkpoint every epoch), and ``cosanneal branch --at 88,176,264,352
  --cooldown 0.2`` (linear, to the same floor): each branch's own total is one of the budgets;
* **cosine**: one separate warmup + cosine run per budget, decaying to the same floor at its end.

Printed: updates trained by each approach (``cosanneal plan --branches``' accounting) and the final
``val_loss`` / ``val_acc`` of every branch and cosine run per seed, mean over seeds.

Usage: python benchmarks/bench_branch.py [--seeds 2] [--out runs/bench-branch]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "cosanneal" / "zoo" / "configs" / "digits_sgdr.toml"
PER_EPOCH = 22
BUDGETS = (5, 10, 15, 20)  # epochs


def _config(base: dict[str, Any], name: str, seed: int, epochs: int, schedule: dict[str, Any]) -> Any:
    from cosanneal.jobs.config import config_from_dict

    cfg = {**base, "name": name, "seed": seed, "epochs": epochs, "schedule": schedule}
    cfg["checkpoint"] = {"keep_last": 100, "keep_cycle_ends": False, "every_steps": PER_EPOCH}
    cfg["telemetry"] = {**base.get("telemetry", {}), "tensorboard": False, "progress": False}
    return config_from_dict(cfg)


def final(run_dir: Path) -> tuple[float, float]:
    """The run's last ``val_loss`` and ``val_acc``."""
    from cosanneal import runs

    with runs.open(run_dir) as run:
        return float(run.scalar("val_loss")[1][-1]), float(run.scalar("val_acc")[1][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-branch")
    args = parser.parse_args()

    from cosanneal.analysis.branches import find_branches
    from cosanneal.jobs.branch import branch
    from cosanneal.jobs.config import load_config
    from cosanneal.jobs.trainer import Trainer

    base = load_config(CONFIG).to_dict()
    quiet = lambda _: None  # noqa: E731
    stable_epochs = round(0.8 * BUDGETS[-1])
    results: dict[str, list[tuple[float, float]]] = {}
    seconds = {"branches": 0.0, "cosine": 0.0}
    for seed in range(args.seeds):
        root = args.out / f"seed{seed}"
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        wsd = {
            "kind": "wsd", "peak_lr": 0.1, "warmup_steps": PER_EPOCH, "stable_steps": 10**6,
            "decay_steps": 1, "min_lr_ratio": 0.01, "decay_shape": "linear",
        }  # fmt: skip
        parent = root / "stable"
        Trainer(_config(base, "stable", seed, stable_epochs, wsd), parent, progress=False, log=quiet).run()
        at = [round(0.8 * b) * PER_EPOCH for b in BUDGETS]
        branch(parent, at=at, cooldown=0.2, floor=0.001, log=quiet)
        seconds["branches"] += time.perf_counter() - t0
        for b in find_branches(parent):
            results.setdefault(f"branch {b.total}", []).append(final(b.run_dir))
        t0 = time.perf_counter()
        for epochs in BUDGETS:
            total = epochs * PER_EPOCH
            cos = {
                "kind": "cosine", "peak_lr": 0.1, "min_ratio": 0.01, "warmup_steps": PER_EPOCH,
                "cycle_steps": total - PER_EPOCH,
            }  # fmt: skip
            run_dir = root / f"cosine-{total}"
            Trainer(_config(base, "cosine", seed, epochs, cos), run_dir, progress=False, log=quiet).run()
            results.setdefault(f"cosine {total}", []).append(final(run_dir))
        seconds["cosine"] += time.perf_counter() - t0

    stable = round(0.8 * BUDGETS[-1]) * PER_EPOCH
    branch_updates = stable + sum(round(0.2 * b * PER_EPOCH) for b in BUDGETS)
    cosine_updates = sum(b * PER_EPOCH for b in BUDGETS)
    print(f"updates: stable {stable} + branches = {branch_updates}; separate cosine runs = {cosine_updates}")
    print(f"saved: {1 - branch_updates / cosine_updates:.1%}")
    print(f"wall (all seeds): branches {seconds['branches']:.1f} s, cosine {seconds['cosine']:.1f} s")
    print(
        "| budget (updates) | branch val_loss | cosine val_loss | branch val_acc | cosine val_acc | per seed (loss) |"
    )
    print("|---|---|---|---|---|---|")
    for epochs in BUDGETS:
        total = epochs * PER_EPOCH
        br, co = results[f"branch {total}"], results[f"cosine {total}"]
        seeds = "; ".join(f"{a[0]:.4f} vs {c[0]:.4f}" for a, c in zip(br, co, strict=True))
        print(
            f"| {total} | {statistics.mean(x[0] for x in br):.4f} | {statistics.mean(x[0] for x in co):.4f} "
            f"| {statistics.mean(x[1] for x in br):.4f} | {statistics.mean(x[1] for x in co):.4f} | {seeds} |"
        )


if __name__ == "__main__":
    main()
