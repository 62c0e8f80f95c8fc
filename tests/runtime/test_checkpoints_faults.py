"""Checkpoint fault tests with real processes, real signals and real filesystems.

* disk full: a 1 MiB tmpfs (mounting needs root; skipped with the reason otherwise);
* a read-only filesystem: the same tmpfs remounted read-only;
* a file-size limit: ``RLIMIT_FSIZE`` in a child process makes the write fail with EFBIG;
* SIGKILL at random moments, most of them during a checkpoint write of a large model.

Children are real processes forked from a "zygote" process that has imported torch once (so each starts
in milliseconds rather than seconds); they are killed with real signals.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _model(n: int, value: float) -> torch.nn.Module:
    model = torch.nn.Linear(n, n, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def _assert_only_good(directory: Path, steps: list[int], value: float, n: int) -> None:
    ck = Checkpoints(directory)
    assert [c.step for c in ck.list()] == steps
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []
    fresh = _model(n, -1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be skipped as corrupt
        loaded = ck.load_latest(fresh)
    assert loaded is not None and loaded.step == steps[-1] and torch.all(fresh.weight == value)


def test_disk_full_leaves_earlier_checkpoints_intact(tiny_fs: Path) -> None:
    ck = Checkpoints(tiny_fs / "ckpts", best=None)
    ck.save(0, model=_model(64, 3.0))  # 16 KiB: fits
    with pytest.raises(CheckpointError, match=r"step-000000001 .*No space left on device.*disk full") as err:
        ck.save(1, model=_model(1024, 4.0))  # 4 MiB: cannot fit in 1 MiB
    assert "earlier checkpoints are intact" in str(err.value)
    _assert_only_good(tiny_fs / "ckpts", [0], 3.0, 64)
    ck.save(2, model=_model(64, 5.0))  # the space was given back: saving works again
    _assert_only_good(tiny_fs / "ckpts", [0, 2], 5.0, 64)


def test_disk_full_in_the_background_writer(tiny_fs: Path) -> None:
    ck = Checkpoints(tiny_fs / "ckpts", best=None, async_write=True)
    ck.save(0, model=_model(64, 3.0))
    ck.save(1, model=_model(1024, 4.0))
    with pytest.raises(CheckpointError, match="No space left on device"):
        ck.wait()
    _assert_only_good(tiny_fs / "ckpts", [0], 3.0, 64)


def test_read_only_filesystem_is_a_clear_error(tiny_fs: Path) -> None:
    ck = Checkpoints(tiny_fs / "ckpts", best=None)
    ck.save(0, model=_model(8, 2.0))
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(CheckpointError, match=r"Read-only file system.*no write permission"):
        ck.save(1, model=_model(8, 9.0))
    _assert_only_good(tiny_fs / "ckpts", [0], 2.0, 8)


ZYGOTE = textwrap.dedent(
    """
    # Imports torch once, then forks one child per command read from stdin (it is single-threaded when
    # it forks: no torch op has run in it). Children inherit stdout; SIGCHLD is ignored so they are reaped.
    import os, resource, signal, sys
    import torch
    from cosanneal.runtime.checkpoints import CheckpointError, Checkpoints

    def kill_target(directory, first):
        model = torch.nn.Linear(1500, 1500)  # ~9 MB of weights: a wide window for the kill
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.ones(1, 1500)).sum().backward()
        opt.step()  # momentum buffers: the optimizer file is as large again
        ck = Checkpoints(directory, keep_last=2, best=None)
        for step in range(first, first + 10_000):
            with torch.no_grad():
                model.weight.fill_(float(step))
                model.bias.fill_(float(step))
            print("writing", step, flush=True)
            ck.save(step, model=model, optimizer=opt, epoch=step)
            print("saved", step, flush=True)

    def size_limited(directory):
        ck = Checkpoints(directory, best=None)
        small = torch.nn.Linear(16, 16, bias=False)
        torch.nn.init.constant_(small.weight, 7.0)
        ck.save(0, model=small)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            ck.save(1, model=torch.nn.Linear(512, 512))
            print("the oversized write did not fail", flush=True)
        except CheckpointError as exc:
            print("ERROR", exc, flush=True)

    def warm_up():  # pay torch's lazy first-use costs once, single-threaded, before any fork
        import tempfile
        torch.set_num_threads(1)
        tiny = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9)
        tiny(torch.ones(1, 2)).sum().backward()
        opt.step()
        with tempfile.TemporaryDirectory() as tmp:
            Checkpoints(tmp).save(0, model=tiny, optimizer=opt, metrics={"val_loss": 1.0})
            Checkpoints(tmp).load_latest(tiny, opt)

    warm_up()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    for line in sys.stdin:
        kind, *args = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                kill_target(args[0], int(args[1])) if kind == "kill" else size_limited(args[0])
            finally:
                os._exit(0)
        print("child", pid, flush=True)
    """
)


class Zygote:
    """A real process that forks real children on request (torch is imported once, not per child)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote process died"
        return line.strip()

    def fork(self, *command: object) -> int:
        """Start a child running ``command``; return its pid (its output comes through :meth:`readline`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, command)) + "\n")
        self.proc.stdin.flush()
        word, pid = self.readline().split()
        assert word == "child"
        return int(pid)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def wait_gone(pid: int) -> None:
    for _ in range(3000):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still alive")


def test_file_size_limit_in_a_child_process(tmp_path: Path, zygote: Zygote) -> None:
    pid = zygote.fork("fsize", tmp_path)
    message = zygote.readline()
    wait_gone(pid)
    assert message.startswith("ERROR could not write checkpoint step-000000001")
    assert "File too large" in message
    _assert_only_good(tmp_path, [0], 7.0, 16)


def test_sigkill_at_random_moments_never_exposes_a_partial_checkpoint(tmp_path: Path, zygote: Zygote) -> None:
    rng = random.Random(1234)
    partial_seen = 0
    last_saved: int | None = None
    for run in range(8):
        first = 100 * run
        pid = zygote.fork("kill", tmp_path, first)
        target = first + rng.randrange(3)
        try:
            while True:
                word, step = zygote.readline().split()
                if word == "saved":
                    last_saved = int(step)
                elif int(step) == target:
                    break
            # kill within a few milliseconds of the write starting: usually mid-write
            time.sleep(rng.uniform(0.0, 0.03))
        finally:
            os.kill(pid, signal.SIGKILL)  # also when the loop above failed: never leave a writer running
        wait_gone(pid)
        partial_seen += any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())

        ck = Checkpoints(tmp_path, keep_last=2, best=None)
        fresh = torch.nn.Linear(1500, 1500)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a partial directory must never even be a candidate
            loaded = ck.load_latest(fresh)
        if last_saved is None:
            assert loaded is None or loaded.step == target
            continue
        assert loaded is not None
        assert loaded.step in (last_saved, target)  # the one being written counts only if it committed
        assert torch.all(fresh.weight == float(loaded.step)) and torch.all(fresh.bias == float(loaded.step))
        assert loaded.epoch == loaded.step
    # the kills really did land inside writes (temporary directories were left behind)...
    assert partial_seen >= 1
    # ...and the next writer cleans them up
    Checkpoints(tmp_path, keep_last=2, best=None).save(10_000, model=torch.nn.Linear(2, 2))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
