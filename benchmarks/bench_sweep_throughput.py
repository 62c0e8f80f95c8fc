"""Sweep throughput on SQLite and PostgreSQL with 1, 2, 4 workers, and pruning at the restarts vs Optuna's.

Part 1, throughput: one study of ``--trials`` short trials (the blobs MLP, 2 epochs of 20 updates, no
checkpoints) run by 1, 2 and 4 worker processes (``cosanneal sweep``, the command a user starts on each
machine) sharing the storage: the default SQLite file, and a PostgreSQL server this script starts itself
(Debian's binaries, ``initdb`` into a temporary directory, a Unix socket: ``tests/tune/pg_server.py``).
Trials per hour = trials / wall time from the first worker's start to the last one's exit (process start
included: it is what a sweep pays). The storage kinds and worker counts run interleaved, in a shuffled
order per round, so a load change on the machine hits every row alike; the ratios are of the same run.

Part 2, pruning quality at the same budget (``--trials`` per sweep, the same TPE sampler seeds): the
digits CNN with 3 cosine cycles (1 : 2 : 4) searched over peak LR, floor ratio and weight decay;
cosanneal's pruners report at the **cycle ends** (step = cycle index: median, hyperband, sha), Optuna's
``HyperbandPruner()`` and ``SuccessiveHalvingPruner()`` (their defaults) get every evaluation
(step = updates), as Optuna's examples report. Best val_acc and cost (updates, relative to the unpruned
sweep of the same seeds), mean over ``--seeds`` seeds.

    python benchmarks/bench_sweep_throughput.py            # the figures (~25 min on 2 cores)
    python benchmarks/bench_sweep_throughput.py --quick    # a smoke run (~3 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tune"))
from bench_env import shuffled_rounds, versions
from pg_server import PgServer, find_initdb, running_server
from sweep_blobs import sweep_blobs, sweep_worker

from cosanneal.jobs.config import load_config
from cosanneal.jobs.sweep import run_sweep
from cosanneal.tune.sweep import SweepResult, SweepSettings, make_pruner, parse_space

ROOT = Path(__file__).resolve().parents[1]
# 640 training samples / 32 = 20 updates an epoch; 2 epochs; 2 cycles (12 + 24 updates, the rest cut)
BLOBS = sweep_blobs("blobs-throughput", epochs=2, max_cycles=2)
QUALITY_SPACE = {
    "schedule.peak_lr": {"low": 0.003, "high": 1.0, "log": True},
    "schedule.min_ratio": {"low": 0.001, "high": 0.1, "log": True},
    "optimizer.weight_decay": {"choices": [0.0, 5e-3]},
}
#: name -> (pruner, rungs): cosanneal's pruners at the restarts, Optuna's at every evaluation.
PRUNING: dict[str, tuple[str | None, str]] = {
    "none (unpruned)": ("none", "cycles"),
    "cosanneal median @ cycle ends": ("median", "cycles"),
    "cosanneal hyperband @ cycle ends": ("hyperband", "cycles"),
    "cosanneal sha @ cycle ends": ("sha", "cycles"),
    "Optuna HyperbandPruner() @ evals": (None, "evals"),
    "Optuna SuccessiveHalvingPruner() @ evals": (None, "evals"),
}


# ---- part 1: throughput --------------------------------------------------------------------------
def _study_wall(url: str, study: str, workers: int, trials: int, root: Path) -> float:
    """Seconds for ``workers`` processes to finish a study of ``trials`` trials on ``url``."""
    config, space = root / "cfg.json", root / "space.json"
    config.write_text(json.dumps(BLOBS))
    space.write_text(json.dumps({"schedule.peak_lr": {"low": 0.05, "high": 0.3}}))
    args = ("--storage", url, "--trials", str(trials), "--pruner", "none")
    t0 = time.perf_counter()
    procs = [
        sweep_worker(config, space, root / "runs", *args, study=study, output=subprocess.PIPE)
        for _ in range(workers)
    ]
    errors = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"a worker exited with {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    done = optuna.load_study(study_name=study, storage=url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    if len(done) != trials:
        raise SystemExit(f"study {study} has {len(done)} complete trials, not {trials}")
    return wall


@contextlib.contextmanager
def _postgres() -> Iterator[PgServer | None]:
    initdb = find_initdb()
    if initdb is None:
        yield None
        return
    with running_server(initdb) as server:
        yield server


def throughput(trials: int, repeats: int, workers: list[int], root: Path) -> None:
    with _postgres() as server:
        kinds = ["sqlite"] + (["postgresql"] if server is not None else [])
        cases = [(k, w) for k in kinds for w in workers]
        walls: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
        for rnd, order in shuffled_rounds(cases, repeats, seed=0):
            for kind, n in order:
                name = f"t{rnd}_{kind}_{n}"
                folder = root / name
                folder.mkdir(parents=True)
                url = (
                    f"sqlite:///{folder / 'optuna.db'}" if kind == "sqlite" else server.create_database(name)
                )  # type: ignore[union-attr]
                wall = _study_wall(url, name, n, trials, folder)
                if rnd > 0:  # round 0 is the warm-up (page cache, the server's first connections)
                    walls[(kind, n)].append(wall)
    if server is None:
        print("PostgreSQL: no initdb (apt-get install postgresql); its rows are left out")
    print(
        f"\nthroughput: {trials} trials a study (blobs MLP, 40 updates a trial), median of {repeats} round(s) after a warm-up round"
    )
    print("| storage | workers | wall s | trials/hour | vs 1 worker | vs SQLite |")
    print("|---|---|---|---|---|---|")
    for kind, n in cases:
        wall = statistics.median(walls[(kind, n)])
        one = statistics.median(walls[(kind, workers[0])])
        sqlite = statistics.median(walls[("sqlite", n)])
        print(
            f"| {kind} | {n} | {wall:.1f} | {trials / wall * 3600:.0f} | {one / wall:.2f}x | {sqlite / wall:.2f}x |"
        )


# ---- part 2: pruning quality ---------------------------------------------------------------------
def _digits(epochs: int) -> dict[str, Any]:
    overrides = [f"epochs={epochs}", "device=cpu", "checkpoint.enabled=false", "telemetry.tensorboard=false",
                 "telemetry.progress=false"]  # fmt: skip
    cfg = load_config(ROOT / "src/cosanneal/zoo/configs/digits_sgdr.toml", overrides).to_dict()
    cfg["schedule"] = {"kind": "cosine", "peak_lr": 0.1, "min_ratio": 0.01, "cycle_steps": f"{1 / 7:.6f}dur",
                       "cycle_mult": 2, "max_cycles": 3}  # fmt: skip
    return cfg


def _pruner(name: str) -> optuna.pruners.BasePruner:
    pruner, _ = PRUNING[name]
    if pruner is not None:
        return make_pruner(pruner, startup_trials=2)
    if name.startswith("Optuna HyperbandPruner"):
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.SuccessiveHalvingPruner()


def _quality_sweep(name: str, seed: int, trials: int, config: dict[str, Any], root: Path) -> SweepResult:
    _, rungs = PRUNING[name]
    study = f"q{seed}-{list(PRUNING).index(name)}"
    settings = SweepSettings(study=study, runs_dir=root, trials=trials, metric="val_acc", rungs=rungs)  # type: ignore[arg-type]
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    space = parse_space(QUALITY_SPACE)
    return run_sweep(config, space, settings, log=lambda _m: None, pruner=_pruner(name), sampler=sampler)


def quality(trials: int, seeds: int, epochs: int, root: Path) -> None:
    config = _digits(epochs)
    results: dict[str, list[tuple[SweepResult, float]]] = {n: [] for n in PRUNING}
    order = list(PRUNING)
    random.Random(1).shuffle(order)  # no row always runs first, on a cold machine
    for name in order:
        for seed in range(seeds):
            t0 = time.perf_counter()
            result = _quality_sweep(name, seed, trials, config, root)
            results[name].append((result, time.perf_counter() - t0))
    base = results["none (unpruned)"]
    print(f"\npruning quality: digits CNN, {epochs} epochs ({epochs * 22} updates a run), 3 cycles (1 : 2 : 4), "
          f"{trials} TPE trials a sweep, seeds 0..{seeds - 1} (the same for every row)")  # fmt: skip
    print(
        "| pruning | best val_acc (mean) | min / max over seeds | complete / pruned | updates (mean) | of unpruned | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        best = [r.best_value or 0.0 for r, _ in rows]
        cost = statistics.mean(r.steps / b.steps for (r, _), (b, _) in zip(rows, base, strict=True))
        print(
            f"| {name} | {statistics.mean(best):.4f} | {min(best):.4f} / {max(best):.4f} "
            f"| {sum(r.complete for r, _ in rows)} / {sum(r.pruned for r, _ in rows)} "
            f"| {statistics.mean(r.steps for r, _ in rows):.0f} | {cost:.3f} | {sum(s for _, s in rows):.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few trials, one round, one seed")
    parser.add_argument("--trials", type=int, default=None, help="throughput: trials a study (default 24)")
    parser.add_argument("--repeats", type=int, default=None, help="throughput rounds (default 3)")
    parser.add_argument("--quality-trials", type=int, default=None, help="trials a pruned sweep (default 16)")
    parser.add_argument("--seeds", type=int, default=None, help="sampler seeds of part 2 (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of a part-2 trial (default 7)")
    parser.add_argument("--skip", choices=["throughput", "quality"], help="leave one part out")
    args = parser.parse_args()
    q = args.quick
    trials = args.trials or (4 if q else 24)
    repeats = args.repeats or (1 if q else 3)
    workers = [1, 2, 4]
    q_trials = args.quality_trials or (3 if q else 16)
    seeds = args.seeds or (1 if q else 3)
    epochs = args.epochs or (2 if q else 7)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(versions(["torch", "optuna", "sqlalchemy", "psycopg"]), f"; {os.cpu_count()} CPUs", "(quick)" * q)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if args.skip != "throughput":
            throughput(trials, repeats, workers, Path(tmp) / "throughput")
        if args.skip != "quality":
            quality(q_trials, seeds, epochs, Path(tmp) / "quality")


if __name__ == "__main__":
    main()
