"""`cosanneal sweep`: real trainings, real worker processes, a real SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import FrozenTrial, TrialState
from sweep_blobs import sweep_blobs, sweep_worker

from cosanneal import ConfigError, runs
from cosanneal.cli import main
from cosanneal.jobs.sweep import check_space, run_sweep
from cosanneal.schedules import from_dict
from cosanneal.tune.sweep import (
    SweepSettings,
    apply_params,
    default_storage,
    load_space,
    open_study,
    parse_budget,
    parse_space,
)

BLOBS = sweep_blobs("blobs-sweep")
SPACE = {"schedule.peak_lr": {"low": 1e-6, "high": 0.5, "log": True}}
QUIET = {"log": lambda _m: None}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: threads only contend


def _settings(tmp_path: Path, **kw: Any) -> SweepSettings:
    base: dict[str, Any] = {"study": "s", "runs_dir": tmp_path / "runs", "trials": 4, "pruner": "median",
                            "startup_trials": 2, "seed": 0}  # fmt: skip
    return SweepSettings(**{**base, **kw})


def _study(settings: SweepSettings) -> optuna.Study:
    return optuna.load_study(study_name=settings.study, storage=settings.url)


# ---- the space file ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a.b": {"low": 2, "high": 1}}, 'space "a.b": low must be < high, got low=2, high=1'),
        ({"a": {"low": 0, "high": 1, "log": True}}, 'space "a": log = true needs low > 0, got low=0'),
        ({"a": {"low": 1}}, 'space "a": give both low and high (or choices = [...])'),
        ({"a": {"choices": []}}, 'space "a": choices must be a non-empty list, got []'),
        ({"a": {"choices": [1], "low": 0}}, "space \"a\": choices cannot be combined with 'low'"),
        ({"a": {"low": 0, "hi": 1}}, "space \"a\": unknown option 'hi'; allowed: low, high, log, step, choices, unit"),
        ({"a": {"low": "x", "high": 1}}, "space \"a\": low must be a finite number, got 'x'"),
        ({"a": {"low": 0.1, "high": 1, "unit": "min"}}, "space \"a\": unit must be one of st, ep, dur, got 'min'"),
        ({"a": 0.1}, 'space "a": expected a table like'),
        ({}, "space: the space file holds no parameters"),
    ],
)  # fmt: skip
def test_space_errors_are_one_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_space(spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_space_distributions_and_units(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        '"schedule.peak_lr" = {low = 1e-3, high = 1.0, log = true}\n'
        '"schedule.cycle_mult" = {choices = [1, 2]}\n'
        "[schedule]\nwarmup_steps = {low = 0, high = 20, step = 5}\n"
        'cycle_steps = {low = 0.1, high = 0.3, unit = "dur"}\n'
    )
    space = load_space(path)
    dists = {k: type(v.distribution).__name__ for k, v in space.items()}
    assert dists == {"schedule.peak_lr": "FloatDistribution", "schedule.cycle_mult": "CategoricalDistribution",
                     "schedule.warmup_steps": "IntDistribution", "schedule.cycle_steps": "FloatDistribution"}  # fmt: skip
    assert space["schedule.cycle_steps"].value(0.25) == "0.25dur"
    assert space["schedule.peak_lr"].distribution.log is True  # type: ignore[attr-defined]
    assert apply_params(BLOBS, {"schedule.cycle_steps": "0.25dur"})["schedule"]["cycle_steps"] == "0.25dur"
    assert BLOBS["schedule"]["cycle_steps"] == 12  # the base config is not modified


def test_shipped_space_fits_the_digits_config() -> None:
    from cosanneal.jobs.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "src/cosanneal/zoo/configs/digits_sgdr.toml")
    check_space(cfg.to_dict(), load_space(root / "examples/sweep/space.toml"))


def test_space_keys_the_config_rejects_fail_fast() -> None:
    with pytest.raises(ConfigError, match=r'^space "optimizer.lrr": optimizer.lrr: unknown key'):
        check_space(BLOBS, parse_space({"optimizer.lrr": {"low": 0.1, "high": 1.0}}))
    with pytest.raises(ConfigError, match=r'^space "schedule.peak": '):
        check_space(BLOBS, parse_space({"schedule.peak": {"low": 0.1, "high": 1.0}}))


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200.0), ("30m", 1800.0), ("45s", 45.0), ("90", 90.0),
                                               ("1.5h", 5400.0), ("1d", 86400.0), (None, None)])  # fmt: skip
def test_parse_budget(text: str | None, seconds: float | None) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["2 hours", "-1h", "0", "h"])
def test_parse_budget_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--budget: "):
        parse_budget(text)


# ---- pruning at cycle ends -----------------------------------------------------------------------
def test_sweep_prunes_bad_trials_at_cycle_ends_and_show_summarises_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two good trials first (the median pruner's startup), then two with a hopeless LR
    settings = _settings(tmp_path)
    study = open_study(settings)
    for lr in (0.2, 0.1, 1e-6, 2e-6):
        study.enqueue_trial({"schedule.peak_lr": lr})
    result = run_sweep(BLOBS, parse_space(SPACE), settings, **QUIET)
    assert (result.complete, result.pruned, result.failed) == (2, 2, 0)
    trials = _study(settings).get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    schedule = from_dict(BLOBS["schedule"]).bind(total_steps=80, steps_per_epoch=20)
    cycle_end_updates = [int(r) for r in schedule.restarts(80)]  # restarts are at the updates ending a cycle
    assert cycle_end_updates == [12, 36]
    for t in trials:
        steps = sorted(t.intermediate_values)
        assert steps == ([0, 1] if t.state == TrialState.COMPLETE else [0])  # cycle indices, not updates
        with runs.open(t.user_attrs["run_dir"]) as run:
            eval_steps, val_loss = run.scalar("val_loss")
            lr_steps, _ = run.scalar("lr", 0)
        for k in steps:
            update = t.user_attrs[f"cycle_end_update_{k}"]
            assert update == cycle_end_updates[k]
            assert t.intermediate_values[k] == val_loss[list(eval_steps).index(update)]
        assert t.user_attrs["steps"] == len(lr_steps)
        if t.state == TrialState.PRUNED:  # stopped at its first rung, the trainer went no further
            assert t.user_attrs["steps"] == 12 and t.user_attrs["status"] == "pruned"
        else:
            assert t.user_attrs["steps"] == 80 and t.value == pytest.approx(val_loss[-1], rel=0, abs=0)
        assert t.user_attrs["seconds"] > 0

    # --show on the same study (one test: the sweep above is its fixture)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "sweep",
                "--show",
                "--storage",
                settings.url,
                "--study",
                "s",
                "--output",
                str(settings.runs_dir),
            ]
        )
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "best trials" in out and "2 complete, 2 pruned" in out
    assert "parameter importances" in out and "schedule.peak_lr" in out
    png = settings.runs_dir / "s" / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = _study(settings).best_trial
    assert f"{best.value:.4g}" in out


def test_show_unknown_study_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--show", "--storage", url, "--study", "nope"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: --study: no study 'nope' in {url}; have none\n"


def test_budget_stops_the_study(tmp_path: Path) -> None:
    settings = _settings(tmp_path, trials=5, budget_seconds=1e-3, pruner="none")
    first = run_sweep(BLOBS, parse_space(SPACE), settings, **QUIET)
    assert (first.complete, first.stopped_by) == (1, "budget")  # one trial used the whole budget
    again = run_sweep(BLOBS, parse_space(SPACE), settings, **QUIET)
    assert (again.complete, again.stopped_by) == (1, "budget")  # a spent budget starts nothing
    more = run_sweep(BLOBS, parse_space(SPACE), _settings(tmp_path, trials=2, pruner="none"), **QUIET)
    assert more.complete == 2 and more.steps == 160


# ---- workers: sharing a study, dying, retrying ----------------------------------------------------
def _files(tmp_path: Path, sleep: float) -> tuple[Path, Path]:
    cfg = json.loads(json.dumps(BLOBS))
    cfg["debug"] = {"sleep_per_step": sleep}
    config, space = tmp_path / "cfg.json", tmp_path / "space.json"
    config.write_text(json.dumps(cfg))
    space.write_text(json.dumps({"schedule.peak_lr": {"low": 0.05, "high": 0.3}}))
    return config, space


def _worker(config: Path, space: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return sweep_worker(config, space, tmp_path / "runs", "--pruner", "none", *extra)


def _wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def test_a_claim_that_loses_a_race_is_given_back_unrun_and_the_study_ends_with_exactly_its_trials(
    tmp_path: Path,
) -> None:
    import threading

    settings = _settings(tmp_path, trials=1, pruner="none")
    study = open_study(settings)
    study.enqueue_trial({"schedule.peak_lr": 0.2})  # the worker's claim pops this queued trial
    rival = optuna.load_study(study_name="s", storage=settings.url)  # another worker, its own connection
    rival_trials: list[optuna.Trial] = []
    space = parse_space(SPACE)

    class RacingSampler(optuna.samplers.TPESampler):
        """The rival claims a trial just after the worker's claim, before the worker counts again."""

        def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
            super().before_trial(study, trial)
            if not rival_trials:
                rival_trials.append(rival.ask({"schedule.peak_lr": space["schedule.peak_lr"].distribution}))
                threading.Timer(1.5, lambda: rival.tell(rival_trials[0], 0.5)).start()  # it finishes later

    result = run_sweep(BLOBS, space, settings, sampler=RacingSampler(seed=0), **QUIET)
    assert (result.complete, result.pruned, result.failed, result.surplus) == (1, 0, 0, 1)
    assert result.best_trial == rival_trials[0].number  # the rival's trial is the study's one trial
    trials = _study(settings).get_trials()
    given_back = trials[0]
    assert given_back.state == TrialState.FAIL and given_back.user_attrs == {
        "status": "surplus"
    }  # never trained
    assert not (settings.runs_dir / "s" / "trial-0").exists()
    requeued = [t for t in trials if t.state == TrialState.WAITING]  # its queued parameters are kept
    assert [t.system_attrs["fixed_params"] for t in requeued] == [{"schedule.peak_lr": 0.2}]
    assert [t.state for t in trials if t.state != TrialState.WAITING] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]


