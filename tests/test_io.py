"""Atomic writes: whole files or nothing, normal permissions, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cosanneal.io import atomic_open, atomic_save, atomic_write_json, atomic_write_text


def test_write_replaces_whole_file_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_save_keeps_the_suffix_for_writers_that_need_it(tmp_path: Path) -> None:
    seen: list[str] = []

    def writer(path: str) -> None:
        seen.append(path)
        Path(path).write_text("png")

    atomic_save(tmp_path / "plot.png", writer)
    assert seen[0].endswith(".png") and (tmp_path / "plot.png").read_text() == "png"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def _umask_now() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line")  # pragma: no cover


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists() or "Umask:" not in Path("/proc/self/status").read_text(),
    reason="reads the umask from /proc/self/status (Linux >= 4.7)",
)


WRITES = 600  # per writer thread


@needs_proc
def test_files_other_threads_create_during_atomic_writes_keep_the_umask(tmp_path: Path) -> None:
    # Another thread creating a file at the instant a write path set the umask to 0 (to read it) got a
    # world-writable file. Threads create files while atomic writes run, with a tiny GIL switch interval
    # so the threads interleave at almost every bytecode.
    import sys
    import threading

    old_mask = os.umask(0o027)  # the test's own setting, before any thread starts
    old_interval = sys.getswitchinterval()
    stop = threading.Event()
    created: list[int] = []
    bad: list[tuple[str, int]] = []

    def create(k: int) -> None:
        i = 0
        while not stop.is_set():
            path = tmp_path / f"c{k}-{i}"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != 0o640:
                bad.append((path.name, mode))
            path.unlink()
            i += 1
        created.append(i)

    def write(k: int) -> None:
        for i in range(WRITES):  # before the fix about 1 write in 150 let another thread's file out 0666
            atomic_write_text(tmp_path / f"w{k}.txt", str(i))

    try:
        sys.setswitchinterval(1e-6)
        creators = [threading.Thread(target=create, args=(k,)) for k in range(3)]
        writers = [threading.Thread(target=write, args=(k,)) for k in range(2)]
        for t in creators + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in creators:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
        os.umask(old_mask)
    assert sum(created) > 1000  # the creators really ran alongside the writes
    assert bad == []
    for k in range(2):  # and the atomically written files have the umask's permissions too
        assert stat.S_IMODE((tmp_path / f"w{k}.txt").stat().st_mode) == 0o640
        assert (tmp_path / f"w{k}.txt").read_text() == str(WRITES - 1)


def test_atomic_writes_never_call_os_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = 0o666 & ~_umask_now() if Path("/proc/self/status").exists() else None

    def forbidden(_mask: int) -> int:
        raise AssertionError("os.umask called in a write path")

    monkeypatch.setattr(os, "umask", forbidden)
    atomic_write_text(tmp_path / "a.txt", "a")
    atomic_write_json(tmp_path / "b.json", {"b": 1})
    with atomic_open(tmp_path / "c.bin") as handle:
        handle.write(b"c")
    atomic_save(tmp_path / "d.png", lambda p: Path(p).write_bytes(b"d"))
    for name in ("a.txt", "b.json", "c.bin", "d.png"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode != 0o600  # not the private mode of a temporary file
        if expected is not None:
            assert mode == expected, (name, oct(mode))
