"""The shipped examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from cosanneal import Cosine, runs

ROOT = Path(__file__).resolve().parents[1]


def test_custom_loop_runs_resumes_and_logs_the_closed_form(tmp_path: Path) -> None:
    script = ROOT / "examples" / "custom_loop.py"
    assert len(script.read_text().splitlines()) < 60
    run_dir = tmp_path / "custom"
    for steps in (60, 130):
        proc = subprocess.run(
            [sys.executable, str(script), str(run_dir), "--steps", str(steps)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert f"done: {steps} updates" in proc.stdout
    run = runs.open(run_dir)
    try:
        steps_logged, lr = run.scalar("lr", 0)
        _, expected = run.scalar("lr_expected", 0)
    finally:
        run.close()
    schedule = Cosine(
        peak_lr=0.2, warmup_steps=10, cycle_steps=60, cycle_mult=2, max_cycles=2, min_ratio=0.01
    )
    assert steps_logged.tolist() == list(range(130))
    np.testing.assert_array_equal(lr, schedule(steps_logged))
    np.testing.assert_array_equal(expected, lr)
