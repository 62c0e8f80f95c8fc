"""`cosanneal demo` as a user runs it.

The GPT demo interrupts its own training process with a real SIGTERM, resumes, verifies and reports;
the digits demo, interrupted from outside, resumes with the same command; finished, a demo starts over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cosanneal import runs


def _demo(run_dir: Path, *extra: str) -> list[str]:
    # 30 updates of the real demo config (22 per epoch), slowed so a signal lands mid-run
    return [sys.executable, "-m", "cosanneal", "demo", "--example", "digits", "--run-dir", str(run_dir), "--no-progress",
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
    assert "preempted by SIGTERM" in err and "run cosanneal demo --example digits --run-dir" in err, err
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


# the GPT demo shrunk to seconds: a narrow model, a small corpus, 40 updates
SMALL_GPT = ["--set", "max_steps=40", "--set", "model.options.width=32", "--set", "eval.every_steps=20",
             "--set", "checkpoint.every_steps=5", "--set", "data.options.max_bytes=300000"]  # fmt: skip


def test_gpt_demo_interrupts_itself_resumes_verifies_and_reports(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "cosanneal", "demo", "--run-dir", "demo", "--no-progress", *SMALL_GPT]
    env = {**os.environ, "COLUMNS": "240"}  # a terminal wide enough that no table cell wraps
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    for fragment in ("SIGTERM at update", "exit 143 after writing checkpoint", "resumed from update",
                     "one LR row per update, 40 of 40", "every LR equals the closed form", "report demo/report.html",
                     "val_ppl"):  # fmt: skip
        assert fragment in out, proc.stdout
    run_dir = tmp_path / "demo"
    assert (run_dir / "report.html").stat().st_size > 1000
    run = runs.open(run_dir)
    try:
        (preempted,) = run.events("preempted")
        (resumed,) = run.events("resumed")
        assert preempted["signal"] == "SIGTERM" and resumed["from_step"] == preempted["step"]
        steps, _ = run.scalar("lr", 0)
        assert steps.tolist() == list(range(40))
        assert run.params["config"]["task"]["name"] == "language_model"
    finally:
        run.close()
    verify = subprocess.run(
        [sys.executable, "-m", "cosanneal", "verify", "demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
