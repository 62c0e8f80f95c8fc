"""Snapshot ensembles: exactly the kept cycle-end snapshots, --last, numbers equal a direct computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cosanneal.analysis.ensemble import EnsembleError, ensemble_scores, score
from cosanneal.analysis.plan import plan
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.ensemble import evaluate_ensemble
from cosanneal.jobs.trainer import Trainer
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.schedules import from_dict
from cosanneal.zoo import build_model, load_dataset

# 2-d blobs overlap, so no snapshot is perfect and the numbers differ between models
DATA = {"name": "blobs", "options": {"n": 800, "dim": 2}}
MODEL = {"name": "mlp", "options": {"in_features": 2, "hidden": 32, "dropout": 0.1}}
TOTAL = 100  # 640 training samples / 32 = 20 updates per epoch, 5 epochs


def _config(schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "ens",
        "seed": 5,
        "epochs": 5,
        "batch_size": 32,
        "device": "cpu",
        "model": MODEL,
        "data": DATA,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": schedule,
        "checkpoint": {"keep_last": 2, "keep_cycle_ends": True},
        # evaluations (and so checkpoints) every 20 updates and at cycle ends, none extra at epoch ends
        "eval": {"every_steps": 20},
        "telemetry": {"tensorboard": False, "progress": False, "flush_seconds": 0.2},
        **extra,
    }


def _train(run_dir: Path, cfg: dict[str, Any]) -> None:
    result = Trainer(config_from_dict(cfg), run_dir, log=lambda _: None).run()
    assert result.status == "finished"


@pytest.fixture(scope="module")
def sgdr_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An SGDR run planned to end exactly at its budget: 5 cycles of 20 updates (4 restarts)."""
    schedule = plan(TOTAL, cycles=5, peak=0.5, min_ratio=0.01).spec()
    run_dir = tmp_path_factory.mktemp("ens") / "sgdr"
    _train(run_dir, _config(schedule))
    return run_dir, schedule


def _direct_probs(checkpoint_dir: str) -> np.ndarray:
    """Softmax probabilities of one checkpoint on the validation set, computed here from the files."""
    model = build_model("mlp", **MODEL["options"])
    model.load_state_dict(load_file(str(Path(checkpoint_dir) / "model.safetensors")))
    model.eval()
    _, val = load_dataset("blobs", **DATA["options"])
    with torch.no_grad():
        return torch.softmax(model(val.tensors[0]).double(), dim=1).numpy()


def _direct(paths: list[str]) -> tuple[float, float, np.ndarray]:
    _, val = load_dataset("blobs", **DATA["options"])
    y = val.tensors[1].numpy()
    p = np.mean([_direct_probs(path) for path in paths], axis=0)
    return float(np.mean(p.argmax(axis=1) == y)), float(-np.mean(np.log(p[np.arange(len(y)), y]))), p


def test_uses_exactly_the_kept_cycle_end_snapshots(sgdr_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, schedule = sgdr_run
    restarts = from_dict(schedule).restarts(TOTAL)
    assert restarts == [20, 40, 60, 80]
    kept = [c.step for c in Checkpoints(run_dir / "checkpoints").cycle_end_snapshots()]
    assert kept == restarts  # named by the updates done: the update before each restart is the last

    result = evaluate_ensemble(run_dir)
    assert result.snapshots == tuple(kept) == result.available
    assert [Path(p).name for p in result.paths] == [f"step-{s:09d}" for s in kept]
    assert [m.steps for m in result.members] == [(s,) for s in kept]
    assert result.final.steps == (TOTAL,)
    assert result.n_val == 160

    acc, nll, _ = _direct(list(result.paths))
    assert result.ensemble.accuracy == acc
    assert result.ensemble.nll == pytest.approx(nll, rel=1e-12)
    for member, path in zip(result.members, result.paths, strict=True):
        m_acc, m_nll, _ = _direct([path])
        assert (member.accuracy, member.nll) == (m_acc, pytest.approx(m_nll, rel=1e-12))
    assert 0.3 < acc < 1.0  # overlapping blobs: a real classification problem, not a saturated one
    best = min(result.members, key=lambda m: (m.nll, -m.steps[0]))
    assert result.best_single.steps == best.steps and result.best_single.nll == best.nll
    f_acc, f_nll, _ = _direct([str(run_dir / "checkpoints" / f"step-{TOTAL:09d}")])
    assert (result.final.accuracy, result.final.nll) == (f_acc, pytest.approx(f_nll, rel=1e-12))


def test_last_k_takes_the_last_k(sgdr_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = sgdr_run
    result = evaluate_ensemble(run_dir, last=2)
    assert result.snapshots == (60, 80)
    assert result.available == (20, 40, 60, 80)
    acc, nll, _ = _direct(list(result.paths))
    assert (result.ensemble.accuracy, result.ensemble.nll) == (acc, pytest.approx(nll, rel=1e-12))
    with pytest.raises(EnsembleError, match=r"last=5: .* kept only 4 cycle-end snapshots"):
        evaluate_ensemble(run_dir, last=5)
    with pytest.raises(EnsembleError, match="last must be an integer >= 1, got 0"):
        evaluate_ensemble(run_dir, last=0)


def test_torch_rng_is_left_alone(sgdr_run: tuple[Path, dict[str, Any]]) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    evaluate_ensemble(sgdr_run[0], last=1)
    assert torch.equal(torch.rand(3), expected)


def test_no_cycle_end_snapshots_is_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "plain"
    cfg = _config({"kind": "cosine", "peak_lr": 0.2, "cycle_steps": 20}, epochs=1)
    _train(run_dir, cfg)
    with pytest.raises(EnsembleError, match="kept no cycle-end snapshots"):
        evaluate_ensemble(run_dir)
    with pytest.raises(EnsembleError, match="no run store"):
        evaluate_ensemble(tmp_path / "missing")


def test_score_and_ensemble_math() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1], [0.0, 1.0, 0.0]])
    b = np.array([[0.3, 0.6, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    y = np.array([0, 2, 1, 0])
    members, ens, best = ensemble_scores([a, b], [9, 19], y)
    mean = (a + b) / 2
    assert ens.accuracy == 0.75  # the mean is right on rows 0-2, wrong on row 3
    assert np.allclose(mean[[0, 1, 2, 3], y], [0.5, 0.6, 0.6, 0.05])
    assert ens.nll == pytest.approx(-np.mean(np.log([0.5, 0.6, 0.6, 0.05])))
    assert [m.accuracy for m in members] == [0.5, 0.5]  # the ensemble beats both members
    assert members[0].nll == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4, np.finfo(float).tiny])))
    assert best.steps == (19,) and best.label == "best snapshot"  # a's zero probability costs it ~177 nats
    assert score("x", (1,), np.array([[1.0, 0.0]]), np.array([0])).nll == 0.0


# ---- the CLI --------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_json_and_errors(sgdr_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = sgdr_run
    out = _cli("ensemble", str(run_dir), "--last", "3", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["snapshots"] == [40, 60, 80]
    lib = evaluate_ensemble(run_dir, last=3, device="cpu")
    assert data["ensemble"]["nll"] == lib.ensemble.nll and data["final"]["accuracy"] == lib.final.accuracy

    out = _cli("ensemble", str(run_dir), "--last", "9")
    assert out.returncode == 2
    assert out.stderr.startswith("error: last=9:") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr
