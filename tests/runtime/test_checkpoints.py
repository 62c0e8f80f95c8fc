"""Checkpoints: layout, round trip, rotation, best, cycle ends, corruption fallback, unsafe pickles, async."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cosanneal import Cosine
from cosanneal.errors import CosannealError
from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints, is_cycle_end
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, encode_manifest
from cosanneal.runtime.rng import capture_rng_state, restore_rng_state
from cosanneal.torch import Scheduler


def make(seed: int = 0) -> tuple[torch.nn.Sequential, torch.optim.Optimizer, Scheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = Scheduler(opt, Cosine(peak_lr=0.01, warmup_steps=2, cycle_steps=5, max_cycles=None))
    return model, opt, sched


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Scheduler, n: int) -> None:
    for _ in range(n):
        x = torch.randn(3, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **payload: Any) -> None:
        self.items.append((kind, payload))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.items]


# ---- layout and round trip ------------------------------------------------------------------
def test_layout_manifest_and_state_json(tmp_path: Path) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 3)
    ck = Checkpoints(tmp_path)
    info = ck.save(
        2, model=model, optimizer=opt, scheduler=sched, epoch=1, batch_index=7, metrics={"val_loss": 0.5}
    )
    d = tmp_path / "step-000000002"
    assert info.path == str(d) and info.step == 2
    assert sorted(os.listdir(d)) == ["MANIFEST.json", "model.safetensors", "optimizer.pt", "state.json"]
    manifest = json.loads((d / "MANIFEST.json").read_text())
    assert manifest["step"] == 2
    for name in ("model.safetensors", "optimizer.pt", "state.json"):
        data = (d / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    state = json.loads((d / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_index"]) == (2, 1, 7)
    schedule = sched.schedule
    assert isinstance(schedule, Cosine)
    assert state["scheduler"] == {"version": 1, "step": 3, "schedule": schedule.to_dict()}
    assert state["schedule_fingerprint"] == schedule.fingerprint()
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    # the files are what the brief says: safetensors, and an optimizer file torch reads with weights_only
    from safetensors.torch import load_file

    tensors = load_file(str(d / "model.safetensors"))
    assert torch.equal(tensors["0.weight"], model.state_dict()["0.weight"])
    assert (
        torch.load(d / "optimizer.pt", weights_only=True)["param_groups"][0]["lr"]
        == opt.param_groups[0]["lr"]
    )
    # nothing temporary is left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_round_trip_restores_everything_and_training_continues_identically(tmp_path: Path) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 4)
    ck = Checkpoints(tmp_path)
    ck.save(
        3, model=model, optimizer=opt, scheduler=sched, epoch=2, batch_index=5, trackers={"guard": {"n": 1}}
    )
    random.random(), np.random.rand(), torch.rand(1)  # move every RNG on
    train(model, opt, sched, 3)
    expected = params(model)
    expected_lr = opt.param_groups[0]["lr"]

    model2, opt2, sched2 = make(seed=99)
    loaded = ck.load_latest(model2, opt2, sched2)
    assert loaded is not None
    assert (loaded.step, loaded.epoch, loaded.batch_index) == (3, 2, 5)
    assert loaded.trackers == {"guard": {"n": 1}} and loaded.skipped == []
    assert sched2.last_epoch == 4
    random.random(), np.random.rand(), torch.rand(1)
    train(model2, opt2, sched2, 3)
    assert all(torch.equal(a, b) for a, b in zip(params(model2), expected, strict=True))
    assert opt2.param_groups[0]["lr"] == expected_lr


def test_rng_capture_is_json_safe_and_exact() -> None:
    random.gauss(0, 1)  # leave a cached gaussian in Python's state
    np.random.standard_normal()  # and in NumPy's
    state = json.loads(json.dumps(capture_rng_state()))
    draws = (random.gauss(0, 1), random.random(), np.random.standard_normal(), torch.rand(3))
    restore_rng_state(state)
    again = (random.gauss(0, 1), random.random(), np.random.standard_normal(), torch.rand(3))
    assert draws[:3] == again[:3] and torch.equal(draws[3], again[3])
    with pytest.raises(ValueError, match="format"):
        restore_rng_state({"format": 99})


def test_tied_weights_are_stored_once_and_restored(tmp_path: Path) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    model = Tied()
    ck = Checkpoints(tmp_path, best=None)
    ck.save(0, model=model)
    from safetensors.torch import load_file

    assert sorted(load_file(str(tmp_path / "step-000000000" / "model.safetensors"))) == ["emb.weight"]
    fresh = Tied()
    ck.load_latest(fresh)
    assert torch.equal(fresh.out.weight, model.emb.weight)
    assert fresh.out.weight is fresh.emb.weight  # still tied after load


def test_non_json_tracker_is_a_clear_error(tmp_path: Path) -> None:
    model, _, _ = make()
    with pytest.raises(CheckpointError, match=r"trackers\['bad'\] is a object"):
        Checkpoints(tmp_path).save(0, model=model, trackers={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": 0}, "keep_last must be an int >= 1, got 0"),
        ({"best": ("val_loss", "lowest")}, "best must be None or"),
        ({"every_steps": 0}, "every_steps must be None or an int >= 1, got 0"),
        ({"every_seconds": -1.0}, "every_seconds must be None or a number > 0, got -1.0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        Checkpoints(tmp_path, **kwargs)
    assert issubclass(CheckpointError, CosannealError)


# ---- when to save ---------------------------------------------------------------------------
def test_should_save_every_steps_and_at_restarts() -> None:
    s = Cosine(peak_lr=1.0, warmup_steps=3, cycle_steps=10, cycle_mult=2.0, max_cycles=None)
    ck = Checkpoints("/nonexistent/never-written", every_steps=25)
    got = [n for n in range(81) if ck.should_save(n, s)]
    # restarts at 13, 33, 73: the updates done when a cycle ends; every 25 updates -> 25, 50, 75
    assert got == [13, 25, 33, 50, 73, 75]
    assert not ck.should_save(0, s)  # nothing done yet: 0 is no multiple of every_steps here
    off = Checkpoints("/nonexistent/never-written", at_restarts=False)
    assert [n for n in range(81) if off.should_save(n, s)] == []


def test_should_save_every_seconds(tmp_path: Path) -> None:
    ck = Checkpoints(tmp_path, every_seconds=3600.0, at_restarts=False)
    assert not ck.should_save(0)
    ck._last_save -= 3601.0  # an hour went by
    assert ck.should_save(1)
    ck.save(1, model=torch.nn.Linear(1, 1))
    assert not ck.should_save(2)


@settings(max_examples=60)
@given(
    cycle=st.integers(1, 40),
    warmup=st.integers(0, 10),
    mult=st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0]),
    max_cycles=st.one_of(st.none(), st.integers(1, 6)),
)
def test_is_cycle_end_matches_brute_force(
    cycle: int, warmup: int, mult: float, max_cycles: int | None
) -> None:
    assume(mult >= 1.0 or max_cycles is not None)
    s = Cosine(peak_lr=1.0, warmup_steps=warmup, cycle_steps=cycle, cycle_mult=mult, max_cycles=max_cycles)
    limit = 200
    marks = [float(r) for r in s.restarts(limit + 2)]
    if s.horizon is not None:
        marks.append(float(s.horizon))
    expected = sorted({t for t in range(limit) for m in marks if t < m <= t + 1})
    assert [t for t in range(limit) if is_cycle_end(t, s)] == expected
    # with cycles of 2+ updates the snapshot is at the LR's low point: the next update's LR is not lower
    for t in expected if mult >= 1.0 and cycle >= 2 else []:
        if t + 1 < limit and float(s.horizon or np.inf) > t + 1:
            assert s(t + 1) >= s(t)


# ---- rotation, best, cycle ends -------------------------------------------------------------
def test_rotation_keeps_last_n_and_best_survives_a_restart_spike(tmp_path: Path) -> None:
    model, _, _ = make()
    events = Events()
    ck = Checkpoints(tmp_path, keep_last=2, on_event=events)
    # the loss falls through cycle 1, spikes after the restart at step 5, never gets back below 0.3
    losses = [0.9, 0.7, 0.5, 0.4, 0.3, 0.8, 0.6, 0.5, 0.45, 0.35]
    for step, loss in enumerate(losses):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        ck.save(step, model=model, metrics={"val_loss": loss})
    assert [c.step for c in ck.list()] == [8, 9]
    assert ck.latest is not None and ck.latest.step == 9
    assert ck.best is not None and (ck.best.step, ck.best.metrics["val_loss"]) == (4, 0.3)
    assert sorted(os.listdir(tmp_path / "best")) == ["step-000000004"]
    assert [p["step"] for k, p in events.items if k == "checkpoint_best"] == [0, 1, 2, 3, 4]
    assert [p["step"] for k, p in events.items if k == "checkpoint_deleted"] == list(range(8))
    # the best copy is a complete, verifying checkpoint with step 4's weights
    fresh, _, _ = make(seed=5)
    loaded = ck.load(ck.best, fresh)
    assert loaded.step == 4 and torch.all(fresh[0].weight == 4.0)
    # a new instance (a restarted job) sees the same best and still refuses a worse one
    ck2 = Checkpoints(tmp_path, keep_last=2)
    ck2.save(10, model=model, metrics={"val_loss": 0.31})
    assert ck2.best is not None and ck2.best.step == 4
    ck2.save(11, model=model, metrics={"val_loss": float("nan")})
    assert ck2.best is not None and ck2.best.step == 4
    ck2.save(12, model=model, metrics={"val_loss": 0.29})
    assert ck2.best is not None and ck2.best.step == 12
    assert sorted(os.listdir(tmp_path / "best")) == ["step-000000012"]


def test_best_max_mode_and_no_best(tmp_path: Path) -> None:
    model, _, _ = make()
    ck = Checkpoints(tmp_path / "a", best=("acc", "max"), keep_last=1)
    for step, acc in enumerate([0.5, 0.9, 0.7]):
        ck.save(step, model=model, metrics={"acc": acc})
    assert ck.best is not None and ck.best.step == 1
    none = Checkpoints(tmp_path / "b", best=None)
    none.save(0, model=model, metrics={"val_loss": 0.1})
    assert none.best is None and not (tmp_path / "b" / "best").exists()


def test_keep_cycle_ends_protects_snapshots(tmp_path: Path) -> None:
    model, _, _ = make()
    s = Cosine(peak_lr=1.0, cycle_steps=4, max_cycles=None)
    ck = Checkpoints(tmp_path, keep_last=2, keep_cycle_ends=True, every_steps=1, best=None)
    for updates in range(1, 15):
        if ck.should_save(updates, s):
            ck.save(updates, model=model, cycle_end=ck.ends_cycle(updates, s))
    assert [c.step for c in ck.cycle_end_snapshots()] == [4, 8, 12]
    assert [c.step for c in ck.list()] == [4, 8, 12, 13, 14]
    plain = Checkpoints(tmp_path / "plain", keep_last=2, best=None)
    for step in range(6):
        plain.save(step, model=model, cycle_end=step == 3)
    assert [c.step for c in plain.list()] == [4, 5] and plain.cycle_end_snapshots() == []


def test_saving_an_earlier_step_drops_the_abandoned_future(tmp_path: Path) -> None:
    model, _, _ = make()
    ck = Checkpoints(tmp_path, keep_last=5, best=None)
    for step in range(5):
        ck.save(step, model=model)
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
    ck.save(2, model=model)  # after a rollback to step 1, training redid step 2
    assert [c.step for c in ck.list()] == [0, 1, 2]
    fresh, _, _ = make(seed=3)
    assert ck.load_latest(fresh) is not None and torch.all(fresh[0].weight == -1.0)


# ---- corruption ------------------------------------------------------------------------------
def _three(tmp_path: Path) -> tuple[Checkpoints, torch.nn.Sequential]:
    model, opt, _ = make()
    ck = Checkpoints(tmp_path, best=None)
    for step in range(3):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        ck.save(step, model=model, optimizer=opt)
    return ck, model


def _truncate(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-7])


def _bitflip(d: Path) -> None:
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) - 3] ^= 0x01
    f.write_bytes(bytes(data))


def _no_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).unlink()


def _bad_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).write_text('{"format": 1, "files": ')


def _tampered_state(d: Path) -> None:
    f = d / "state.json"
    f.write_text(f.read_text().replace('"epoch": 0', '"epoch": 9'))


def _missing_file(d: Path) -> None:
    (d / "optimizer.pt").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "model.safetensors has"),
        (_bitflip, "model.safetensors fails its SHA-256 check"),
        (_no_manifest, "no MANIFEST.json"),
        (_bad_manifest, "unreadable MANIFEST.json"),
        (_tampered_state, "state.json fails its SHA-256 check"),
        (_missing_file, "optimizer.pt is missing"),
    ],
)
def test_damaged_latest_is_skipped_with_warning_and_event(tmp_path: Path, damage: Any, reason: str) -> None:
    ck, _ = _three(tmp_path)
    damage(tmp_path / "step-000000002")
    events = Events()
    fresh, opt, _ = make(seed=7)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint .*step-000000002"):
        loaded = ck.load_latest(fresh, opt, on_event=events)
    assert loaded is not None and loaded.step == 1 and torch.all(fresh[0].weight == 1.0)
    assert len(loaded.skipped) == 1 and reason in loaded.skipped[0].reason
    assert events.kinds() == ["checkpoint_skipped_corrupt", "checkpoint_loaded"]
    assert events.items[0][1]["step"] == 2 and events.items[1][1]["step"] == 1
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        ck.load(tmp_path / "step-000000002", fresh)


def test_nothing_verifies_is_an_error_and_empty_is_none(tmp_path: Path) -> None:
    assert Checkpoints(tmp_path / "empty").load_latest(torch.nn.Linear(1, 1)) is None
    ck, _ = _three(tmp_path)
    for step in range(3):
        _bitflip(tmp_path / f"step-00000000{step}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"no checkpoint in .* verifies"):
            ck.load_latest(make()[0])


def test_best_copy_is_the_last_fallback(tmp_path: Path) -> None:
    model, _, _ = make()
    ck = Checkpoints(tmp_path, keep_last=1)
    for step, loss in enumerate([0.5, 0.1, 0.7, 0.9]):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        ck.save(step, model=model, metrics={"val_loss": loss})
    _bitflip(tmp_path / "step-000000003")
    fresh, _, _ = make(seed=1)
    with pytest.warns(RuntimeWarning):
        loaded = ck.load_latest(fresh)
    assert loaded is not None and loaded.step == 1 and torch.all(fresh[0].weight == 1.0)


def test_malicious_pickle_is_refused_and_runs_no_code(tmp_path: Path) -> None:
    ck, _ = _three(tmp_path)
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    d = tmp_path / "step-000000002"
    payload = pickle.dumps({"state": {}, "param_groups": [Exploit()]}, protocol=2)
    (d / "optimizer.pt").write_bytes(payload)
    # rebuild the manifest so the integrity check passes: only weights_only stands in the way
    digests = {}
    for name in ("model.safetensors", "optimizer.pt", "state.json"):
        data = (d / name).read_bytes()
        digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
    (d / MANIFEST_NAME).write_bytes(encode_manifest(build_manifest(2, digests)))

    fresh, opt, _ = make(seed=4)
    with pytest.raises(CheckpointError, match=r"refused by torch.load\(weights_only=True\)"):
        ck.load(d, fresh, opt)
    with pytest.warns(RuntimeWarning, match="refused by torch.load") as seen:
        loaded = ck.load_latest(fresh, opt)
    text = str(seen[0].message)
    assert "it would call posix.system" in text and "never load it with weights_only=False" in text
    assert "Re-running `torch.load` with `weights_only` set to `False`" not in text  # torch's advice
    assert loaded is not None and loaded.step == 1
    assert not marker.exists()
    # the payload really is live: plain pickle would have run it
    pickle.loads(payload)
    assert marker.exists()


def test_model_mismatch_is_an_error_not_a_skip(tmp_path: Path) -> None:
    ck, _ = _three(tmp_path)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        ck.load_latest(torch.nn.Linear(3, 3))


def test_leftover_temporary_dirs_are_ignored_and_cleaned(tmp_path: Path) -> None:
    _, model = _three(tmp_path)
    partial = tmp_path / ".tmp-step-000000009-deadbeef"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    fresh, _, _ = make(seed=2)
    loaded = Checkpoints(tmp_path, best=None).load_latest(fresh)
    assert loaded is not None and loaded.step == 2 and partial.exists()  # a reader never deletes
    Checkpoints(tmp_path, best=None).save(3, model=model)
    assert not partial.exists()


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    model, _, _ = make()
    ck = Checkpoints(tmp_path, best=None)
    ck.save(5, model=model, epoch=1)
    ck.save(5, model=model, epoch=2)
    assert [(c.step, c.epoch) for c in ck.list()] == [(5, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000005"]


# ---- async -----------------------------------------------------------------------------------
def test_async_write_snapshots_at_call_time(tmp_path: Path) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 2)
    events = Events()
    with Checkpoints(tmp_path, async_write=True, best=None, on_event=events) as ck:
        ck.save(1, model=model, optimizer=opt, scheduler=sched)
        snapshot = params(model)
        exp_avg = opt.state[model[0].weight]["exp_avg"].clone()
        train(model, opt, sched, 3)  # mutate in place while (maybe) still writing
        ck.wait()
        assert events.kinds() == ["checkpoint_saved"]
    fresh, opt2, sched2 = make(seed=8)
    loaded = Checkpoints(tmp_path).load_latest(fresh, opt2, sched2)
    assert loaded is not None and sched2.last_epoch == 2
    assert all(torch.equal(a, b) for a, b in zip(params(fresh), snapshot, strict=True))
    assert torch.equal(opt2.state[fresh[0].weight]["exp_avg"], exp_avg)


def test_async_error_is_raised_on_the_next_call(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    ck = Checkpoints(blocker / "ckpts", async_write=True)
    model = torch.nn.Linear(2, 2)
    ck.save(0, model=model)  # returns at once; the background write fails (parent is a file)
    with pytest.raises(CheckpointError, match="could not write checkpoint step-000000000"):
        ck.save(1, model=model)
    ck.close()  # the error was handed over once


def test_async_reused_buffers_never_leak_into_an_earlier_checkpoint(tmp_path: Path) -> None:
    model, opt, sched = make()
    train(model, opt, sched, 1)
    with Checkpoints(tmp_path, async_write=True, best=None, keep_last=5) as ck:
        for step in range(3):
            with torch.no_grad():
                model[0].weight.fill_(float(step))
            ck.save(step, model=model, optimizer=opt)
    for step in range(3):
        fresh, opt2, _ = make(seed=11)
        ck.load(f"step-{step:09d}", fresh, opt2)
        assert torch.all(fresh[0].weight == float(step))


def test_file_url_scheduler_argument_and_bad_step(tmp_path: Path) -> None:
    model, _, sched = make()
    ck = Checkpoints(f"file://{tmp_path}", best=None)
    info = ck.save(0, model=model)
    assert info.path == str(tmp_path / "step-000000000")
    # a Scheduler works wherever a schedule is expected: warmup 2 + cycle 5 -> restart at 7
    assert [n for n in range(13) if ck.should_save(n, sched)] == [7, 12]
    for bad in (-1, True, 1.5):
        with pytest.raises(CheckpointError, match=f"step must be an int >= 0, got {bad!r}"):
            ck.save(bad, model=model)  # type: ignore[arg-type]


@given(
    steps=st.lists(st.integers(0, 10_000), max_size=30),
    keep_last=st.integers(1, 6),
    protected=st.lists(st.integers(0, 10_000), max_size=5),
)
def test_rotation_rule_properties(steps: list[int], keep_last: int, protected: list[int]) -> None:
    from cosanneal.runtime.ckpt_policy import to_delete

    gone = to_delete(steps, keep_last, protected)
    newest = sorted(set(steps))[-keep_last:]
    assert set(gone) <= set(steps)
    assert not set(gone) & set(newest) and not set(gone) & set(protected)
    kept = set(steps) - set(gone)
    assert kept == set(newest) | (set(protected) & set(steps))


def test_a_best_copy_from_an_abandoned_future_is_not_resumed(tmp_path: Path) -> None:
    model, _, _ = make()
    ck = Checkpoints(tmp_path, keep_last=3)
    for step, loss in enumerate([0.9, 0.8, 0.7, 0.1]):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        ck.save(step, model=model, metrics={"val_loss": loss})
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
    ck.save(1, model=model, metrics={"val_loss": 0.85})  # rolled back: steps 2 and 3 are dropped
    assert [c.step for c in ck.list()] == [1]  # step 0 had been rotated out before
    assert ck.best is not None and ck.best.step == 3  # best/ is never touched by that
    fresh, _, _ = make(seed=6)
    loaded = ck.load_latest(fresh)
    assert loaded is not None and loaded.step == 1 and torch.all(fresh[0].weight == -1.0)
