"""The LR range test: the caller's state is untouched, divergence is found where theory puts it, the
suggestion is robust to noisy losses, and ``cosanneal lr-find`` writes a valid PNG and a loadable spec."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from cosanneal.errors import ConfigError
from cosanneal.jobs.config import config_from_dict, load_config
from cosanneal.jobs.lrfind import lr_find_config
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.lint import lint
from cosanneal.schedules.spec import load_spec
from cosanneal.tune.lrfind import ema, lr_find, spec_toml, suggest, trend

ROOT = Path(__file__).resolve().parents[2]
BLOBS: dict[str, Any] = {
    "seed": 1, "batch_size": 32, "device": "cpu",
    "model": {"name": "mlp", "options": {"dropout": 0.2}},
    "data": {"name": "blobs", "options": {"n": 400}},
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "telemetry": {"tensorboard": False, "progress": False},
}  # fmt: skip


# ---- a problem whose divergence point is known ---------------------------------------------------
class Point(nn.Module):
    """The weights ``w`` of a noisy quadratic ``0.5 (w - c)^T A (w - c)``, one random target ``c`` per batch."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())


def quadratic(seed: int = 0, dim: int = 8) -> tuple[nn.Module, list[Any], float]:
    """Every batch has the same Hessian ``A`` (eigenvalues 1 .. 100), so SGD is stable exactly for lr < 2/L
    (L = 100, the largest eigenvalue) while the random targets keep every direction excited."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, 2, dim, dtype=torch.float64)
    hessian = q @ torch.diag(eig) @ q.T
    targets = [(hessian, torch.randn(dim, generator=gen, dtype=torch.float64)) for _ in range(64)]
    model = Point(3.0 * torch.randn(dim, generator=gen, dtype=torch.float64))
    return model, targets, float(eig.max())


def mse(model: nn.Module, batch: Any) -> torch.Tensor:
    hessian, target = batch
    d = model.w - target
    return 0.5 * d @ hessian @ d


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1.0)


def test_divergence_is_found_just_above_two_over_l_and_the_suggestion_is_below_it() -> None:
    for seed in range(3):
        model, batches, top = quadratic(seed)
        limit = 2.0 / top
        res = lr_find(model, sgd, batches, mse, min_lr=limit * 1e-4, max_lr=limit * 100, steps=120)
        assert res.diverged_at is not None
        # never before 2/L; the smoothed loss needs a few updates of exponential growth to cross 4x its best
        assert limit < res.diverged_at < 3.0 * limit, (res.diverged_at / limit, seed)
        assert res.lrs[-1] == res.diverged_at
        s = res.suggestion
        assert s is not None
        assert s.peak_lr <= s.min_loss_lr / 3 * (1 + 1e-12) and s.min_loss_lr < limit
        assert 0.02 * limit < s.peak_lr < 0.5 * limit
        assert s.min_lr < s.peak_lr
        assert 0 < s.warmup_steps < len(res.lrs)


def test_the_sweep_is_exponential_and_the_smoothed_loss_is_the_bias_corrected_ema() -> None:
    model, batches, top = quadratic(1)
    res = lr_find(model, sgd, batches, mse, min_lr=1e-3 / top, max_lr=1.0 / top, steps=40, smoothing=0.9)
    assert res.diverged_at is None and len(res.lrs) == 40
    np.testing.assert_allclose(res.lrs, np.geomspace(1e-3 / top, 1.0 / top, 40), rtol=1e-12)
    np.testing.assert_allclose(res.smoothed, ema(res.losses, 0.9), rtol=1e-12)
    assert res.smoothed[0] == res.losses[0]
    assert res.losses[-1] < 0.1 * res.losses[0]  # the copy really trained


def test_noisy_losses_leave_the_suggestion_within_a_factor_of_two() -> None:
    """Measurement noise of 10% of the starting loss on every recorded loss (the updates are unchanged)."""
    model, batches, top = quadratic(2)
    limit = 2.0 / top
    kwargs: dict[str, Any] = {"min_lr": limit * 1e-4, "max_lr": limit * 100, "steps": 120}
    clean = lr_find(model, sgd, batches, mse, **kwargs).suggestion
    assert clean is not None
    start = float(mse(model, batches[0]).detach())
    for noise_seed in range(5):
        gen = torch.Generator().manual_seed(noise_seed)

        def noisy(m: nn.Module, batch: Any, gen: torch.Generator = gen) -> torch.Tensor:
            return mse(m, batch) + 0.1 * start * torch.randn((), generator=gen, dtype=torch.float64)

        s = lr_find(model, sgd, batches, noisy, **kwargs).suggestion
        assert s is not None
        assert 0.5 < s.peak_lr / clean.peak_lr < 2.0, (noise_seed, s.peak_lr / clean.peak_lr)
        assert s.peak_lr < 0.5 * limit


def test_the_raw_steepest_point_is_not_robust_but_the_suggestion_is() -> None:
    """A single spike right after a flat start fools 'steepest drop of the raw curve', not the trend."""
    lrs = np.geomspace(1e-5, 1.0, 101)
    losses = 1.0 / (1.0 + (lrs / 1e-2) ** 2) + (lrs / 0.3) ** 4
    spiky = losses.copy()
    spiky[10] += 0.5  # one bad batch at lr = 3e-5
    raw_steepest = lrs[int(np.argmin(np.gradient(spiky, np.log(lrs))))]
    assert raw_steepest < 1e-4  # the naive rule lands two decades too low
    a, b = suggest(lrs, losses), suggest(lrs, spiky)
    assert a is not None and b is not None
    assert a == b
    assert 3e-3 < b.steepest_lr < 3e-2


# ---- the caller's state is untouched -------------------------------------------------------------
def _rng_draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_model_optimizer_and_rng_are_left_exactly_as_they_were() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    loss_fn(model, batches[0]).backward()  # give the optimizer some momentum state
    optimizer.step()
    model.eval()
    params = copy.deepcopy(model.state_dict())  # buffers too (BatchNorm running stats)
    opt_state = copy.deepcopy(optimizer.state_dict())
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = _rng_draws()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)

    res = lr_find(model, optimizer, batches, loss_fn, min_lr=1e-4, max_lr=10.0, steps=30)

    assert _rng_draws() == expected
    assert len(res.lrs) > 5 and not np.allclose(res.losses, res.losses[0])  # the copy did train
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert not model.training
    assert [g["lr"] for g in optimizer.param_groups] == [0.05]
    state = optimizer.state_dict()
    assert state["param_groups"] == opt_state["param_groups"]
    for index, entry in opt_state["state"].items():
        assert torch.equal(state["state"][index]["momentum_buffer"], entry["momentum_buffer"])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


def test_the_optimizer_copy_sweeps_the_first_group_and_keeps_the_others_ratio() -> None:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}], lr=0.1
    )
    seen: list[tuple[type, list[float]]] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, *_: seen.append((type(opt), [g["lr"] for g in opt.param_groups]))
    )
    try:
        res = lr_find(model, optimizer, [torch.randn(8, 3)], lambda m, b: m(b).pow(2).mean(), min_lr=1e-3,
                      max_lr=1e-1, steps=5, diverge=1e9)  # fmt: skip
    finally:
        handle.remove()
    assert len(res.lrs) == 5
    assert [t for t, _ in seen] == [torch.optim.Adam] * 5
    np.testing.assert_allclose(
        [lrs for _, lrs in seen], np.stack([res.lrs, res.lrs / 10], axis=1), rtol=1e-12
    )
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]
    foreign = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="not in the model"):
        lr_find(model, foreign, [torch.randn(8, 3)], lambda m, b: m(b).pow(2).mean(), steps=5)


def test_config_run_leaves_the_global_rng_alone_and_is_deterministic() -> None:
    cfg = config_from_dict(BLOBS)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    a = lr_find_config(cfg, min_lr=1e-4, max_lr=10.0, steps=30)
    assert torch.equal(torch.rand(3), expected)
    b = lr_find_config(cfg, min_lr=1e-4, max_lr=10.0, steps=30)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.suggestion == b.suggestion and a.suggestion is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_lr": 0.0}, "min_lr: must be a finite number > 0, got 0.0"),
        ({"min_lr": 1.0, "max_lr": 0.5}, "max_lr: must be finite and > min_lr=1.0, got 0.5"),
        ({"steps": 3}, "steps: must be >= 5, got 3"),
        ({"smoothing": 1.0}, "smoothing: must be in [0, 1), got 1.0"),
        ({"diverge": 1.0}, "diverge: must be > 1, got 1.0"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict[str, Any], message: str) -> None:
    model, batches, _ = quadratic()
    with pytest.raises(ConfigError) as info:
        lr_find(model, sgd, batches, mse, **kwargs)
    assert str(info.value) == message


# ---- the suggestion's math -----------------------------------------------------------------------
curves = st.tuples(
    st.floats(1e-4, 1e-1), st.floats(3.0, 100.0), st.integers(20, 200)
)  # (LR where the loss falls, factor to the LR where it blows up, points)


@given(curves, st.floats(0.01, 100.0), st.floats(-10.0, 10.0), st.floats(1e-3, 1e3))
def test_suggestion_is_affine_invariant_in_loss_and_equivariant_in_lr(
    curve: tuple[float, float, int], scale: float, shift: float, lr_factor: float
) -> None:
    fall, blow, n = curve
    lrs = np.geomspace(fall / 1e3, fall * blow * 10, n)
    losses = 1.0 / (1.0 + (lrs / fall) ** 2) + (lrs / (fall * blow)) ** 4
    s = suggest(lrs, losses)
    assert s is not None
    assert s.steepest_lr <= s.min_loss_lr and s.min_lr < s.peak_lr
    np.testing.assert_allclose(
        s.peak_lr, min(np.sqrt(s.steepest_lr * s.min_loss_lr), s.min_loss_lr / 3), rtol=1e-12
    )
    affine = suggest(lrs, scale * losses + shift)
    assert affine is not None
    assert affine.warmup_steps == s.warmup_steps
    np.testing.assert_allclose(affine.peak_lr, s.peak_lr, rtol=1e-9)
    moved = suggest(lrs * lr_factor, losses)
    assert moved is not None
    np.testing.assert_allclose(
        [moved.peak_lr, moved.min_lr, moved.min_loss_lr],
        [s.peak_lr * lr_factor, s.min_lr * lr_factor, s.min_loss_lr * lr_factor],
        rtol=1e-9,
    )


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60), st.floats(0.0, 0.999))
def test_ema_of_a_constant_is_the_constant_and_trend_stays_in_range(values: list[float], beta: float) -> None:
    const = np.full(len(values), values[0])
    np.testing.assert_allclose(ema(const, beta), const, rtol=1e-9, atol=1e-9)
    t = trend(values)
    assert len(t) == len(values)
    assert min(values) - 1e-9 <= t.min() and t.max() <= max(values) + 1e-9


def test_a_loss_that_never_falls_gives_no_suggestion() -> None:
    lrs = np.geomspace(1e-5, 1.0, 50)
    assert suggest(lrs, np.linspace(1.0, 2.0, 50)) is None
    assert suggest(lrs[:4], np.array([3.0, 2.0, 1.0, 0.5])) is None


# ---- the command ---------------------------------------------------------------------------------
def _process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={"COLUMNS": "120", "PATH": "", "PYTHONIOENCODING": "utf-8", "MPLBACKEND": "Agg"},
    )  # fmt: skip


def test_cli_writes_a_png_and_a_spec_that_show_and_train_accept(tmp_path: Path) -> None:
    from matplotlib.image import imread

    config = tmp_path / "blobs.json"
    config.write_text(json.dumps(BLOBS))
    result = _process(
        "lr-find", str(config), "--min", "1e-4", "--max", "10", "--sweep-steps", "30", "--set", "seed=2",
        "-o", "out/lrfind.png", "--write-spec", "spec.toml", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "suggestion" in result.stdout and "peak_lr" in result.stdout and "loss vs LR" in result.stdout
    png = tmp_path / "out" / "lrfind.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(png).shape[:2] == (540, 1200)
    spec = tmp_path / "spec.toml"
    schedule = load_spec(spec).bind(total_steps=1000)
    assert isinstance(schedule, Cosine) and schedule.horizon == 1000
    assert lint(schedule, 1000) == []
    expected = lr_find_config(
        load_config(config, ["seed=2"]), min_lr=1e-4, max_lr=10.0, steps=30
    ).suggestion  # same config, same seed: the same suggestion
    assert expected is not None
    assert spec.read_text().endswith(spec_toml(expected).split("\n", 1)[1])
    assert float(schedule(schedule.warmup_steps)) == pytest.approx(expected.peak_lr, rel=1e-2)
    assert load_config(spec).schedule == expected.spec()
    assert list(tmp_path.glob("**/.*.tmp")) == []


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from cosanneal.cli import main

    config = tmp_path / "bad.json"
    config.write_text(json.dumps({**BLOBS, "optimizer": {"name": "sgd", "lrr": 0.1}}))
    result = _process("lr-find", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: optimizer.lrr: unknown key"), result.stderr
    assert not (tmp_path / "lrfind.png").exists()

    good = tmp_path / "good.json"
    good.write_text(json.dumps(BLOBS))
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        pytest.raises(SystemExit) as exit_info,
    ):
        main(["lr-find", str(good), "--min", "0"])
    assert exit_info.value.code == 2
    assert err.getvalue() == "error: --min: must be a finite number > 0, got 0.0\n"


# ---- the optimizer the trainer builds, for every optimizer it can build ---------------------------
def _sweep_optimizers(cfg: Any, **kwargs: Any) -> list[tuple[type, list[dict[str, Any]]]]:
    """Run ``lr_find_config`` and record the class and the param-group hyperparameters of every update."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen: list[tuple[type, list[dict[str, Any]]]] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, *_: seen.append(
            (type(opt), [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
        )
    )
    try:
        lr_find_config(cfg, **kwargs)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"name": "adamw", "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.05,
         "groups": [{"match": "bias", "weight_decay": 0.0, "lr_scale": 0.5}]},
    ],
    ids=["sgd", "adamw"],
)  # fmt: skip
def test_config_run_uses_the_optimizer_the_trainer_builds(optimizer: dict[str, Any]) -> None:
    from cosanneal.jobs.builders import build_model
    from cosanneal.jobs.optimizers import build_optimizer

    cfg = config_from_dict({**BLOBS, "optimizer": optimizer})
    seen = _sweep_optimizers(cfg, min_lr=1e-4, max_lr=1.0, steps=8, diverge=1e9)
    expected = build_optimizer(build_model(cfg.model), cfg.optimizer, 1.0)
    assert [t for t, _ in seen] == [type(expected)] * 8
    lrs = np.geomspace(1e-4, 1.0, 8)
    for (_, groups), lr in zip(seen, lrs, strict=True):
        assert len(groups) == len(expected.param_groups)
        for got, want in zip(groups, expected.param_groups, strict=True):
            scale = want["lr"]  # the group's lr_scale (peak 1.0)
            assert got["lr"] == pytest.approx(lr * scale, rel=1e-12)
            for key in ("weight_decay", "momentum", "nesterov", "betas", "eps"):
                if key in want:
                    assert got[key] == want[key], key


def test_an_adamw_instance_is_copied() -> None:
    model = nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.9), weight_decay=0.05)
    res = lr_find(model, optimizer, [torch.randn(8, 3)], lambda m, b: m(b).pow(2).mean(), min_lr=1e-3,
                  max_lr=1e-1, steps=5, diverge=1e9)  # fmt: skip
    assert len(res.lrs) == 5
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.state_dict()["state"] == {}


def test_cli_runs_the_docs_adamw_example_from_another_directory(tmp_path: Path) -> None:
    # docs/lr-find.md's first example, word for word, run from a directory holding the example config
    # under the same relative path (not the repository root)
    command = next(
        line.split("#")[0].split()
        for line in (ROOT / "docs" / "lr-find.md").read_text().splitlines()
        if line.startswith("cosanneal lr-find ")
    )
    assert command == ["cosanneal", "lr-find", "examples/train/digits_adamw.toml"]
    (tmp_path / "examples" / "train").mkdir(parents=True)
    example = ROOT / command[2]
    (tmp_path / command[2]).write_text(example.read_text())
    assert load_config(example).optimizer.name == "adamw"
    result = _process(*command[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "peak_lr" in result.stdout and "wrote lrfind.png" in result.stdout
    assert (tmp_path / "lrfind.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
