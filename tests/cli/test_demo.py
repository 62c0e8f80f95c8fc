"""`cosanneal demo` as a user runs it: interrupted, it resumes with the same command; finished, it starts over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from cosanneal import runs


def _demo(run_dir: Path, *extra: str) -> list[str]:
    # 30 updates of the real demo config (22 per epoch), slowed so a signal lands mid-run
    return [sys.executable, "-m", "cosanneal", "demo", "--run-dir", str(run_dir), "--no-progress",
            "--set", "max_steps=30", "--set", "debug.sleep_per_step=0.05",
            "--set", "checkpoint.every_steps=5", *extra]  # fmt: skip


def test_interrupted_demo_resumes_with_the_same_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    cmd = _demo(run_dir)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((run_dir / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "preempted by" in err and "run cosanneal demo --run-dir" in err, err
    stopped_at = max(int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step-*"))

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resumed from update {stopped_at}" in again.stderr
    assert not list(tmp_path.glob("demo.old-*"))  # resumed in place, not moved aside
    run = runs.open(run_dir)
    try:
        steps, _ = run.scalar("lr", 0)
        assert steps.tolist() == list(range(30))
        assert [e["from_step"] for e in run.events("resumed")] == [stopped_at]
    finally:
        run.close()

    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # finished: start over
    assert third.returncode == 0, third.stderr
    assert len(list(tmp_path.glob("demo.old-*"))) == 1
    assert "resumed" not in third.stderr
