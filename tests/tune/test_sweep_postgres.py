"""Sweeps on a real PostgreSQL server (tests/tune/pg_server.py): URLs, bad URLs, 8 workers and 2 SIGKILLs."""

from __future__ import annotations

import dataclasses
import json
import os
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
from blobs import free_port
from optuna.trial import FrozenTrial, TrialState
from pg_server import PgServer
from sweep_blobs import sweep_blobs, sweep_worker

from cosanneal import ConfigError, runs
from cosanneal.cli import main
from cosanneal.jobs.sweep import run_sweep
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.tune.sweep import SURPLUS, SweepSettings, check_storage_url, open_storage, parse_space

BLOBS = sweep_blobs("blobs-pg")  # a checkpoint at each of its two cycle ends where a test enables them
SPACE = {"schedule.peak_lr": {"low": 0.05, "high": 0.3}}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: threads only contend


def _database(pg_server: PgServer, name: str) -> str:
    return pg_server.create_database(f"{name}_{os.getpid()}")  # xdist workers each start their own server


def _trials(url: str, study: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials()
    except KeyError:  # the study does not exist yet
        return []
    except sqlalchemy.exc.SQLAlchemyError:  # a worker is creating the schema this instant: ask again
        return []


# ---- URLs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "connects_with"),
    [
        ("postgresql://u@db.internal:5432/sweeps", "postgresql+psycopg://u@db.internal:5432/sweeps"),
        ("postgres://u:pw@db/sweeps", "postgresql+psycopg://u:pw@db/sweeps"),
        ("postgresql+psycopg://u@/sweeps?host=/run/pg", "postgresql+psycopg://u@/sweeps?host=/run/pg"),
        ("sqlite:///x/optuna.db", "sqlite:///x/optuna.db"),
    ],
)
def test_postgres_urls_use_psycopg_3(url: str, connects_with: str) -> None:
    assert check_storage_url(url) == connects_with


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("db.internal/sweeps", "--storage: 'db.internal/sweeps' is not a database URL; use sqlite:///PATH/optuna.db, "
                               "postgresql://USER:PASSWORD@HOST:PORT/DB or, over a Unix socket, "
                               "postgresql://USER@/DB?host=/SOCKET/DIR"),
        ("postgresql://u@db:port/x", "--storage: 'postgresql://u@db:port/x' is not a database URL; use "),
        ("postgresql://u:secret@db", "--storage: 'postgresql://u:***@db' names no database; add it: "
                                     "postgresql://USER@HOST/DBNAME"),
        ("postgresql+psycopg2://u@db/x", "--storage: 'postgresql+psycopg2://u@db/x' needs the psycopg2 driver, "
                                         "which is not installed: pip install 'psycopg2-binary'"),
        ("oracle9://u@db/x", "--storage: 'oracle9://u@db/x': unknown database kind 'oracle9'; use "),
    ],
)  # fmt: skip
def test_a_bad_storage_url_is_one_line_naming_the_setting_and_the_fix(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_storage_url(url)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert "secret" not in str(err.value)


def test_a_missing_psycopg_is_one_line_with_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        check_storage_url("postgresql://u@db/x")
    assert str(err.value) == (
        "--storage: 'postgresql://u@db/x' needs the psycopg driver, which is not installed: "
        "pip install 'cosanneal[postgres]'"
    )


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    config, space = tmp_path / "cfg.json", tmp_path / "space.json"
    config.write_text(json.dumps(BLOBS))
    space.write_text(json.dumps(SPACE))
    return ["sweep", str(config), "--space", str(space), "--study", "bad", "--output", str(tmp_path / "runs"),
            "--trials", "1", *extra]  # fmt: skip


@pytest.mark.parametrize("where", ["socket", "port"])
def test_an_unreachable_server_exits_2_with_one_line_and_writes_nothing(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = tmp_path / "no-server"  # a socket directory where no server listens
    closed.mkdir()
    url = {  # free_port(): free a moment ago, nothing listens on it now
        "socket": f"postgresql://postgres@/sweeps?host={closed}",
        "port": f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/sweeps",
    }[where]
    with pytest.raises(SystemExit) as exit_:
        main(_cli(tmp_path, "--storage", url))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage: cannot connect to ") and err.count("\n") == 1, err
    assert "start the server or fix the host, port, socket directory, user or database in the URL" in err
    assert "secret" not in err and "Traceback" not in err
    if where == "socket":
        assert f"the Unix socket in {closed}" in err and "No such file or directory" in err
    else:
        assert "127.0.0.1:" in err
    assert not (tmp_path / "runs").exists()  # nothing written
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--show", "--study", "bad", "--storage", url, "--output", str(tmp_path / "runs")])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith(
        "error: --storage: cannot connect to "
    )


def test_a_database_that_does_not_exist_is_one_line(pg_server: PgServer) -> None:
    with pytest.raises(ConfigError) as err:
        open_storage(pg_server.url("no_such_db"))
    message = str(err.value)
    assert (
        message.startswith("--storage: cannot connect to ")
        and 'database "no_such_db" does not exist' in message
    )
    assert "\n" not in message


# ---- sweeps on the server ------------------------------------------------------------------------
def test_a_sweep_runs_on_postgres_over_a_unix_socket_and_show_reads_it(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _database(pg_server, "one")
    assert "?host=/" in url  # the Unix socket, no TCP
    settings = SweepSettings(
        study="s", runs_dir=tmp_path / "runs", storage=url, trials=2, pruner="none", seed=0
    )
    result = run_sweep(BLOBS, parse_space(SPACE), settings, log=lambda _m: None)
    assert (result.complete, result.failed, result.stopped_by, result.storage) == (2, 0, "trials", url)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert not (tmp_path / "runs" / "optuna.db").exists()  # the study is on the server, not in a file
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--show", "--study", "s", "--storage", url, "--output", str(tmp_path / "runs")])
    assert exit_.value.code == 0
    assert "2 complete" in capsys.readouterr().out


def _worker(
    config: Path, space: Path, runs_dir: Path, url: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return sweep_worker(config, space, runs_dir, "--storage", url, "--pruner", "none", *extra, output=out)


def _checkpointed(trial: FrozenTrial) -> bool:
    """RUNNING, past its first rung, and with a committed checkpoint in its run directory."""
    if (
        trial.state != TrialState.RUNNING
        or not trial.intermediate_values
        or "run_dir" not in trial.user_attrs
    ):
        return False
    directory = Path(trial.user_attrs["run_dir"]) / "checkpoints"
    return directory.is_dir() and Checkpoints(directory).latest is not None


@pytest.mark.slow
def test_eight_workers_two_sigkilled_lose_no_trial_and_the_retries_resume_from_their_checkpoints(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = _database(pg_server, "eight")
    cfg = json.loads(json.dumps(BLOBS))
    cfg["checkpoint"] = {"enabled": True, "every_steps": 8, "keep_last": 2}
    cfg["debug"] = {"sleep_per_step": 0.06}  # ~5 s a trial: time to kill one mid-trial
    config, space = tmp_path / "cfg.json", tmp_path / "space.json"
    config.write_text(json.dumps(cfg))
    space.write_text(json.dumps(SPACE))
    runs_dir, wanted = tmp_path / "runs", 10
    args = ("--trials", str(wanted), "--heartbeat-interval", "1", "--grace-period", "8")
    logs = [tmp_path / f"worker-{i}.log" for i in range(8)]
    procs = [_worker(config, space, runs_dir, url, log, *args) for log in logs]
    by_pid = {p.pid: p for p in procs}
    try:
        deadline = time.monotonic() + 240
        victims: list[FrozenTrial] = []
        while len(victims) < 2:  # two trials of two workers, each mid-trial with a checkpoint
            assert time.monotonic() < deadline, "no two trials reached a checkpoint"
            for t in _trials(url, "w"):
                pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
                if _checkpointed(t) and pid in by_pid and all(v.user_attrs["worker"] != t.user_attrs["worker"]
                                                              for v in victims):  # fmt: skip
                    os.kill(pid, signal.SIGKILL)
                    victims.append(t)
                    if len(victims) == 2:
                        break
            time.sleep(0.1)
        killed_pids = {int(v.user_attrs["worker"].rsplit(":", 1)[1]) for v in victims}
        codes = {p.pid: p.wait(timeout=300) for p in procs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    tails = "\n".join(f"{log.name}: {log.read_text()[-1500:]}" for log in logs)
    assert {pid: code for pid, code in codes.items() if pid in killed_pids} == dict.fromkeys(
        killed_pids, -signal.SIGKILL
    )
    assert all(code == 0 for pid, code in codes.items() if pid not in killed_pids), tails

    after = _trials(url, "w")
    by_number = {t.number: t for t in after}
    states = [t.state for t in after]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states  # nothing left over
    assert states.count(TrialState.COMPLETE) == wanted  # the budget holds exactly, all workers together
    surplus = [t for t in after if t.state == TrialState.FAIL and t.user_attrs.get("status") == SURPLUS]
    failed = [t for t in after if t.state == TrialState.FAIL and t not in surplus]
    assert sorted(t.number for t in failed) == sorted(v.number for v in victims)  # only the two killed
    assert all("steps" not in t.user_attrs for t in surplus)  # claims given back never trained

    for victim in victims:
        killed = by_number[victim.number]
        retries = [
            t for t in after if t.system_attrs.get("failed_trial") == killed.number and t not in surplus
        ]
        assert len(retries) == 1, tails  # 0 lost trials: each killed trial is retried once, to the end
        retry = retries[0]
        assert retry.state == TrialState.COMPLETE and retry.params == killed.params
        assert retry.user_attrs["worker"] != killed.user_attrs["worker"]
        # in the killed trial's own run directory, from its last checkpoint, not from update 0
        assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]
        with runs.open(retry.user_attrs["run_dir"]) as run:
            resumed = run.events("resumed")
            lr_steps, _ = run.scalar("lr", 0)
            params = run.params
        assert len(resumed) == 1 and resumed[0]["from_step"] >= 8, resumed
        assert resumed[0]["checkpoint"] == f"checkpoints/step-{resumed[0]['from_step']:09d}"
        assert np.array_equal(lr_steps, np.arange(80))  # every update once: the rows after it were redone
        assert params["config"]["schedule"]["peak_lr"] == killed.params["schedule.peak_lr"]
        assert retry.user_attrs["steps"] == 80
        # the rung the killed trial reported is kept; the retry reported the rest
        assert sorted(retry.intermediate_values) == [0, 1]
        assert retry.intermediate_values[0] == killed.intermediate_values[0]
        assert retry.user_attrs["cycle_end_update_0"] == 12 and retry.user_attrs["cycle_end_update_1"] == 36
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len({t.user_attrs["run_dir"] for t in complete}) == wanted  # one run directory per trial
    assert len({t.user_attrs["worker"] for t in complete}) >= 3  # the study was shared


def test_a_live_trial_failed_as_stale_by_another_worker_is_dropped_and_the_worker_goes_on(
    pg_server: PgServer, tmp_path: Path
) -> None:
    from cosanneal.tune.sweep import run_study

    url = _database(pg_server, "stale")
    settings = SweepSettings(
        study="s", runs_dir=tmp_path / "runs", storage=url, trials=1, pruner="none", seed=0
    )
    rival = optuna.create_study(study_name="s", storage=url)  # another worker, its own connection
    calls: list[int] = []

    @dataclasses.dataclass
    class Outcome:
        status: str = "finished"
        steps: int = 12
        wall_seconds: float = 0.1
        final_metrics: dict[str, float] = dataclasses.field(default_factory=lambda: {"val_loss": 0.5})

    def job(_config: dict[str, Any]) -> Any:
        def run(run_dir: Path, log: Any, on_eval: Any) -> Outcome:
            calls.append(1)
            if len(calls) == 1:  # the first trial's heartbeat "went stale": another worker failed it
                running = rival.get_trials(states=(TrialState.RUNNING,))
                rival.tell(running[0].number, state=TrialState.FAIL)
            on_eval(12, {"val_loss": 0.5}, True)
            return Outcome()

        return run

    said: list[str] = []
    result = run_study(BLOBS, parse_space(SPACE), settings, job, log=said.append)
    assert (result.complete, result.failed, len(calls)) == (1, 1, 2)
    assert any("was failed by another worker" in m and "raise --grace-period" in m for m in said), said
    states = [t.state for t in optuna.load_study(study_name="s", storage=url).get_trials()]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_a_server_outage_mid_sweep_is_one_line_and_the_trials_checkpoint_is_kept(tmp_path: Path) -> None:
    """The PostgreSQL server stops while a trial trains: one line, exit 75 (retry later), no traceback."""
    from pg_server import find_initdb, running_server

    initdb = find_initdb()
    if initdb is None:
        pytest.skip("no PostgreSQL initdb; apt-get install postgresql")
    cfg = json.loads(json.dumps(BLOBS))
    cfg["checkpoint"] = {"enabled": True, "every_steps": 8}
    cfg["debug"] = {"sleep_per_step": 0.05}
    config, space = tmp_path / "cfg.json", tmp_path / "space.json"
    config.write_text(json.dumps(cfg))
    space.write_text(json.dumps(SPACE))
    log = tmp_path / "worker.log"
    with running_server(initdb) as server:  # a server of its own: this test stops it
        url = server.create_database("outage")
        worker = _worker(config, space, tmp_path / "runs", url, log, "--trials", "3")
        try:
            deadline = time.monotonic() + 120
            while not any(_checkpointed(t) for t in _trials(url, "w")):
                assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-2000:]
                time.sleep(0.1)
            run_dir = Path(next(t for t in _trials(url, "w") if _checkpointed(t)).user_attrs["run_dir"])
            server.process.send_signal(signal.SIGINT)  # fast shutdown: every client is disconnected
            server.process.wait(timeout=30)
            code = worker.wait(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert code == 75, text[-2000:]
    assert last.startswith("error: --storage: lost the connection to "), last
    assert "restart this worker once the server is back" in last
    assert Checkpoints(run_dir / "checkpoints").latest is not None  # the retry resumes from it