def test_a_grid_sweep_ends_when_its_grid_is_done(tmp_path: Path) -> None:
    grid = optuna.samplers.GridSampler({"schedule.peak_lr": [0.1, 0.2]}, seed=0)
    space = parse_space({"schedule.peak_lr": {"choices": [0.1, 0.2]}})
    result = run_sweep(BLOBS, space, _settings(tmp_path, trials=3, pruner="none"), sampler=grid, **QUIET)
    assert (result.complete, result.failed, result.stopped_by) == (2, 0, "sampler")
    assert sorted(t.params["schedule.peak_lr"] for t in _study(_settings(tmp_path)).get_trials()) == [
        0.1,
        0.2,
    ]


def _reader(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"

    def trials() -> list[optuna.trial.FrozenTrial]:
        if not (tmp_path / "runs" / "optuna.db").exists():
            return []
        try:
            return optuna.load_study(study_name="w", storage=url).get_trials()
        except KeyError:  # the study does not exist yet
            return []
        except sqlalchemy.exc.SQLAlchemyError:  # the worker is creating the schema this instant: ask again
            return []

    return trials


def test_two_workers_share_one_sqlite_study(tmp_path: Path) -> None:
    config, space = _files(tmp_path, sleep=0.02)
    trials = _reader(tmp_path)
    first = _worker(config, space, tmp_path, "--trials", "6")
    # the second joins mid-trial, so the two never finish together: when one worker finishes the 5th trial
    # the other is always running the 6th (a worker counting only finished trials would start a 7th)
    _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials()))
    procs = [first, _worker(config, space, tmp_path, "--trials", "6")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}")
    everything = study.get_trials()
    trials = [t for t in everything if t.state == TrialState.COMPLETE]
    assert len(trials) == 6  # the budget holds across workers: not one trial more
    # the only other trials are claims a worker gave back before training (it counted 6 already live)
    assert all(t.state == TrialState.FAIL and t.user_attrs["status"] == "surplus" and "steps" not in t.user_attrs
               for t in everything if t.state != TrialState.COMPLETE)  # fmt: skip
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    for t in trials:  # every trial trained its own run with its own sampled LR
        with runs.open(t.user_attrs["run_dir"]) as run:
            assert run.params["config"]["schedule"]["peak_lr"] == t.params["schedule.peak_lr"]


