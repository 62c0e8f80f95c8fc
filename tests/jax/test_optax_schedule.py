"""cosanneal.jax.OptaxSchedule: jit/vmap/grad, optax integration, exactness in float32 and x64, peers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from traced_cases import EPS32, NARROW_ATOL, assert_close, probe_steps, schedules

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from cosanneal import Cosine, ScheduleError  # noqa: E402
from cosanneal.compat import optax_sgdr, optax_warmup_cosine_decay  # noqa: E402
from cosanneal.jax import OptaxSchedule  # noqa: E402
from cosanneal.schedules import Schedule, Step  # noqa: E402
from cosanneal.schedules._traced import UntraceableScheduleError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROBES = 640  # probe arrays are padded to one length, so jit compiles once per schedule


@contextlib.contextmanager
def x64() -> Iterator[None]:
    """JAX in 64 bits inside the block (``jax_enable_x64``), restored after."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _probes(s: Schedule, limit: int) -> np.ndarray:
    steps = probe_steps(s, limit=limit)
    return np.resize(steps, PROBES) if steps.size <= PROBES else steps


def _build(s: Schedule) -> OptaxSchedule | None:
    try:
        return OptaxSchedule(s)
    except UntraceableScheduleError as exc:  # fractional lengths repeated forever, in float32
        assert "jax_enable_x64" in str(exc)
        return None


@settings(max_examples=25)
@given(schedules())
def test_float32_jit_vmap_agrees_with_the_core(s: Schedule) -> None:
    lr = _build(s)
    if lr is None:
        return
    steps = _probes(s, 2**31 - 2)
    got = jax.jit(jax.vmap(lr))(jnp.asarray(steps, dtype=jnp.int32))
    assert got.dtype == jnp.float32 and got.shape == steps.shape
    assert_close(np.asarray(got), s(steps), s, steps, wide=False)


@settings(max_examples=15)
@given(schedules())
def test_x64_agrees_with_the_core_to_1e_12(s: Schedule) -> None:
    steps = _probes(s, 2**53)
    with x64():
        got = jax.jit(OptaxSchedule(s))(jnp.asarray(steps))
    assert got.dtype == jnp.float64
    assert_close(np.asarray(got), s(steps), s, steps, wide=True)


SGDR = Cosine(
    peak_lr=0.1, warmup_steps=5, cycle_steps=10, cycle_mult=1.5, peak_decay=0.8, max_cycles=None, min_lr=1e-3
)


def test_scalar_counts_jitted_restart_exactly_on_time() -> None:
    lr = jax.jit(OptaxSchedule(SGDR))
    restarts = SGDR.restarts(400)  # 15, 30, 52.5, 86.25, ...: fractional restarts from cycle_mult=1.5
    assert restarts[:4] == [15, 30, 52.5, 86.25]
    for r in restarts:
        for t in (int(np.ceil(r)) - 1, int(np.ceil(r)), int(np.ceil(r)) + 1):
            got = lr(jnp.int32(t))
            assert got.shape == () and abs(float(got) - SGDR(t)) <= NARROW_ATOL * SGDR.peak, t


def test_traced_as_pure_jax_ops_without_callbacks() -> None:
    lr = OptaxSchedule(SGDR)
    text = str(jax.make_jaxpr(lr)(jnp.int32(7)))
    assert "callback" not in text and "f64" not in text
    assert "log1p" in text and "cos" in text  # the closed form, not a lookup of LR values
    out = jax.eval_shape(lr, jax.ShapeDtypeStruct((3, 4), jnp.int32))
    assert out.shape == (3, 4) and out.dtype == jnp.float32


def test_vectorised_over_a_million_counts() -> None:
    counts = np.arange(0, 10**6, dtype=np.int64)
    got = np.asarray(jax.jit(OptaxSchedule(SGDR))(jnp.asarray(counts, dtype=jnp.int32)))
    assert np.max(np.abs(got - SGDR(counts))) <= NARROW_ATOL * SGDR.peak


