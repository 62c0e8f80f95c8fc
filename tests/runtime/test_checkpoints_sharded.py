"""Sharded checkpoints (DCP) with real processes on CPU (gloo): save on 4, load on 2 and 1, bit-identical.

Each rank is its own ``python tests/runtime/sharded_worker.py`` process on a file:// rendezvous, as
torchrun would start them. The full (unsharded) model and AdamW state at every save is the
reference; what a job at another world size loads must equal it bit for bit. A rank SIGKILLed while
the shards are written leaves no committed checkpoint, and the next job resumes from the last good one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints
from cosanneal.runtime.manifest import MANIFEST_NAME

WORKER = Path(__file__).with_name("sharded_worker.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"),
]


def _launch(world: int, tmp: Path, tag: str, **opts: Any) -> list[subprocess.Popen[bytes]]:
    store = tmp / f"rdzv-{tag}"
    procs = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for rank in range(world):
        args = {"rank": rank, "world": world, "store": str(store), **opts}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(args)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def _run(world: int, tmp: Path, tag: str, timeout: float = 240, **opts: Any) -> None:
    procs = _launch(world, tmp, tag, **opts)
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        outputs.append(out.decode(errors="replace"))
    failed = [
        (i, p.returncode, o[-3000:])
        for i, (p, o) in enumerate(zip(procs, outputs, strict=True))
        if p.returncode != 0
    ]
    assert not failed, failed


def _job(tmp: Path, name: str) -> dict[str, Any]:
    out = tmp / name
    out.mkdir()
    return {"directory": str(tmp / "ckpts"), "out": str(out)}


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(map(str, a)), sorted(map(str, b)))
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _loaded(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = Path(job["out"])
    return torch.load(out / "loaded.pt", weights_only=True), json.loads((out / "loaded.json").read_text())


@pytest.fixture(scope="module")
def saved_on_four(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An FSDP2 job on 4 ranks that saved sharded checkpoints at updates 3 and 6."""
    tmp = tmp_path_factory.mktemp("sharded4")
    job = _job(tmp, "save")
    _run(4, tmp, "save", role="save", wrap="fsdp", steps=6, save_at=[3, 6], **job)
    return tmp, job


@pytest.mark.slow
def test_every_rank_writes_its_shards_and_the_manifest_names_them_all(
    saved_on_four: tuple[Path, dict[str, Any]],
) -> None:
    _, job = saved_on_four
    step6 = Path(job["directory"]) / "step-000000006"
    manifest = json.loads((step6 / MANIFEST_NAME).read_text())
    names = set(manifest["files"])
    assert {f"__{r}_0.distcp" for r in range(4)} <= names
    assert {f"rank-{r:05d}.json" for r in range(4)} <= names
    assert {".metadata", "state.json"} <= names
    assert names | {MANIFEST_NAME} == set(os.listdir(step6))  # nothing on disk the manifest misses
    state = json.loads((step6 / "state.json").read_text())
    assert state["sharded"] == {"format": "dcp-1", "world_size": 4}
    events = json.loads((Path(job["out"]) / "events-save.json").read_text())
    saved = [e for e in events if e["kind"] == "checkpoint_saved"]
    assert [e["step"] for e in saved] == [3, 6] and all(e["sharded"] == 4 for e in saved)


@pytest.mark.slow
@pytest.mark.parametrize(("world", "wrap"), [(2, "fsdp"), (1, "none")])
def test_a_save_on_four_ranks_loads_bit_identical_on_two_and_on_one(
    saved_on_four: tuple[Path, dict[str, Any]], world: int, wrap: str
) -> None:
    tmp, saved = saved_on_four
    job = {**_job(tmp, f"load{world}"), "directory": saved["directory"]}
    _run(world, tmp, f"load{world}", role="load", wrap=wrap, steps=0, save_at=[], **job)
    got, summary = _loaded(job)
    assert summary == {"step": 6, "world_size": 4, "skipped": [], "extra": {"tag": 6}}
    _assert_same(torch.load(Path(saved["out"]) / "ref-6.pt", weights_only=True), got)


@pytest.mark.slow
def test_ddp_async_save_holds_the_state_at_save_time_and_loads_in_one_process(tmp_path: Path) -> None:
    job = _job(tmp_path, "save")
    _run(2, tmp_path, "save", role="save", wrap="ddp", steps=4, save_at=[2, 4], **{"async": True}, **job)
    load = {**_job(tmp_path, "load"), "directory": job["directory"]}
    _run(1, tmp_path, "load", role="load", wrap="none", steps=0, save_at=[], **load)
    got, summary = _loaded(load)
    assert summary["step"] == 4 and summary["world_size"] == 2
    _assert_same(torch.load(Path(job["out"]) / "ref-4.pt", weights_only=True), got)
    # DCP spread DDP's replicated tensors over both ranks: each wrote a shard with data in it
    step4 = Path(job["directory"]) / "step-000000004"
    assert all((step4 / f"__{r}_0.distcp").stat().st_size > 0 for r in range(2))


