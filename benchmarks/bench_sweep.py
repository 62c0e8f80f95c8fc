"""A sweep pruned at the restarts vs the unpruned grid over the same space: best metric and compute.

The grid trains every point of the space to the end (Optuna's ``GridSampler``, no pruner). Each pruned
sweep (``--repeats`` sampler seeds) lets TPE pick ``--trials`` points of the same space (``--trials 0``:
every point, in a random order), reports val_acc at every cycle end and lets the pruner stop a trial
there. Both train the
digits CNN with a cosine schedule of 3 cycles (lengths 1 : 2 : 4, so the rungs fall at 1/7 and 3/7 of
the run). Compute is counted in optimizer updates (the trials' ``steps``).

Target (issue #5): the pruned sweep's best within 0.5% of the grid's best at <= 0.35 of its updates.

    python benchmarks/bench_sweep.py                       # ~3-4 minutes on a small CPU
    python benchmarks/bench_sweep.py --pruner median --trials 0 --repeats 1
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from cosanneal.jobs.config import load_config
from cosanneal.jobs.sweep import run_sweep
from cosanneal.tune.sweep import SweepResult, SweepSettings, make_pruner, parse_space

GRID: dict[str, list[Any]] = {
    "schedule.peak_lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
    "schedule.min_ratio": [0.001, 0.1],
    "optimizer.weight_decay": [0.0, 5e-3],
}


def _config(epochs: int) -> dict[str, Any]:
    overrides = [f"epochs={epochs}", "device=cpu", "checkpoint.enabled=false", "telemetry.tensorboard=false",
                 "telemetry.progress=false"]  # fmt: skip
    path = Path(__file__).parents[1] / "src/cosanneal/zoo/configs/digits_sgdr.toml"
    cfg = load_config(path, overrides).to_dict()
    cfg["schedule"] = {"kind": "cosine", "peak_lr": 0.1, "min_ratio": 0.01, "cycle_steps": f"{1 / 7:.6f}dur",
                       "cycle_mult": 2, "max_cycles": 3}  # fmt: skip
    return cfg


def _study(
    name: str, root: Path, pruner: str, seed: int, config: dict[str, Any], trials: int | None
) -> tuple[SweepResult, list[float]]:
    """Run one study: ``trials=None`` visits the whole grid, else TPE samples ``trials`` of its points."""
    n = trials or len(list(itertools.product(*GRID.values())))
    settings = SweepSettings(study=name, runs_dir=root, trials=n, metric="val_acc")
    space = parse_space({k: {"choices": v} for k, v in GRID.items()})
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.GridSampler(GRID, seed=seed)
        if trials is None
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    )
    result = run_sweep(
        config, space, settings, log=lambda _m: None, pruner=make_pruner(pruner, 2), sampler=sampler
    )
    study = optuna.load_study(study_name=name, storage=settings.url)
    values = [float(t.value) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]  # type: ignore[arg-type]
    return result, values


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--pruner", default="sha", choices=["sha", "median", "hyperband"])
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of the first pruned sweep")
    parser.add_argument(
        "--repeats", type=int, default=3, help="pruned sweeps (sampler seeds seed, seed+1, ...)"
    )
    parser.add_argument("--trials", type=int, default=10, help="trials of a pruned sweep (0: the whole grid)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = _config(args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        grid, grid_values = _study("grid", Path(tmp), "none", 0, config, None)
        grid_s = time.perf_counter() - t0
        sweeps = []
        for seed in range(args.seed, args.seed + args.repeats):
            t1 = time.perf_counter()
            result, _ = _study(f"pruned-{seed}", Path(tmp), args.pruner, seed, config, args.trials or None)
            sweeps.append((seed, result, time.perf_counter() - t1))
    assert grid.best_value is not None
    near = sum(v >= grid.best_value * 0.995 for v in grid_values)
    print(
        f"digits CNN, {args.epochs} epochs ({args.epochs * 22} updates a run); grid of {grid.complete} points, "
        f"{near} of them within 0.5% of its best; pruned sweeps: {args.trials or 'all'} trials each, "
        f"pruner {args.pruner} at cycle ends"
    )
    print(
        "| study | trials (complete / pruned) | best val_acc | gap to grid best | updates | of grid | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| grid (unpruned) | {grid.complete} / 0 | {grid.best_value:.4f} | - | {grid.steps} | 1 | {grid_s:.0f} |"
    )
    gaps, costs = [], []
    for seed, r, seconds in sweeps:
        assert r.best_value is not None
        gaps.append((grid.best_value - r.best_value) / grid.best_value)
        costs.append(r.steps / grid.steps)
        print(
            f"| pruned, sampler seed {seed} | {r.complete} / {r.pruned} | {r.best_value:.4f} | {gaps[-1] * 100:.2f}% "
            f"| {r.steps} | {costs[-1]:.3f} | {seconds:.0f} |"
        )
    gap, cost = sum(gaps) / len(gaps), sum(costs) / len(costs)
    verdict = "meets" if gap <= 0.005 and cost <= 0.35 else "misses"
    print(
        f"mean over {len(sweeps)} sweeps: best-metric gap {gap * 100:.2f}% (target <= 0.5%), compute {cost:.3f} "
        f"of the grid (target <= 0.35): {verdict} the target"
    )


if __name__ == "__main__":
    main()
