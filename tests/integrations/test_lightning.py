"""cosanneal.integrations.lightning with a real Lightning Trainer (CPU, one process, in this process).

The multi-process, AMP and kill/resume cases are in test_matrix.py.
"""

from __future__ import annotations

import math
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("pytorch_lightning")
import torch  # noqa: E402

from cosanneal import Cosine, runs  # noqa: E402
from cosanneal.integrations import IntegrationError  # noqa: E402
from cosanneal.integrations.lightning import AtomicCheckpointIO, CosannealCallback, callbacks  # noqa: E402
from cosanneal.runtime import Checkpoints, NonFiniteGuard, RestartAwareEarlyStopping  # noqa: E402
from cosanneal.runtime.checkpoints import ends_cycle  # noqa: E402
from cosanneal.torch import Scheduler  # noqa: E402

S = Cosine(0.1, warmup_steps=2, warmup_start_lr=0.01, cycle_steps=3, cycle_mult=1.5, max_cycles=None)


class Model(pl.LightningModule):
    """A linear model; ``loss_at(global_step, loss)`` edits the training loss; ``val(updates)`` scripts val_loss."""

    def __init__(
        self,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        loss_at: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        val: Callable[[int], float] | None = None,
        manual: bool = False,
    ) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.make_scheduler = scheduler
        self.loss_at = loss_at
        self.val = val
        self.automatic_optimization = not manual
        self.used: list[float] = []

    def training_step(self, b: Any, i: int) -> torch.Tensor | None:
        loss = self.layer(b[0]).pow(2).mean()
        if self.loss_at is not None:
            loss = self.loss_at(self.trainer.global_step, loss)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return None

    def validation_step(self, b: Any, i: int) -> None:
        cb = next(c for c in self.trainer.callbacks if isinstance(c, CosannealCallback))
        value = self.val(cb.counter.count) if self.val is not None else float(self.layer(b[0]).pow(2).mean())
        self.log("val_loss", value)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        opt.register_step_pre_hook(lambda o, a, k: self.used.append(o.param_groups[0]["lr"]))
        if self.make_scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.make_scheduler(opt)}


def fit(
    model: Model, cbs: list[Any], steps: int = 12, *, acc: int = 1, val_every: int | None = None,
    ckpt_path: str | None = None, root: Path | None = None,
) -> pl.Trainer:  # fmt: skip
    data = torch.utils.data.TensorDataset(torch.randn(256, 3))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        accumulate_grad_batches=acc, callbacks=cbs, num_sanity_val_steps=0,
        val_check_interval=val_every * acc if val_every else None, limit_val_batches=1 if val_every else 0,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in cbs),
        default_root_dir=str(root) if root else None,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader, loader if val_every else None, ckpt_path=ckpt_path)
    return trainer


def lr_rows(run_dir: Path) -> list[tuple[int, float]]:
    with sqlite3.connect(run_dir / "run.db") as db:
        return db.execute(
            "SELECT step, value FROM scalars WHERE name='lr' AND grp=0 ORDER BY step, rowid"
        ).fetchall()


# ---- misconfigurations that cannot be exact: one clear error naming the fix ---------------------------
@pytest.mark.parametrize(
    ("config", "fix"),
    [
        ({"interval": "epoch"}, "interval='epoch'"),
        ({"interval": "step", "frequency": 2}, "frequency=2"),
    ],
)
def test_a_cosanneal_scheduler_stepped_per_epoch_or_every_nth_batch_is_refused(
    config: dict[str, Any], fix: str, tmp_path: Path
) -> None:
    model = Model(scheduler=lambda opt: {"scheduler": Scheduler(opt, S), **config})
    with pytest.raises(IntegrationError, match=fix) as info:
        fit(model, [CosannealCallback(None, tmp_path, checkpoints=False, guard=None)])
    assert "'interval': 'step'" in str(info.value) and "CosannealCallback(schedule=...)" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_count_optimizer_scheduler_stepped_by_lightning_is_refused(tmp_path: Path) -> None:
    model = Model(
        scheduler=lambda opt: {"scheduler": Scheduler(opt, S, count="optimizer"), "interval": "step"}
    )
    with pytest.raises(IntegrationError, match="count='manual'"):
        fit(model, [CosannealCallback(None, tmp_path, checkpoints=False, guard=None)])


