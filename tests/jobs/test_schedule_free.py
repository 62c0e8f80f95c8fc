"""Schedule-free AdamW in the trainer: eval-mode checkpoints, evaluation at x, exact kill/resume, bad input."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schedulefree
import torch
from blobs import blobs_config, last_weights, lr_trace, spawn_train, wait_for_updates

from cosanneal import ConfigError, runs
from cosanneal.jobs.builders import build_data, build_model
from cosanneal.jobs.config import config_from_dict, load_config
from cosanneal.jobs.data import EpochBatches
from cosanneal.jobs.optimizer_modes import check_schedule, recalibrate_norms
from cosanneal.jobs.tasks import ClassificationTask
from cosanneal.jobs.trainer import Trainer
from cosanneal.schedules import from_dict

#: warmup over 10 updates, then the peak: a cosine with min_ratio = 1 is flat after its warmup
FLAT = {"kind": "cosine", "peak_lr": 0.01, "min_ratio": 1.0, "warmup_steps": 10, "cycle_steps": 150}


def _sf(**changes: Any) -> dict[str, Any]:
    optimizer = {"name": "adamw_schedulefree", "weight_decay": 1e-4, "betas": [0.9, 0.999]}
    return blobs_config(**{"optimizer": optimizer, "schedule": FLAT, **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("sf") / "run"
    result = Trainer(config_from_dict(_sf()), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 160
    return run_dir


def _val_loss(state: dict[str, torch.Tensor]) -> float:
    cfg = config_from_dict(_sf())
    model = build_model(cfg.model)
    model.load_state_dict(state)
    model.eval()
    _, val_set = build_data(cfg.data)
    batches = list(EpochBatches(val_set, cfg.eval.batch_size).sequential(cfg.eval.batch_size))
    with torch.no_grad():
        return float(ClassificationTask().evaluate(model, batches)["loss"])


def test_checkpoints_hold_x_and_evaluation_scores_x(reference: Path) -> None:
    newest = sorted((reference / "checkpoints").glob("step-*"))[-1]
    opt = torch.load(newest / "optimizer.pt", weights_only=True)
    groups = opt["param_groups"]
    assert all(g["train_mode"] is False for g in groups)  # saved in eval mode
    assert groups[0]["k"] == 160  # every update counted by the optimizer itself
    x = last_weights(reference)
    with runs.open(reference) as run:
        _, val = run.scalar("val_loss")
    # the recorded final metric is the checkpoint's weights (x) evaluated: bit for bit the same model
    assert _val_loss(x) == pytest.approx(float(val[-1]), rel=1e-6)
    # y, the point it trains at, is another model: a checkpoint written in train mode would differ
    names = [n for n, _ in build_model(config_from_dict(_sf()).model).named_parameters()]  # the state's order
    beta1 = groups[0]["betas"][0]
    zs = [opt["state"][i]["z"] for i in range(len(names))]
    y = {n: torch.lerp(x[n], z, 1 - beta1) for n, z in zip(names, zs, strict=True)}
    assert max(float((y[n] - x[n]).abs().max()) for n in names) > 1e-4
    assert _val_loss({**x, **y}) != pytest.approx(_val_loss(x), rel=1e-6)


def test_lr_trace_is_warmup_then_flat(reference: Path) -> None:
    steps, lr = lr_trace(reference)
    np.testing.assert_array_equal(lr, from_dict(FLAT)(steps))
    assert lr[10:].min() == lr[10:].max() == 0.01


def test_killed_and_resumed_run_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(config_from_dict(_sf(debug__sleep_per_step=0.02)).to_dict()))
    run_dir = tmp_path / "run"
    proc = spawn_train(cfg_path, run_dir)
    wait_for_updates(run_dir, 67, proc)  # the last checkpoint before the kill: a periodic one at 60
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    resumed = Trainer(load_config(cfg_path), run_dir, progress=False, log=lambda _: None).run()
    assert resumed.status == "finished" and resumed.steps == 160
    with runs.open(run_dir) as run:
        assert run.events("resumed")
    ref_w, got_w = last_weights(reference), last_weights(run_dir)
    assert ref_w.keys() == got_w.keys()
    for name in ref_w:
        assert torch.equal(ref_w[name], got_w[name]), name
    ref_opt = torch.load(
        sorted((reference / "checkpoints").glob("step-*"))[-1] / "optimizer.pt", weights_only=True
    )
    got_opt = torch.load(
        sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "optimizer.pt", weights_only=True
    )
    assert ref_opt["param_groups"] == got_opt["param_groups"]
    for i, state in ref_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got_opt["state"][i][key]), (i, key)
    with runs.open(reference) as a, runs.open(run_dir) as b:
        np.testing.assert_array_equal(a.scalar("val_loss")[1], b.scalar("val_loss")[1])


def test_a_decaying_schedule_is_refused_before_training(tmp_path: Path) -> None:
    cosine = {"kind": "cosine", "peak_lr": 0.01, "warmup_steps": 10, "cycle_steps": 150}
    cfg = config_from_dict(_sf(schedule=cosine))
    with pytest.raises(
        ConfigError, match=r"^schedule: a schedule-free optimizer .* leaves its peak 0.01 at update 11"
    ):
        Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert not (tmp_path / "run").exists()


def test_check_schedule_allows_warmup_then_flat_only() -> None:
    check_schedule(from_dict({"kind": "constant", "lr": 0.1}), 50, "x")
    check_schedule(from_dict(FLAT), 160, "x")
    wsd = from_dict({"kind": "wsd", "peak_lr": 0.1, "warmup_steps": 5, "stable_steps": 40, "decay_steps": 5})
    with pytest.raises(ConfigError, match="at update 46 "):
        check_schedule(wsd, 50, "x")
    check_schedule(wsd, 46, "x")  # the run ends before the decay leaves the peak
    dip = from_dict({"kind": "join", "schedules": [{"kind": "constant", "lr": 0.1}, {"kind": "constant", "lr": 0.05},
                     {"kind": "constant", "lr": 0.2}], "boundaries": [3, 6]})  # fmt: skip
    with pytest.raises(ConfigError, match="at update 3 "):
        check_schedule(dip, 10, "x")


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"name": "adamw_schedulefree", "options": {"warmup_steps": 5}}, r"^optimizer.options.warmup_steps: AdamWScheduleFree's warmup is the schedule's"),
        ({"name": "adamw_schedulefre"}, r"^optimizer.name: 'adamw_schedulefre' is not a torch.optim optimizer; did you mean 'adamw_schedulefree'"),
        ({"name": "adamw_schedulefree", "options": {"betas": [0.9, 0.99]}}, r"^optimizer.options.betas: set optimizer.betas instead"),
    ],
)  # fmt: skip
def test_bad_schedule_free_options_are_one_line(
    tmp_path: Path, optimizer: dict[str, Any], message: str
) -> None:
    cfg = config_from_dict(_sf(optimizer=optimizer))
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert not (tmp_path / "run").exists()


def test_sgd_schedulefree_gets_its_momentum() -> None:
    from cosanneal.jobs.config import OptimizerConfig
    from cosanneal.jobs.optimizers import build_optimizer

    opt = build_optimizer(torch.nn.Linear(2, 1), OptimizerConfig(name="sgd_schedulefree", momentum=0.8), 0.5)
    assert isinstance(opt, schedulefree.SGDScheduleFree)
    assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["lr"] == 0.5


def test_recalibrated_norms_are_the_statistics_at_the_weights() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    data = [torch.randn(8, 3) for _ in range(3)]
    model.train()
    for x in data:  # stale statistics at other weights
        model(x * 5)
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert recalibrate_norms(model, data, lambda m, b: m(b)) == 3
    with torch.no_grad():
        h = torch.cat([model[0](x) for x in data])
    np.testing.assert_allclose(model[1].running_mean.numpy(), h.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1 and model.training
