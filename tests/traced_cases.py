"""Random schedules of every kind, the steps where they change, and the tolerances of traced programs.

Shared by the tests of the traced closed form (tests/schedules/test_traced.py) and of the Keras and
jax adapters. The strategies cover every option of every kind; :func:`probe_steps` lists the integer
steps around every boundary (warmup end, restart, per-restart warmup end, milestone, decay step, join
boundary, phase end, horizon), where an inexact comparison would show.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from cosanneal import ScheduleError
from cosanneal.compat import HfCosineCycles, OptaxCosine
from cosanneal.schedules import (
    Constant,
    Cosine,
    Cyclic,
    Exponential,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    Polynomial,
    Schedule,
    Step,
    WarmupStableDecay,
)

EPS32 = float(np.finfo(np.float32).eps)
#: float32 programs: |lr - core| <= NARROW_ATOL * peak (measured worst: about 2 EPS32).
NARROW_ATOL = 8 * EPS32
#: float64 programs: |lr - core| <= WIDE_RTOL * |core| + WIDE_ATOL * peak.
WIDE_RTOL, WIDE_ATOL = 1e-12, 1e-15

whole = st.integers(1, 400)
dyadic = st.builds(lambda n, q: n / q, st.integers(1, 1600), st.sampled_from([2, 4, 8]))
decimal = st.builds(lambda n: round(n, 1), st.floats(0.5, 400.0))  # 7.3: not dyadic
anyfloat = st.floats(0.5, 400.0, allow_nan=False)
lengths = st.one_of(whole, whole, dyadic, decimal, anyfloat)


def build(cls: Any, **cfg: Any) -> Any:
    """``cls(**cfg)``, discarding the draws the schedule itself refuses."""
    try:
        return cls(**cfg)
    except ScheduleError:
        assume(False)
        raise


@st.composite
def cosines(draw: Any) -> Cosine:
    """A Cosine with any combination of its options."""
    peak = draw(st.floats(1e-6, 10.0))
    cfg: dict[str, Any] = {"peak_lr": peak, "cycle_steps": draw(lengths)}
    if draw(st.booleans()):
        cfg["min_ratio"] = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
    else:
        cfg["min_lr"] = draw(st.sampled_from([0.0, 0.001, 0.1])) * peak
    cfg["warmup_steps"] = draw(st.sampled_from([0, 0, 1, 5, 17]))
    cfg["warmup_start_lr"] = draw(st.sampled_from([1e-3, 0.1])) * peak
    cfg["warmup_shape"] = draw(st.sampled_from(["linear", "cosine", "exponential"]))
    cfg["cycle_mult"] = draw(st.sampled_from([1, 1.0, 2, 1.5, 0.8, 1.25, 3.0, 1.1, 0.95]))
    cfg["peak_decay"] = draw(st.sampled_from([1.0, 0.5, 0.9, 1.1]))
    cfg["peak_decay_mode"] = draw(st.sampled_from(["peak", "amplitude"]))
    endless = cfg["cycle_mult"] >= 1 and cfg["peak_decay"] <= 1
    cfg["max_cycles"] = draw(st.sampled_from([1, 2, 5, 40, None] if endless else [1, 2, 5, 30]))
    cfg["k"] = draw(st.sampled_from([1.0, 0.5, 2.0]))
    cfg["warmup_prefix"] = draw(st.booleans())
    cfg["cycle_warmup_steps"] = draw(st.sampled_from([0, 0, 1, 3]))
    c, m, last = float(cfg["cycle_steps"]), float(cfg["cycle_mult"]), cfg["max_cycles"]
    if last is not None:  # the final hold within the probed range
        assume((c * last if m == 1 else c * (m**last - 1) / (m - 1)) < 2e6)
    return build(Cosine, **cfg)


@st.composite
def baselines(draw: Any) -> Schedule:
    """One of the baselines, with whole, dyadic and decimal lengths."""
    kind = draw(
        st.sampled_from(["constant", "step", "multistep", "exponential", "polynomial", "linear", "cyclic"])
    )
    lr = draw(st.floats(1e-6, 10.0))
    if kind == "constant":
        return Constant(lr)
    if kind == "step":
        return build(Step, lr=lr, step_size=draw(lengths), gamma=draw(st.floats(0.3, 1.0)))
    if kind == "multistep":
        points = sorted(draw(st.sets(st.one_of(whole, dyadic, decimal), min_size=1, max_size=6)))
        return build(MultiStep, lr=lr, milestones=points, gamma=draw(st.floats(0.1, 3.0)))
    if kind == "exponential":
        floor = lr * draw(st.sampled_from([0.0, 0.1, 0.5]))
        return build(Exponential, lr=lr, gamma=draw(st.floats(0.9, 1.0)), min_lr=floor)
    if kind == "polynomial":
        end = lr * draw(st.floats(0.0, 1.0))
        return build(
            Polynomial, lr=lr, total_steps=draw(lengths), power=draw(st.floats(0.1, 5.0)), end_lr=end
        )
    if kind == "linear":
        return build(Linear, start_lr=lr, end_lr=draw(st.floats(0.0, 10.0)), total_steps=draw(lengths))
    mode = draw(st.sampled_from(["triangular", "triangular2", "exp_range"]))
    gamma = draw(st.floats(0.99, 1.0)) if mode == "exp_range" else 1.0
    up = draw(st.one_of(whole, dyadic, decimal))
    down = draw(st.one_of(st.none(), whole, dyadic, decimal))
    return build(Cyclic, base_lr=lr, max_lr=lr + draw(st.floats(1e-6, 10.0)), step_size_up=up,
                 step_size_down=down, mode=mode, gamma=gamma)  # fmt: skip


@st.composite
def onecycles(draw: Any) -> OneCycle:
    """A one-cycle schedule (two or three phases, cos or linear)."""
    return build(
        OneCycle,
        max_lr=draw(st.floats(1e-6, 10.0)),
        total_steps=draw(st.integers(2, 3000)),
        pct_start=draw(st.floats(0.0, 0.5)),
        anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
        div_factor=draw(st.floats(1.0, 1e4)),
        final_div_factor=draw(st.floats(1.0, 1e5)),
        three_phase=draw(st.booleans()),
    )


wsds = st.builds(
    WarmupStableDecay,
    peak_lr=st.floats(1e-6, 10.0),
    warmup_steps=st.integers(0, 300),
    stable_steps=st.integers(0, 300),
    decay_steps=st.integers(0, 300),
    min_lr_ratio=st.floats(0.0, 1.0),
    warmup_shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    decay_shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
)


@st.composite
def peer_kinds(draw: Any) -> Schedule:
    """The peer-specific kinds: optax's cosine with an exponent, Hugging Face's cosine waves."""
    peak = draw(st.floats(1e-6, 10.0))
    if draw(st.booleans()):
        warmup = draw(st.integers(0, 50))
        return build(
            OptaxCosine,
            init_value=peak * draw(st.floats(0.0, 1.5)),
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=warmup + draw(st.one_of(whole, dyadic)),
            end_value=peak * draw(st.floats(0.0, 1.2)),
            exponent=draw(st.sampled_from([1.0, 0.5, 2.0, 3.0])),
        )
    warmup = draw(st.integers(0, 50))
    return build(
        HfCosineCycles,
        peak_lr=peak,
        num_warmup_steps=warmup,
        num_training_steps=warmup + draw(st.integers(0, 500)),
        num_cycles=draw(st.sampled_from([0.5, 1.0, 2.5, 3.0])),
        min_lr_rate=draw(st.floats(0.0, 1.0)),
    )


@st.composite
def joins(draw: Any, depth: int = 0) -> Join:
    """A join of 1 to 4 pieces of any kind (a nested join at most once), with whole and fractional boundaries."""
    leaf = st.one_of(cosines(), baselines(), wsds, onecycles(), peer_kinds())
    piece = st.one_of(leaf, joins(depth + 1)) if depth == 0 else leaf
    parts = draw(st.lists(piece, min_size=1, max_size=4))
    gaps = draw(
        st.lists(st.one_of(whole, whole, dyadic, decimal), min_size=len(parts) - 1, max_size=len(parts) - 1)
    )
    return Join(parts, [float(b) for b in np.cumsum(gaps)] if gaps else [])


def schedules() -> st.SearchStrategy[Schedule]:
    """A schedule of any kind."""
    return st.one_of(cosines(), baselines(), onecycles(), wsds, peer_kinds(), joins())


# ---- steps that matter ------------------------------------------------------------------------
def restarts(s: Cosine, until: float, count: int = 300, *, last: bool = False) -> list[float]:
    """The first (or, with ``last``, the last) ``count`` restarts of ``s`` before ``until``.

    Unlike ``s.restarts(until)`` this does not list every restart before ``until`` (millions for
    short fixed cycles).
    """
    if s.max_cycles == 1:
        return []
    if last and s.cycle_mult == 1:
        c, origin = float(s.cycle_steps), s.origin
        top = int((until - origin) // c)
        if s.max_cycles is not None:
            top = min(top, s.max_cycles - 1)
        return [s.cycle_start(i) for i in range(max(1, top - count + 1), top + 1) if s.cycle_start(i) < until]
    out: list[float] = []
    i = 1
    while s.max_cycles is None or i < s.max_cycles:
        start = s.cycle_start(i)
        if start >= until or (not last and len(out) >= count):
            break
        out.append(start)
        i += 1
    return out[-count:]


def _edges(s: Schedule, until: float) -> list[float]:
    """Steps (maybe fractional) where ``s`` changes regime, up to ``until``."""
    out: list[float] = [0.0]
    if s.horizon is not None:
        out.append(float(s.horizon))
    if isinstance(s, Cosine):
        out.append(float(s.warmup_steps))
        for r in restarts(s, until):
            out += [r, r + int(s.cycle_warmup_steps)]
    elif isinstance(s, Step):
        size = float(s.step_size)
        out += [k * size for k in range(1, min(300, int(until / size)) + 1)]
    elif isinstance(s, MultiStep):
        out += [float(m) for m in s.milestones]
    elif isinstance(s, Cyclic):
        up, down = s._sizes
        for k in range(min(100, int(until / (up + down)) + 1)):
            out += [k * (up + down), k * (up + down) + up]
    elif isinstance(s, OneCycle):
        out += [ph.end for ph in s._phases]  # type: ignore[attr-defined]
    elif isinstance(s, WarmupStableDecay):
        out += [float(s.warmup_steps), s.decay_start]
    elif isinstance(s, OptaxCosine):
        out += [float(s.warmup_steps), float(s.decay_steps)]
    elif isinstance(s, HfCosineCycles):
        out += [float(s.num_warmup_steps)]
    elif isinstance(s, Join):
        starts = [0.0, *(float(b) for b in s.boundaries)]
        for piece, start in zip(s.schedules, starts, strict=True):
            out.append(start)
            out += [start + e for e in _edges(piece, until - start) if start + e < until]
    return out


def probe_steps(s: Schedule, limit: int = 2**31 - 2, extra: list[int] | None = None) -> np.ndarray:
    """Integer steps ``floor(e) - 1 .. ceil(e) + 1`` around every edge of ``s``, plus a few more, as int64."""
    points = set(range(0, 40))
    for e in _edges(s, 2e6):
        points.update({math.floor(e) - 1, math.floor(e), math.ceil(e), math.ceil(e) + 1})
    points.update(extra or [])
    points.update({10**6, 2 * 10**6 + 1})
    return np.array(sorted(p for p in points if 0 <= p <= limit), dtype=np.int64)


def scale(s: Schedule, want: np.ndarray) -> float:
    """The size the absolute tolerance is measured against: the peak (or the largest value seen)."""
    peak = s.peak
    top = float(np.max(np.abs(want))) if want.size else 0.0
    return max(peak if math.isfinite(peak) else top, top, 1e-30)


def assert_close(got: Any, want: np.ndarray, s: Schedule, steps: np.ndarray, *, wide: bool) -> None:
    """``got`` (a traced program's values) agrees with the numpy core ``want`` to the precision's tolerance."""
    got = np.asarray(got, dtype=np.float64)
    size = scale(s, want)
    if wide:
        # the core evaluates a join piece at fl(t - b): a fractional boundary moves its step by up to
        # an ulp of t, which a one-step ramp turns into about that much of the peak
        step_ulp = 4 * np.finfo(np.float64).eps * steps.astype(np.float64)
        bound = WIDE_RTOL * np.abs(want) + (WIDE_ATOL + step_ulp) * size
    else:
        bound = np.full(want.shape, NARROW_ATOL * size)
    bad = ~(np.abs(got - want) <= bound)
    assert not bad.any(), (s, list(zip(steps[bad][:5], got[bad][:5], want[bad][:5], strict=True)))
