"""Write the optax and Keras golden tables in ``tests/golden/`` from the real libraries, in float64.

Usage (from the repository root, in the project's virtual environment)::

    python scripts/golden/make_golden.py            # writes tests/golden/optax.json and keras.json
    python scripts/golden/make_golden.py --float32  # also prints how far the peers' float32 default is

optax runs with ``jax_enable_x64``; Keras runs with ``KERAS_BACKEND=torch`` and
``keras.config.set_floatx("float64")`` (its jax backend would need x64 too, its numpy backend stays
float32). Each case records the peer function, its keyword arguments as the user writes them, the
steps (inside the horizon, at every boundary, and well past the end) and the peer's values. The
cosanneal presets take the same keyword arguments, so the tests replay every case without the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden"

OPTAX_CASES: list[dict[str, Any]] = [
    {
        "name": "warmup_linear_to_zero",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(init_value=0.0, peak_value=1e-3, warmup_steps=100, decay_steps=1000),
    },
    {
        "name": "no_warmup_end_value",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(init_value=1e-5, peak_value=0.1, warmup_steps=0, decay_steps=500, end_value=1e-3),
    },
    {
        "name": "exponent_2_floor",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(
            init_value=0.01, peak_value=0.5, warmup_steps=50, decay_steps=777, end_value=0.05, exponent=2.0
        ),
    },
    {
        "name": "exponent_half",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=110, exponent=0.5),
    },
    {
        "name": "warmup_down_from_above_peak",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(init_value=0.2, peak_value=0.1, warmup_steps=20, decay_steps=220),
    },
    {
        "name": "end_above_peak",
        "function": "warmup_cosine_decay_schedule",
        "kwargs": dict(init_value=0.0, peak_value=0.1, warmup_steps=5, decay_steps=105, end_value=0.3),
    },
    {
        "name": "sgdr_three_mixed_cycles",
        "function": "sgdr_schedule",
        "kwargs": {
            "cosine_kwargs": [
                dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100, end_value=0.01),
                dict(
                    init_value=0.01,
                    peak_value=0.5,
                    warmup_steps=5,
                    decay_steps=200,
                    end_value=0.005,
                    exponent=1.5,
                ),
                dict(init_value=0.0, peak_value=0.25, warmup_steps=0, decay_steps=150),
            ]
        },
    },
    {
        "name": "sgdr_equal_cycles_no_warmup",
        "function": "sgdr_schedule",
        "kwargs": {
            "cosine_kwargs": [dict(init_value=0.0, peak_value=0.1, warmup_steps=0, decay_steps=64)] * 4
        },
    },
]

KERAS_CASES: list[dict[str, Any]] = [
    {"name": "plain", "function": "CosineDecay", "kwargs": dict(initial_learning_rate=0.1, decay_steps=1000)},
    {
        "name": "alpha",
        "function": "CosineDecay",
        "kwargs": dict(initial_learning_rate=0.1, decay_steps=1000, alpha=0.05),
    },
    {
        "name": "warmup_alpha",
        "function": "CosineDecay",
        "kwargs": dict(
            initial_learning_rate=0.0, decay_steps=500, alpha=0.1, warmup_target=0.3, warmup_steps=100
        ),
    },
    {
        "name": "warmup_from_nonzero",
        "function": "CosineDecay",
        "kwargs": dict(initial_learning_rate=0.01, decay_steps=333, warmup_target=0.02, warmup_steps=7),
    },
    {
        "name": "restarts_default_t_mul_2",
        "function": "CosineDecayRestarts",
        "kwargs": dict(initial_learning_rate=0.1, first_decay_steps=100),
    },
    {
        "name": "restarts_t_mul_1_5_m_mul_0_8_alpha",
        "function": "CosineDecayRestarts",
        "kwargs": dict(initial_learning_rate=0.1, first_decay_steps=10, t_mul=1.5, m_mul=0.8, alpha=0.01),
    },
    {
        "name": "restarts_t_mul_1",
        "function": "CosineDecayRestarts",
        "kwargs": dict(initial_learning_rate=1.0, first_decay_steps=7, t_mul=1.0, m_mul=0.9),
    },
    {
        "name": "restarts_t_mul_1_5_alpha",
        "function": "CosineDecayRestarts",
        "kwargs": dict(initial_learning_rate=0.5, first_decay_steps=20, t_mul=1.5, alpha=0.1),
    },
    {
        "name": "restarts_t_mul_3_m_mul_half",
        "function": "CosineDecayRestarts",
        "kwargs": dict(initial_learning_rate=0.3, first_decay_steps=13, t_mul=3.0, m_mul=0.5, alpha=0.2),
    },
]


def _steps(boundaries: list[float], end: float, extra: Sequence[float] = ()) -> list[float]:
    """Every whole step to 300, then a sparse grid to ``end``, each boundary +-2 and a few fractions."""
    steps: set[float] = set(range(0, min(int(end), 300) + 1))
    steps.update(int(x) for x in np.linspace(0, end, 120))
    for b in boundaries:
        for d in (-2, -1, -0.5, 0, 0.5, 1, 2):
            if b + d >= 0:
                steps.add(b + d)
    steps.update(extra)
    return sorted(float(s) for s in steps)


def _optax_steps(case: dict[str, Any]) -> list[float]:
    kw = case["kwargs"]
    pieces = kw.get("cosine_kwargs", [kw])
    bounds: list[float] = []
    start = 0.0
    for p in pieces:
        bounds += [start + p["warmup_steps"], start + p["decay_steps"]]
        start += p["decay_steps"]
    return _steps(bounds, 1.5 * start, [start + 10**4, start + 10**6, 12.25, 33.75])


def _keras_boundaries(kw: dict[str, Any], end: float) -> list[float]:
    if "first_decay_steps" in kw:
        out, b, length = [], 0.0, float(kw["first_decay_steps"])
        while b + length < end:
            b += length
            out.append(b)
            length *= kw.get("t_mul", 2.0)
        return out
    w = kw.get("warmup_steps", 0) if kw.get("warmup_target") is not None else 0
    return [w, w + kw["decay_steps"]]


def _keras_steps(case: dict[str, Any]) -> list[float]:
    kw = case["kwargs"]
    if "first_decay_steps" in kw:
        end = 2500.0
        extra = [10**5 + 0.5, 987654.0]
    else:
        w = kw.get("warmup_steps", 0) if kw.get("warmup_target") is not None else 0
        end = 1.5 * (w + kw["decay_steps"])
        extra = [10**5, 10**6, 12.25, 33.75]
    return _steps(_keras_boundaries(kw, end), end, extra)


def optax_values(case: dict[str, Any], steps: list[float], x64: bool = True) -> list[float]:
    """The real optax schedule at ``steps`` (float64 when ``x64``)."""
    import jax
    import optax

    jax.config.update("jax_enable_x64", x64)  # type: ignore[no-untyped-call]
    fn = getattr(optax, case["function"])(**case["kwargs"])
    dtype = np.float64 if x64 else np.float32
    out = [float(fn(np.asarray(t, dtype=dtype))) for t in steps]
    jax.config.update("jax_enable_x64", False)  # type: ignore[no-untyped-call]
    return out


def keras_values(case: dict[str, Any], steps: list[float], floatx: str = "float64") -> list[float]:
    """The real Keras schedule at ``steps`` in ``floatx``."""
    import keras

    before = keras.config.floatx()
    keras.config.set_floatx(floatx)
    try:
        fn = getattr(keras.optimizers.schedules, case["function"])(**case["kwargs"])
        out = []
        for t in steps:
            value = fn(t)
            if floatx == "float64" and str(value.dtype).split(".")[-1] != "float64":
                raise RuntimeError(f"Keras computed in {value.dtype}; use KERAS_BACKEND=torch")
            out.append(float(value))
    finally:
        keras.config.set_floatx(before)
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a temporary file beside ``path``, then rename."""
    text = json.dumps(data, indent=1) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        fh.write(text)
        tmp = Path(fh.name)
    tmp.chmod(0o644)
    tmp.replace(path)


