"""`cosanneal train` when its files cannot be written: a full disk, a read-only or vanished run directory.

A real tmpfs (mounting needs root; skipped with the reason otherwise), a real training child, and
the failure made while it runs. Expected every time: exit 74, one `error:` line naming the cause, the
device and what was kept, no traceback; the earlier checkpoints verify; the run store opens, is
consistent, and holds every row up to the newest checkpoint; the same command resumes once fixed.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blobs import blobs_config

from cosanneal.jobs.builders import build_model
from cosanneal.jobs.config import config_from_dict
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.iofailure import device_of, io_failure

TOTAL = 160


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # 16 MiB: room for the whole run (SQLite's write-ahead log alone grows to ~4 MiB before its first
    # checkpoint); the disk-full test fills it up itself
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _config(path: Path, **changes: Any) -> Path:
    base = {"checkpoint__every_steps": 4, "debug__sleep_per_step": 0.03, "telemetry__flush_seconds": 0.1}
    path.write_text(json.dumps(config_from_dict(blobs_config(**{**base, **changes})).to_dict()))
    return path


def _cmd(cfg: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", str(run_dir), "--no-progress"]


def _start(cfg: Path, run_dir: Path, at_least: int = 12) -> subprocess.Popen[str]:
    proc = subprocess.Popen(_cmd(cfg, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        steps = (
            [int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step-*")] if run_dir.exists() else []
        )
        if steps and max(steps) >= at_least:
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint in time")


def _fill(mnt: Path) -> Path:
    """Fill the filesystem to the last byte (unbuffered writes, smaller and smaller)."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def _one_error_line(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 74, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _assert_kept(run_dir: Path) -> int:
    """The newest checkpoint verifies and the store holds every update before it; returns its step."""
    ck = Checkpoints(run_dir / "checkpoints", best=None)
    cfg = config_from_dict(blobs_config())
    loaded = ck.load_latest(build_model(cfg.model))
    assert loaded is not None
    conn = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        steps = {r[0] for r in conn.execute("SELECT step FROM scalars WHERE name = 'lr' AND grp = 0")}
    finally:
        conn.close()
    assert set(range(loaded.step)) <= steps
    return loaded.step


def _resume_to_the_end(cfg: Path, run_dir: Path) -> None:
    proc = subprocess.run(_cmd(cfg, run_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        steps = [
            r[0] for r in conn.execute("SELECT step FROM scalars WHERE name = 'lr' AND grp = 0 ORDER BY step")
        ]
    finally:
        conn.close()
    assert steps == list(range(TOTAL))


def test_disk_full_is_one_line_and_resumes_once_space_is_back(tmpfs: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "cfg.json")
    run_dir = tmpfs / "run"
    proc = _start(cfg, run_dir)
    filler = _fill(tmpfs)
    line = _one_error_line(proc)
    assert "disk full on tmpfs tmpfs mounted at " + str(tmpfs) in line, line
    assert "kept: checkpoint step-" in line and "cosanneal train" in line and "to resume" in line
    filler.unlink()
    kept = _assert_kept(run_dir)
    assert f"step-{kept:09d}" in line
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    _resume_to_the_end(cfg, run_dir)


def test_read_only_run_directory_is_one_line(tmpfs: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "cfg.json")
    run_dir = tmpfs / "run"
    proc = _start(cfg, run_dir)
    # the run directory turns read-only under the running job (a remount of the whole filesystem is
    # refused while the job holds files open for writing; a read-only bind mount over it is not)
    subprocess.run(["mount", "--bind", str(run_dir), str(run_dir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(run_dir)], check=True)
        line = _one_error_line(proc)
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], check=False)
    assert "read-only filesystem on tmpfs" in line, line
    _assert_kept(run_dir)
    _resume_to_the_end(cfg, run_dir)


def test_vanished_run_directory_is_one_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "cfg.json")
    run_dir = tmp_path / "run"
    proc = _start(cfg, run_dir)
    # the directory goes in one step (a rename out of the way, then the delete), so the delete cannot race
    # with the job's own checkpoint rotation inside it
    gone = tmp_path / "gone"
    run_dir.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    line = _one_error_line(proc)
    assert "run directory vanished" in line and "the run directory is gone" in line, line
    assert "kept: checkpoint" not in line  # nothing is kept, and nothing may claim to be
    assert not run_dir.exists()  # the job recreated nothing (a stray half run would look resumable)


def test_io_failure_names_the_cause_through_the_chain() -> None:
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.Error as inner:
            raise RuntimeError("flush failed") from inner
    except RuntimeError as outer:
        assert io_failure(outer) == "disk full"
    assert io_failure(OSError(errno.EROFS, "Read-only file system")) == "read-only filesystem"
    assert io_failure(KeyError("x")) is None
    assert device_of("/definitely/not/here/at/all").endswith(
        "mounted at /"
    ) or "filesystem of /" in device_of("/definitely/not/here/at/all")


def test_refused_start_on_a_read_only_directory_is_one_line(tmpfs: Path, tmp_path: Path) -> None:
    """A new run whose directory cannot be created: exit 74 before any training, one line."""
    cfg = _config(tmp_path / "cfg.json", debug__sleep_per_step=0.0)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        proc = subprocess.run(_cmd(cfg, tmpfs / "run"), capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert proc.returncode == 74, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        ln for ln in proc.stderr.strip().splitlines()
    ]
    assert "read-only filesystem" in proc.stderr
