"""A ``cosanneal train`` job resumed at another world size (``resume.world_size``), with real processes.

The blobs job (640 training samples, dropout off so runs at different world sizes train the same
model) is saved by ``torchrun --nproc-per-node 2`` after 12 updates of a 64-sample global batch, then
resumed in one process under each rule; and a one-process job is resumed by two ranks. The rebatch
math (:class:`~cosanneal.schedules.rebatch.Rebatch`) and the planning (:mod:`cosanneal.jobs.world_size`)
are checked as properties.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config, events, free_port, last_weights, lr_trace, spawn_train, wait_for_updates
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from cosanneal import ConfigError, Cosine, from_dict
from cosanneal.analysis.verify import apply_world_size_changes, verify
from cosanneal.cli import main
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.data import EpochBatches
from cosanneal.jobs.trainer import Trainer
from cosanneal.jobs.world_size import Layout, plan_resize, split_micro
from cosanneal.runtime.guard import adjust_schedule
from cosanneal.runtime.telemetry import EVENT_KINDS
from cosanneal.schedules.rebatch import Rebatch, base_schedule, rebatch_factors

SAVED_AT = 12  # updates the first session trains before the world size changes


def _data(**changes: Any) -> dict[str, Any]:
    return blobs_config(epochs=3, checkpoint__every_steps=4, model__options={"dropout": 0.0}, **changes)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def _torchrun(cfg_path: Path, run_dir: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun is not None
    cmd = [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "cosanneal", "train", str(cfg_path), "--run-dir", str(run_dir), "--no-progress"]  # fmt: skip
    for pair in sets:
        cmd += ["--set", pair]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _train(data: dict[str, Any], run_dir: Path) -> Any:
    return Trainer(config_from_dict(data), run_dir, progress=False, log=lambda _: None).run()


def _verify(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(run_dir)])
    return int(exit_info.value.code or 0), capsys.readouterr().out


def _digest(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory and its SHA-256 (what "nothing written" compares)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run saved by 2 ranks (gloo on CPU) after 12 updates of 2 x 32 samples."""
    root = tmp_path_factory.mktemp("two")
    cfg_path = _write(root / "cfg.json", _data())
    run_dir = root / "run"
    first = _torchrun(cfg_path, run_dir, f"max_steps={SAVED_AT}")
    assert first.returncode == 0, first.stderr[-2000:]
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


