"""``cosanneal.analysis.predict`` and ``cosanneal predict``: the laws, their fit, and the command on real runs.

The fits are checked on synthetic loss curves that each law generates on cosanneal schedules (the law's
parameters are known); how well a law predicts real runs is a benchmark (benchmarks/bench_predict.py),
not a test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from blobs import blobs_config
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal.analysis.predict import (
    FittedLaw,
    LossTrace,
    PredictError,
    choose_target,
    curve,
    fit,
    multipower_drop,
    multipower_drop_naive,
    predict,
    rank,
    tissue_momentum,
    trace_from_run,
    warmup_end,
)
from cosanneal.runtime.runstore import RunStore
from cosanneal.schedules import Cosine, WarmupStableDecay

T = 600
PEAK = 3e-3
COSINE = Cosine(PEAK, warmup_steps=30, cycle_steps=T - 30, min_ratio=0.1)
WSD = WarmupStableDecay(PEAK, 30, 450, 120, min_lr_ratio=0.1)
#: held out: another peak and floor, warm restarts, a short WSD cool-down
HELD_OUT = {
    "cosine-2e-3-floor0": Cosine(2e-3, warmup_steps=30, cycle_steps=T - 30),
    "sgdr": Cosine(
        PEAK, warmup_steps=30, cycle_steps=190, cycle_mult=2, peak_decay=0.8, min_ratio=0.1, max_cycles=None
    ),
    "wsd-10%": WarmupStableDecay(PEAK, 30, 510, 60, min_lr_ratio=0.0),
}
MULTIPOWER = {"L0": 2.0, "A": 0.4, "alpha": 0.5, "zeta": 1.0, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.5}
TISSUE = {"L0": 2.0, "A": 0.4, "alpha": 0.5, "zeta": 1.0, "C": 0.3}


def _lr(schedule: object, n: int = T) -> np.ndarray:
    return np.asarray(schedule(np.arange(n, dtype=np.float64)))  # type: ignore[operator]


def _traces(
    law: str, params: dict[str, float], noise: float = 0.0, lam: float = 0.999, *, val_every: int = 0
) -> list[LossTrace]:
    """The cosine and WSD runs of ``law``; ``val_every``: a validation loss (the law) every so many steps,
    and a training loss that falls away from it (memorisation: 0.3 lower by the end)."""
    rng = np.random.default_rng(0)
    out = []
    for name, schedule in (("cosine", COSINE), ("wsd", WSD)):
        lr = _lr(schedule)
        law_curve = curve(law, params, lr, lam=lam)
        loss = law_curve + noise * rng.standard_normal(T)
        if not val_every:
            out.append(LossTrace(lr, np.arange(T), loss, name=name))
            continue
        at = np.arange(val_every - 1, T, val_every)
        train = loss - 0.3 * (np.arange(T) / T) ** 2
        out.append(LossTrace(lr, np.arange(T), train, at, law_curve[at], name=name))
    return out


# ---- the laws ---------------------------------------------------------------------------------------
@settings(max_examples=60)
@given(
    lr=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=25),
    c=st.floats(0.01, 10.0),
    beta=st.floats(0.05, 3.0),
    gamma=st.floats(0.0, 1.5),
)
def test_the_vectorised_multipower_drop_is_the_double_sum_and_lr_increases_keep_it_bounded(
    lr: list[float], c: float, beta: float, gamma: float
) -> None:
    arr = np.array(lr)
    at = list(range(len(arr)))
    fast = multipower_drop(arr, at, b=1.7, c=c, beta=beta, gamma=gamma)
    naive = multipower_drop_naive(arr, at, b=1.7, c=c, beta=beta, gamma=gamma)
    np.testing.assert_allclose(fast, naive, rtol=1e-10, atol=1e-12)
    # increases included: the bands left are disjoint LR levels between the LR and the peak, G < 1 each
    assert np.all(fast >= 0.0)
    assert np.all(fast <= 1.7 * (arr[warmup_end(arr)] - arr) + 1e-12)


@settings(max_examples=40)
@given(lr=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=40), lam=st.floats(0.0, 0.9999))
def test_tissue_momentum_is_its_recursion(lr: list[float], lam: float) -> None:
    arr = np.array(lr)
    w = warmup_end(arr)
    m, total, expected = 0.0, 0.0, []
    for i in range(len(arr)):
        m = lam * m + (arr[i - 1] - arr[i] if i > w else 0.0)
        total += m
        expected.append(total)
    np.testing.assert_allclose(tissue_momentum(arr, lam), expected, rtol=1e-9, atol=1e-12)


def test_a_warm_restart_takes_the_annealing_drop_back() -> None:
    sgdr = Cosine(PEAK, warmup_steps=30, cycle_steps=190, cycle_mult=2, min_ratio=0.1, max_cycles=None)
    lr = _lr(sgdr)
    restart = 30 + 190  # the first update of the second cycle, back at the peak
    drop = multipower_drop(lr, [restart - 1, restart, restart + 1], b=1.0, c=2.0, beta=0.6, gamma=0.5)
    assert drop[0] > 0.5 * 0.9 * PEAK  # most of the first cycle's decrease is banked by its end
    assert drop[1] == 0.0  # all of it is taken back at the restart: the loss returns to the power term
    # after the restart the drop is the second cycle's own, as in a run that starts its decay there
    fresh = np.concatenate([np.full(restart, PEAK), lr[restart:]])
    at = np.arange(restart, T)
    np.testing.assert_allclose(
        multipower_drop(lr, at, b=1.0, c=2.0, beta=0.6, gamma=0.5, w=30),
        multipower_drop(fresh, at, b=1.0, c=2.0, beta=0.6, gamma=0.5, w=30),
        rtol=1e-12,
        atol=1e-15,
    )
    # the predicted curve stays below the power term of the area covered, by at most B x the LR fallen
    loss = curve("multipower", MULTIPOWER, lr)
    power = curve("tissue", {**TISSUE, "C": 0.0}, lr)
    assert np.all(loss[1:] <= power[1:] + 1e-12)
    assert np.all(loss[1:] >= power[1:] - MULTIPOWER["B"] * (PEAK - lr[1:]) - 1e-12)
    assert loss[restart - 1] < loss[restart] == pytest.approx(power[restart], rel=1e-12)  # the jump


def test_a_constant_lr_has_no_annealing_term_and_a_cosine_drops_the_loss() -> None:
    const = np.full(200, PEAK)
    assert np.all(multipower_drop(const, range(200), b=1.0, c=1.0, beta=1.0, gamma=0.5) == 0.0)
    cos, flat = (
        curve("multipower", MULTIPOWER, _lr(COSINE)),
        curve("multipower", MULTIPOWER, np.full(T, PEAK)),
    )
    assert cos[-1] < flat[-1]  # annealing lowers the final loss at a smaller area
    assert np.all(np.diff(curve("tissue", TISSUE, np.full(T, PEAK))) < 0)  # the power term alone falls


# ---- the fit ----------------------------------------------------------------------------------------
def test_the_tissue_fit_recovers_its_parameters_and_predicts_held_out_schedules() -> None:
    law = fit(_traces("tissue", TISSUE), law="tissue")
    assert law.params == pytest.approx(TISSUE, rel=1e-6)
    assert law.rmse is not None and law.rmse < 1e-8
    for name, schedule in HELD_OUT.items():
        p = law.predict(schedule, T, name=name)
        truth = curve("tissue", TISSUE, p.lr, p.steps)
        np.testing.assert_allclose(p.loss[1:], truth[1:], rtol=1e-7)
        assert p.final_loss == pytest.approx(truth[-1], rel=1e-8)


def test_the_tissue_fit_finds_lambda() -> None:
    law = fit(_traces("tissue", TISSUE, lam=0.995), law="tissue")  # lam=None: fitted, the default
    assert law.lam == pytest.approx(0.995, abs=2e-4)
    assert law.params["alpha"] == pytest.approx(0.5, rel=1e-3)


def test_the_multipower_fit_recovers_its_parameters_and_predicts_held_out_schedules() -> None:
    law = fit(_traces("multipower", MULTIPOWER), law="multipower")
    got = law.params
    # the power term is identified tightly; B, C, beta, gamma trade off against each other a little
    assert [got["L0"], got["A"], got["alpha"]] == pytest.approx([2.0, 0.4, 0.5], rel=5e-3)
    assert got["B"] == pytest.approx(300.0, rel=0.05)
    assert [got["C"], got["beta"], got["gamma"]] == pytest.approx([2.0, 0.6, 0.5], rel=0.25)
    assert law.relative_rmse is not None and law.relative_rmse < 1e-4
    for name, schedule in HELD_OUT.items():
        p = law.predict(schedule, T, name=name)
        truth = curve("multipower", MULTIPOWER, p.lr, p.steps)
        assert p.final_loss == pytest.approx(truth[-1], rel=1e-3), name
        assert np.max(np.abs(p.loss[40:] - truth[40:]) / truth[40:]) < 3e-3, name


def test_a_noisy_trace_with_spikes_still_ranks_the_held_out_schedules() -> None:
    traces = _traces("multipower", MULTIPOWER, noise=0.02)  # 1% of the loss, every step
    spiky = traces[0].loss.copy()
    spiky[[100, 250, 400]] += 3.0  # loss spikes: the robust loss keeps them from pulling the fit
    traces[0] = LossTrace(traces[0].lr, traces[0].steps, spiky, name="cosine")
    law = fit(traces, law="multipower")
    finals = {name: law.predict(s, T).final_loss for name, s in HELD_OUT.items()}
    truth = {name: float(curve("multipower", MULTIPOWER, _lr(s))[-1]) for name, s in HELD_OUT.items()}
    for name in HELD_OUT:
        assert finals[name] == pytest.approx(truth[name], rel=0.02), name
    assert sorted(finals, key=finals.__getitem__) == sorted(truth, key=truth.__getitem__)


def test_a_one_run_fit_recovers_the_law() -> None:
    law = fit(_traces("tissue", TISSUE)[:1], law="tissue", lam=0.999)
    assert law.params == pytest.approx(TISSUE, rel=1e-6) and law.runs == ("cosine",)


def test_the_area_exponent_is_recovered_when_fitted() -> None:
    truth = {**TISSUE, "zeta": 0.4}
    law = fit(_traces("tissue", truth), law="tissue", zeta=None, lam=0.999)
    assert law.params == pytest.approx(truth, rel=1e-4)
    paper = fit(_traces("tissue", truth), law="tissue", lam=0.999)  # zeta = 1: the papers' area
    assert paper.params["zeta"] == 1.0 and (paper.rmse or 0.0) > 100 * (law.rmse or 0.0)
    p = law.predict(Cosine(PEAK / 2, warmup_steps=30, cycle_steps=T - 30), T)  # another peak
    assert p.final_loss == pytest.approx(float(curve("tissue", truth, p.lr)[-1]), rel=1e-5)


def test_a_fit_to_the_validation_loss_predicts_it_and_ignores_the_training_losss_drift() -> None:
    traces = _traces("multipower", MULTIPOWER, val_every=20)  # 30 validation losses a run
    assert choose_target(traces) == "val_loss"
    law = fit(traces, law="multipower")
    assert law.target == "val_loss" and law.val_offset == 0.0 and law.points == 58  # after the warmups
    assert [law.params[k] for k in ("L0", "A", "alpha")] == pytest.approx([2.0, 0.4, 0.5], rel=0.02)
    for name, schedule in HELD_OUT.items():
        p = law.predict(schedule, T, name=name)
        truth = float(curve("multipower", MULTIPOWER, p.lr)[-1])
        assert p.final_val_loss == p.final_loss == pytest.approx(truth, rel=2e-3), name
    on_train = fit(traces, law="multipower", target="loss")  # the drifting training loss + the last gap
    assert on_train.target == "loss" and on_train.val_offset is not None
    worst = max(abs(law.heldout_error(tr)["final_val_error"] or 0.0) for tr in traces)
    assert worst < 1e-3
    few = [dataclasses.replace(tr, val_steps=tr.val_steps[::6], val_loss=tr.val_loss[::6]) for tr in traces]
    assert choose_target(few) == "loss" and fit(few, law="tissue").target == "loss"
    with pytest.raises(
        PredictError, match=r"\d+ validation losses recorded after the warmup, too few .* >= 12"
    ):
        fit(few, law="tissue", target="val_loss")


def test_the_fit_is_deterministic_and_round_trips_through_json() -> None:
    traces = _traces("tissue", TISSUE, noise=0.01)
    a, b = fit(traces, law="tissue"), fit(traces, law="tissue")
    assert a == b
    back = FittedLaw.from_dict(json.loads(a.to_json()))
    assert back == a
    assert predict(back, WSD, T).final_loss == predict(a, WSD, T).final_loss


def test_rank_orders_candidates_by_predicted_loss_and_keeps_the_best() -> None:
    law = fit(_traces("tissue", TISSUE), law="tissue")
    best = rank(law, HELD_OUT, T, keep=2)
    truth = sorted(HELD_OUT, key=lambda n: float(curve("tissue", TISSUE, _lr(HELD_OUT[n]))[-1]))
    assert [p.name for p in best] == truth[:2]


def test_the_validation_offset_is_the_gap_at_the_last_evaluation() -> None:
    (cos, wsd) = _traces("tissue", TISSUE)
    gap = 0.25
    at = np.array([299, 599])
    val = LossTrace(cos.lr, cos.steps, cos.loss, at, curve("tissue", TISSUE, cos.lr, at) + gap, name="v")
    law = fit([val, wsd], law="tissue")
    assert law.val_offset == pytest.approx(gap, rel=1e-6)
    p = law.predict(COSINE, T)
    assert p.final_val_loss == pytest.approx(p.final_loss + gap)
    err = law.heldout_error(val)
    assert err["final_val_error"] == pytest.approx(0.0, abs=1e-8)
    assert err["relative_rmse"] == pytest.approx(0.0, abs=1e-8)


def test_runs_too_short_or_that_never_anneal_cannot_be_fitted() -> None:
    short = LossTrace(_lr(COSINE, 60), np.arange(60), np.linspace(3, 2, 60), name="runs/short")
    with pytest.raises(
        PredictError, match=r"^runs/short: 29 recorded updates .*\(needs >= 50\); fit a longer run"
    ):
        fit([short])
    flat = LossTrace(np.full(300, PEAK), np.arange(300), np.linspace(3, 2, 300), name="runs/flat")
    with pytest.raises(PredictError, match=r"never falls by 5% of its peak .* fit a run whose LR decays"):
        fit([flat], law="tissue")
    with pytest.raises(PredictError, match="law must be one of multipower, tissue"):
        fit(_traces("tissue", TISSUE), law="power")
    with pytest.raises(PredictError, match="give steps=N"):
        predict(FittedLaw("tissue", TISSUE), Cosine(PEAK, cycle_steps="1dur"))


def test_a_run_store_recorded_every_other_update_reads_back_every_lr(tmp_path: Path) -> None:
    lr = _lr(COSINE, 100)
    with RunStore(tmp_path / "run") as store:
        for step in range(0, 100, 2):  # telemetry.every = 2
            store.log_scalars(step, {"lr": float(lr[step])}, group=0)
            store.log_scalars(step, {"loss": 3.0 - step / 100})
        store.log_scalars(98, {"val_loss": 2.5})
    trace = trace_from_run(tmp_path / "run")
    assert len(trace.lr) == 99 and trace.steps.tolist() == list(range(0, 100, 2))  # up to the last row
    np.testing.assert_allclose(trace.lr[::2], lr[:-1:2])
    np.testing.assert_allclose(trace.lr[1::2], (lr[:-2:2] + lr[2::2]) / 2)  # linear in between
    assert trace.val_steps.tolist() == [98] and trace.val_loss.tolist() == [2.5]


# ---- the command, on real runs -------------------------------------------------------------------------
def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "150"}
    cmd = [sys.executable, "-m", "cosanneal", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs of the tests' blobs config by ``cosanneal train`` (160 and 40 updates), a constant-LR store."""
    root = tmp_path_factory.mktemp("predict")
    for name, cfg in (("run", blobs_config()), ("short", blobs_config(epochs=2))):
        (root / f"{name}.json").write_text(json.dumps(cfg))
        done = _cli("train", f"{name}.json", "--run-dir", name, "--no-progress", cwd=root)
        assert done.returncode == 0, done.stderr
    (root / "wsd.toml").write_text('kind = "wsd"\npeak_lr = 0.2\nwarmup_steps = 10\nstable_steps = "0.7dur"\n'
                                   'decay_steps = "0.2dur"\nmin_lr_ratio = 0.01\n')  # fmt: skip
    (root / "cosine.toml").write_text(
        'kind = "cosine"\npeak_lr = 0.1\nwarmup_steps = 10\ncycle_steps = "1dur"\n'
    )
    with RunStore(root / "flat") as store:  # a run store of a loop at a constant LR: nothing anneals
        for step in range(200):
            store.log_scalars(step, {"lr": 0.1}, group=0)
            store.log_scalars(step, {"loss": 2.0 / (1.0 + 0.01 * step)})
    return root


