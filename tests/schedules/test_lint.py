"""Lint: one crafted schedule per warning code, with the numbers in the message checked."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosanneal import Cosine, ScheduleError, from_dict
from cosanneal.schedules.lint import (
    DTYPE_SMALLEST_NORMAL,
    DTYPES,
    PRECISION_BITS,
    LintWarning,
    lint,
    timeline,
)

SGDR = Cosine(0.1, min_lr=1e-4, warmup_steps=200, cycle_steps=400, cycle_mult=2, peak_decay=0.7, max_cycles=3)


def codes(warnings: list[LintWarning]) -> list[str]:
    return [w.code for w in warnings]


def only(warnings: list[LintWarning], code: str) -> LintWarning:
    found = [w for w in warnings if w.code == code]
    assert len(found) == 1, warnings
    assert "\n" not in found[0].message
    return found[0]


# ---- clean schedules ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "steps"),
    [
        (SGDR, 3000),
        (Cosine(0.1, cycle_steps=1000), 1000),
        (Cosine(0.1, min_lr=1e-5, warmup_steps=100, cycle_steps=900), 1000),
        (Cosine(1.0, warmup_steps=50, warmup_shape="cosine", cycle_steps=1000), 1050),
        (
            Cosine(1.0, warmup_steps=8, warmup_start_lr=1e-4, warmup_shape="exponential", cycle_steps=992),
            1000,
        ),
        (Cosine(0.1, min_ratio=0.01, cycle_steps=100, max_cycles=None), 1000),
        (Cosine(0.1, warmup_steps="0.05dur", cycle_steps="0.95dur"), 3000),
        (
            from_dict(
                {
                    "kind": "wsd",
                    "peak_lr": 3e-4,
                    "warmup_steps": 200,
                    "stable_steps": 2200,
                    "decay_steps": 600,
                    "min_lr_ratio": 0.1,
                }
            ),
            3000,
        ),
        (from_dict({"kind": "onecycle", "max_lr": 0.1, "total_steps": 3000}), 3000),
    ],
)
def test_clean_schedules_have_no_warnings(schedule: Cosine, steps: int) -> None:
    assert lint(schedule, steps) == []


def test_clean_sgdr_is_clean_under_amp_but_not_with_half_precision_weights() -> None:
    for amp in ("fp16", "bf16", "float16", "bfloat16", "amp-fp16", "amp-bf16", "fp32"):
        assert lint(SGDR, 3000, dtype=amp) == [], amp  # fp32 master weights: a 1e-4 floor moves them
    assert codes(lint(SGDR, 3000, dtype="pure-fp16")) == ["CA007"]
    assert codes(lint(SGDR, 3000, dtype="pure-bf16")) == ["CA007"]


# ---- CA001 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [400, 500])
def test_ca001_warmup_as_long_as_the_run(steps: int) -> None:
    warnings = lint(Cosine(0.1, warmup_steps=500, cycle_steps=1000), steps)
    assert codes(warnings) == ["CA001"]
    w = warnings[0]
    assert "warmup lasts 500 steps" in w.message and f"run of {steps} steps" in w.message
    assert f"about {steps // 20}" in w.message


def test_ca001_uses_bound_durations() -> None:
    warnings = lint(Cosine(0.1, warmup_steps="2ep", cycle_steps=1000), 150, steps_per_epoch=100)
    assert "warmup lasts 200 steps" in only(warnings, "CA001").message


def test_warmup_one_step_shorter_than_the_run_is_not_ca001() -> None:
    assert "CA001" not in codes(lint(Cosine(0.1, warmup_steps=499, cycle_steps=1), 500))


# ---- CA002 --------------------------------------------------------------------------------------
def test_ca002_last_cycle_cut_says_which_restart_and_fraction() -> None:
    w = only(lint(SGDR, 2500), "CA002")
    assert w.step == 1400
    assert "restart 2 at step 1400 begins a 1600-step cycle" in w.message
    assert "only 1100 steps (68.8%)" in w.message
    # the fits in full: written into the config, they end the third cycle at step 2500
    assert "cycle_steps=328.57142857142856 or cycle_mult=1.7360679774997898 would end 3 cycles" in w.message
    assert dataclasses.replace(SGDR, cycle_steps=328.57142857142856).horizon == 2500
    assert dataclasses.replace(SGDR, cycle_mult=1.7360679774997898).horizon == pytest.approx(2500, abs=1e-12)


def _number_after(text: str, key: str) -> float:
    match = re.search(rf"{key}=([0-9.e+-]+)", text)
    assert match is not None, text
    return float(match.group(1))


@given(
    budget=st.integers(1500, 20_000),
    mult=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    first=st.integers(100, 400),
)
def test_ca002_suggestions_end_exactly_at_the_budget(budget: int, mult: float, first: int) -> None:
    s = Cosine(1.0, warmup_steps=50, cycle_steps=first, cycle_mult=mult, max_cycles=None)
    found = [w for w in lint(s, budget) if w.code == "CA002"]
    if not found:  # the budget happens to end (nearly) at a cycle end
        end = s.cycle(budget - 1).start + s.cycle(budget - 1).length
        assert s(budget) - 0.0 <= 0.01 or end == budget
        return
    msg = found[0].message
    n = int(re.search(r"end (\d+) cycles", msg).group(1))  # type: ignore[union-attr]
    fit_c = _number_after(msg, "cycle_steps")
    end = Cosine(1.0, warmup_steps=50, cycle_steps=fit_c, cycle_mult=mult, max_cycles=n).horizon
    assert end is not None and end <= budget and budget - end <= 4 * math.ulp(budget)  # printed in full
    if "cycle_mult=" in msg:
        fit_m = _number_after(msg, "cycle_mult")
        end = Cosine(1.0, warmup_steps=50, cycle_steps=first, cycle_mult=fit_m, max_cycles=n).horizon
        assert end is not None and end <= budget and end == pytest.approx(budget, rel=1e-13)


def test_ca002_not_reported_when_under_1pct_of_the_drop_is_left() -> None:
    assert lint(SGDR, 2995) == []  # 99.7% of the last cycle runs


def test_ca002_for_a_join_of_cosines() -> None:
    joined = from_dict(
        {
            "kind": "join",
            "schedules": [{"kind": "cosine", "peak_lr": 0.1, "cycle_steps": 100}] * 3,
            "boundaries": [100, 200],
        }
    )
    w = only(lint(joined, 250), "CA002")
    assert "restart 2 at step 200 begins a" in w.message and "50 steps (" in w.message


# ---- CA003 --------------------------------------------------------------------------------------
def test_ca003_first_decay_never_reaches_the_floor() -> None:
    s = Cosine(0.1, warmup_steps=100, cycle_steps=5000, min_lr=1e-3)
    w = only(lint(s, 3000), "CA003")
    assert "ends at step 5100" in w.message and "run ends at step 3000" in w.message
    assert f"falls to {s(2999):.4g}" in w.message and "floor 0.001" in w.message
    assert "58.0% of the decay" in w.message and "cycle_steps=2900" in w.message


def test_ca003_generic_schedule_ending_after_the_run() -> None:
    s = from_dict({"kind": "onecycle", "max_lr": 0.1, "total_steps": 3000})
    w = only(lint(s, 2000), "CA003")
    assert "at step 2999" in w.message and "run ends at step 2000" in w.message
    assert f"falls to {s(1999):.4g}" in w.message


# ---- CA004 --------------------------------------------------------------------------------------
def test_ca004_short_restart_cycles() -> None:
    w = only(lint(Cosine(0.1, cycle_steps=5, max_cycles=None), 100), "CA004")
    assert "cycle 0 lasts only 5 steps" in w.message


def test_ca004_shrinking_cycles_report_the_shortest() -> None:
    s = Cosine(0.1, min_lr=1e-3, cycle_steps=100, cycle_mult=0.5, max_cycles=6)
    w = only(lint(s, 197), "CA004")
    assert "cycle 5 lasts only 3.125 steps" in w.message and "cycle_mult" in w.message
    assert w.step == pytest.approx(193.75)


def test_single_short_decay_is_not_a_restart_problem() -> None:
    assert "CA004" not in codes(lint(Cosine(0.1, cycle_steps=5, min_lr=0.01), 5))


# ---- CA005 --------------------------------------------------------------------------------------
def test_ca005_growing_peaks() -> None:
    w = only(lint(Cosine(0.1, cycle_steps=100, peak_decay=1.2, max_cycles=4), 400), "CA005")
    assert "peak_decay=1.2" in w.message and "cycle 3 peaks at 0.1728, 1.73x" in w.message
    assert w.step == 300


# ---- CA006 --------------------------------------------------------------------------------------
def test_ca006_timm_overlaid_warmup_drops_at_hand_off() -> None:
    s = Cosine(0.1, warmup_steps=50, cycle_steps=100, warmup_prefix=False)
    w = only(lint(s, 100), "CA006")
    assert w.step == 50
    assert "drops from 0.098 (step 49) to 0.05 (step 50), 24x" in w.message
    assert "warmup_prefix=true" in w.message


def test_short_overlaid_warmup_is_fine() -> None:
    assert lint(Cosine(0.1, warmup_steps=5, cycle_steps=1000, warmup_prefix=False), 1000) == []


def test_ca006_join_warmup_ending_below_the_peak() -> None:
    s = from_dict(
        {
            "kind": "join",
            "schedules": [
                {"kind": "linear", "start_lr": 0.0, "end_lr": 0.05, "total_steps": 100},
                {"kind": "cosine", "peak_lr": 0.1, "min_lr": 1e-3, "cycle_steps": 400},
            ],
            "boundaries": [100],
        }
    )
    w = only(lint(s, 500), "CA006")
    assert "jumps from 0.0495 (step 99) to 0.1 (step 100)" in w.message


# ---- CA007 --------------------------------------------------------------------------------------
ADAMW = Cosine(3e-4, min_lr=3e-5, warmup_steps=100, cycle_steps=900)  # an ordinary AdamW schedule


def _advised_floor(w: LintWarning) -> float:
    match = re.search(r"min_lr=([0-9.e+-]+)", w.message)
    assert match, w.message
    return float(match.group(1))


@pytest.mark.parametrize("dtype", ["fp16", "float16", "amp-fp16", "bf16", "bfloat16", "amp-bf16"])
def test_ca007_amp_keeps_fp32_master_weights_so_adamw_lrs_do_not_warn(dtype: str) -> None:
    # autocast computes activations in half precision, but the optimizer updates fp32 weights with an fp32 LR
    assert lint(ADAMW, 1000, dtype=dtype) == []


@pytest.mark.parametrize(("dtype", "torch_dtype"), [("pure-fp16", "float16"), ("pure-bf16", "bfloat16")])
def test_ca007_half_precision_weights_with_a_tiny_floor_warn_and_the_advice_clears_it(
    dtype: str, torch_dtype: str
) -> None:
    import torch

    s = Cosine(0.1, cycle_steps=1000, min_lr=1e-6)
    w = only(lint(s, 1000, dtype=dtype), "CA007")
    bits = PRECISION_BITS[dtype.removeprefix("pure-")]
    # half an ulp of a typical weight of 1e-2, times 1 + 2^-bits: the update is rounded to the dtype first
    lost_below = 2.0 ** (np.floor(np.log2(1e-2)) - bits) * (1 + 2.0**-bits)
    lr = s(np.arange(1000))
    lost = lr * 1e-3 <= lost_below
    assert f"at {int(lost.sum())} of the 1000 steps" in w.message and w.step == int(np.argmax(lost))
    assert f"lowest LR {lr.min():.4g}" in w.message
    advised = _advised_floor(w)
    assert advised > lost_below / 1e-3 and len(f"{advised:g}".replace(".", "").lstrip("0")) <= 4
    assert "CA007" not in codes(lint(Cosine(0.1, cycle_steps=1000, min_lr=advised), 1000, dtype=dtype))

    # what the warning means, with torch's own SGD on weights of that dtype (the gradient is stored in it too,
    # so take one it holds exactly, 2^-10 ~ 1e-3): at the flagged LR the update rounds away; at the advised
    # LR the weight moves
    grad = 2.0**-10
    flagged = only(lint(s, 1000, dtype=dtype, typical_grad=grad), "CA007")
    lowest = float(re.search(r"lowest LR ([0-9.e+-]+)", flagged.message).group(1))  # type: ignore[union-attr]

    def moves(step_lr: float) -> bool:
        weight = torch.nn.Parameter(torch.full((1,), 1e-2, dtype=getattr(torch, torch_dtype)))
        before = weight.detach().clone()
        weight.grad = torch.full_like(weight, grad)
        torch.optim.SGD([weight], lr=step_lr).step()
        return not torch.equal(weight.detach(), before)

    assert not moves(lowest) and moves(_advised_floor(flagged))


@given(
    st.sampled_from(["pure-fp16", "pure-bf16", "fp16", "fp32"]),
    st.floats(1e-6, 1.0),
    st.floats(1e-4, 1.0),
)
def test_ca007_advice_rounds_up_so_following_it_clears_the_warning(
    dtype: str, grad: float, weight: float
) -> None:
    bits = PRECISION_BITS[DTYPES[dtype]]
    threshold = 2.0 ** (np.floor(np.log2(weight)) - bits) * (1 + 2.0**-bits) / grad
    peak = max(1.0, 10.0 * threshold)
    # one decay of 100 steps, then the floor held for 100: the run spends steps exactly at min_lr
    found = [w for w in lint(Cosine(peak, cycle_steps=100, min_lr=threshold / 7), 200, dtype=dtype,
                             typical_grad=grad, typical_weight=weight) if w.code == "CA007"]  # fmt: skip
    assert len(found) == 1
    advised = _advised_floor(found[0])
    assert threshold < advised <= threshold * (1 + 1e-3)  # above, by at most one in the 4th significant digit
    again = lint(Cosine(peak, cycle_steps=100, min_lr=advised), 200, dtype=dtype, typical_grad=grad,
                 typical_weight=weight)  # fmt: skip
    assert "CA007" not in codes(again)


def test_ca007_advice_for_a_min_ratio_schedule_names_min_lr_in_its_place() -> None:
    s = Cosine(0.1, cycle_steps=1000, min_ratio=1e-4)
    w = only(lint(s, 1000, dtype="pure-fp16"), "CA007")
    assert "in place of min_ratio" in w.message
    assert lint(Cosine(0.1, cycle_steps=1000, min_lr=_advised_floor(w)), 1000, dtype="pure-fp16") == []


def test_ca007_typical_gradient_and_weight_are_configurable() -> None:
    s = Cosine(0.1, cycle_steps=1000, min_lr=1e-3)
    assert "CA007" in codes(lint(s, 1000, dtype="pure-fp16"))
    assert "CA007" not in codes(lint(s, 1000, dtype="pure-fp16", typical_grad=1.0))  # e.g. Adam: update ~ lr
    assert "CA007" not in codes(lint(s, 1000, dtype="pure-fp16", typical_weight=1e-4))
    with pytest.raises(ScheduleError, match="typical_weight must be a number > 0"):
        lint(s, 1000, dtype="pure-fp16", typical_weight=0.0)


def test_dtype_table() -> None:
    assert DTYPE_SMALLEST_NORMAL["fp16"] == float(np.finfo(np.float16).smallest_normal)
    assert DTYPE_SMALLEST_NORMAL["fp32"] == float(np.finfo(np.float32).smallest_normal)
    assert DTYPE_SMALLEST_NORMAL["bf16"] == DTYPE_SMALLEST_NORMAL["bfloat16"] == 2.0**-126
    # significand bits (with the implicit one): half an ulp of 1.0 is 2^-bits
    assert 2.0 ** -PRECISION_BITS["fp16"] == float(np.finfo(np.float16).eps) / 2
    assert 2.0 ** -PRECISION_BITS["fp32"] == float(np.finfo(np.float32).eps) / 2
    assert PRECISION_BITS["bf16"] == 8
    # every spelling the CLI offers still works; AMP names update fp32 weights
    assert set(DTYPE_SMALLEST_NORMAL) <= set(DTYPES)
    assert {k: v for k, v in DTYPES.items() if v != "fp32"} == {
        "pure-fp16": "fp16", "pure-float16": "fp16", "pure-bf16": "bf16", "pure-bfloat16": "bf16",
    }  # fmt: skip


# ---- CA008 / CA009 ------------------------------------------------------------------------------
def test_ca008_and_ca009_schedule_ends_at_zero_long_before_the_run() -> None:
    warnings = lint(Cosine(0.1, cycle_steps=1000), 3000)
    assert codes(warnings) == ["CA008", "CA009"]
    zero, hold = warnings
    assert "exactly 0 at 2000 steps" in zero.message and "first at step 1000" in zero.message
    assert "66.7%" in zero.message and zero.step == 1000
    assert "ends at step 1000 and holds 0 for the last 2000 steps" in hold.message
    assert "cycle_steps=3000" in hold.message


def test_ca008_restart_warmups_from_a_zero_floor() -> None:
    s = Cosine(1.0, warmup_steps=50, cycle_steps=100, cycle_warmup_steps=20, max_cycles=3)
    w = only(lint(s, 350), "CA008")
    assert "exactly 0 at 2 steps" in w.message and "first at step 150" in w.message


def test_ca009_short_hold_is_fine() -> None:
    assert lint(Cosine(0.1, min_lr=1e-3, cycle_steps=950), 1000) == []
    assert codes(lint(Cosine(0.1, min_lr=1e-3, cycle_steps=850), 1000)) == ["CA009"]


# ---- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [0, -5, 2.5, True, "100"])
def test_bad_total_steps(steps: object) -> None:
    with pytest.raises(ScheduleError, match="total_steps must be an integer >= 1"):
        lint(SGDR, steps)  # type: ignore[arg-type]


def test_bad_dtype() -> None:
    with pytest.raises(ScheduleError, match="dtype must be one of fp16"):
        lint(SGDR, 3000, dtype="int8")


def test_unbound_duration_needs_steps_per_epoch() -> None:
    with pytest.raises(ScheduleError, match="steps_per_epoch"):
        lint(Cosine(0.1, warmup_steps="1ep", cycle_steps=100), 1000)


def test_warning_str() -> None:
    assert str(LintWarning("CA001", "text", 3)) == "CA001 text"


# ---- timeline -----------------------------------------------------------------------------------
def expand(schedule: object, n: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for g in timeline(schedule, n):  # type: ignore[arg-type]
        out += [(g.phase, g.cycle)] * (g.end - g.start)
    return out


@given(
    warmup=st.integers(0, 20),
    cycle=st.floats(3.0, 40.0).map(lambda x: round(x, 2)),
    mult=st.sampled_from([0.7, 1.0, 1.5, 2.0]),
    cw=st.integers(0, 2),
    cycles=st.integers(1, 5),
    prefix=st.booleans(),
    n=st.integers(1, 300),
)
def test_timeline_matches_phase_and_cycle_at_every_step(
    warmup: int, cycle: float, mult: float, cw: int, cycles: int, prefix: bool, n: int
) -> None:
    if not prefix and warmup >= cycle:
        warmup = 0
    if cycles == 1 or cycle * min(mult, 1.0) ** (cycles - 1) <= cw + 1:
        cw = 0
    s = Cosine(
        1.0,
        warmup_steps=warmup,
        cycle_steps=cycle,
        cycle_mult=mult,
        cycle_warmup_steps=cw,
        max_cycles=cycles,
        warmup_prefix=prefix,
        min_lr=0.01,
    )
    assert expand(s, n) == [(s.phase(t), s.cycle(t).index) for t in range(n)]


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 7, "stable_steps": 30, "decay_steps": 20},
        {"kind": "onecycle", "max_lr": 1.0, "total_steps": 90},
        {
            "kind": "join",
            "schedules": [{"kind": "cosine", "peak_lr": 1.0, "cycle_steps": 13}] * 4,
            "boundaries": [13, 26, 39],
        },
    ],
)
def test_timeline_of_other_kinds_matches_every_step(spec: dict[str, object]) -> None:
    s = from_dict(spec)
    assert expand(s, 100) == [(s.phase(t), s.cycle(t).index) for t in range(100)]
