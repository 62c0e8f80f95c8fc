"""The synchronous save streams each file once: safetensors bytes from the tensors' memory, digests while writing.

* :func:`write_safetensors` gives the very bytes of ``safetensors.torch.save`` for every dtype, shape
  and name (property test), so files stay readable by every safetensors reader.
* :class:`HashingWriter` digests equal ``sha256`` of the file read back, for sizes around its piece
  boundaries and with ``torch.save`` (small, many writes) as the producer.
* ``Checkpoints.save`` never reads a file back to hash it and fsyncs each file once (a spy on ``os``).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from cosanneal import Cosine
from cosanneal.runtime import storage as storage_mod
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.ckpt_tensors import write_safetensors
from cosanneal.runtime.storage import PARALLEL_MIN, WRITE_PIECE, HashingWriter, LocalStorage
from cosanneal.torch import Scheduler

DTYPES = [
    torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.complex64, torch.uint16, torch.uint32, torch.uint64,
]  # fmt: skip

names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3)


def _tensor(dtype: torch.dtype, shape: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size(),),
                        dtype=torch.uint8, generator=g)  # fmt: skip
    return raw.view(dtype).reshape(shape)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(names, st.tuples(st.sampled_from(DTYPES), shapes, st.integers(0, 2**16)), max_size=6),
    st.dictionaries(names, names, max_size=1),
)
def test_streamed_safetensors_bytes_equal_safetensors_save(
    spec: dict[str, tuple[torch.dtype, list[int], int]], metadata: dict[str, str]
) -> None:
    tensors = {name: _tensor(dtype, shape, seed) for name, (dtype, shape, seed) in spec.items()}
    out = io.BytesIO()
    write_safetensors(tensors, out, metadata)
    assert out.getvalue() == save(tensors, metadata or None)
    back = load(out.getvalue())
    assert sorted(back) == sorted(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(
            back[name].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)
        )


def test_several_metadata_keys_are_all_in_the_header() -> None:
    # safetensors keeps metadata in a hash map (its key order varies); ours keeps the order given
    from safetensors import safe_open

    meta = {"format": "pt", "epoch": "3", "note": "\u00e9t\u00e9"}
    out = io.BytesIO()
    write_safetensors({"w": torch.ones(3)}, out, meta)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"meta-{os.getpid()}.safetensors"
    path.write_bytes(out.getvalue())
    try:
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata() == meta and torch.equal(f.get_tensor("w"), torch.ones(3))
    finally:
        path.unlink()


def test_non_contiguous_and_strided_tensors_are_written_as_their_values() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"t": base.t(), "s": base[:, ::2], "scalar": torch.tensor(2.5)}
    out = io.BytesIO()
    write_safetensors(tensors, out, {"format": "pt"})
    assert out.getvalue() == save({k: v.contiguous() for k, v in tensors.items()}, {"format": "pt"})


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        PARALLEL_MIN - 1,
        PARALLEL_MIN,
        PARALLEL_MIN + 1,
        WRITE_PIECE - 1,
        WRITE_PIECE,
        2 * WRITE_PIECE + 7,
    ],
)
def test_hashing_writer_digest_is_the_files(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    digest, written = LocalStorage(str(tmp_path)).write_file(str(path), lambda h: h.write(data))
    assert written == size == path.stat().st_size
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_hashing_writer_takes_any_buffer_and_many_small_writes(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    writer = HashingWriter(fd)
    try:
        parts: list[Any] = [
            b"ab",
            bytearray(b"cd"),
            memoryview(b"ef"),
            torch.arange(5, dtype=torch.int64).numpy(),
        ]
        for part in parts:
            writer.write(part)
    finally:
        os.close(fd)
    content = (tmp_path / "f.bin").read_bytes()
    assert writer.result() == (hashlib.sha256(content).hexdigest(), len(content))
    assert content[:6] == b"abcdef" and len(content) == 6 + 40


def test_torch_save_through_the_writer_is_loadable_and_its_digest_matches(tmp_path: Path) -> None:
    state = {"w": torch.randn(300, 300), "step": 3, "nested": {"b": torch.ones(7, dtype=torch.bfloat16)}}
    path = tmp_path / "o.pt"
    digest, size = LocalStorage(str(tmp_path)).write_file(str(path), lambda h: torch.save(state, h))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() and size == path.stat().st_size
    back = torch.load(path, weights_only=True)
    assert (
        torch.equal(back["w"], state["w"])
        and back["step"] == 3
        and torch.equal(back["nested"]["b"], state["nested"]["b"])
    )


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        LocalStorage(str(tmp_path)).write_file(str(path), lambda h: h.write(b"new"))
    assert path.read_bytes() == b"old"


def test_a_failing_producer_closes_the_file_and_raises(tmp_path: Path) -> None:
    def producer(handle: Any) -> None:
        handle.write(b"x" * (PARALLEL_MIN + 5))
        raise RuntimeError("disk on fire")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        LocalStorage(str(tmp_path)).write_file(str(tmp_path / "f.bin"), producer)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_save_hashes_while_writing_and_fsyncs_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 256)).sum().backward()
    opt.step()
    sched = Scheduler(opt, Cosine(peak_lr=1e-3, cycle_steps=100))
    ck = Checkpoints(tmp_path / "ck", keep_last=2, best=None)
    ck.save(0, model=model, optimizer=opt, scheduler=sched)  # the first save also makes the directory

    reads: list[str] = []
    fsynced: list[tuple[str, bool]] = []
    real_hash, real_fsync = storage_mod.sha256_stream, os.fsync

    def spy_hash(handle: Any) -> tuple[str, int]:
        reads.append(str(getattr(handle, "name", handle)))
        return real_hash(handle)

    def spy_fsync(fd: int) -> None:
        fsynced.append(
            (os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), stat.S_ISDIR(os.fstat(fd).st_mode))
        )
        real_fsync(fd)

    monkeypatch.setattr(storage_mod, "sha256_stream", spy_hash)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    ck.save(1, model=model, optimizer=opt, scheduler=sched)
    monkeypatch.undo()

    assert reads == []
    files = sorted(name for name, is_dir in fsynced if not is_dir)
    assert files == ["MANIFEST.json", "model.safetensors", "optimizer.pt", "state.json"]  # once each
    dirs = [name for name, is_dir in fsynced if is_dir]
    assert len(dirs) == 2 and dirs[0].startswith(".tmp-step-000000001") and dirs[1] == "ck"
    before = [t.clone() for t in model.state_dict().values()]
    with torch.no_grad():
        for t in model.parameters():
            t.zero_()
    restored = Checkpoints(tmp_path / "ck", keep_last=2, best=None).load_latest(model, opt, sched)
    assert restored is not None and restored.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))
    sched.close()


def test_early_writeback_never_fails_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage_mod.start_writeback(-1, 0, 4096)  # a bad descriptor: ignored (durability is the fsync's job)
    path = tmp_path / "big.bin"
    data = os.urandom(3 * PARALLEL_MIN)
    calls: list[tuple[int, int]] = []
    real = storage_mod.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(storage_mod, "start_writeback", spy)
    digest, _ = LocalStorage(str(tmp_path)).write_file(
        str(path), lambda h: (h.write(b"x" * 10), h.write(data))
    )
    assert calls == [(10, len(data))]  # the large piece, at its offset; the small write is not worth it
    assert path.read_bytes() == b"x" * 10 + data and digest == hashlib.sha256(path.read_bytes()).hexdigest()