def test_predict_ranks_candidates_from_a_real_run(runs_dir: Path) -> None:
    table = _cli(
        "predict", "run", "--schedule", "wsd.toml", "--schedule", "cosine.toml", "-o", "c.csv", cwd=runs_dir
    )
    assert table.returncode == 0, table.stderr
    assert "multipower law fitted to the loss of run: RMSE" in table.stdout and "wrote c.csv" in table.stdout
    assert "final val_loss" in table.stdout  # the blobs job records val_loss, so it is predicted
    ranked = {
        line.split()[0]: line.split()[-1]
        for line in table.stdout.splitlines()
        if line.split()[:1] in (["wsd"], ["cosine"])
    }
    assert sorted(ranked) == ["cosine", "wsd"] and sorted(ranked.values()) == ["1", "2"]
    rows = (runs_dir / "c.csv").read_text().splitlines()
    assert rows[0] == "candidate,step,lr,loss" and rows[-1].startswith("cosine,159,")

    out = _cli("predict", "run", "--schedule", "wsd.toml", "--schedule", "cosine.toml", "--law", "tissue",
               "--steps", "320", "--zeta", "fit", "--json", cwd=runs_dir)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["law"]["law"] == "tissue" and data["steps"] == 320 and data["law"]["runs"] == ["run"]
    assert data["law"]["target"] == "loss"  # 8 validation losses: too few, so auto fits the training loss
    assert 1e-3 <= data["law"]["params"]["zeta"] <= 1.5
    cands = data["candidates"]
    assert [c["name"] for c in cands] == ["wsd", "cosine"] and sorted(c["rank"] for c in cands) == [1, 2]
    assert all(c["steps"] == 320 and np.isfinite(c["final_loss"]) for c in cands)
    assert all(np.isfinite(v) for v in data["law"]["params"].values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["short"], r"short: \d+ recorded updates after the warmup, too short to fit a loss law"),
        (["nowhere"], "no run store at nowhere: give a run directory written by `cosanneal train`"),
        (["flat", "--law", "tissue"], "flat: the LR never falls by 5% of its peak after the warmup"),
        (["run", "--schedule", "missing.toml"], "missing.toml"),
        (["run", "--fit-to", "val_loss"], r"run: \d+ validation losses recorded after the warmup, too few"),
        (["run", "--zeta", "0"], r"--zeta must be 'fit' or a number > 0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    runs_dir: Path, args: list[str], message: str
) -> None:
    out = _cli("predict", *args, "-o", "bad.csv", cwd=runs_dir)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert re.search(message, out.stderr), out.stderr
    assert not (runs_dir / "bad.csv").exists()