def test_a_killed_workers_trial_is_failed_and_rerun_and_the_sweep_resumes(tmp_path: Path) -> None:
    config, space = _files(tmp_path, sleep=0.02)
    args = ("--trials", "3", "--heartbeat-interval", "1", "--grace-period", "2")
    trials = _reader(tmp_path)

    first = _worker(config, space, tmp_path, *args)
    _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials()[1:]))
    first.send_signal(signal.SIGKILL)  # mid-trial: after its first cycle-end report
    assert first.wait(timeout=30) == -signal.SIGKILL
    killed = next(t for t in trials() if t.state == TrialState.RUNNING)
    time.sleep(2.5)  # its heartbeat is now older than the grace period
    second = _worker(config, space, tmp_path, *args)
    assert second.wait(timeout=300) == 0
    after = trials()
    assert after[killed.number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["worker"] != killed.user_attrs["worker"]
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3  # resumed: 3 in all, not 3 more
    with runs.open(retries[0].user_attrs["run_dir"]) as run:
        steps, _ = run.scalar("lr", 0)
    assert np.array_equal(steps, np.arange(80))  # the retry trained the whole run


def test_a_worker_restarted_at_once_after_a_kill_in_the_last_trial_retries_it_before_reporting_done(
    tmp_path: Path,
) -> None:
    config, space = _files(tmp_path, sleep=0.02)
    # a grace period longer than a worker takes to start, so the restarted worker finds a fresh heartbeat
    args = ("--trials", "2", "--heartbeat-interval", "1", "--grace-period", "8")
    trials = _reader(tmp_path)

    first = _worker(config, space, tmp_path, *args)
    # the study's last trial (1 complete, the 2nd running and past its first rung)
    _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials()[1:]))
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    killed = next(t for t in trials() if t.state == TrialState.RUNNING)
    second = _worker(config, space, tmp_path, *args)  # at once: the killed trial's heartbeat is still fresh
    assert second.wait(timeout=300) == 0
    after = trials()
    assert [t.state for t in after if t.state == TrialState.RUNNING] == []  # nothing left running forever
    assert after[killed.number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in after) == 2
    assert len(after) == 3  # the worker waited for the stale trial instead of starting another one


