"""One background writer thread: at most one write in flight, errors handed back to the caller.

:meth:`BackgroundWriter.submit` waits for the previous job first (so writes never overlap and never
pile up in memory), then starts the new one. An exception raised by a job is kept and re-raised by the
next :meth:`submit`, :meth:`wait` or :meth:`close`, on the caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundWriter:
    """Run write jobs on a daemon thread, one at a time.

    Example:
        >>> out = []
        >>> w = BackgroundWriter()
        >>> w.submit(lambda: out.append(1))
        >>> w.close()
        >>> out
        [1]
    """

    def __init__(self, name: str = "cosanneal-checkpoint-writer") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        """Whether a job is still running."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def wait(self) -> None:
        """Block until the running job (if any) is done; re-raise its error once."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        """Wait for the previous job (re-raising its error), then run ``job`` in the background."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name=self._name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Same as :meth:`wait`; the writer can still be used afterwards."""
        self.wait()