# ---- 2 ranks -> 1 process ---------------------------------------------------------------------------
def test_accumulate_keeps_the_global_batch_and_the_uninterrupted_run(
    two_ranks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(two_ranks, tmp_path)
    result = _train(_data(), run_dir)  # resume.world_size = "accumulate" by default
    assert result.status == "finished" and result.steps == 30 and result.total_steps == 30
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(30))  # 640 / 64 = 10 updates per epoch at any world size
    np.testing.assert_array_equal(lr, from_dict(_data()["schedule"])(steps))  # bit-identical LRs
    (event,) = events(run_dir, "world_size_changed")
    assert event["step"] == SAVED_AT and event["rule"] == "accumulate"
    assert set(event) - {"step", "kind", "wall"} == set(EVENT_KINDS["world_size_changed"])  # as documented
    assert (event["from_world_size"], event["to_world_size"]) == (2, 1)
    assert (event["global_batch_before"], event["global_batch_after"]) == (64, 64)
    assert (event["batch_size"], event["accumulate"], event["lr_factor"], event["ratio"]) == (64, 2, 1.0, 1.0)
    assert (event["batch"], event["skipped_samples"]) == (2, 0)  # update 12 = epoch 1, batch 2: exact
    # the same samples in the same updates: the weights of one process with 64-sample batches throughout
    reference = tmp_path / "reference"
    assert _train(_data(batch_size=64), reference).steps == 30
    mine, theirs = last_weights(run_dir), last_weights(reference)
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)
    code, out = _verify(run_dir, capsys)
    assert code == 0 and "MATCH: 30 steps" in out
    # the same world size again (the finished run, resumed at its end): nothing changes, no new event
    assert _train(_data(), run_dir).steps == 30
    assert len(events(run_dir, "world_size_changed")) == 1 and len(events(run_dir, "resumed")) == 2


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_linear_and_sqrt_scale_the_lr_and_rebind_the_rest_in_samples(
    two_ranks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str
) -> None:
    run_dir = _copy(two_ranks, tmp_path)
    result = _train(_data(resume__world_size=rule), run_dir)
    # 18 updates of 64 samples were left: 36 of 32
    assert result.status == "finished" and result.steps == 48 and result.total_steps == 48
    factor = 0.5 if rule == "linear" else math.sqrt(0.5)
    expected = Rebatch(from_dict(_data()["schedule"]), SAVED_AT, 0.5, factor)
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(48))
    np.testing.assert_array_equal(lr, expected(steps))
    np.testing.assert_array_equal(lr[:SAVED_AT], from_dict(_data()["schedule"])(steps[:SAVED_AT]))
    (event,) = events(run_dir, "world_size_changed")
    assert (event["rule"], event["ratio"], event["lr_factor"]) == (rule, 0.5, factor)
    assert (event["global_batch_before"], event["global_batch_after"], event["accumulate"]) == (64, 32, 1)
    assert (event["total_steps_before"], event["total_steps"]) == (30, 48)
    assert (event["batch"], event["skipped_samples"]) == (4, 0)  # 2 x 64 samples = 4 x 32: exact
    code, out = _verify(run_dir, capsys)
    assert code == 0 and "MATCH: 48 steps" in out and f"({rule})" in out
    # epoch 1 resumed at batch 4 of 20: it ends at update 28, epoch 2 at 48, where the run ends
    assert _final_position(run_dir) == (48, 3, 0)
    # an LR changed without an event: the same run with one LR row nudged, then with the event removed
    with sqlite3.connect(run_dir / "run.db") as db:
        db.execute("UPDATE scalars SET value = value * 1.001 WHERE name = 'lr' AND step = 20")
    code, out = _verify(run_dir, capsys)
    assert code == 1 and "step 20:" in out
    with sqlite3.connect(run_dir / "run.db") as db:
        db.execute("UPDATE scalars SET value = value / 1.001 WHERE name = 'lr' AND step = 20")
        db.execute("DELETE FROM events WHERE kind = 'world_size_changed'")
    code, out = _verify(run_dir, capsys)
    assert code == 1 and "MISMATCH" in out


def _final_position(run_dir: Path) -> tuple[int, int, int]:
    """``(updates, epoch, batch)`` of the run's newest checkpoint."""
    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    state = json.loads((newest / "state.json").read_text())
    return int(state["step"]), int(state["epoch"]), int(state["batch_index"])


def test_a_guard_rollback_after_the_switch_keeps_the_rebatch_and_the_data_position(
    two_ranks: Path, tmp_path: Path
) -> None:
    """NaN losses right after a 2 -> 1 ``linear`` switch roll back to the 2-rank checkpoint at update 12."""
    run_dir = _copy(two_ranks, tmp_path)
    result = _train(_data(resume__world_size="linear", debug__inject_nan_at=[13, 14, 15]), run_dir)
    assert result.status == "finished" and result.rollbacks == 1 and result.steps == 48
    (rollback,) = events(run_dir, "rollback")
    assert rollback["schedule"]["kind"] == "rebatch" and rollback["schedule"]["at"] == SAVED_AT
    lowered = Rebatch(adjust_schedule(from_dict(_data()["schedule"]), "peak", 0.5), SAVED_AT, 0.5, 0.5)
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(48))
    np.testing.assert_array_equal(lr[SAVED_AT:], lowered(steps[SAVED_AT:]))
    assert _final_position(run_dir) == (48, 3, 0)  # the 2-rank checkpoint's batch 2 of 64 is batch 4 of 32