def test_best_params_are_printed_in_the_units_of_the_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = _files(tmp_path, sleep=0.0)
    space = tmp_path / "space.toml"
    space.write_text('"schedule.cycle_steps" = {low = 0.1, high = 0.3, step = 0.05, unit = "dur"}\n'
                     '"schedule.peak_lr" = {low = 0.05, high = 0.3}\n')  # fmt: skip
    argv = ["sweep", str(config), "--space", str(space), "--study", "u", "--output", str(tmp_path / "runs"),
            "--trials", "1", "--pruner", "none", "--seed", "0"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    trial = optuna.load_study(study_name="u", storage=default_storage(tmp_path / "runs")).best_trial
    cycle = trial.params["schedule.cycle_steps"]
    line = next(line for line in out.splitlines() if line.startswith("best params: "))
    assert f"schedule.cycle_steps={cycle:g}dur" in line, line
    assert f"schedule.peak_lr={trial.params['schedule.peak_lr']:.4g}," in line + ","
    with runs.open(trial.user_attrs["run_dir"]) as run:  # the trial trained with that duration string
        assert run.params["config"]["schedule"]["cycle_steps"] == f"{cycle:g}dur"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--show", "--study", "u", "--output", str(tmp_path / "runs")])
    assert exit_.value.code == 0
    assert f"{cycle:g}dur" in capsys.readouterr().out  # --show too


def test_cli_bad_space_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = _files(tmp_path, sleep=0.0)
    space = tmp_path / "bad.toml"
    space.write_text('"schedule.peak_lr" = {low = 1.0, high = 0.1}\n')
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(config), "--space", str(space), "--output", str(tmp_path)])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err
        == 'error: space "schedule.peak_lr": low must be < high, got low=1.0, high=0.1\n'
    )


def test_the_python_trial_job_resumes_a_retry_from_its_last_checkpoint(tmp_path: Path) -> None:
    """``run_sweep``'s trial job (the CLI's too): ``resume=True`` continues the dead trial's run."""
    from cosanneal.jobs.sweep import trainer_trial

    config = {**BLOBS, "checkpoint": {"enabled": True, "every_steps": 10}, "max_steps": 30}
    run_dir = tmp_path / "trial-0"
    first = trainer_trial(config)(run_dir, lambda _m: None, lambda *_a: False)
    assert first.status == "finished" and first.steps == 30
    whole = trainer_trial({**config, "max_steps": 80})
    retry = whole(run_dir, lambda _m: None, lambda *_a: False, resume=True)
    assert retry.status == "finished" and retry.steps == 80
    with runs.open(run_dir) as run:
        assert [e["step"] for e in run.events("resumed")] == [30]  # continued, not started over
        steps, _ = run.scalar("lr", 0)
    assert steps.tolist() == list(range(80))
    assert not list(tmp_path.glob("trial-0.old-*"))
    fresh = whole(run_dir, lambda _m: None, lambda *_a: False)  # a new trial: trains from step 0
    assert fresh.steps == 80 and len(list(tmp_path.glob("trial-0.old-*"))) == 1
