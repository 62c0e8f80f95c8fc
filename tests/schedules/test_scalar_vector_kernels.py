"""``schedule(t)`` equals ``schedule([..., t, ...])`` bit for bit where numpy's kernels differ from libm.

On CPUs with AVX-512, numpy's array ``power`` is a vectorised kernel that differs from the C
library's ``pow`` by an ulp for a few percent of inputs, and with one exponent broadcast over an
array numpy squares, roots or inverts exactly (2, 0.5, -1) instead. A scalar path written with
Python's ``**`` then disagrees with the array path on such machines only (CI found it on one). These
cases pin the exponents that take each route; on a machine without AVX-512 they pass trivially.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cosanneal.schedules import Cosine
from cosanneal.schedules.base import Schedule, power, power_fixed
from cosanneal.schedules.baselines import Cyclic, Exponential, Polynomial, Step
from cosanneal.schedules.compat.optax_presets import OptaxCosine

STEPS = np.concatenate([np.arange(0.0, 700.0), [1234.5, 10450.0, 1.00045e6]])

CASES: dict[str, Any] = {
    "step_gamma": lambda: Step(lr=1.0, step_size=3, gamma=0.47715225318431),
    "exponential": lambda: Exponential(lr=1.0, gamma=0.9931),
    "polynomial_square": lambda: Polynomial(lr=1.0, total_steps=500, power=2.0),
    "polynomial_root": lambda: Polynomial(lr=1.0, total_steps=500, power=0.5),
    "polynomial_odd": lambda: Polynomial(lr=1.0, total_steps=500, power=1.37),
    "cyclic_exp_range": lambda: Cyclic(
        base_lr=0.1, max_lr=1.0, step_size_up=7, mode="exp_range", gamma=0.997
    ),
    "cosine_k_square": lambda: Cosine(1.0, cycle_steps=50, k=2.0),
    "cosine_k_root": lambda: Cosine(1.0, cycle_steps=50, k=0.5),
    "cosine_peak_decay": lambda: Cosine(1.0, cycle_steps=3, peak_decay=0.47715225318431),
    "cosine_exp_warmup": lambda: Cosine(
        1.0,
        warmup_steps=37,
        warmup_start_lr=1e-3,
        warmup_shape="exponential",
        cycle_steps=40,
        cycle_warmup_steps=9,
    ),
    "optax_exponent_square": lambda: OptaxCosine(0.0, 1.0, warmup_steps=10, decay_steps=300, exponent=2.0),
    "optax_exponent_odd": lambda: OptaxCosine(
        0.0, 1.0, warmup_steps=187, decay_steps=291.0, exponent=0.75390625
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_step_alone_equals_the_array(name: str) -> None:
    s: Schedule = CASES[name]()
    vector = s(STEPS)
    scalars = np.array([s(float(t)) for t in STEPS])
    bad = np.flatnonzero(vector != scalars)
    assert bad.size == 0, (
        f"{name}: steps {STEPS[bad][:5]} give {scalars[bad][:5]} alone, {vector[bad][:5]} in an array"
    )


def test_power_runs_the_kernel_an_array_of_exponents_gets() -> None:
    rng = np.random.default_rng(7)
    bases, exps = (
        rng.uniform(0.01, 1.0, 4000),
        np.concatenate([rng.uniform(0.1, 5.0, 3997), [2.0, 0.5, -1.0]]),
    )
    want = np.power(bases, exps)
    got = np.array([power(float(b), float(e)) for b, e in zip(bases, exps, strict=True)])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("exponent", [2.0, 0.5, -1.0, 1.37, 3.0])
def test_power_fixed_runs_the_kernel_one_broadcast_exponent_gets(exponent: float) -> None:
    bases = np.random.default_rng(11).uniform(0.01, 1.0, 4000)
    want = np.power(bases, exponent)
    assert np.array_equal(np.array([power_fixed(float(b), exponent) for b in bases]), want)