@pytest.mark.slow
def test_a_rank_killed_during_a_save_leaves_the_last_good_checkpoint(tmp_path: Path) -> None:
    job = _job(tmp_path, "save")
    procs = _launch(2, tmp_path, "save", role="save", wrap="fsdp", steps=4, save_at=[2, 4], kill_at=4, **job)
    victim, survivor = procs[1], procs[0]
    victim.wait(timeout=240)
    assert victim.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 20  # the survivor fails on the lost peer, or hangs: the agent ends it
    while survivor.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if survivor.poll() is None:
        survivor.send_signal(signal.SIGKILL)
    survivor.communicate(timeout=30)
    directory = Path(job["directory"])
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith("step-")) == ["step-000000002"]
    assert any(p.name.startswith(".tmp-step-000000004") for p in directory.iterdir())  # the partial write
    load = {**_job(tmp_path, "load"), "directory": job["directory"]}
    _run(2, tmp_path, "load", role="load", wrap="fsdp", steps=0, save_at=[], **load)
    got, summary = _loaded(load)
    assert summary["step"] == 2
    _assert_same(torch.load(Path(job["out"]) / "ref-2.pt", weights_only=True), got)
    Checkpoints(directory, sharded=True).clean_stale()
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_flipped_shard_byte_is_skipped_on_every_rank_alike(tmp_path: Path) -> None:
    job = _job(tmp_path, "save")
    _run(2, tmp_path, "save", role="save", wrap="fsdp", steps=4, save_at=[2, 4], **job)
    shard = Path(job["directory"]) / "step-000000004" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    load = {**_job(tmp_path, "load"), "directory": job["directory"]}
    _run(2, tmp_path, "load", role="load", wrap="fsdp", steps=0, save_at=[], **load)
    got, summary = _loaded(load)
    assert summary["step"] == 2
    assert len(summary["skipped"]) == 1 and "__1_0.distcp fails its SHA-256 check" in summary["skipped"][0]
    _assert_same(torch.load(Path(job["out"]) / "ref-2.pt", weights_only=True), got)


# ---- one process: the format, its commit, its refusals ---------------------------------------------
def _mlp() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_one_process_round_trip_keeps_rotation_rng_and_the_scheduler(tmp_path: Path) -> None:
    from cosanneal import Cosine
    from cosanneal.torch import Scheduler

    model, optimizer = _mlp()
    scheduler = Scheduler(optimizer, Cosine(peak_lr=0.1, cycle_steps=10))
    ckpts = Checkpoints(tmp_path / "ck", keep_last=2, sharded=True, best=None)
    for step in (1, 2, 3):
        optimizer.step()
        scheduler.step()
        ckpts.save(step, model=model, optimizer=optimizer, scheduler=scheduler)
    expected = torch.rand(3)  # the draw after the RNG state saved with step 3
    assert [c.step for c in ckpts.list()] == [2, 3]
    other, other_opt = _mlp()
    other_sched = Scheduler(other_opt, Cosine(peak_lr=0.1, cycle_steps=10))
    loaded = Checkpoints(tmp_path / "ck").load_latest(
        other, other_opt, other_sched
    )  # any Checkpoints reads it
    assert loaded is not None and loaded.step == 3 and loaded.world_size == 1
    assert torch.equal(torch.rand(3), expected)
    _assert_same(model.state_dict(), other.state_dict())
    _assert_same(optimizer.state_dict(), other_opt.state_dict())
    assert other_sched.state_dict() == scheduler.state_dict()


def test_sharded_needs_a_local_directory() -> None:
    with pytest.raises(CheckpointError, match=r"sharded=True needs a local or shared POSIX directory.*s3://"):
        Checkpoints("s3://bucket/run/ckpts", sharded=True)


def test_a_sharded_checkpoint_that_does_not_fit_the_model_is_one_clear_error(tmp_path: Path) -> None:
    model, optimizer = _mlp()
    Checkpoints(tmp_path / "ck", sharded=True).save(1, model=model, optimizer=optimizer)
    wrong = torch.nn.Linear(4, 2)
    with pytest.raises(
        CheckpointError,
        match=r"sharded, saved by 1 ranks\) does not fit the model or optimizer: .*Missing key.*model\.weight",
    ):
        Checkpoints(tmp_path / "ck", sharded=True).load_latest(wrong, torch.optim.AdamW(wrong.parameters()))


def test_a_disk_error_while_writing_shards_removes_the_partial_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    model, optimizer = _mlp()
    ckpts = Checkpoints(tmp_path / "ck", sharded=True, best=None)
    ckpts.save(1, model=model, optimizer=optimizer)

    def full(self: Any, plan: Any, planner: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemWriter, "write_data", full)
    with pytest.raises(CheckpointError, match=r"could not write sharded checkpoint step-000000002.*intact"):
        ckpts.save(2, model=model, optimizer=optimizer)
    assert sorted(os.listdir(tmp_path / "ck")) == ["step-000000001"]
