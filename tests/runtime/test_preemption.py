"""Preemption with real processes and real signals: flag only, save completes, exit 128 + signum."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import pytest

from cosanneal.runtime.preemption import Preemption, PreemptionError, exit_code_for

# A training loop in a child process: steps until Preemption says stop, then "saves" (waits until the
# parent's extra signals were recorded, so they provably arrive during the save, then writes a large
# JSON file atomically), and exits with p.exit_code.
CHILD = r"""
import sys, time
from pathlib import Path
from cosanneal.io import atomic_write_json
from cosanneal.runtime.preemption import Preemption

out, want = Path(sys.argv[1]), int(sys.argv[2])
force = None if sys.argv[3] == "none" else int(sys.argv[3])
deadline = time.monotonic() + 60
with Preemption(force_after=force) as p:
    (out / "ready").touch()
    step = 0
    while not p.check():
        step += 1
        time.sleep(0.001)
        if time.monotonic() > deadline:
            sys.exit(99)
    (out / "saving").touch()
    seen = 1
    while len(p.received) < want:
        if len(p.received) > seen:
            seen = len(p.received)
            (out / f"seen-{seen}").touch()
        time.sleep(0.001)
        if time.monotonic() > deadline:
            sys.exit(98)
    payload = {"step": step, "received": [int(s) for s in p.received], "data": list(range(50_000))}
    atomic_write_json(out / "ckpt.json", payload)
sys.exit(p.exit_code)
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll for ``path`` (a handshake file written by the child), failing if the child dies first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"child exited {proc.returncode} before {path.name}: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"child never wrote {path.name}")
        time.sleep(0.005)


def _start(tmp_path: Path, want: int = 1, force: int | None = None) -> subprocess.Popen[bytes]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(want), "none" if force is None else str(force)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(tmp_path / "ready", proc)
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def _checkpoint(tmp_path: Path) -> dict[str, object]:
    data = json.loads((tmp_path / "ckpt.json").read_text())
    assert data["data"] == list(range(50_000))  # complete, parseable: nothing half-written
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left over
    return dict(data)


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 128 + signal.SIGUSR1)]
)
def test_child_saves_and_exits_with_128_plus_signum(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    proc = _start(tmp_path)
    os.kill(proc.pid, sig)
    rc, err = _finish(proc)
    assert rc == code, err  # SIGINT: 130, not a KeyboardInterrupt traceback (default_int_handler not chained)
    assert "Traceback" not in err
    data = _checkpoint(tmp_path)
    assert data["received"] == [int(sig)]
    assert isinstance(data["step"], int) and data["step"] >= 0


def test_second_sigterm_during_save_is_recorded_and_does_not_abort_it(tmp_path: Path) -> None:
    proc = _start(tmp_path, want=2)
    os.kill(proc.pid, signal.SIGTERM)
    _wait_for(tmp_path / "saving", proc)
    os.kill(proc.pid, signal.SIGTERM)  # arrives while the child is inside its save
    rc, err = _finish(proc)
    assert rc == 143, err
    assert _checkpoint(tmp_path)["received"] == [15, 15]


def test_a_first_sigterm_then_sigint_keeps_the_first_signals_exit_code(tmp_path: Path) -> None:
    proc = _start(tmp_path, want=2)
    os.kill(proc.pid, signal.SIGTERM)
    _wait_for(tmp_path / "saving", proc)
    os.kill(proc.pid, signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 143, err
    assert _checkpoint(tmp_path)["received"] == [15, 2]


def test_repeated_sigint_never_escalates_by_default(tmp_path: Path) -> None:
    proc = _start(tmp_path, want=3)
    os.kill(proc.pid, signal.SIGINT)
    _wait_for(tmp_path / "saving", proc)
    os.kill(proc.pid, signal.SIGINT)
    _wait_for(tmp_path / "seen-2", proc)
    os.kill(proc.pid, signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 130, err
    assert _checkpoint(tmp_path)["received"] == [2, 2, 2]


def test_force_after_raises_keyboard_interrupt_on_the_nth_sigint(tmp_path: Path) -> None:
    proc = _start(tmp_path, want=4, force=3)
    os.kill(proc.pid, signal.SIGINT)
    _wait_for(tmp_path / "saving", proc)
    os.kill(proc.pid, signal.SIGINT)
    _wait_for(tmp_path / "seen-2", proc)
    os.kill(proc.pid, signal.SIGINT)
    rc, err = _finish(proc)
    assert "KeyboardInterrupt" in err
    assert rc in (-signal.SIGINT, 130), err  # Python dies by SIGINT after an uncaught KeyboardInterrupt
    assert not (tmp_path / "ckpt.json").exists()  # the save was abandoned, as asked, and left no half file
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- in-process behaviour (real signals sent to this process) ----------------------------------
needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)


@needs_main_thread
def test_chains_a_previous_python_handler_and_restores_it() -> None:
    calls: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGUSR2, previous)
    try:
        with Preemption(signals=(signal.SIGUSR2,)) as p:
            assert signal.getsignal(signal.SIGUSR2) == p._handle
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert p.check() and p.requested
        assert calls == [signal.SIGUSR2, signal.SIGUSR2]
        assert p.received == (signal.SIGUSR2, signal.SIGUSR2)
        assert p.signal is signal.SIGUSR2 and p.exit_code == 128 + signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) is previous  # put back
        assert not p.installed
    finally:
        signal.signal(signal.SIGUSR2, old)


@needs_main_thread
def test_ignored_previous_handler_is_not_called_and_is_restored() -> None:
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with Preemption(signals=(signal.SIGUSR2,)) as p:
            os.kill(os.getpid(), signal.SIGUSR2)
        assert p.exit_code == 128 + signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, old)


@needs_main_thread
def test_state_before_any_signal_and_reinstall() -> None:
    p = Preemption(signals=[signal.SIGUSR2, signal.SIGUSR2])
    assert p.signals == (signal.SIGUSR2,)
    assert (p.requested, p.signal, p.exit_code, p.check()) == (False, None, None, False)
    with p, pytest.raises(PreemptionError, match="already installed"):
        p.install()
    p.uninstall()  # a second uninstall is a no-op


@needs_main_thread
def test_install_outside_the_main_thread_is_a_clear_error() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Preemption().install()
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="loader")
    worker.start()
    worker.join()
    assert len(errors) == 1 and isinstance(errors[0], PreemptionError)
    assert "main thread" in str(errors[0]) and "'loader'" in str(errors[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"signals": ()}, "at least one"),
        ({"signals": (signal.SIGKILL,)}, "SIGKILL"),
        ({"signals": (10_000,)}, "signal numbers"),
        ({"force_after": 0}, "force_after"),
        ({"force_after": True}, "force_after"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Preemption(**kwargs)  # type: ignore[arg-type]


def test_exit_codes() -> None:
    assert exit_code_for(signal.SIGTERM) == 143
    assert exit_code_for(signal.SIGINT) == 130
    assert exit_code_for(signal.SIGUSR1) == 128 + int(signal.SIGUSR1)
