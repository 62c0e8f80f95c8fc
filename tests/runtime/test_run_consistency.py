"""The run store and the checkpoints agree, whatever kills the job and wherever.

Real training in child processes, real SIGKILLs at the worst moments (between the store's durable
flush and the checkpoint's commit, in the middle of a rotation's deletion), and the resumed run's
trace read back from SQLite: one row per update, none missing, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import BLOBS, blobs_config

from cosanneal import from_dict, runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.trainer import Trainer
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.telemetry import EVENT_KINDS

TOTAL = 160  # 20 updates per epoch x 8 epochs (tests/blobs.py)


def _write_config(path: Path, **changes: Any) -> Path:
    path.write_text(json.dumps(config_from_dict(blobs_config(**changes)).to_dict()))
    return path


def _rows(run_dir: Path, name: str = "lr") -> list[int]:
    """Steps of every stored row of ``name`` (group 0 where grouped), duplicates included, in step order."""
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        got = conn.execute(
            "SELECT step FROM scalars WHERE name = ? AND (grp = 0 OR grp IS NULL) ORDER BY step", (name,)
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in got]


def _events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    run = runs.open(run_dir)
    try:
        return run.events(kind) if kind else run.events()
    finally:
        run.close()


def _checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))


def _wait_for_checkpoint(
    run_dir: Path, at_least: int, proc: subprocess.Popen[bytes], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "child exited")
        if (
            any(s >= at_least for s in _checkpoint_steps(run_dir))
            if (run_dir / "checkpoints").is_dir()
            else False
        ):
            return
        time.sleep(0.02)
    raise AssertionError("the child never got that far")


def _assert_complete_trace(run_dir: Path) -> None:
    """Every update has exactly one LR row, and it is the closed form."""
    steps = _rows(run_dir)
    assert steps == list(range(TOTAL)), (
        f"missing {sorted(set(range(TOTAL)) - set(steps))[:20]}, dup {len(steps) - len(set(steps))}"
    )
    got, lr = runs.open(run_dir).scalar("lr", 0)
    np.testing.assert_array_equal(lr, from_dict(BLOBS["schedule"])(got))


def _train_cmd(cfg: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", str(run_dir), "--no-progress"]


def _resume(cfg: Path, run_dir: Path) -> None:
    from cosanneal.jobs.config import load_config

    result = Trainer(load_config(cfg), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == TOTAL


# ---- the store holds every row up to the checkpoint ---------------------------------------------
def test_sigkill_with_nothing_flushed_leaves_no_hole(tmp_path: Path) -> None:
    """The background writer never flushes on its own here: only the checkpoints' durable flushes do."""
    cfg = _write_config(
        tmp_path / "cfg.json", telemetry__flush_seconds=3600, telemetry__flush_rows=10**9,
        checkpoint__every_steps=4, debug__sleep_per_step=0.01,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(cfg, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(run_dir, 50, proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    newest = _checkpoint_steps(run_dir)[-1]
    # before any resume: every update inside the newest checkpoint has its row, and its event
    assert set(range(newest)) <= set(_rows(run_dir))
    assert newest in {e["step"] for e in _events(run_dir, "checkpoint_saved")}
    _resume(cfg, run_dir)
    _assert_complete_trace(run_dir)
    saved = [e["step"] for e in _events(run_dir, "checkpoint_saved")]
    assert len(saved) == len(set(saved))  # each checkpoint recorded once, the replayed ones included
    assert set(_checkpoint_steps(run_dir)) <= set(saved)
    resumed = _events(run_dir, "resumed")
    assert [e["from_step"] for e in resumed] == [newest] and resumed[0][
        "checkpoint"
    ] == f"checkpoints/step-{newest:09d}"
    verify = subprocess.run(
        [sys.executable, "-m", "cosanneal", "verify", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


_KILL_BEFORE_COMMIT = """
import os, signal, sys
from cosanneal.runtime import checkpoints
from cosanneal.jobs.config import load_config
from cosanneal.jobs.trainer import Trainer

original = checkpoints.Checkpoints.__init__

def patched(self, *args, **kwargs):
    hook = kwargs["before_commit"]

    def before_commit(info):
        hook(info)  # the store is durable now; the checkpoint is not committed yet
        if info.step == {at}:
            os.kill(os.getpid(), signal.SIGKILL)

    kwargs["before_commit"] = before_commit
    original(self, *args, **kwargs)

checkpoints.Checkpoints.__init__ = patched
Trainer(load_config(sys.argv[1]), sys.argv[2], progress=False, log=lambda _: None).run()
"""


def test_kill_between_the_store_flush_and_the_checkpoint_commit(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "cfg.json", checkpoint__every_steps=4, telemetry__flush_seconds=30)
    run_dir = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", _KILL_BEFORE_COMMIT.replace("{at}", "52"), str(cfg), str(run_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert 52 not in _checkpoint_steps(run_dir) and _checkpoint_steps(run_dir)[-1] == 48
    # the store is one checkpoint ahead: it announced step 52, which never committed
    assert 52 in {e["step"] for e in _events(run_dir, "checkpoint_saved")}
    assert max(_rows(run_dir)) >= 51
    _resume(cfg, run_dir)
    _assert_complete_trace(run_dir)
    saved = [e["step"] for e in _events(run_dir, "checkpoint_saved")]
    assert saved.count(52) == 1  # the false one was discarded; the replayed save recorded it again
    assert [e["from_step"] for e in _events(run_dir, "resumed")] == [48]
    restarts = [e["step"] for e in _events(run_dir, "restart")]
    assert restarts == from_dict(BLOBS["schedule"]).restarts(TOTAL)  # each once


def test_resume_at_a_restart_records_that_restart_once(tmp_path: Path) -> None:
    """Killed right after the checkpoint at a cycle end: the restart at that very update is recorded once."""
    restart = from_dict(BLOBS["schedule"]).restarts(TOTAL)[0]  # 40: a cycle end, checkpointed
    cfg = _write_config(tmp_path / "cfg.json", checkpoint__every_steps=None, max_steps=restart)
    run_dir = tmp_path / "run"
    Trainer(config_from_dict(json.loads(cfg.read_text())), run_dir, progress=False, log=lambda _: None).run()
    assert not _events(run_dir, "restart")  # the restart is the next update
    cfg2 = _write_config(tmp_path / "cfg2.json", checkpoint__every_steps=None)
    _resume(cfg2, run_dir)
    assert [e["step"] for e in _events(run_dir, "restart")] == from_dict(BLOBS["schedule"]).restarts(TOTAL)
    _assert_complete_trace(run_dir)


_KILL_DURING_DELETE = """
import os, shutil, signal, sys, torch
from cosanneal.runtime import storage
from cosanneal.runtime.checkpoints import Checkpoints

def dying_rmtree(path, ignore_errors=False):
    names = sorted(os.listdir(path))
    os.unlink(os.path.join(path, names[0]))  # one file gone, the others still there
    os.kill(os.getpid(), signal.SIGKILL)

ck = Checkpoints(sys.argv[1], keep_last=1, best=None)
model = torch.nn.Linear(3, 2)
ck.save(1, model=model)
storage.shutil.rmtree = dying_rmtree
ck.save(2, model=model)  # rotation deletes step 1: killed half-way through
"""


def test_kill_during_rotation_never_shows_a_half_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    child = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_DELETE, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    names = sorted(p.name for p in directory.iterdir())
    assert [n for n in names if n.startswith("step-")] == ["step-000000002"]  # step 1 is gone as a whole
    assert [n for n in names if n.startswith(".trash-step-000000001-")]  # the leftover, hidden
    ck = Checkpoints(directory, keep_last=1, best=None)
    assert ck.load_latest(torch.nn.Linear(3, 2)) is not None
    assert any(p.name.startswith(".trash-") for p in directory.iterdir())  # a reader never deletes
    ck.clean_stale()
    assert sorted(p.name for p in directory.iterdir()) == ["step-000000002"]


# ---- one checkpoint per step, one convention --------------------------------------------------------
def test_each_step_is_checkpointed_once_and_named_by_updates_done(tmp_path: Path) -> None:
    """Epoch ends on the every_steps grid and the final update: one save each (they were written twice)."""
    cfg = config_from_dict(blobs_config(eval__every_steps=None, checkpoint__every_steps=10))
    run_dir = tmp_path / "run"
    result = Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == TOTAL
    saved = _events(run_dir, "checkpoint_saved")
    steps = [e["step"] for e in saved]
    assert len(steps) == len(set(steps)), steps
    restarts = set(from_dict(BLOBS["schedule"]).restarts(TOTAL))
    assert steps == sorted(set(range(10, TOTAL + 1, 10)) | restarts)
    assert steps[-1] == TOTAL == result.steps  # "updates 160 of 160" and the last checkpoint agree
    assert _checkpoint_steps(run_dir)[-1] == TOTAL
    reasons = {e["step"]: e["reason"] for e in saved}
    assert reasons[TOTAL] == "final" and reasons[20] == "epoch" and reasons[10] == "periodic"
    assert {reasons[r] for r in restarts} == {"restart"}
    best = _events(run_dir, "checkpoint_best")[-1]
    val_steps, val = runs.open(run_dir).scalar("val_loss")
    assert best["step"] in val_steps.tolist()  # the best checkpoint's step is its evaluation's step
    assert best["value"] == pytest.approx(val[val_steps.tolist().index(best["step"])])
    assert all(not e["path"].startswith("/") for e in saved)  # relative to the run directory
    from cosanneal.analysis.report_data import load_run

    summary = load_run(run_dir, "run").summary  # the report card says what the trainer's summary says
    assert summary.updates == result.steps == TOTAL
    assert summary.checkpoints == len(steps) and summary.checkpoints_kept == result.checkpoints_kept
    assert summary.best_metric is not None and summary.best_metric[2] == summary.best_checkpoint_step


def test_every_event_has_its_documented_payload(tmp_path: Path) -> None:
    """NaN rollback, resume, a pruning stop: every event's fields are the ones EVENT_KINDS lists."""
    run_dir = tmp_path / "run"
    cfg = config_from_dict(
        blobs_config(debug__inject_nan_at=[45, 46, 47], guard__max_consecutive=3, checkpoint__every_steps=5,
                     max_steps=80)
    )  # fmt: skip
    Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    cfg2 = config_from_dict(
        blobs_config(debug__inject_nan_at=[45, 46, 47], guard__max_consecutive=3, checkpoint__every_steps=5)
    )
    prune = Trainer(cfg2, run_dir, progress=False, log=lambda _: None, on_eval=lambda n, m, end: n >= 120)
    assert prune.run().status == "pruned"
    events = _events(run_dir)
    seen = {e["kind"] for e in events}
    assert {"restart", "checkpoint_saved", "checkpoint_deleted", "checkpoint_best", "checkpoint_loaded",
            "resumed", "nonfinite", "rollback", "early_stop", "run_finished"} <= seen  # fmt: skip
    for event in events:
        fields = set(event) - {"step", "kind", "wall"}
        documented = EVENT_KINDS[event["kind"]]
        required = {f for f in documented if not f.endswith("?")}
        allowed = {f.rstrip("?") for f in documented}
        assert required <= fields <= allowed, (event["kind"], fields, documented)


def test_docs_list_the_same_event_payloads() -> None:
    """docs/runstore.md's event table is EVENT_KINDS."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "runstore.md").read_text()
    table: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in EVENT_KINDS:
            fields = tuple(f.strip("` ") for f in cells[1].split(",") if f.strip("` "))
            table[cells[0].strip("`")] = fields
    assert table == EVENT_KINDS


# ---- refused resumes write nothing --------------------------------------------------------------
def test_refused_resume_names_the_keys_and_writes_nothing(tmp_path: Path) -> None:
    from cosanneal.jobs.config import load_config

    cfg = _write_config(tmp_path / "cfg.json", max_steps=30, telemetry__tensorboard=True)
    run_dir = tmp_path / "run"
    Trainer(load_config(cfg), run_dir, progress=False, log=lambda _: None).run()

    def snapshot() -> tuple[Any, ...]:
        conn = sqlite3.connect(run_dir / "run.db")
        try:
            counts = tuple(
                conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("sessions", "events", "scalars")
            )
        finally:
            conn.close()
        return counts, sorted(p.name for p in (run_dir / "tb").iterdir())

    before = snapshot()
    changed = ["--set", "schedule.peak_lr=0.3", "--set", "schedule.cycle_steps=20"]
    proc = subprocess.run([*_train_cmd(cfg, run_dir), *changed], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "peak_lr = 0.2 in the run, 0.3 in the config" in lines[0]
    assert "cycle_steps = 30 in the run, 20 in the config" in lines[0]
    advice = "--set schedule.cycle_steps=30 --set schedule.peak_lr=0.2"
    assert advice in lines[0]
    assert snapshot() == before  # no session, no event, no TensorBoard file
    # the --set options the message gives really resume the run
    sets = [v for v in (*changed, *advice.split(), "--set", "max_steps=40") if v != "--set"]
    again = Trainer(load_config(cfg, sets), run_dir, progress=False, log=lambda _: None).run()
    assert again.status == "finished" and again.steps == 40
    assert [e["from_step"] for e in _events(run_dir, "resumed")] == [30]


# ---- paths resolve from anywhere ------------------------------------------------------------------
def test_relative_run_dir_works_from_any_working_directory(tmp_path: Path) -> None:
    """`cosanneal train ... --run-dir runs/x` then `cosanneal ensemble runs/x` (the README's commands)."""
    work = tmp_path / "work"
    work.mkdir()
    _write_config(work / "cfg.json", checkpoint__keep_cycle_ends=True, epochs=3)  # one restart, at 40
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    train = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", "cfg.json", "--run-dir", "runs/x", "--no-progress"],
        cwd=work, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    for cwd, arg in ((work, "runs/x"), (tmp_path, "work/runs/x")):
        ens = subprocess.run(
            [sys.executable, "-m", "cosanneal", "ensemble", arg], cwd=cwd, capture_output=True, text=True,
            timeout=300, env=env,
        )  # fmt: skip
        assert ens.returncode == 0, (cwd, ens.stdout, ens.stderr)
        assert "ensemble" in ens.stdout
    for event in _events(work / "runs" / "x"):
        if "path" in event:
            assert (work / "runs" / "x" / event["path"]).name.startswith("step-")
            assert not os.path.isabs(event["path"])


def test_a_wrong_checkpoint_path_is_not_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ck = Checkpoints(tmp_path / "ck", best=None)
    model = torch.nn.Linear(2, 2)
    ck.save(3, model=model)
    from cosanneal.runtime.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"does not exist .*checkpoints in .*: step-000000003$"):
        ck.load("runs/elsewhere/checkpoints/step-000000003", model)
    monkeypatch.chdir(tmp_path)  # a path relative to the working directory, as a user types it
    assert ck.load("ck/step-000000003", model).step == 3
    assert ck.load("step-000000003", model).step == 3  # a name inside the directory


def test_async_writes_lose_at_most_an_interval_plus_one_write(tmp_path: Path) -> None:
    """With async_write a kill costs every_steps plus the updates trained during the newest write."""
    cfg = _write_config(
        tmp_path / "cfg.json", checkpoint__every_steps=4, checkpoint__async_write=True,
        debug__sleep_per_step=0.01,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(cfg, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(run_dir, 60, proc)
    proc.kill()
    proc.wait(timeout=60)
    newest = _checkpoint_steps(run_dir)[-1]
    done = max(_rows(run_dir)) + 1  # updates whose rows reached the store: a lower bound of what ran
    assert set(range(newest)) <= set(_rows(run_dir))
    assert done - newest <= 2 * 4 + 1  # interval + one write's updates (writes are far shorter here)
    _resume(cfg, run_dir)
    _assert_complete_trace(run_dir)
