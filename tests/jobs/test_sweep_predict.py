"""``cosanneal.jobs.sweep_predict``: a sweep's schedule candidates ranked by a loss law before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from blobs import blobs_config

from cosanneal.analysis.predict import FittedLaw, PredictError, curve
from cosanneal.jobs.sweep_predict import enqueue, prescreen, sample_params
from cosanneal.schedules import from_dict
from cosanneal.tune.sweep import apply_params, parse_space

LAW = FittedLaw("tissue", {"L0": 1.0, "A": 0.5, "alpha": 0.4, "C": 2.0})
SPACE = parse_space(
    {
        "schedule.peak_lr": {"low": 0.02, "high": 0.5, "log": True},
        "schedule.min_ratio": {"low": 0.0, "high": 0.5},
        "schedule.cycle_mult": {"choices": [1, 2]},
    }
)


def test_samples_are_reproducible_and_in_the_space() -> None:
    a, b = sample_params(SPACE, 20, seed=3), sample_params(SPACE, 20, seed=3)
    assert a == b and a != sample_params(SPACE, 20, seed=4)
    assert all(0.02 <= p["schedule.peak_lr"] <= 0.5 and p["schedule.cycle_mult"] in (1, 2) for p in a)
    steps = parse_space({"schedule.warmup_steps": {"low": 0, "high": 40, "step": 10}})
    assert {p["schedule.warmup_steps"] for p in sample_params(steps, 50)} <= {0, 10, 20, 30, 40}


def test_prescreen_keeps_the_candidates_the_law_predicts_best() -> None:
    config = blobs_config()
    best = prescreen(config, SPACE, LAW, candidates=12, keep=3, seed=0)
    assert len(best) == 3
    # the same candidates, bound and predicted by hand: 160 updates, warmup 10 (blobs)
    finals = []
    for point in sample_params(SPACE, 12, seed=0):
        schedule = from_dict(apply_params(config, point)["schedule"]).bind(
            total_steps=160, steps_per_epoch=20
        )
        finals.append(float(curve("tissue", LAW.params, schedule(np.arange(160.0)))[-1]))
    expected = sorted(finals)[:3]
    assert [s.prediction.final_loss for s in best] == pytest.approx(expected, rel=1e-12)
    assert all(math.isfinite(s.prediction.final_loss) for s in best)

    study = optuna.create_study()
    enqueue(study, best)
    queued = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]  # the WAITING trials
    assert queued == [s.params for s in best]


def test_a_key_outside_the_schedule_is_refused() -> None:
    space = parse_space({"optimizer.weight_decay": {"low": 1e-5, "high": 1e-3, "log": True}})
    with pytest.raises(PredictError, match=r"'optimizer.weight_decay' is not a schedule\.\* key"):
        prescreen(blobs_config(), space, LAW)


def test_cosanneal_sweep_predict_from_trains_the_predicted_best_first(tmp_path: Path) -> None:
    """The CLI: fit to a finished blobs run, queue the best 2 of 6 candidates, then the sampler's."""
    import json
    import subprocess
    import sys

    from cosanneal.analysis.predict import fit, trace_from_run

    base = blobs_config(checkpoint__enabled=False, eval__every_steps=40)
    fitted_run = tmp_path / "fitted"
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(base))
    done = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", str(fitted_run), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    space = tmp_path / "space.json"
    space_spec = {"schedule.peak_lr": {"low": 0.02, "high": 0.5, "log": True}}
    space.write_text(json.dumps(space_spec))
    sweep = [sys.executable, "-m", "cosanneal", "sweep", str(config), "--space", str(space), "--study", "p",
             "--output", str(tmp_path / "runs"), "--trials", "3", "--pruner", "none", "--seed", "0",
             "--predict-from", str(fitted_run), "--prescreen", "6", "--keep", "2"]  # fmt: skip
    run = subprocess.run(sweep, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "prescreen: 2 of 6 schedules queued first by predicted final loss" in run.stderr
    law = fit([trace_from_run(fitted_run)])
    expected = [s.params for s in prescreen(base, parse_space(space_spec), law, candidates=6, keep=2, seed=0)]
    trials = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}").trials
    assert [t.params for t in trials[:2]] == expected  # the predicted best, trained first
    assert all(math.isfinite(t.user_attrs["predicted_final_loss"]) for t in trials[:2])
    assert "predicted_final_loss" not in trials[2].user_attrs  # the sampler's own trial
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
    bad = subprocess.run(
        [*sweep[:-4], "--prescreen", "2", "--keep", "3"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --keep: 3 is more than the 2 --prescreen candidates; lower it"
    ]
