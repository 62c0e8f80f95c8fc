"""fit, model.save, load_model and fit again on every Keras backend installed here (each in its own process,
as Keras fixes its backend at import), and the example script."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from traced_cases import NARROW_ATOL

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = [b for b in ("jax", "torch", "tensorflow") if importlib.util.find_spec(b) is not None]
PEAK = 0.01  # backend_check.py's schedule


def _run(args: list[str], backend: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_save_load_resume(backend: str, tmp_path: Path) -> None:
    proc = _run([str(Path(__file__).parent / "backend_check.py"), str(tmp_path)], backend)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert report["restarts"] == [10, 19, 32.5, 52.75]  # fractional restarts, cycle_mult=1.5
    fit = report["fit"]
    assert (fit["first"], fit["last"]) == (0, 39)
    assert fit["lr_err"] <= NARROW_ATOL * PEAK  # optimizer.learning_rate == s(iterations)
    assert fit["update_err"] <= 2e-8  # the weight moved by exactly that LR (float32 weight rounding)
    assert abs(report["weight"] - report["weight_expected"]) <= 1e-6
    assert report["loaded_class"] == "LearningRateSchedule" and report["loaded_equal"] is True
    assert report["loaded_iterations"] == 40
    resumed = report["resumed"]
    assert (resumed["first"], resumed["last"]) == (40, 49)
    assert resumed["lr_err"] <= NARROW_ATOL * PEAK and resumed["update_err"] <= 2e-8
    if backend == "jax":  # float32 only: a fractional step size repeated forever is refused by name
        assert "kind 'step': step_size=7.3" in report["step_7_3"] and "jax_enable_x64" in report["step_7_3"]
        assert report["x64"]["dtype"] == "float32" and report["x64"]["eps32_of_peak"] <= 8
    else:
        assert report["step_7_3"] <= 1e-8


@pytest.mark.skipif("jax" not in BACKENDS, reason="the example runs on the jax backend")
def test_example_fits_and_matches_the_closed_form() -> None:
    proc = _run([str(ROOT / "examples" / "keras_fit.py")], "jax")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert lines["backend"] == "jax"
    assert float(lines["max |lr - closed form|"]) <= NARROW_ATOL * 0.05
    assert "restarts" in lines and "152.5" in lines["restarts"]
    first, last = (float(v) for v in lines["loss"].split(" -> "))
    assert last < 0.05 * first
