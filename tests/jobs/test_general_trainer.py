"""The general trainer: a user's task and data sets, DataLoader workers, accumulation, compile, bad input.

Resume parity: a 3-epoch run cut at update 30 (mid-epoch: 20 updates per epoch) and resumed must end
bit-identical to the uninterrupted run, with 0, 2 and 4 workers, for a map-style data set whose
``__getitem__`` draws random augmentation from the global generators and for an iterable data set
that keeps its own position (``state_dict``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config
from safetensors.torch import load_file

from cosanneal import ConfigError, runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.trainer import Trainer

HERE = Path(__file__).resolve().parent
TOTAL = 160  # tests/blobs.py: 20 updates per epoch x 8 epochs


def _run(run_dir: Path, **changes: Any) -> Any:
    cfg = config_from_dict(blobs_config(**changes))
    return Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    steps = sorted((run_dir / "checkpoints").glob("step-*"))
    return load_file(str(steps[-1] / "model.safetensors"))


def _series(run_dir: Path, name: str) -> np.ndarray:
    run = runs.open(run_dir)
    try:
        return run.scalar(name)[1] if name != "lr" else run.scalar("lr", 0)[1]
    finally:
        run.close()


def _same_run(a: Path, b: Path) -> None:
    wa, wb = _final(a), _final(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    for series in ("lr", "loss"):
        np.testing.assert_array_equal(_series(a, series), _series(b, series))


SHORT = 60  # the parity runs: 3 epochs (a warmup, a cycle of 30, a restart at update 40)


def _cut_and_resume(run_dir: Path, **changes: Any) -> None:
    first = _run(run_dir, max_steps=30, epochs=3, **changes)
    assert first.steps == 30 and first.epochs_done == 1.5
    again = _run(run_dir, epochs=3, **changes)
    assert again.status == "finished" and again.steps == SHORT


AUGMENTED = {"data__entry": "user_job:augmented_blobs", "data__options": {}}
STREAMED = {"data__entry": "user_job:streamed_blobs", "data__options": {}}


@pytest.fixture(scope="module")
def augmented_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("aug") / "run"
    assert _run(run_dir, epochs=3, **AUGMENTED).steps == SHORT
    return run_dir


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_map_style_with_workers_resumes_bit_identically(
    augmented_reference: Path, tmp_path: Path, workers: int
) -> None:
    """Per-sample augmentation seeded by (seed, epoch, index): any worker count, any cut, the same run."""
    _cut_and_resume(tmp_path / "run", data__num_workers=workers, **AUGMENTED)
    _same_run(augmented_reference, tmp_path / "run")


def test_augmentation_really_draws_randomness(augmented_reference: Path, tmp_path: Path) -> None:
    """The parity above is not vacuous: another seed gives other augmented batches (other losses)."""
    _run(tmp_path / "run", seed=4, max_steps=20, **AUGMENTED)
    assert not np.array_equal(_series(augmented_reference, "loss")[:20], _series(tmp_path / "run", "loss"))


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_data_set_with_its_own_state_resumes_bit_identically(tmp_path: Path, workers: int) -> None:
    ref = tmp_path / "ref"
    assert _run(ref, epochs=3, data__num_workers=workers, **STREAMED).steps == SHORT
    _cut_and_resume(tmp_path / "run", data__num_workers=workers, **STREAMED)
    _same_run(ref, tmp_path / "run")


def test_sigterm_with_workers_prefetching_resumes_bit_identically(
    augmented_reference: Path, tmp_path: Path
) -> None:
    """A real SIGTERM to a training process whose two workers have batches in flight."""
    import json

    cfg = config_from_dict(
        blobs_config(epochs=3, data__num_workers=2, debug__sleep_per_step=0.05, **AUGMENTED)
    )
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cosanneal",
            "train",
            str(cfg_path),
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        if list((run_dir / "checkpoints").glob("step-000000020")):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, proc.stderr.read().decode() if proc.stderr else ""
    resumed = Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    assert resumed.status == "finished" and resumed.steps == SHORT
    _same_run(augmented_reference, run_dir)


def test_a_users_task_with_its_own_metrics_ranks_checkpoints(tmp_path: Path) -> None:
    result = _run(
        tmp_path / "run",
        task={"entry": "user_job:make_margin_task", "options": {"scale": 1.0}},
        checkpoint__best_metric="val_err",
        checkpoint__best_mode="min",
        early_stopping={"enabled": True, "metric": "val_nll", "patience_cycles": 5},
    )
    assert result.status == "finished" and set(result.final_metrics) == {"val_err", "val_nll"}
    run = runs.open(tmp_path / "run")
    try:
        margin = run.scalar("train_margin")[1]
        assert len(margin) == TOTAL and np.all(np.isfinite(margin)) and margin.mean() > 0
        steps, values = run.scalar("val_err")
    finally:
        run.close()
    assert len(steps) >= 8 and result.best_metric == pytest.approx(float(values.min()))
    assert 0 <= result.final_metrics["val_err"] < 0.5


def test_a_task_module_with_two_functions(tmp_path: Path) -> None:
    module = tmp_path / "mse_task.py"
    module.write_text(
        "import torch\n"
        "from torch.nn import functional as F\n"
        "def training_step(model, batch):\n"
        "    x, y = batch\n"
        "    return F.cross_entropy(model(x), y)\n"
        "def evaluate(model, batches):\n"
        "    n = s = 0\n"
        "    for x, y in batches:\n"
        "        s += float((model(x).softmax(1).gather(1, y[:, None]) ** 2).sum()); n += len(y)\n"
        "    return {'brier_hit': s / n}\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        result = _run(
            tmp_path / "run", max_steps=40, task={"entry": "mse_task"},
            checkpoint__best_metric="val_brier_hit", checkpoint__best_mode="max",
        )  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mse_task", None)
    assert result.steps == 40 and 0 < result.final_metrics["val_brier_hit"] <= 1


def test_accumulation_advances_the_schedule_once_per_update(tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole", max_steps=60, model__options={"dropout": 0.0})
    split = _run(tmp_path / "split", max_steps=60, accumulate=4, model__options={"dropout": 0.0})
    assert whole.steps == split.steps == 60
    np.testing.assert_array_equal(_series(tmp_path / "whole", "lr"), _series(tmp_path / "split", "lr"))
    micro = _series(tmp_path / "split", "micro_batches")
    assert micro.tolist() == [4.0] * 60
    # the same gradient, summed in another order: equal up to float rounding
    np.testing.assert_allclose(
        _series(tmp_path / "whole", "loss"), _series(tmp_path / "split", "loss"), rtol=1e-4
    )
    wa, wb = _final(tmp_path / "whole"), _final(tmp_path / "split")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)
    run = runs.open(tmp_path / "split")
    try:
        assert run.params["accumulate"] == 4
    finally:
        run.close()


def test_compiled_step_does_not_recompile_as_the_lr_changes(tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    frames = []
    for steps in (30, 90):
        torch._dynamo.reset()
        counters.clear()
        result = _run(
            tmp_path / f"run{steps}", max_steps=steps, compile=True, compile_backend="aot_eager",
            model__options={"dropout": 0.0},
        )  # fmt: skip
        assert result.steps == steps
        frames.append(counters["frames"]["total"])
    assert frames[0] == frames[1] > 0  # 60 more updates over two restarts: not one more compile
    eager = _run(tmp_path / "eager", max_steps=90, model__options={"dropout": 0.0})
    assert eager.steps == 90
    np.testing.assert_array_equal(_series(tmp_path / "run90", "lr"), _series(tmp_path / "eager", "lr"))


# ---- bad input: one line naming the key, before anything is written ---------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": {"entry": "user_job:bad_signature"}}, r"^task\.entry: the task 'user_job:bad_signature' builds: training_step\(batch\) cannot be called as training_step\(model, batch\); change its parameters$"),
        ({"task": {"entry": "user_job:bad_loss"}}, r"^task\.entry: training_step must return a scalar float loss tensor .*shape \(32,\)"),
        ({"task": {"entry": "user_job:bad_metrics"}}, r"^task\.entry: evaluate must return a non-empty dict of metrics, got list"),
        ({"task": {"entry": "user_job:nowhere"}}, r"^task\.entry: 'user_job' has no function 'nowhere'"),
        ({"data__entry": "user_job:dict_blobs", "data__options": {}}, r"^data\.entry: the classification task needs batches of \(inputs, labels\) tensors, got a dict"),
        ({"data__entry": "user_job:unsized_blobs", "data__options": {}}, r"^max_steps: the training data set has no length"),
        ({"data__entry": "user_job:unsized_blobs", "data__options": {}, "max_steps": "2ep"}, r"^max_steps: '2ep' is in epochs"),
        ({"model__options": {"in_features": 5}}, r"^model\.options: model .mlp. does not fit the data"),
        ({"task": {"entry": "user_job:make_margin_task"}, "checkpoint__best_metric": "val_acc"}, r"^checkpoint\.best_metric: 'val_acc' is not a metric the task reports; use one of val_err, val_nll"),
    ],
)  # fmt: skip
def test_bad_jobs_fail_in_one_line_before_training(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _run(tmp_path / "run", **changes)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"accumulate": 3}, r"^accumulate: batch_size 32 does not split into 3 equal micro-batches; use an accumulate that divides it \(1, 2, 4, 8, 16, 32\)"),
        ({"accumulate": 0}, r"^accumulate: must be > 0"),
        ({"task": {"name": "regression"}}, r"^task\.name: must be one of classification, language_model"),
        ({"task": {"name": "classification", "options": {"x": 1}}}, r"^task\.options: the built-in task"),
        ({"task": {"entry": "not a module"}}, r"^task\.entry: must look like"),
        ({"max_steps": "10dur"}, r"^max_steps: as a fraction of the run must be <= 1dur"),
        ({"max_steps": "0ep"}, r"^max_steps: must be > 0, got '0ep'"),
        ({"max_steps": 2**63}, r"^max_steps: must be < 2\*\*63"),
        ({"max_steps": "0.5dur"}, r"^max_steps: a fraction of the run cannot set the run's length"),
        ({"data__num_workers": -1}, r"^data\.num_workers: must be in \[0, 256\]"),
        ({"compile": "yes"}, r"^compile: must be true or false"),
    ],
)  # fmt: skip
def test_bad_loop_keys_fail_at_load(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(blobs_config(**changes))
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_task_in_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('[task]\nentry = "user_job:bad_signature"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [
            sys.executable, "-m", "cosanneal", "train", "job.toml", "--run-dir", "run", "--no-progress",
            "--set", "epochs=1",
        ],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: task.entry:"), proc.stderr
    assert not (tmp_path / "run").exists()