def test_count_types_and_bad_counts() -> None:
    lr = OptaxSchedule(SGDR)
    assert float(lr(20)) == pytest.approx(SGDR(20), rel=4 * EPS32)
    assert np.allclose(lr(np.array([0, 20, 31])), SGDR(np.array([0, 20, 31])), rtol=4 * EPS32)
    assert float(lr(jnp.uint32(20))) == float(lr(20))
    assert float(lr(np.float64(20.0))) == float(lr(20))  # a whole host float is a count
    with pytest.raises(ScheduleError, match=r"count must be an integer array .* got dtype float32"):
        lr(jnp.float32(3.0))
    with pytest.raises(ScheduleError, match=r"whole number of updates, got 2\.5"):
        lr(2.5)
    with pytest.raises(ScheduleError, match="step must be a finite number >= 0, got -1"):
        lr(-1)
    assert np.isnan(float(jax.jit(lr)(jnp.int32(-1))))  # inside jit a bad count cannot raise


def test_inject_hyperparams_uses_s_of_count_for_each_update() -> None:
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=OptaxSchedule(SGDR))
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    used, moved = [], []
    for _ in range(40):
        updates, state = update({"w": jnp.ones(3)}, state, params)
        used.append(float(state.hyperparams["learning_rate"]))
        moved.append(-float(updates["w"][0]))
    want = SGDR(np.arange(40))  # update k + 1 uses s(k): optax's count starts at 0 like cosanneal's step
    assert np.max(np.abs(np.array(used) - want)) <= NARROW_ATOL * SGDR.peak
    assert np.max(np.abs(np.array(moved) - want)) <= NARROW_ATOL * SGDR.peak


def test_sgd_training_loop_and_grad_through_the_optimizer() -> None:
    lr = OptaxSchedule(SGDR)
    opt = optax.sgd(learning_rate=lr)

    def loss(w: Any) -> Any:
        return 0.5 * jnp.sum(w**2)

    @jax.jit
    def step(w: Any, state: Any) -> tuple[Any, Any]:
        updates, state = opt.update(jax.grad(loss)(w), state, w)
        return optax.apply_updates(w, updates), state

    w, state = jnp.ones(2), opt.init(jnp.ones(2))
    expected = 1.0
    for k in range(30):
        w, state = step(w, state)
        expected *= 1.0 - SGDR(k)  # w <- w - s(k) w
    assert float(w[0]) == pytest.approx(expected, rel=1e-5)

    def loss_after_one_update(w0: Any) -> Any:  # differentiate through the optimizer's update
        updates, _ = opt.update(jax.grad(loss)(w0), state, w0)
        return loss(optax.apply_updates(w0, updates))

    g = jax.jit(jax.grad(loss_after_one_update))(jnp.array([2.0, -1.0]))
    factor = (1.0 - SGDR(30)) ** 2  # d/dw 0.5 ((1 - lr) w)^2, lr = s(count = 30)
    assert np.allclose(np.asarray(g), factor * np.array([2.0, -1.0]), rtol=1e-6)


def test_precision_follows_jax_x64_after_construction() -> None:
    lr = OptaxSchedule(SGDR)  # built under float32
    assert lr(3).dtype == jnp.float32
    with x64():
        got = lr(jnp.arange(200))
    assert got.dtype == jnp.float64
    assert np.allclose(np.asarray(got), SGDR(np.arange(200)), rtol=1e-12, atol=1e-16)


