"""What went wrong when a run's files could not be written, in words a user can act on.

A full disk, a read-only or vanished run directory surface as an ``OSError`` from a checkpoint write,
a ``sqlite3`` error from the run store, or a :class:`~cosanneal.runtime.checkpoints.CheckpointError`
wrapping either. :func:`io_failure` finds the root cause in an exception's chain and names it;
:func:`device_of` names the filesystem a path lives on (``tmpfs mounted at /mnt/x``), so the message
says which device is full.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path

__all__ = ["device_of", "io_failure"]

_KINDS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "run directory vanished",
    errno.ESTALE: "run directory vanished",
    errno.EIO: "I/O error",
    errno.EFBIG: "file size limit reached",
}
_OS_ERROR = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")
# sqlite3 result codes (primary, the low byte of the extended code)
_SQLITE_KINDS = {13: "disk full", 8: "read-only filesystem", 14: "run directory vanished", 10: "I/O error"}


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        out.append(node)
        node = node.__cause__ or node.__context__
    return out


def io_failure(exc: BaseException) -> str | None:
    """The kind of I/O failure behind ``exc`` (``"disk full"``, ``"read-only filesystem"``, ...), or ``None``.

    The root cause is looked for along ``__cause__`` / ``__context__``: an ``OSError`` by its errno, an
    ``sqlite3`` error by its result code (or its message on Pythons without ``sqlite_errorcode``).

    Example:
        >>> import errno
        >>> try:
        ...     try:
        ...         raise OSError(errno.ENOSPC, "No space left on device")
        ...     except OSError as e:
        ...         raise RuntimeError("could not write checkpoint") from e
        ... except RuntimeError as top:
        ...     io_failure(top)
        'disk full'
        >>> io_failure(ValueError("bad config")) is None
        True
    """
    for node in reversed(_chain(exc)):  # the root cause first
        if isinstance(node, OSError) and node.errno in _KINDS:
            return _KINDS[node.errno]
        # libraries in Rust or C report the OS error in their own exception types (safetensors:
        # "I/O error: No space left on device (os error 28)")
        match = _OS_ERROR.search(str(node))
        code = int(match.group(1) or match.group(2)) if match else None
        if code in _KINDS:
            return _KINDS[code]
        if isinstance(node, sqlite3.Error):
            code = getattr(node, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _SQLITE_KINDS:
                return _SQLITE_KINDS[code & 0xFF]
            text = str(node).lower()
            if "disk is full" in text:
                return "disk full"
            if "readonly" in text or "read-only" in text:
                return "read-only filesystem"
            if "unable to open" in text:
                return "run directory vanished"
            if "disk i/o error" in text:
                return "I/O error"
    return None


def device_of(path: str | os.PathLike[str]) -> str:
    """The filesystem ``path`` (or its nearest existing parent) lives on: ``"<type> <source> mounted at <dir>"``.

    Read from ``/proc/self/mountinfo`` (Linux); elsewhere, or when it cannot be read, the nearest
    existing directory is named instead.

    Example:
        >>> device_of("/proc/self").startswith("proc ")
        True
    """
    p = Path(os.path.abspath(os.fspath(path)))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        wanted = f"{os.major(dev)}:{os.minor(dev)}"
        best: tuple[int, str] | None = None
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 5 or len(tail) < 2 or fields[2] != wanted:
                    continue
                mount = fields[4].replace("\\040", " ")
                text = f"{tail[0]} {tail[1]} mounted at {mount}"
                # several mounts may share a device (bind mounts): the longest prefix of path wins
                if str(p).startswith(mount) and (best is None or len(mount) > best[0]):
                    best = (len(mount), text)
                elif best is None:
                    best = (0, text)
        if best is not None:
            return best[1]
    except OSError:
        pass
    return f"the filesystem of {p}"
