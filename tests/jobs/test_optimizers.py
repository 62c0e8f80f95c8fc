"""Any torch.optim optimizer, or a user's by import path, with its options; every refusal is one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config

from cosanneal import from_dict, runs
from cosanneal.errors import ConfigError
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.optimizers import build_optimizer, optimizer_class, torch_optimizers
from cosanneal.jobs.trainer import Trainer


def _build(model: torch.nn.Module, **optimizer: Any) -> torch.optim.Optimizer:
    cfg = config_from_dict(blobs_config(optimizer=optimizer))
    return build_optimizer(model, cfg.optimizer, 0.05)


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("Adam", {"amsgrad": True}, {"amsgrad": True, "betas": (0.9, 0.999)}),
        ("radam", {"decoupled_weight_decay": True}, {"decoupled_weight_decay": True}),
        ("NAdam", {"momentum_decay": 0.002}, {"momentum_decay": 0.002}),
        ("RMSprop", {"alpha": 0.9, "momentum": 0.5}, {"alpha": 0.9, "momentum": 0.5}),
        ("Adagrad", {"lr_decay": 0.0}, {"lr_decay": 0.0}),
        ("torch.optim:Adamax", {}, {"betas": (0.9, 0.999)}),
    ],
)
def test_a_torch_optimizer_by_name_gets_its_options_groups_and_the_schedules_lr(
    name: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    opt = _build(
        _net(), name=name, options=options, weight_decay=1e-4, groups=[{"match": "bias", "weight_decay": 0.0}]
    )
    assert type(opt) is optimizer_class(name)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    for key, value in expected.items():
        assert opt.param_groups[0][key] == value, key


def test_the_shorthands_keep_their_named_keys() -> None:
    sgd = _build(_net(), name="SGD", momentum=0.8, nesterov=True, options={"dampening": 0.0})
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.8, True)
    adamw = _build(_net(), name="adamw", betas=[0.8, 0.99], eps=1e-6, options={"amsgrad": True})
    assert adamw.param_groups[0]["betas"] == (0.8, 0.99) and adamw.param_groups[0]["amsgrad"] is True
    # another optimizer gets its own defaults, not SGD's momentum or AdamW's betas
    rms = _build(_net(), name="RMSprop")
    assert rms.param_groups[0]["momentum"] == 0 and rms.param_groups[0]["eps"] == 1e-8


def test_every_exported_torch_optimizer_resolves_by_its_name() -> None:
    found = torch_optimizers()
    assert {"SGD", "Adam", "AdamW", "RAdam", "NAdam", "RMSprop", "Adagrad", "LBFGS"} <= set(found)
    for name, cls in found.items():
        assert optimizer_class(name) is cls and optimizer_class(name.lower()) is cls


def test_a_users_optimizer_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_opt.py").write_text(
        textwrap.dedent(
            """
            import torch

            class SignSGD(torch.optim.Optimizer):
                def __init__(self, params, lr=0.01, weight_decay=0.0, scale=1.0):
                    super().__init__(params, dict(lr=lr, weight_decay=weight_decay, scale=scale))

                @torch.no_grad()
                def step(self, closure=None):
                    for group in self.param_groups:
                        for p in group["params"]:
                            if p.grad is not None:
                                p.add_(p.grad.sign(), alpha=-group["lr"] * group["scale"])

            not_an_optimizer = object()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    opt = _build(_net(), name="my_opt:SignSGD", options={"scale": 2.0})
    assert type(opt).__name__ == "SignSGD" and opt.param_groups[0]["scale"] == 2.0
    with pytest.raises(
        ConfigError, match=r"^optimizer.name: 'my_opt:not_an_optimizer' is not a torch.optim.Optimizer"
    ):
        _build(_net(), name="my_opt:not_an_optimizer")
    with pytest.raises(
        ConfigError, match=r"^optimizer.name: cannot import 'nope_mod:X' \(ModuleNotFoundError"
    ):
        _build(_net(), name="nope_mod:X")


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"name": "adamm"}, r"^optimizer.name: 'adamm' is not a torch.optim optimizer; did you mean 'Adam'"),
        ({"name": "LBFGS"}, r"^optimizer.name: LBFGS needs a closure"),
        ({"name": "Adam", "options": {"lr": 0.1}}, r"^optimizer.options.lr: not an option here; the LR comes from"),
        ({"name": "Adam", "options": {"weight_decay": 0.1}}, r"^optimizer.options.weight_decay: .*optimizer.weight_decay"),
        ({"name": "Adam", "options": {"momentum": 0.9}}, r"^optimizer.options.momentum: Adam takes no 'momentum'; its options: "),
        ({"name": "sgd", "options": {"momentum": 0.5}}, r"^optimizer.options.momentum: set optimizer.momentum instead"),
        ({"name": "Rprop", "weight_decay": 0.1}, r"^optimizer.weight_decay: Rprop has no weight decay"),
        ({"name": "Adam", "options": {"betas": [1.5, 0.9]}}, r"^optimizer.options: Adam\(betas=\[1.5, 0.9\]\) refused: "),
    ],
)  # fmt: skip
def test_an_optimizer_that_cannot_be_built_is_one_line(optimizer: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _build(_net(), **optimizer)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["", "two words", "a:b:c", "3adam"])
def test_a_malformed_name_is_refused_when_the_config_loads(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^optimizer.name: must"):
        config_from_dict(blobs_config(optimizer={"name": name}))


def test_a_run_with_radam_and_its_options_follows_the_closed_form_and_resumes(tmp_path: Path) -> None:
    data = blobs_config(
        optimizer={"name": "RAdam", "weight_decay": 1e-4, "options": {"decoupled_weight_decay": True}},
        schedule__peak_lr=3e-3,
        epochs=3,
    )
    cfg = config_from_dict(data)
    run_dir = tmp_path / "run"
    result = Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished"
    run = runs.open(run_dir)
    try:
        steps, lr = run.scalar("lr", 0)
        schedule = from_dict(run.params["schedule"])
    finally:
        run.close()
    assert steps.tolist() == list(range(60))
    np.testing.assert_array_equal(lr, schedule(steps))
    state = torch.load(
        sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "optimizer.pt", weights_only=True
    )
    assert state["param_groups"][0]["decoupled_weight_decay"] is True


def test_the_cli_refuses_a_bad_option_before_training_and_writes_nothing(tmp_path: Path) -> None:
    import json

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(blobs_config(optimizer={"name": "Adagrad", "options": {"betas": [0.9, 0.99]}})))
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", "run", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: optimizer.options.betas: Adagrad takes no 'betas'; its options: ")
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "run" / "run.db").exists()


def test_momentum_annealing_on_an_optimizer_without_momentum_is_one_line(tmp_path: Path) -> None:
    cfg = config_from_dict(blobs_config(optimizer={"name": "Adagrad"}, scheduler={"momentum": [0.95, 0.85]}))
    with pytest.raises(ConfigError, match=r"^scheduler.momentum: Adagrad has no momentum or betas to anneal"):
        Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert not (tmp_path / "run" / "run.db").exists()
    # RMSprop has a momentum to anneal
    cfg = config_from_dict(
        blobs_config(
            optimizer={"name": "RMSprop"},
            scheduler={"momentum": [0.95, 0.85]},
            epochs=1,
            schedule__peak_lr=1e-3,
        )
    )
    assert Trainer(cfg, tmp_path / "rms", progress=False, log=lambda _: None).run().status == "finished"
