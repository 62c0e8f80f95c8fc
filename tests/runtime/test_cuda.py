"""The runtime on a CUDA device: tensor conversion, checkpoints with CUDA RNG, training, AMP, resume parity.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/runtime/test_cuda.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from blobs import BLOBS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))  # run alone, as the docstring says
from blobs import last_weights, lr_trace, spawn_train, wait_for_updates
from test_trainer import _config, _write_config

from cosanneal import from_dict, runs
from cosanneal.jobs.config import load_config
from cosanneal.jobs.trainer import Trainer
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.runstore import RunStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_device_scalars_are_stored_exactly(tmp_path: Path) -> None:
    values = {
        "f32": torch.tensor(0.1, device="cuda"),
        "f64": torch.tensor(0.1, dtype=torch.float64, device="cuda"),
        "bf16": torch.tensor(0.1, dtype=torch.bfloat16, device="cuda"),
        "f16": torch.tensor(0.1, dtype=torch.float16, device="cuda"),
        "i64": torch.tensor(7, device="cuda"),
        "flag": torch.tensor(True, device="cuda"),
        "one_element": torch.tensor([2.5], device="cuda"),
        "needs_grad": torch.tensor(3.0, device="cuda", requires_grad=True) * 2,
        "nan": torch.tensor(float("nan"), device="cuda"),
    }
    with RunStore(tmp_path, flush_seconds=0) as store:
        store.log_scalars(0, values)
        store.log_scalar(0, "vector", torch.ones(3, device="cuda"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.flush()
    assert any("'vector'" in str(w.message) for w in caught)  # not a scalar: NaN and a warning
    run = runs.open(tmp_path)
    try:
        for name, tensor in values.items():
            got = float(run.scalar(name)[1][0])
            want = float(tensor.detach().cpu().item())
            assert got == want or (np.isnan(got) and np.isnan(want)), name
        assert np.isnan(run.scalar("vector")[1][0])
    finally:
        run.close()


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(16, 8, device="cuda")
        loss = torch.nn.functional.dropout(model(x), 0.5).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("async_write", [False, True])
def test_checkpoint_restores_cuda_tensors_and_cuda_rng(tmp_path: Path, async_write: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, opt, 5)
    ckpts = Checkpoints(tmp_path, async_write=async_write)
    ckpts.save(4, model=model, optimizer=opt)
    ckpts.wait()
    cuda_rng = torch.cuda.get_rng_state()
    _train(model, opt, 3)  # what the run does after the checkpoint
    want = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123)  # a different process state
    model2 = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).cuda()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    loaded = Checkpoints(tmp_path).load_latest(model2, opt2)
    assert loaded is not None and loaded.step == 4
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    state = opt2.state[next(iter(model2.parameters()))]
    assert state["exp_avg"].device.type == "cuda"
    _train(model2, opt2, 3)  # same data, same dropout masks: bit-identical
    for k, v in model2.state_dict().items():
        assert v.device.type == "cuda" and torch.equal(v, want[k]), k


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_trainer_on_cuda_follows_the_closed_form(tmp_path: Path, amp: str) -> None:
    cfg = _config(device="cuda", amp=amp, epochs=2, checkpoint__enabled=False)
    result = Trainer(cfg, tmp_path / "run", progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 40
    steps, lr = lr_trace(tmp_path / "run")
    np.testing.assert_array_equal(lr, from_dict(BLOBS["schedule"])(steps))
    run = runs.open(tmp_path / "run")
    try:
        assert run.params["env"]["gpus"]  # the environment records the device
        assert np.isfinite(run.scalar("loss")[1]).all()
    finally:
        run.close()


def test_interrupted_cuda_run_resumes_bit_identically(tmp_path: Path) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS in this process
    cfg = _config(device="cuda")
    reference = tmp_path / "reference"
    assert Trainer(cfg, reference, progress=False, log=lambda _: None).run().steps == 160

    cfg_path = _write_config(tmp_path / "cfg.json", _config(device="cuda", debug__sleep_per_step=0.02))
    run_dir = tmp_path / "run"
    proc = spawn_train(cfg_path, run_dir)
    wait_for_updates(run_dir, 70, proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    resumed = Trainer(load_config(cfg_path), run_dir, progress=False, log=lambda _: None).run()
    assert resumed.status == "finished" and resumed.steps == 160
    ref_w, got_w = last_weights(reference), last_weights(run_dir)
    for name in ref_w:
        assert torch.equal(ref_w[name], got_w[name]), name
    np.testing.assert_array_equal(lr_trace(run_dir)[1], lr_trace(reference)[1])