def test_manual_optimization_without_stepping_the_scheduler_is_an_error_naming_the_fix(
    tmp_path: Path,
) -> None:
    model = Model(scheduler=lambda opt: {"scheduler": Scheduler(opt, S), "interval": "step"}, manual=True)
    with pytest.raises(IntegrationError, match=r"self\.lr_schedulers\(\)\.step\(\)") as info:
        fit(model, [CosannealCallback(None, tmp_path, checkpoints=False, guard=None)], steps=4)
    assert "1 optimizer updates ran but the cosanneal Scheduler counted 0" in str(info.value)


def test_two_schedulers_and_no_schedule_are_refused(tmp_path: Path) -> None:
    both = Model(scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5))
    with pytest.raises(IntegrationError, match="return only the optimizer"):
        fit(both, [CosannealCallback(S, tmp_path, checkpoints=False)])
    with pytest.raises(IntegrationError, match="no cosanneal schedule"):
        fit(Model(), [CosannealCallback(None, tmp_path, checkpoints=False, guard=None)])
    with pytest.raises(IntegrationError, match="on_exhausted='stop'"):
        CosannealCallback(S, guard=NonFiniteGuard(on_exhausted="rollback"))


# ---- the schedule counts real updates -----------------------------------------------------------------
def test_accumulation_advances_once_per_update_and_the_trace_is_exact(tmp_path: Path) -> None:
    model = Model()
    trainer = fit(model, [CosannealCallback(S, tmp_path, checkpoints=False)], steps=10, acc=3)
    assert model.used == [S(k) for k in range(10)]
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(10)]
    run = runs.open(tmp_path)
    assert run.scalar("lr_expected", 0)[1].tolist() == [S(k) for k in range(10)]
    assert run.scalar("cycle")[1].tolist() == [S.cycle(k).index for k in range(10)]
    # restarts at 5 and 9.5 (cycle_mult 1.5): recorded at the first update of each new cycle seen
    assert (
        [e["step"] for e in run.events("restart")] == [math.ceil(r) for r in S.restarts(10) if r < 9] == [5]
    )
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_manual_optimization_with_several_updates_per_batch_is_counted_by_the_owned_schedule(
    tmp_path: Path,
) -> None:
    class TwoSteps(Model):
        def training_step(self, b: Any, i: int) -> None:
            opt = self.optimizers()
            for _ in range(2):
                opt.zero_grad()
                self.manual_backward(self.layer(b[0]).pow(2).mean())
                opt.step()

    model = TwoSteps(manual=True)
    fit(model, [CosannealCallback(S, tmp_path, checkpoints=False)], steps=10)
    assert model.used == [S(k) for k in range(10)]
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(10)]


def test_a_cosanneal_scheduler_from_configure_optimizers_is_recorded_exactly(tmp_path: Path) -> None:
    model = Model(scheduler=lambda opt: {"scheduler": Scheduler(opt, S), "interval": "step"})
    fit(model, [CosannealCallback(None, tmp_path, checkpoints=False, guard=None)], steps=8, acc=2)
    assert model.used == [S(k) for k in range(8)]
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(8)]


def test_a_spec_with_fractions_of_the_run_is_bound_to_the_optimizer_steps(tmp_path: Path) -> None:
    spec = {
        "kind": "cosine",
        "peak_lr": 0.1,
        "warmup_steps": "0.25dur",
        "cycle_steps": "0.75dur",
        "max_cycles": 1,
    }
    cb = CosannealCallback(spec, tmp_path, checkpoints=False)
    model = Model()
    fit(model, [cb], steps=8, acc=2)
    bound = Cosine(0.1, warmup_steps=2, cycle_steps=6, max_cycles=1)
    assert model.used == [bound(k) for k in range(8)]


