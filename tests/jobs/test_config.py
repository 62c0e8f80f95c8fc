"""Config loading: every bad value is one line naming the key, through ``cosanneal train``; good ones load."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from blobs import blobs_config
from torch.utils.data import TensorDataset

from cosanneal import ConfigError
from cosanneal.cli import main
from cosanneal.jobs import trainer
from cosanneal.jobs.config import (
    BUILTIN_METRICS,
    DEFAULT_SCHEDULE,
    check_metric_names,
    config_from_dict,
    load_config,
)
from cosanneal.jobs.data import EpochBatches


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def train_cli(config: Path, run_dir: Path, *sets: str) -> tuple[int, str]:
    """``cosanneal train CONFIG --set ...`` in this process: (exit code, stderr). Other exceptions escape."""
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    for pair in sets:
        args += ["--set", pair]
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), err.getvalue()


def assert_one_line(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_nothing_trained(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
    assert not (run_dir / "run.db").exists()


@pytest.fixture
def blobs_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "blobs.json", blobs_config(epochs=1))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        # each gave a traceback before
        (['schedule.kind=["cosine"]'], "schedule.kind: must be one of constant, cosine,"),
        (["telemetry.prometheus_port=70000"], "telemetry.prometheus_port: must be in [0, 65535], got 70000"),
        (["telemetry.prometheus_port=-1"], "telemetry.prometheus_port: must be in [0, 65535], got -1"),
        (
            ["optimizer.name=adamw", "optimizer.betas=[1.5, 0.999]"],
            "optimizer.betas[0]: must be in [0, 1), got 1.5",
        ),
        (
            ["optimizer.name=adamw", "optimizer.betas=[0.9, 1.0]"],
            "optimizer.betas[1]: must be in [0, 1), got 1.0",
        ),
        (["model.options.dropout=2.0"], "model.options.dropout: must be a number in [0, 1), got 2.0"),
        (["model.options.hidden=-3"], "model.options.hidden: must be an integer >= 1, got -3"),
        (
            ["model.name=cnn", "model.options={channels = -3}"],
            "model.options.channels: must be an integer >= 1, got -3",
        ),
        (
            ["model.options.widht=3"],
            "model.options.widht: unknown option of model 'mlp'; allowed: in_features,",
        ),
        (["data.options.val_fraction=1.5"], "data.options.val_fraction: must be a number in (0, 1), got 1.5"),
        (["data.options.split_seed=-1"], "data.options.split_seed: must be an integer >= 0, got -1"),
        (["model.name=resnet"], "model.name: must be one of cnn, gpt, mlp, got 'resnet'"),
        (
            ["early_stopping.enabled=true", "early_stopping.metric=nope"],
            "early_stopping.metric: 'nope' is not a metric the task reports; use one of val_acc, val_loss",
        ),
        (["telemetry.flush_seconds=1e300"], "telemetry.flush_seconds: must be in (0, 3600], got 1e+300"),
        (["debug.sleep_per_step=1e12"], "debug.sleep_per_step: must be in [0, 3600], got 1000000000000.0"),
        (["schedule.peak_lr=1e400"], "schedule.peak_lr must be a finite number"),
        # each was accepted silently before
        (
            ['optimizer.groups=[{match = "bias", weight_decay = -1}]'],
            "optimizer.groups[0].weight_decay: must be >= 0, got -1",
        ),
        (
            ['optimizer.groups=[{match = "bias", lr_scale = 0}]'],
            "optimizer.groups[0].lr_scale: must be > 0, got 0",
        ),
        (["optimizer.momentum=1.5"], "optimizer.momentum: must be in [0, 1), got 1.5"),
        (
            ["checkpoint.best_metric=nope"],
            "checkpoint.best_metric: 'nope' is not a metric the task reports; use one of val_acc, val_loss",
        ),
        (["guard.lr_factor=2"], "guard.lr_factor: must be in (0, 1), got 2"),
        (["scheduler.momentum=[0.85, 0.95]"], "scheduler.momentum: must be [max, min] with min <= max"),
        (
            ["optimizer.momentum=0", "optimizer.nesterov=true"],
            "optimizer.nesterov: needs optimizer.momentum > 0",
        ),
        (["name="], "name: must not be empty"),
        (["telemetry.prometheus_textfile="], "telemetry.prometheus_textfile: must not be empty"),
        (["model.entry=no-colon"], "model.entry: must look like 'package.module:function', got 'no-colon'"),
        (["schedule.bogus=1"], "schedule.bogus: unknown key for kind 'cosine'; allowed: peak_lr,"),
        (["seed=-1"], "seed: must be in [0, 2**63), got -1"),
        (["seed=9223372036854775808"], "seed: must be in [0, 2**63), got 9223372036854775808"),
        (["max_steps=9223372036854775808"], "max_steps: must be < 2**63"),
        (["data.options.n=1"], "data.options: data set 'blobs' fails with these options"),  # at build time
    ],
)
def test_bad_values_are_one_line_naming_the_key_before_training(
    blobs_file: Path, tmp_path: Path, sets: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    assert_one_line(*train_cli(blobs_file, run_dir, *sets), message)
    assert_nothing_trained(run_dir)


@pytest.mark.parametrize(
    "error", ["ValueError('width must be even')", "RuntimeError('cannot build: bad width')"]
)
def test_a_user_model_that_fails_on_its_options_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    module = f"user_models_{error[0].lower()}"  # one module per case: imports are cached
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(f"""
        def build(width=4):
            raise {error}
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _write(
        tmp_path / "cfg.json", blobs_config(model={"entry": f"{module}:build", "options": {"width": 3}})
    )
    run_dir = tmp_path / "run"
    code, stderr = train_cli(cfg, run_dir)
    assert_one_line(code, stderr, f"model.options: '{module}:build' fails with these options", error[:10])
    assert_nothing_trained(run_dir)