def test_refuse_exits_2_with_one_line_and_writes_nothing(
    two_ranks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(two_ranks, tmp_path)
    cfg_path = _write(tmp_path / "cfg.json", _data())
    before = _digest(run_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                str(cfg_path),
                "--run-dir",
                str(run_dir),
                "--no-progress",
                "--set",
                "resume.world_size=refuse",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: resume.world_size: the checkpoint at update 12 was saved by 2 ranks")
    assert "accumulate" in err[0] and "linear" in err[0]
    assert _digest(run_dir) == before  # nothing written, nothing lost


# ---- 1 process -> 2 ranks ---------------------------------------------------------------------------
@pytest.mark.slow
def test_one_process_to_two_ranks_accumulate_and_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 -> 2 ranks keeps the 32-sample update (2 x 16, accumulation 2 -> 1); 33 samples cannot split."""
    data = _data(accumulate=2)
    run_dir = tmp_path / "run"
    assert _train({**data, "max_steps": SAVED_AT}, run_dir).steps == SAVED_AT
    cfg_path = _write(tmp_path / "cfg.json", data)
    second = _torchrun(cfg_path, run_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(60))  # 640 / 32 = 20 updates per epoch, 3 epochs
    np.testing.assert_array_equal(lr, from_dict(data["schedule"])(steps))
    (event,) = events(run_dir, "world_size_changed")
    assert (event["from_world_size"], event["to_world_size"], event["batch_size"]) == (1, 2, 16)
    assert (event["accumulate_before"], event["accumulate"], event["batch"]) == (2, 1, SAVED_AT)
    reference = tmp_path / "reference"
    assert _train(data, reference).steps == 60
    mine, theirs = last_weights(run_dir), last_weights(reference)
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)
    assert _verify(run_dir, capsys)[0] == 0
    # a global batch of 33 does not split over 2 ranks: each rank refuses in one line, nothing is written
    odd = tmp_path / "odd"
    assert _train(_data(batch_size=33, max_steps=4), odd).steps == 4
    before = _digest(odd)
    refused = _torchrun(_write(tmp_path / "odd.json", _data(batch_size=33)), odd)
    assert refused.returncode != 0
    assert (
        "error: resume.world_size: the checkpoint at update 4 has a global batch of 33 samples"
        in refused.stderr
    )
    assert _digest(odd) == before


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_at_another_world_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``checkpoint.sharded``: 2 ranks write DCP shards, one process reshards them and rebinds (sqrt)."""
    data = _data(checkpoint__sharded=True)
    run_dir = tmp_path / "run"
    first = _torchrun(_write(tmp_path / "cfg.json", data), run_dir, f"max_steps={SAVED_AT}")
    assert first.returncode == 0, first.stderr[-2000:]
    result = _train({**data, "resume": {"world_size": "sqrt"}}, run_dir)
    assert result.status == "finished" and result.steps == 48
    steps, lr = lr_trace(run_dir)
    np.testing.assert_array_equal(
        lr, Rebatch(from_dict(data["schedule"]), SAVED_AT, 0.5, math.sqrt(0.5))(steps)
    )
    assert [e["rule"] for e in events(run_dir, "world_size_changed")] == ["sqrt"]
    assert _verify(run_dir, capsys)[0] == 0


@pytest.mark.slow
def test_two_changes_chain_and_verify_replays_both(
    two_ranks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 -> 1 ranks (linear) at update 12, preempted, then 1 -> 2 ranks (linear) where it stopped."""
    run_dir = _copy(two_ranks, tmp_path)
    data = _data(resume__world_size="linear")
    cfg_path = _write(tmp_path / "cfg.json", {**data, "debug": {"sleep_per_step": 0.05}})
    proc = spawn_train(cfg_path, run_dir)
    wait_for_updates(run_dir, 20, proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    second = _torchrun(_write(tmp_path / "cfg2.json", data), run_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    first, later = events(run_dir, "world_size_changed")
    d2 = later["step"]
    assert (first["step"], first["to_world_size"], later["from_world_size"], later["to_world_size"]) == (
        SAVED_AT,
        1,
        1,
        2,
    )
    assert SAVED_AT < d2 < 48 and later["total_steps"] == d2 + math.ceil((48 - d2) * 32 / 64)
    chained = Rebatch(Rebatch(from_dict(data["schedule"]), SAVED_AT, 0.5, 0.5), d2, 2.0, 2.0)
    steps, lr = lr_trace(run_dir)
    assert steps.tolist() == list(range(later["total_steps"]))
    np.testing.assert_array_equal(lr, chained(steps))
    code, out = _verify(run_dir, capsys)
    assert code == 0 and out.count("world size") == 2


# ---- the planning -----------------------------------------------------------------------------------
def test_plan_resize_rules_and_inexact_data_positions() -> None:
    before = Layout(world_size=2, batch_size=32, accumulate=2, total=100)
    assert plan_resize(before, world_size=2, micro_batch=16, rule="refuse", at=10, batch=3) is None
    grow = plan_resize(before, world_size=4, micro_batch=16, rule="accumulate", at=10, batch=3)
    assert grow is not None and (grow.after.batch_size, grow.after.accumulate, grow.after.total) == (
        16,
        1,
        100,
    )
    assert grow.after.bound_at == 2 and grow.after.resized and grow.batch == 3
    # 2 -> 3 ranks keeping 32 per rank: 3 batches of 64 = 192 samples = 2 batches of 96, exact
    linear = plan_resize(before, world_size=3, micro_batch=16, rule="linear", at=10, batch=3)
    assert linear is not None and (linear.ratio, linear.lr_factor, linear.batch, linear.skipped_samples) == (
        1.5,
        1.5,
        2,
        0,
    )
    assert linear.after.total == 10 + math.ceil(90 * 64 / 96)
    # 1 batch of 64 consumed: the next boundary of 96 is 96, so 32 samples are skipped (never repeated)
    inexact = plan_resize(before, world_size=3, micro_batch=16, rule="sqrt", at=10, batch=1)
    assert inexact is not None and (inexact.batch, inexact.skipped_samples) == (1, 32)
    assert inexact.lr_factor == pytest.approx(math.sqrt(1.5))
    with pytest.raises(
        ConfigError, match=r"^resume.world_size: .* 64 samples .* 3 ranks cannot split evenly"
    ) as exc:
        plan_resize(before, world_size=3, micro_batch=16, rule="accumulate", at=10, batch=1)
    assert "\n" not in str(exc.value) and "linear or sqrt" in str(exc.value)
    with pytest.raises(ConfigError, match="'refuse' does not allow"):
        plan_resize(before, world_size=1, micro_batch=16, rule="refuse", at=10, batch=1)
    assert Layout.from_dict(None) is None and Layout.from_dict({"world_size": 2}) is None  # older checkpoints


@given(st.integers(1, 4096), st.integers(1, 512))
def test_split_micro_is_the_fewest_even_split_within_the_micro_batch(batch: int, micro: int) -> None:
    k = split_micro(batch, micro)
    assert batch % k == 0 and (batch // k <= micro or k == batch)
    assert all(batch % j or batch // j > micro for j in range(1, k))


@given(st.integers(1, 300), st.integers(1, 8), st.integers(1, 8), st.integers(1, 8), st.integers(0, 3))
def test_an_updates_samples_depend_on_the_global_batch_alone(
    n: int, w: int, w2: int, per: int, epoch: int
) -> None:
    """Batch ``i`` of ``w`` ranks of ``B / w`` samples holds the samples of batch ``i`` of ``w'`` ranks of ``B / w'``."""
    global_batch = w * w2 * per  # divisible by both world sizes
    data = TensorDataset(torch.arange(float(n)))

    def update(world: int, i: int) -> list[float]:
        ranks = [EpochBatches(data, global_batch // world, seed=5, rank=r, world=world) for r in range(world)]
        return sorted(x for b in ranks for x in b.batch(epoch, i)[0].tolist())

    counts = {EpochBatches(data, global_batch // k, seed=5, world=k).batches_per_epoch for k in (w, w2)}
    assert counts == {n // global_batch}  # the same updates per epoch at either world size
    for i in range(n // global_batch):
        assert update(w, i) == update(w2, i)


# ---- the rebatch math -------------------------------------------------------------------------------
_cosines = st.builds(
    Cosine,
    peak_lr=st.floats(1e-4, 1.0),
    min_ratio=st.floats(0.0, 0.5),
    warmup_steps=st.integers(0, 50),
    cycle_steps=st.integers(5, 500),
    cycle_mult=st.sampled_from([1.0, 1.5, 2.0]),
    max_cycles=st.sampled_from([None, 1, 3]),
)
_ratios = st.sampled_from([0.25, 0.5, 2.0 / 3.0, 1.5, 2.0, 4.0])


@given(
    _cosines, st.integers(0, 1000), _ratios, st.floats(0.1, 4.0), st.lists(st.integers(0, 3000), max_size=20)
)
def test_rebatch_continues_at_the_switch_and_advances_in_samples(
    s: Cosine, at: int, ratio: float, factor: float, extra: list[int]
) -> None:
    b = Rebatch(s, at, ratio, factor)
    steps = np.array(sorted({*extra, at, at + 1, max(0, at - 1)}), dtype=np.float64)
    positions = np.array([b.position(t) for t in steps])
    assert b.position(at) == at  # the position is continuous at the switch
    assert np.all(np.diff(positions) > 0)  # and strictly increasing
    before = steps < at
    np.testing.assert_array_equal(b(steps)[before], s(steps[before]))
    np.testing.assert_array_equal(b(steps)[~before], factor * s(at + (steps[~before] - at) * ratio))
    assert [b(float(t)) for t in steps] == b(steps).tolist()  # scalar and vector agree bit for bit
    assert from_dict(b.to_dict()) == b and from_dict(b.to_dict()).fingerprint() == b.fingerprint()
    assert json.loads(json.dumps(b.to_dict())) == b.to_dict()
    inner = np.array(s.restarts(b.position(3000)), dtype=np.float64)
    for r in b.restarts(3000):  # each restart is where the inner schedule restarts
        assert float(r) < at or bool(np.isclose(inner, b.position(r), rtol=1e-12).any())


@given(_cosines, st.integers(0, 300), st.integers(0, 300), _ratios, _ratios)
def test_rebatch_chains_by_nesting(s: Cosine, d1: int, gap: int, r1: float, r2: float) -> None:
    d2 = d1 + gap
    chained = Rebatch(Rebatch(s, d1, r1, r1), d2, r2, math.sqrt(r2))
    assert base_schedule(chained) == s and rebatch_factors(chained) == (r1 * r2, r1 * math.sqrt(r2))
    for u in (d2, d2 + 7, d2 + 100):
        p1 = d1 + (d2 - d1) * r1 + (u - d2) * r2 * r1  # both switches' sample counts, in schedule steps
        assert chained.position(u) == d2 + (u - d2) * r2
        assert chained(float(u)) == pytest.approx(r1 * math.sqrt(r2) * s(p1), rel=1e-12, abs=1e-15)


def test_verify_replays_chained_world_size_changes() -> None:
    s = Cosine(0.1, warmup_steps=5, cycle_steps=40, max_cycles=None)
    changes = [
        {"kind": "world_size_changed", "step": 20, "ratio": 0.5, "lr_factor": 0.5},
        {"kind": "resumed", "step": 20},
        {"kind": "world_size_changed", "step": 50, "ratio": 4.0, "lr_factor": 2.0},
        {"kind": "world_size_changed", "step": 60, "ratio": 1.0, "lr_factor": 1.0},  # accumulate: no change
    ]
    ran = Rebatch(Rebatch(s, 20, 0.5, 0.5), 50, 4.0, 2.0)
    assert apply_world_size_changes(s, changes) == ran
    t = np.arange(90)
    assert verify(t, ran(t), apply_world_size_changes(s, changes)).matches
    assert not verify(t, ran(t), s).matches  # the LR changed without the events: a mismatch
    tampered = ran(t).copy()
    tampered[70] *= 1.01
    assert verify(t, tampered, apply_world_size_changes(s, changes)).first_mismatches[0].step == 70
