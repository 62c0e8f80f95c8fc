"""Cost of the traced schedules: cosanneal's optax schedule vs optax's own, and a Keras fit epoch (issue #10).

JAX/optax, one process: the same warmup + cosine curve from ``cosanneal.jax.OptaxSchedule`` (built by
``compat.optax_warmup_cosine_decay``) and from ``optax.warmup_cosine_decay_schedule``, both jit-ed,
timed per call on a scalar int32 count (dispatch included, as a train step would not see it: the
schedule is then traced into the step) and on 10**6 counts at once. A second pair is SGDR with 12
restarts: a ``Cosine`` with ``cycle_mult=2`` vs ``optax.sgdr_schedule`` of 12 pieces (the same curve).
Rounds are interleaved and shuffled; the median over rounds is reported, ratio = ours / optax.

Keras, one process per backend (Keras fixes its backend at import): a tiny model (8 -> 16 -> 1,
4096 samples, batch 32, 128 updates per epoch) fit for one epoch with SGD driven by
``cosanneal.keras.LearningRateSchedule(compat.keras_cosine_decay(...))`` vs
``keras.optimizers.schedules.CosineDecay`` with the same arguments; median seconds per epoch.

Target: ours <= 1.5x optax per call, scalar and vectorised.

Usage::

    python benchmarks/bench_jax.py            # full run (~1-2 min)
    python benchmarks/bench_jax.py --quick    # short run
    python benchmarks/bench_jax.py --check    # exit 1 when the optax target is missed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_env

TARGET = 1.5
KERAS_BACKENDS = ("jax", "torch")
HERE = Path(__file__).resolve()


def _median_times(contenders: dict[str, Callable[[], Any]], rounds: int, reps: int) -> dict[str, float]:
    """Seconds per call of each contender: median over shuffled rounds of ``reps`` calls each."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r, order in bench_env.shuffled_rounds(list(contenders), rounds, seed=10):
        for name in order:
            fn = contenders[name]
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            elapsed = (time.perf_counter() - start) / reps
            if r:  # round 0 warms up (compilation, caches)
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_optax(rounds: int, scalar_reps: int, vector_reps: int) -> list[tuple[str, float, float]]:
    import jax
    import jax.numpy as jnp
    import optax

    from cosanneal.compat import optax_warmup_cosine_decay
    from cosanneal.jax import OptaxSchedule
    from cosanneal.schedules import Cosine

    kw = dict(init_value=0.0, peak_value=0.1, warmup_steps=1_000, decay_steps=100_000, end_value=1e-5)
    cycles = [
        dict(init_value=0.1, peak_value=0.1, warmup_steps=0, decay_steps=100 * 2**i, end_value=1e-5)
        for i in range(12)
    ]
    sgdr = Cosine(peak_lr=0.1, min_lr=1e-5, cycle_steps=100, cycle_mult=2, max_cycles=12)
    pairs = {
        "warmup_cosine_decay": (
            OptaxSchedule(optax_warmup_cosine_decay(**kw)),
            optax.warmup_cosine_decay_schedule(**kw),
        ),
        "SGDR, 12 cycles, cycle_mult=2": (OptaxSchedule(sgdr), optax.sgdr_schedule(cycles)),
    }
    counts = jnp.arange(10**6, dtype=jnp.int32)
    scalar = jnp.int32(54_321)
    rows = []
    for label, (ours, theirs) in pairs.items():
        ours_j, theirs_j = jax.jit(ours), jax.jit(theirs)
        same = float(jnp.max(jnp.abs(ours_j(counts) - theirs_j(counts))))
        assert same < 1e-6, (label, same)  # the same curve (float32)
        t_scalar = _median_times(
            {"ours": lambda f=ours_j: f(scalar).block_until_ready(), "optax": lambda f=theirs_j: f(scalar).block_until_ready()},
            rounds, scalar_reps,
        )  # fmt: skip
        t_vector = _median_times(
            {"ours": lambda f=ours_j: f(counts).block_until_ready(), "optax": lambda f=theirs_j: f(counts).block_until_ready()},
            rounds, vector_reps,
        )  # fmt: skip
        rows.append((f"{label}, scalar count (jit)", t_scalar["ours"], t_scalar["optax"]))
        rows.append((f"{label}, 10**6 counts (jit)", t_vector["ours"], t_vector["optax"]))
    return rows


def keras_worker(rounds: int) -> dict[str, Any]:
    """Run inside a process whose KERAS_BACKEND is set: seconds per fit epoch, ours vs CosineDecay."""
    import keras
    import numpy as np

    from cosanneal.compat import keras_cosine_decay
    from cosanneal.keras import LearningRateSchedule

    kw = dict(initial_learning_rate=0.1, decay_steps=10_000, alpha=0.01)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 8)).astype("float32")
    y = (x @ np.linspace(-1, 1, 8)).astype("float32")[:, None]

    def model(schedule: Any) -> Any:
        m = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
        return m

    models = {
        "ours": model(LearningRateSchedule(keras_cosine_decay(**kw))),
        "keras": model(keras.optimizers.schedules.CosineDecay(**kw)),
    }
    times = _median_times(
        {name: (lambda m=m: m.fit(x, y, batch_size=32, epochs=1, verbose=0)) for name, m in models.items()},
        rounds, 1,
    )  # fmt: skip
    return {"backend": keras.backend.backend(), **times}


def bench_keras(rounds: int) -> list[tuple[str, float, float]]:
    rows = []
    for backend in KERAS_BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        env = {**os.environ, "KERAS_BACKEND": backend}
        proc = subprocess.run(
            [sys.executable, str(HERE), "--keras-worker", "--rounds", str(rounds)],
            capture_output=True, text=True, env=env, timeout=1200,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"Keras {backend} worker failed:\n{proc.stderr[-2000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((f"Keras {got['backend']}: fit epoch, 128 updates", got["ours"], got["keras"]))
    return rows


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--check", action="store_true", help="exit 1 when ours is over 1.5x optax")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keras-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    if args.keras_worker:
        print(json.dumps(keras_worker(rounds)))
        return 0

    print(bench_env.versions(["jax", "jaxlib", "optax", "keras", "torch", "numpy"]))
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, {rounds} rounds (median), load average {os.getloadavg()[0]:.2f}"
    )
    optax_rows = bench_optax(
        rounds, scalar_reps=300 if args.quick else 2000, vector_reps=5 if args.quick else 20
    )
    keras_rows = bench_keras(max(2, rounds // 2))
    print()
    print(f"| {'case':<60} | {'cosanneal':>10} | {'peer':>10} | {'ratio':>6} |")
    print(f"|{'-' * 62}|{'-' * 12}:|{'-' * 12}:|{'-' * 7}:|")
    missed = []
    for label, ours, peer in optax_rows + keras_rows:
        ratio = ours / peer
        print(f"| {label:<60} | {_fmt(ours):>10} | {_fmt(peer):>10} | {ratio:6.2f} |")
        if label in {r[0] for r in optax_rows} and ratio > TARGET:
            missed.append(label)
    print(
        f"\ntarget: cosanneal <= {TARGET}x optax per call: {'missed for ' + ', '.join(missed) if missed else 'met'}"
    )
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
