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


def test_a_users_task_and_data_next_to_the_config_train_from_another_directory(tmp_path: Path) -> None:
    """examples/train/shifted_digits.toml as docs/training.md shows it: workers, accumulation, samples."""
    config = ROOT / "examples" / "train" / "shifted_digits.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(config), "--run-dir", "run", "--no-progress",
         "--set", "max_steps=1280sp", "--set", "eval.every_steps=10"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = runs.open(tmp_path / "run")
    try:
        steps, _ = run.scalar("lr", 0)
        assert steps.tolist() == list(range(20))  # 1,280 samples / 64 per update
        assert run.scalar("micro_batches")[1].tolist() == [2.0] * 20
        assert len(run.scalar("train_confidence")[1]) == 20
        top1 = run.scalar("val_top1")[1]
        assert len(top1) >= 2 and 0 < top1[-1] <= 1
        config_used = run.params["config"]
        assert config_used["checkpoint"]["best_mode"] == "max"  # from the metric's name
        assert config_used["data"]["num_workers"] == 2
    finally:
        run.close()