# ---- the non-finite guard -----------------------------------------------------------------------------
def test_the_guard_skips_a_nonfinite_update_without_advancing_the_schedule_and_stops_after_three(
    tmp_path: Path,
) -> None:
    bad = {4, 9, 10, 11}

    def loss_at(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step in bad else loss

    model = Model(loss_at=loss_at)
    trainer = fit(model, [CosannealCallback(S, tmp_path, checkpoints=False)], steps=20)
    # attempts 0-3 and 5-8 updated: 8 real updates, each at the closed form of the real count
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(8)]
    run = runs.open(tmp_path)
    assert [e["step"] for e in run.events("nonfinite")] == [4, 8, 8, 8]
    assert run.events("stop")[0]["message"].startswith("stopping: 3 non-finite updates in a row")
    assert run.events("run_failed")[0]["error"] == "NonFiniteStop"
    assert trainer.global_step == 12  # stopped at the third non-finite update in a row


# ---- checkpoints: best kept apart, cycle-end snapshots, the resume file --------------------------------
def test_best_is_kept_apart_and_never_replaced_by_a_post_restart_spike_nor_at_a_resume(
    tmp_path: Path,
) -> None:
    # val_loss falls within each cycle and jumps after every restart; the cycle ends (5, 10, 17) are lows
    ends = [n for n in range(1, 30) if ends_cycle(n, S)]

    def val(updates: int) -> float:
        cycle = S.cycle(max(updates - 1, 0))
        return 1.0 + 0.1 * cycle.index - 0.5 * (updates - cycle.start) / cycle.length

    first = Model(val=val)
    fit(first, callbacks(S, tmp_path, every_steps=4), steps=12, val_every=1, root=tmp_path)
    ckpts = Checkpoints(tmp_path / "checkpoints")
    assert ckpts.best is not None and ckpts.best.step == 5  # the end of cycle 1: every later value is worse
    assert [c.step for c in ckpts.cycle_end_snapshots()] == [n for n in ends if n <= 12]
    # resume the job (ckpt_path="last"): the best stays, the trace continues without hole or duplicate
    second = Model(val=val)
    fit(second, callbacks(S, tmp_path, every_steps=4), steps=20, val_every=1, ckpt_path="last", root=tmp_path)
    assert ckpts.best.step == 5
    assert [c.step for c in ckpts.cycle_end_snapshots()] == [n for n in ends if n <= 20]
    assert lr_rows(tmp_path) == [(k, S(k)) for k in range(20)]
    assert runs.open(tmp_path).events("resumed")[0]["from_step"] == 12


def test_atomic_checkpoint_io_never_leaves_a_partial_file(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, target)

    def broken(obj: Any, path: Any) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    original = torch.save
    torch.save = broken
    try:
        with pytest.raises(OSError, match="disk full"):
            io.save_checkpoint({"a": torch.zeros(3)}, target)
    finally:
        torch.save = original
    assert torch.equal(io.load_checkpoint(target)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# ---- restart-aware early stopping and sinks -----------------------------------------------------------
def test_early_stopping_compares_cycle_ends_only(tmp_path: Path) -> None:
    # cycle ends at 5, 10 and 17 (restarts at 5, 9.5, 16.25); a spike right after each restart, and each
    # cycle end worse than the one before
    def val(updates: int) -> float:
        return 5.0 if updates in (6, 11) else 1.0 + 0.1 * updates

    stop = RestartAwareEarlyStopping("val_loss", patience_cycles=2)
    trainer = fit(
        Model(val=val), [CosannealCallback(S, tmp_path, early_stopping=stop)], steps=40, val_every=1
    )
    assert trainer.global_step == 17  # cycle ends 5 (best), 10, 17: two without improvement
    assert stop.best_step == 5 and [c["step"] for c in stop.cycle_ends] == [5, 10, 17]
    assert runs.open(tmp_path).events("early_stop")[0]["step"] == 17


def test_tensorboard_events_carry_the_lr_trace(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(Model(), [CosannealCallback(S, tmp_path, checkpoints=False)], steps=6)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    values = [e.value for e in acc.Scalars("lr/group_0")]
    assert values == pytest.approx([S(k) for k in range(6)], rel=1e-6)
    assert not math.isnan(acc.Scalars("schedule/phase")[0].value)
