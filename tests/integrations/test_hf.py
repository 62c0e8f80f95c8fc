"""cosanneal.integrations.hf with a real Hugging Face Trainer (CPU, one process, in this process).

The multi-process, AMP and kill/resume cases are in test_matrix.py.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from cosanneal import Cosine, runs  # noqa: E402
from cosanneal.integrations import IntegrationError  # noqa: E402
from cosanneal.integrations.hf import (  # noqa: E402
    CosannealCallback,
    cosanneal_trainer_schedule,
    install_schedule,
    verify_checkpoints,
)
from cosanneal.runtime import Checkpoints, NonFiniteGuard  # noqa: E402

S = Cosine(0.1, warmup_steps=2, warmup_start_lr=0.01, cycle_steps=3, cycle_mult=1.5, max_cycles=None)


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.poison: set[int] = set()
        self.nan: set[int] = set()
        self.attempt = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.layer(x).squeeze(-1)
        loss = (out - (labels if labels is not None else 0.0)).pow(2).mean()
        if self.training and self.attempt in self.nan:
            loss = loss * float("nan")
        if self.training and self.attempt in self.poison:
            loss = loss + 0.0 * loss.detach()
            loss.register_hook(lambda g: g * float("inf"))  # inf gradients, finite loss: an fp16 overflow
        return {"loss": loss}


class Probe(TrainerCallback):  # type: ignore[misc]
    """The LR of every optimizer step that ran (pre-hook), and every logged ``learning_rate``."""

    def __init__(self, model: Model, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.used: list[tuple[int, float]] = []
        self.logged: list[tuple[int, float]] = []
        optimizer.register_step_pre_hook(
            lambda o, a, k: self.used.append((model.attempt, o.param_groups[0]["lr"]))
        )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.model.attempt = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "learning_rate" in logs:
            self.logged.append((state.global_step, logs["learning_rate"]))


def data(n: int = 64) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": x, "labels": x.sum()} for x in torch.randn(n, 3, generator=g)]


def make(out: Path, steps: int = 12, *, acc: int = 1, optimizers: Any = None, callbacks: list[Any] = (),
         model: Model | None = None, **args: Any) -> Trainer:  # fmt: skip
    args = {"save_strategy": "no", **args}
    targs = TrainingArguments(
        str(out), max_steps=steps, per_device_train_batch_size=2, gradient_accumulation_steps=acc, logging_steps=1,
        use_cpu=True, report_to=[], disable_tqdm=True, remove_unused_columns=False, max_grad_norm=0.0, **args,
    )  # fmt: skip
    return Trainer(model=model or Model(), args=targs, train_dataset=data(), eval_dataset=data(8),
                   optimizers=optimizers or (None, None), callbacks=list(callbacks))  # fmt: skip


def train(trainer: Trainer, **kw: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(**kw)


def lr_rows(run_dir: Path) -> list[tuple[int, float]]:
    with sqlite3.connect(run_dir / "run.db") as db:
        return db.execute(
            "SELECT step, value FROM scalars WHERE name='lr' AND grp=0 ORDER BY step, rowid"
        ).fetchall()


def test_logged_learning_rate_is_the_lr_the_step_at_that_global_step_used(tmp_path: Path) -> None:
    """By experiment: ``learning_rate`` logged at global_step G is the LR of the G-th optimizer step.

    Attempt 4 overflows (inf gradients, a real GradScaler skips it): global_step still counts it, the
    schedule does not, so from there the logged LR at G is schedule(G - 2).
    """
    model = Model()
    model.poison = {4}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt)
    trainer = make(tmp_path, 10, acc=2, model=model, optimizers=cosanneal_trainer_schedule(S, opt),
                   callbacks=[CosannealCallback(tmp_path), probe])  # fmt: skip
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    train(trainer)
    real = [a for a in range(10) if a != 4]
    assert probe.used == [(a, S(k)) for k, a in enumerate(real)]  # the skipped attempt never stepped
    k_of = {a: k for k, a in enumerate(real)}
    expected = [(g, S(k_of.get(g - 1, 4))) for g in range(1, 11)]  # attempt 4 would have used S(4)
    assert probe.logged == expected
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(9)]


def test_gradient_accumulation_and_the_trace(tmp_path: Path) -> None:
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt)
    train(make(tmp_path, 9, acc=4, model=model, optimizers=cosanneal_trainer_schedule(S, opt),
               callbacks=[CosannealCallback(tmp_path), probe]))  # fmt: skip
    assert [lr for _, lr in probe.used] == [S(k) for k in range(9)]
    run = runs.open(tmp_path)
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(9)]
    assert run.scalar("lr_expected", 0)[1].tolist() == [S(k) for k in range(9)]
    assert run.scalar("loss")[0].tolist() == list(range(9))  # the Trainer's logged loss, per update


def test_install_schedule_switches_an_lr_scheduler_type_trainer_to_a_spec(tmp_path: Path) -> None:
    spec = {
        "kind": "cosine",
        "peak_lr": 0.02,
        "warmup_steps": "0.25dur",
        "cycle_steps": "0.75dur",
        "max_cycles": 1,
    }
    trainer = make(tmp_path, 8, lr_scheduler_type="linear", learning_rate=5e-5, warmup_steps=3,
                   callbacks=[CosannealCallback(tmp_path, checkpoints=False)])  # fmt: skip
    install_schedule(trainer, spec)
    train(trainer)
    bound = Cosine(0.02, warmup_steps=2, cycle_steps=6, max_cycles=1)
    assert type(trainer.optimizer.optimizer).__name__ == "AdamW"  # the Trainer's own optimizer
    assert lr_rows(tmp_path) == [(k, bound(k)) for k in range(8)]


def test_a_trainer_with_its_own_scheduler_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(IntegrationError, match="cosanneal_trainer_schedule") as info:
        train(make(tmp_path, 2, callbacks=[CosannealCallback(tmp_path, checkpoints=False)]))
    assert "install_schedule(trainer, spec)" in str(info.value)


def test_the_guard_skips_the_optimizer_step_of_a_nonfinite_update(tmp_path: Path) -> None:
    model = Model()
    model.nan = {3}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt)
    train(make(tmp_path, 8, model=model, optimizers=cosanneal_trainer_schedule(S, opt),
               callbacks=[CosannealCallback(tmp_path, guard=NonFiniteGuard(on_exhausted="stop")), probe]))  # fmt: skip
    assert [a for a, _ in probe.used] == [0, 1, 2, 4, 5, 6, 7]
    assert [lr for _, lr in probe.used] == [S(k) for k in range(7)]
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(7)]
    assert [e["step"] for e in runs.open(tmp_path).events("nonfinite")] == [3]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_incomplete_checkpoint_is_moved_aside_and_resume_continues_exactly(tmp_path: Path) -> None:
    def trainer(steps: int) -> Trainer:
        model = Model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return make(tmp_path, steps, model=model, optimizers=cosanneal_trainer_schedule(S, opt),
                    callbacks=[CosannealCallback(tmp_path)], save_strategy="steps", save_steps=3,
                    eval_strategy="steps", eval_steps=3)  # fmt: skip

    train(trainer(9))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-3",
        "checkpoint-6",
        "checkpoint-9",
    ]
    # a kill in the middle of saving checkpoint-9: its optimizer file is cut short
    opt_file = tmp_path / "checkpoint-9" / "optimizer.pt"
    opt_file.write_bytes(opt_file.read_bytes()[:10])
    with pytest.warns(UserWarning, match="checkpoint-9 does not verify"):
        resumed = trainer(12)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    train(resumed, resume_from_checkpoint=True)
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(12)]
    run = runs.open(tmp_path)
    assert run.events("resumed")[0]["from_step"] == 6
    assert run.scalar("val_loss")[0].tolist() == [3, 6, 9, 12]
    best = Checkpoints(tmp_path / "checkpoints").best
    assert best is not None and best.metrics["val_loss"] == min(run.scalar("val_loss")[1])
    assert verify_checkpoints(tmp_path) == []
