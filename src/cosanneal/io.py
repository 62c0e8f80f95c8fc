"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every write goes to a temporary file in the same directory, is flushed and fsynced, then renamed over
the target with :func:`os.replace`; the directory is fsynced so the rename survives a power cut.

The temporary file is created with mode ``0o666`` (``O_CREAT | O_EXCL``, a random name), so the kernel
applies the process umask (and a directory's default ACL) exactly as for ``open(path, "w")``: the
published file has normal permissions and nothing here reads or changes the umask. (Reading it with
``os.umask`` means setting it, and for that instant files other threads create get no umask at all.)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

#: Flags of a temporary file: created here and only here, write-only, not inherited by child processes.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ATTEMPTS = 100


def _create_temp(directory: Path, prefix: str, suffix: str) -> str:
    """Create an empty, new file ``<directory>/<prefix><random><suffix>`` with mode ``0o666 & ~umask``.

    Like :func:`tempfile.mkstemp`, but with the permissions of a normal file instead of ``0o600``, so
    nothing has to chmod it from a umask read at publish time.
    """
    for _ in range(_ATTEMPTS):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(path, _CREATE, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary name in {directory} after {_ATTEMPTS} attempts")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a directory so renames and creations inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _staged(path: str | os.PathLike[str], prefix: str, suffix: str) -> Iterator[str]:
    """Yield a temporary sibling of ``path``; on success publish it over ``path``, else remove it.

    The caller writes and fsyncs the temporary file (created with normal permissions, see the module
    docstring); publishing renames it into place and fsyncs the directory.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(target.parent, prefix, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it atomically becomes ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_open(target, "w") as f:
        ...     _ = f.write("hello")
        >>> target.read_text()
        'hello'
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open needs a write mode, got {mode!r}")
    name = Path(path).name
    with _staged(path, f".{name}.", ".tmp") as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def atomic_save(path: str | os.PathLike[str], writer: Callable[[str], None]) -> None:
    """Let ``writer(tmp_path)`` produce a file (e.g. ``matplotlib.savefig``), then move it into place.

    The temporary path keeps ``path``'s suffix so format detection by extension still works.
    """
    target = Path(path)
    with _staged(target, f".{target.stem}.", target.suffix) as tmp:
        writer(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