def test_untraceable_in_float32_is_one_clear_error_and_fine_in_x64() -> None:
    s = Step(0.1, step_size=7.3, gamma=0.5)
    with pytest.raises(UntraceableScheduleError, match=r"kind 'step': step_size=7.3 .*jax_enable_x64"):
        OptaxSchedule(s)
    with x64():
        steps = np.array([0, 7, 8, 14, 15, 73, 74])
        assert np.array_equal(np.asarray(OptaxSchedule(s)(steps)), s(steps))
    with pytest.raises(ScheduleError, match="must be a cosanneal Schedule"):
        OptaxSchedule(0.1)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match=r"warmup_steps='1ep' is not in steps yet"):
        OptaxSchedule(Cosine(0.1, warmup_steps="1ep", cycle_steps=10))
    assert OptaxSchedule(SGDR.to_dict()) == OptaxSchedule(SGDR)  # from a spec, hashable for jit


# ---- peers: the optax presets through the adapter reproduce optax in JAX --------------------------
optax_kwargs = st.builds(
    lambda peak, init, warmup, length, end, exponent: dict(
        init_value=init * peak, peak_value=peak, warmup_steps=warmup, decay_steps=warmup + length,
        end_value=end * peak, exponent=exponent,
    ),
    st.floats(1e-4, 1.0), st.floats(0.0, 1.0), st.integers(0, 60), st.integers(1, 600),
    st.sampled_from([0.0, 0.01, 0.1]), st.sampled_from([1.0, 1.0, 0.5, 2.0]),
)  # fmt: skip


def _optax_pair(kwargs: list[dict[str, Any]]) -> tuple[Schedule, Any]:
    if len(kwargs) == 1:
        return optax_warmup_cosine_decay(**kwargs[0]), optax.warmup_cosine_decay_schedule(**kwargs[0])
    return optax_sgdr(kwargs), optax.sgdr_schedule(kwargs)


@settings(max_examples=10)
@given(st.lists(optax_kwargs, min_size=1, max_size=3))
def test_optax_presets_reproduce_optax_in_float32(kwargs: list[dict[str, Any]]) -> None:
    ours_s, theirs = _optax_pair(kwargs)
    steps = _probes(ours_s, 10**6)
    ours = np.asarray(jax.jit(OptaxSchedule(ours_s))(jnp.asarray(steps, dtype=jnp.int32)), dtype=np.float64)
    peer32 = np.asarray(jax.jit(theirs)(jnp.asarray(steps, dtype=jnp.int32)), dtype=np.float64)
    with x64():
        peer64 = np.asarray(jax.jit(theirs)(jnp.asarray(steps)))
    peak = max(k["peak_value"] for k in kwargs)
    # both are float32 evaluations of one formula: they differ by our rounding plus optax's own
    bound = NARROW_ATOL * peak + np.abs(peer32 - peer64)
    bad = ~(np.abs(ours - peer32) <= bound)
    assert not bad.any(), list(zip(steps[bad][:5], ours[bad][:5], peer32[bad][:5], strict=True))
    assert np.max(np.abs(ours - peer64)) <= NARROW_ATOL * peak  # and ours is the closer to exact


@settings(max_examples=8)
@given(st.lists(optax_kwargs, min_size=1, max_size=3))
def test_optax_presets_reproduce_optax_in_x64(kwargs: list[dict[str, Any]]) -> None:
    ours_s, theirs = _optax_pair(kwargs)
    steps = _probes(ours_s, 10**6)
    with x64():
        ours = np.asarray(jax.jit(OptaxSchedule(ours_s))(jnp.asarray(steps)))
        peer = np.asarray(jax.jit(theirs)(jnp.asarray(steps)))
    assert ours.dtype == peer.dtype == np.float64
    bad = ~(np.abs(ours - peer) <= 1e-12 * np.abs(peer) + 1e-15 * max(k["peak_value"] for k in kwargs))
    assert not bad.any(), list(zip(steps[bad][:5], ours[bad][:5], peer[bad][:5], strict=True))


def test_example_trains_with_a_jitted_update_step() -> None:
    script = ROOT / "examples" / "jax_optax.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert float(lines["max |lr - closed form|"]) <= NARROW_ATOL * 0.1
    assert float(lines["final loss"]) < 0.01 * float(lines["initial loss"])
