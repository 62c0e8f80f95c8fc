"""Preemption: turn SIGTERM / SIGUSR1 / SIGINT into a flag the training loop checks between steps.

A cluster scheduler asks a job to stop by sending a signal (Kubernetes and SLURM send SIGTERM, SLURM
can send SIGUSR1 ahead of time with ``--signal``, a user presses Ctrl-C for SIGINT). Acting on it
inside the signal handler would interrupt whatever the loop was doing, a checkpoint write included.
:class:`Preemption` installs handlers that only record the signal; the loop calls :meth:`Preemption.check`
at its step boundary, saves a checkpoint, and exits with :attr:`Preemption.exit_code`, the shell's
``128 + signal number`` convention (143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1 on Linux).

While the handlers are installed, later signals (a second SIGTERM during the save, say) are recorded
too and never interrupt the save. Keep the save inside the ``with`` block.

Chaining: a handler that was installed before (a Python callable other than ``SIG_DFL``, ``SIG_IGN``
and Python's own ``signal.default_int_handler``, which raises ``KeyboardInterrupt``) is called after
the flag is set, with the same ``(signum, frame)``, for every signal received; what it does is its
own business. On :meth:`Preemption.uninstall` every previous handler is put back.
"""

from __future__ import annotations

import signal as _sig
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, cast

from cosanneal.errors import CosannealError

__all__ = ["DEFAULT_SIGNALS", "Preemption", "PreemptionError", "exit_code_for"]

#: The signals :class:`Preemption` handles unless told otherwise.
DEFAULT_SIGNALS: tuple[_sig.Signals, ...] = (_sig.SIGTERM, _sig.SIGUSR1, _sig.SIGINT)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class PreemptionError(CosannealError, RuntimeError):
    """:class:`Preemption` was used in a way signals do not allow (outside the main thread, twice)."""


def exit_code_for(signum: int) -> int:
    """The exit status a shell reports for a process ended by signal ``signum``: ``128 + signum``.

    Example:
        >>> import signal
        >>> exit_code_for(signal.SIGTERM), exit_code_for(signal.SIGINT)
        (143, 130)
    """
    return 128 + int(signum)


def _chainable(handler: _Handler) -> bool:
    """Whether a previous handler is a Python callable worth calling after ours."""
    return callable(handler) and handler is not _sig.default_int_handler


class Preemption:
    """Record termination signals as a flag; the loop saves and exits at its next step boundary.

    ``exit_code = 128 + signum`` of the *first* signal received (``None`` while none was), so
    ``sys.exit(p.exit_code)`` exits 0 after a normal end and 143 after a SIGTERM.

    Args:
        signals: the signals to handle (default SIGTERM, SIGUSR1, SIGINT).
        force_after: ``None`` (default): every signal is only recorded, however many arrive.
            An integer ``n >= 1``: the ``n``-th SIGINT raises :class:`KeyboardInterrupt` from the
            handler, for a user who presses Ctrl-C repeatedly because the save hangs. Use it only
            where an interrupted save is acceptable (checkpoints written atomically are).

    Raises:
        PreemptionError: :meth:`install` outside the main thread (Python runs signal handlers
            only there) or on an instance already installed.
        ValueError: an unknown signal or a bad ``force_after``.

    Example:
        >>> import os, signal
        >>> with Preemption(signals=(signal.SIGUSR1,)) as p:
        ...     os.kill(os.getpid(), signal.SIGUSR1)  # a real signal, to this process
        ...     stop = p.check()
        >>> stop, p.signal.name, p.exit_code
        (True, 'SIGUSR1', 138)
    """

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS, *, force_after: int | None = None) -> None:
        chosen: list[_sig.Signals] = []
        for s in signals:
            try:
                sig = _sig.Signals(s)
            except ValueError:
                raise ValueError(f"signals must be signal numbers or signal.Signals, got {s!r}") from None
            if sig in (_sig.SIGKILL, _sig.SIGSTOP):
                raise ValueError(f"signals cannot include {sig.name}: it cannot be caught")
            if sig not in chosen:
                chosen.append(sig)
        if not chosen:
            raise ValueError("signals must name at least one signal, got none")
        if force_after is not None and (
            isinstance(force_after, bool) or not isinstance(force_after, int) or force_after < 1
        ):
            raise ValueError(f"force_after must be None or an integer >= 1, got {force_after!r}")
        self.signals: tuple[_sig.Signals, ...] = tuple(chosen)
        self.force_after = force_after
        self._received: list[_sig.Signals] = []
        self._previous: dict[_sig.Signals, _Handler] = {}
        self._installed = False

    # ---- state ------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """Whether any handled signal has arrived since :meth:`install`."""
        return bool(self._received)

    @property
    def signal(self) -> _sig.Signals | None:
        """The first signal received, or ``None``."""
        return self._received[0] if self._received else None

    @property
    def received(self) -> tuple[_sig.Signals, ...]:
        """Every signal received, in order (a second SIGTERM during the save shows up here)."""
        return tuple(self._received)

    @property
    def exit_code(self) -> int | None:
        """``128 + signum`` of the first signal (143 SIGTERM, 130 SIGINT), or ``None`` if none came."""
        first = self.signal
        return None if first is None else exit_code_for(first)

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place."""
        return self._installed

    def check(self) -> bool:
        """Call at the step boundary: ``True`` means save a checkpoint now and exit with :attr:`exit_code`.

        Reads a Python attribute only; it costs nothing measurable per step.
        """
        return bool(self._received)

    # ---- handlers ---------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = _sig.Signals(signum)
        self._received.append(sig)
        previous = self._previous.get(sig)
        if _chainable(previous):
            cast(Callable[[int, FrameType | None], Any], previous)(signum, frame)
        if (
            self.force_after is not None
            and sig == _sig.SIGINT
            and self._received.count(_sig.SIGINT) >= self.force_after
        ):
            raise KeyboardInterrupt(f"SIGINT received {self.force_after} times (force_after)")

    def install(self) -> Preemption:
        """Install the handlers (main thread only) and return ``self``.

        Raises:
            PreemptionError: called outside the main thread or while already installed.
        """
        if threading.current_thread() is not threading.main_thread():
            raise PreemptionError(
                "Preemption.install() must be called from the main thread (Python delivers signals "
                f"only there); it was called from thread {threading.current_thread().name!r}"
            )
        if self._installed:
            raise PreemptionError("Preemption is already installed; call uninstall() first")
        previous: dict[_sig.Signals, _Handler] = {}
        try:
            for sig in self.signals:
                previous[sig] = _sig.signal(sig, self._handle)
        except BaseException:
            for sig, handler in previous.items():
                _sig.signal(sig, handler if handler is not None else _sig.SIG_DFL)
            raise
        self._previous = previous
        self._received = []
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Put the previous handlers back (a no-op when not installed). The recorded signals stay."""
        if not self._installed:
            return
        for sig, handler in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the safe choice.
            _sig.signal(sig, handler if handler is not None else _sig.SIG_DFL)
        self._previous = {}
        self._installed = False

    def __enter__(self) -> Preemption:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.signals)
        first = self.signal.name if self.signal is not None else None
        return f"Preemption(signals=({names}), installed={self._installed}, signal={first})"
