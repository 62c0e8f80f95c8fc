"""``cosanneal verify`` on a golden set of real mistaken training loops (torch's and Hugging Face's schedulers).

Every trace below is produced at test time by really training a tiny ``nn.Linear`` with a real torch
optimizer and the peer's own scheduler (``torch.optim.lr_scheduler`` or ``transformers``), in a loop that
makes one known mistake, logging ``optimizer.param_groups[0]["lr"]`` where the loop reads it (just before
``optimizer.step()`` unless the row says otherwise). The schedule the user *meant* is the cosanneal spec of
the row. Each row asserts the verdict and the diagnosis ``verify`` gives, with its key numbers.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from cosanneal import Cosine
from cosanneal.analysis import verify
from cosanneal.analysis.verify import Verdict, format_verdict
from cosanneal.schedules.compat.hf_presets import hf_cosine_with_warmup
from cosanneal.schedules.compat.torch_presets import (
    torch_cosine_annealing_lr,
    torch_cosine_annealing_warm_restarts,
    torch_linear_warmup_cosine,
)

PEAK = 0.1
EPOCHS, PER_EPOCH = 10, 24
N = EPOCHS * PER_EPOCH  # optimizer updates in the run
W = 24  # warmup updates
ETA_MIN = 1e-3

Make = Callable[[torch.optim.Optimizer], Any]


# ---- the peers' schedulers, built on the real optimizer -------------------------------------------
def torch_cosine(t_max: int, eta_min: float = 0.0) -> Make:
    return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)


def torch_warmup_cosine(warmup: int, t_max: int, eta_min: float = 0.0) -> Make:
    def make(opt: torch.optim.Optimizer) -> Any:
        lr = torch.optim.lr_scheduler
        warm = lr.LinearLR(opt, start_factor=0.1, total_iters=warmup)
        cos = lr.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
        return lr.SequentialLR(opt, [warm, cos], milestones=[warmup])

    return make


def torch_warm_restarts(t_0: int, t_mult: int) -> Make:
    return lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t_0, T_mult=t_mult)


def hf_cosine(warmup: int, total: int) -> Make:
    def make(opt: torch.optim.Optimizer) -> Any:
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)

    return make


# ---- one real training loop, with a knob per mistake ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Loop:
    """How the loop drives the scheduler (the defaults are the correct loop).

    Attributes:
        per_update: ``scheduler.step()`` calls after each ``optimizer.step()``.
        per_epoch: ``scheduler.step()`` calls at the end of each epoch of ``PER_EPOCH`` updates.
        accumulation: micro-batches per optimizer update.
        per_micro_batch: step the scheduler after every micro-batch (instead of every update).
        scheduler_first: call ``scheduler.step()`` before ``optimizer.step()``.
        read_after: read the LR after ``scheduler.step()`` (end of the iteration) instead of just before
            ``optimizer.step()``.
        resume_at: simulate a preemption at this update: a new process rebuilds model, optimizer and
            scheduler, then loads the model's and the optimizer's state.
        load_scheduler_state: at the resume, also load the scheduler's state.
        lr: the optimizer's LR.
    """

    per_update: int = 1
    per_epoch: int = 0
    accumulation: int = 1
    per_micro_batch: bool = False
    scheduler_first: bool = False
    read_after: bool = False
    resume_at: int | None = None
    load_scheduler_state: bool = True
    lr: float = PEAK


def _model_and_optimizer(seed: int, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def train(make: Make, loop: Loop, updates: int = N) -> tuple[np.ndarray, np.ndarray]:
    """Train ``updates`` optimizer updates the way ``loop`` says; the LR as the loop reads it."""
    model, optimizer = _model_and_optimizer(0, loop.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns once about scheduler.step() before optimizer.step()
        scheduler = make(optimizer)
        lrs: list[float] = []
        for t in range(updates):
            if t == loop.resume_at:  # a new process: rebuild everything, load what the checkpoint holds
                saved = (model.state_dict(), optimizer.state_dict(), scheduler.state_dict())
                model, optimizer = _model_and_optimizer(1, loop.lr)
                scheduler = make(optimizer)  # built first, then the state loaded, as resume code does
                model.load_state_dict(saved[0])
                optimizer.load_state_dict(saved[1])
                if loop.load_scheduler_state:
                    scheduler.load_state_dict(saved[2])
            for micro in range(loop.accumulation):
                loss = model(torch.randn(8, 4)).pow(2).mean() / loop.accumulation
                loss.backward()  # type: ignore[no-untyped-call]
                if micro + 1 < loop.accumulation:
                    if loop.per_micro_batch:
                        scheduler.step()
                    continue
                if loop.scheduler_first:
                    scheduler.step()
                if not loop.read_after:
                    lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                optimizer.zero_grad()
                if not loop.scheduler_first:
                    for _ in range(1 if loop.per_micro_batch else loop.per_update):
                        scheduler.step()
                if loop.read_after:
                    lrs.append(optimizer.param_groups[0]["lr"])
            if (t + 1) % PER_EPOCH == 0:
                for _ in range(loop.per_epoch):
                    scheduler.step()
    return np.arange(updates), np.array(lrs, dtype=np.float64)


# ---- the schedules the user meant -----------------------------------------------------------------
COSINE = torch_cosine_annealing_lr(PEAK, T_max=N)  # == Cosine(PEAK, cycle_steps=N)
COSINE_FLOOR = torch_cosine_annealing_lr(PEAK, T_max=N, eta_min=ETA_MIN)
WARMUP_COSINE = torch_linear_warmup_cosine(PEAK, start_factor=0.1, warmup_iters=W, T_max=N - W)
HF = hf_cosine_with_warmup(PEAK, num_warmup_steps=W, num_training_steps=N)
SGDR = torch_cosine_annealing_warm_restarts(PEAK, T_0=20, T_mult=2)


@dataclasses.dataclass(frozen=True)
class Case:
    """One golden row: the loop, the peer scheduler, the meant schedule and what verify must say."""

    id: str
    make: Make
    loop: Loop
    meant: Any
    status: str  # "match" | "mismatch"
    codes: list[str]  # the diagnosis codes, in order
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)  # of the first diagnosis
    verify_kw: dict[str, Any] = dataclasses.field(default_factory=dict)
    text: str = ""  # must appear in the printed report


CASES = [
    # correct loops: every peer scheduler matches its cosanneal equivalent
    Case("torch-cosine-correct", torch_cosine(N), Loop(), COSINE, "match", []),
    Case("torch-warmup-cosine-correct", torch_warmup_cosine(W, N - W), Loop(), WARMUP_COSINE, "match", []),
    Case("torch-warm-restarts-correct", torch_warm_restarts(20, 2), Loop(), SGDR, "match", []),
    Case("hf-cosine-correct", hf_cosine(W, N), Loop(), HF, "match", []),
    Case("hf-cosine-accumulation-correct", hf_cosine(W, N), Loop(accumulation=4), HF, "match", []),
    # stepped k times per update: the peer runs past its end and climbs back up
    Case(
        "torch-stepped-twice", torch_cosine(N), Loop(per_update=2), COSINE, "mismatch", ["compressed"],
        {"k": 2, "offset": 0},
    ),
    Case(
        "hf-stepped-twice", hf_cosine(W, N), Loop(per_update=2), HF, "mismatch", ["compressed"],
        {"k": 2, "offset": 0},
    ),
    Case(
        "torch-per-micro-batch", torch_cosine(N), Loop(accumulation=4, per_micro_batch=True), COSINE,
        "mismatch", ["compressed"], {"k": 4, "offset": 3},
    ),
    Case(
        "hf-per-micro-batch", hf_cosine(W, N), Loop(accumulation=4, per_micro_batch=True), HF,
        "mismatch", ["compressed"], {"k": 4, "offset": 3},
    ),
    # T_max in epochs, stepped per update: ten half-periods of cosine in the run
    Case(
        "torch-t-max-in-epochs", torch_cosine(EPOCHS), Loop(), COSINE, "mismatch", ["cycle-length"],
        {"fitted_cycle_steps": EPOCHS, "in_epochs": True}, {"steps_per_epoch": PER_EPOCH},
        f"T_max / cycle_steps of {EPOCHS} is in epochs",
    ),
    Case(
        "torch-t-max-in-epochs-unknown-epoch", torch_cosine(EPOCHS), Loop(), COSINE, "mismatch",
        ["compressed"], {"k": PER_EPOCH, "offset": 0}, {}, "given in epochs",
    ),
    # scheduler.step() before optimizer.step(): the optimizer really used the next step's LR
    Case(
        "torch-scheduler-before-optimizer", torch_cosine(N), Loop(scheduler_first=True), COSINE,
        "mismatch", ["step-order"], {"shift": 1, "lr_read": "before-optimizer-step"}, {},
        "Call scheduler.step() after optimizer.step()",
    ),
    Case(
        "hf-scheduler-before-optimizer", hf_cosine(W, N), Loop(scheduler_first=True), HF, "mismatch",
        ["step-order"], {"shift": 1},
    ),
    # the LR read after scheduler.step(): the same numbers; only the user can say how it was recorded
    Case(
        "torch-read-after-scheduler-step", torch_cosine(N), Loop(read_after=True), COSINE, "mismatch",
        ["off-by-one"], {"shift": 1, "lr_read": "after-scheduler-step"},
        {"lr_read": "after-scheduler-step"}, "read the LR before optimizer.step()",
    ),
    Case(
        "torch-read-after-scheduler-step-default-read", torch_cosine(N), Loop(read_after=True), COSINE,
        "mismatch", ["step-order"], {"shift": 1}, {}, "--lr-read after-scheduler-step",
    ),
    # forgotten warmup
    Case(
        "torch-warmup-forgotten", torch_cosine(N), Loop(), WARMUP_COSINE, "mismatch", ["warmup-missing"],
        {"warmup_steps": W, "fitted_cycle_steps": N}, {}, f"configured warmup of {W} steps",
    ),
    Case(
        "torch-warmup-dropped-from-sequential", torch_cosine(N - W), Loop(), WARMUP_COSINE, "mismatch",
        ["warmup-missing"], {"warmup_steps": W, "fitted_cycle_steps": N - W},
    ),
    Case(
        "hf-zero-warmup", hf_cosine(0, N), Loop(), HF, "mismatch", ["warmup-missing"],
        {"warmup_steps": W, "fitted_cycle_steps": N}, {}, "the trace starts at the peak",
    ),
    # never stepped, stepped per epoch
    Case("torch-never-stepped", torch_cosine(N), Loop(per_update=0), COSINE, "mismatch", ["never-stepped"]),
    Case("hf-never-stepped", hf_cosine(W, N), Loop(per_update=0), HF, "mismatch", ["never-stepped"]),
    Case(
        "torch-per-epoch", torch_cosine(N), Loop(per_update=0, per_epoch=1), COSINE, "mismatch",
        ["per-epoch"], {"plateau_steps": PER_EPOCH},
    ),
    # resumed without the scheduler's state
    Case(
        "torch-resume-without-scheduler-state", torch_cosine(N), Loop(resume_at=100, load_scheduler_state=False),
        COSINE, "mismatch", ["resume-jump"], {"resume_step": 100},
    ),
    Case(
        "hf-resume-without-scheduler-state", hf_cosine(W, N), Loop(resume_at=100, load_scheduler_state=False),
        HF, "mismatch", ["resume-jump"], {"resume_step": 100, "restarted_from_start": True},
    ),
    Case(
        "hf-resume-with-scheduler-state", hf_cosine(W, N), Loop(resume_at=100), HF, "match", [],
    ),
    # wrong floor, wrong peak
    Case(
        "torch-wrong-eta-min", torch_cosine(N, eta_min=0.0), Loop(), COSINE_FLOOR, "mismatch", ["floor"],
        {"fitted_floor": 0.0, "configured_floor": ETA_MIN},
    ),
    Case(
        "torch-wrong-base-lr", torch_cosine(N), Loop(lr=0.05), COSINE, "mismatch", ["peak"],
        {"fitted_peak": 0.05, "configured_peak": PEAK},
    ),
    # too short a run for T_max's other side, and restarts
    Case(
        "torch-t-max-half-the-run", torch_cosine(N // 2, ETA_MIN), Loop(),
        torch_cosine_annealing_lr(PEAK, T_max=N // 2, eta_min=ETA_MIN), "mismatch", ["past-horizon"],
        {"horizon": N // 2},
    ),
    Case(
        "torch-warm-restarts-wrong-t-mult", torch_warm_restarts(20, 1), Loop(), SGDR, "mismatch",
        ["restarts"], {"trace_restarts": list(range(20, N, 20)), "expected_restarts": [20, 60, 140],
                     "fitted_cycle_mult": 1},
    ),
]  # fmt: skip


def _check(case: Case, verdict: Verdict) -> None:
    assert verdict.status == case.status, format_verdict(verdict)
    assert verdict.codes() == case.codes, format_verdict(verdict)
    if case.evidence:
        got = verdict.diagnoses[0].evidence
        assert {k: got.get(k) for k in case.evidence} == case.evidence, format_verdict(verdict)
    if case.text:
        assert case.text in format_verdict(verdict)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden_mistaken_loop(case: Case) -> None:
    steps, lrs = train(case.make, case.loop)
    assert len(lrs) == N
    verdict = verify(steps, lrs, case.meant, **case.verify_kw)
    _check(case, verdict)
    if case.status == "mismatch":
        assert all(d.fitted for d in verdict.diagnoses), format_verdict(verdict)


def test_golden_loops_really_differ() -> None:
    """The knobs change the real scheduler's trace (a guard against a harness that ignores them)."""
    base = train(torch_cosine(N), Loop())[1]
    for loop in (Loop(per_update=2), Loop(scheduler_first=True), Loop(read_after=True), Loop(per_update=0)):
        assert not np.allclose(train(torch_cosine(N), loop)[1], base)
    # read-after and scheduler-first give the same numbers: the reason verify needs lr_read
    np.testing.assert_array_equal(
        train(torch_cosine(N), Loop(read_after=True))[1],
        train(torch_cosine(N), Loop(scheduler_first=True))[1],
    )


def test_meant_schedules_are_the_peers_within_their_horizon() -> None:
    assert Cosine(PEAK, cycle_steps=N) == COSINE
    assert Cosine(PEAK, warmup_steps=W, cycle_steps=N - W) == HF