def test_huge_numbers_from_a_file_are_one_line(tmp_path: Path) -> None:
    for key, value, message in [
        (
            "optimizer",
            {"weight_decay": 10**400},
            "optimizer.weight_decay: must be a finite number, got an integer",
        ),
        ("telemetry", {"every": 10**400}, "telemetry.every: must be < 2**63"),
        ("schedule", {**DEFAULT_SCHEDULE, "peak_lr": 10**400}, "schedule.peak_lr: must be a finite number"),
    ]:
        cfg = _write(tmp_path / "cfg.json", blobs_config(**{key: value}))
        with pytest.raises(ConfigError) as raised:
            load_config(cfg)
        assert str(raised.value).startswith(message), raised.value
        assert len(str(raised.value)) < 300


# ---- seeds ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 3, 10**15, 2**63 - 1])
def test_every_seed_below_2_63_gives_a_reproducible_permutation(seed: int) -> None:
    ds = TensorDataset(torch.arange(50.0), torch.arange(50))
    orders = [EpochBatches(ds, 5, seed=seed).order(epoch) for epoch in (0, 1, 0)]
    assert sorted(orders[0].tolist()) == list(range(50))
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])


def test_small_seeds_keep_the_data_order_earlier_runs_used() -> None:
    ds = TensorDataset(torch.arange(50.0), torch.arange(50))
    for seed, epoch in [(0, 0), (3, 5), (10**9, 2)]:
        before = torch.randperm(50, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        assert torch.equal(EpochBatches(ds, 5, seed=seed).order(epoch), before)


def test_train_runs_with_the_largest_seed(blobs_file: Path, tmp_path: Path) -> None:
    code, stderr = train_cli(blobs_file, tmp_path / "run", f"seed={2**63 - 1}", "max_steps=3")
    assert code == 0, stderr
    assert "Traceback" not in stderr


# ---- --set into a defaulted table ------------------------------------------------------------------------
def test_set_into_the_default_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blobs_config()
    del data["schedule"]
    cfg_file = _write(tmp_path / "cfg.json", data)
    assert load_config(cfg_file, ["schedule.peak_lr=0.02"]).schedule == {**DEFAULT_SCHEDULE, "peak_lr": 0.02}
    assert load_config(cfg_file).schedule == DEFAULT_SCHEDULE  # the default itself is untouched

    seen: list[dict[str, Any]] = []

    class Probe(trainer.Trainer):
        def run(self) -> trainer.TrainResult:
            seen.append(self.config.schedule)
            raise ConfigError("probe: stopped before training")

    monkeypatch.setattr(trainer, "Trainer", Probe)
    code, stderr = train_cli(cfg_file, tmp_path / "run", "schedule.peak_lr=0.02")
    assert (code, stderr) == (2, "error: probe: stopped before training\n")
    assert seen == [{"kind": "cosine", "peak_lr": 0.02, "cycle_steps": "1dur"}]


def test_set_into_a_given_schedule_replaces_only_that_key(blobs_file: Path) -> None:
    given = blobs_config()["schedule"]
    assert load_config(blobs_file, ["schedule.peak_lr=0.3"]).schedule == {**given, "peak_lr": 0.3}


# ---- metric names ----------------------------------------------------------------------------------------
def test_check_metric_names_checks_only_the_keys_in_use() -> None:
    cfg = config_from_dict(
        blobs_config(
            checkpoint__best_metric="val_acc", checkpoint__best_mode="max", early_stopping__metric="val_loss"
        )
    )
    check_metric_names(cfg, BUILTIN_METRICS)
    with pytest.raises(
        ConfigError, match=r"^checkpoint\.best_metric: 'val_acc' is not a metric .*use one of val_ppl$"
    ):
        check_metric_names(cfg, ["val_ppl"])
    # early stopping is off in the blobs config: its metric is not checked
    no_ckpt = config_from_dict(blobs_config(checkpoint__enabled=False))
    check_metric_names(no_ckpt, [])
    on = config_from_dict(blobs_config(checkpoint__enabled=False, early_stopping__enabled=True))
    with pytest.raises(
        ConfigError, match=r"^early_stopping\.metric: 'val_loss' .*the task reports no metric$"
    ):
        check_metric_names(on, [])


def test_a_disabled_early_stopping_metric_is_not_checked_at_load() -> None:
    cfg = config_from_dict(blobs_config(early_stopping__metric="anything"))
    assert cfg.early_stopping.metric == "anything" and not cfg.early_stopping.enabled


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"optimizer": {"momentun": 0.9}},
            "optimizer.momentun: unknown key; did you mean 'momentum'? allowed: name,",
        ),
        ({"epochz": 3}, "epochz: unknown key; did you mean 'epochs'? allowed: name,"),
        (
            {"optimizer": {"lr": 0.1}},
            "optimizer.lr: unknown key; the LR comes from the schedule: set schedule.peak_lr",
        ),
        ({"optimizer": {"zzz": 1}}, "optimizer.zzz: unknown key; allowed: name,"),
    ],
)
def test_unknown_keys_suggest_the_key_meant(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith(message)