def build(peer: str) -> dict[str, Any]:
    """The golden table of ``peer`` (``"optax"`` or ``"keras"``)."""
    if peer == "optax":
        import jax
        import optax

        cases, steps_of = OPTAX_CASES, _optax_steps
        values_of: Callable[[dict[str, Any], list[float]], list[float]] = optax_values
        versions = {"optax": optax.__version__, "jax": jax.__version__, "mode": "jax_enable_x64"}
    else:
        import keras

        cases, steps_of, values_of = KERAS_CASES, _keras_steps, keras_values
        versions = {"keras": keras.__version__, "backend": keras.backend.backend(), "floatx": "float64"}
    out = []
    for case in cases:
        steps = steps_of(case)
        out.append({**case, "steps": steps, "values": values_of(case, steps)})
    return {"generator": "scripts/golden/make_golden.py", "peer": peer, "versions": versions, "cases": out}


def float32_report() -> None:
    """Print how far each peer's float32 default is from its float64 values.

    ``gap/peak``: the largest absolute gap over the schedule's largest value; ``worst step``: where
    the relative gap is largest (a cycle assigned to the wrong side of a restart shows up there).
    """
    for peer, cases, steps_of in (("optax", OPTAX_CASES, _optax_steps), ("keras", KERAS_CASES, _keras_steps)):
        for case in cases:
            steps = steps_of(case)
            if peer == "optax":
                hi, lo = optax_values(case, steps), optax_values(case, steps, x64=False)
            else:
                hi, lo = keras_values(case, steps), keras_values(case, steps, "float32")
            a, b = np.asarray(hi), np.asarray(lo)
            gap = np.abs(a - b)
            rel = gap / np.maximum(np.abs(a), 1e-300)
            worst = int(np.argmax(rel))
            print(
                f"{peer:6s} {case['name']:36s} gap/peak {gap.max() / np.abs(a).max():.1e}  "
                f"worst step {steps[worst]:g}: float64 {a[worst]:.6g} float32 {b[worst]:.6g}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float32", action="store_true", help="print the peers' float32 deviations")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for peer in ("optax", "keras"):
        table = build(peer)
        _write(OUT / f"{peer}.json", table)
        print(f"wrote {OUT / f'{peer}.json'}: {len(table['cases'])} cases, {table['versions']}")
    if args.float32:
        float32_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
