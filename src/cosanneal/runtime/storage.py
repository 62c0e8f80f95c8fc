"""Where checkpoint files live: a local directory or an fsspec URL (``s3://bucket/run/checkpoints``).

A back end lists, reads, writes, copies and deletes files; it knows nothing of checkpoints. How a
checkpoint is made visible (committed) and deleted without a reader ever seeing half of one differs
per back end and lives in :mod:`cosanneal.runtime.ckpt_commit`, one strategy object per back end.

* :class:`LocalStorage`: a directory on a POSIX filesystem; every write is fsynced.
* :class:`FsspecStorage`: any fsspec filesystem (S3, GCS, Azure, ...), where an object is written
  whole and a "rename" would be a copy and a delete.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

CHUNK = 1 << 20
#: Writes are cut into pieces of this size; each piece is hashed on a helper thread while it is written.
WRITE_PIECE = 8 << 20
#: Below this size a piece is hashed on the writing thread (a hand-off would cost more than it saves).
PARALLEL_MIN = 256 << 10

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages in the range, do not wait
_writeback: Any = None  # libc's sync_file_range once looked up; False where there is none

_hasher_lock = threading.Lock()
_hasher: tuple[int, ThreadPoolExecutor] | None = None


def _hash_pool() -> ThreadPoolExecutor:
    """One hashing thread per process (a fresh one in a forked child, where the parent's thread is gone)."""
    global _hasher
    with _hasher_lock:
        if _hasher is None or _hasher[0] != os.getpid():
            _hasher = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosanneal-hash"))
        return _hasher[1]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk, without waiting.

    Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: the disk works on a large file while the rest
    of it is still being written, so the ``fsync`` at the end waits for the last pieces only (the
    trick of RocksDB's ``bytes_per_sync``). Durability still comes from that ``fsync``; this only
    moves the writeback earlier. Does nothing where the call does not exist or fails.
    """
    global _writeback
    if _writeback is None:
        _writeback = False
        if sys.platform.startswith("linux"):
            try:
                func = ctypes.CDLL(None, use_errno=True).sync_file_range
            except (OSError, AttributeError):
                pass
            else:
                func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                func.restype = ctypes.c_int
                _writeback = func
    if _writeback:
        _writeback(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class HashingWriter(io.RawIOBase):
    """A write-only binary stream over a file descriptor that computes SHA-256 of what it writes.

    Each large write is cut into pieces of :data:`WRITE_PIECE` bytes; a piece is hashed on a helper
    thread while the ``write`` system call stores it (both release the GIL), so the digest costs about
    nothing on top of the write and the file never has to be read back. The digest is of the bytes
    handed to the kernel, which is what a read-back would return from the page cache too. Once a
    large piece is written its writeback starts (:func:`start_writeback`), so the final ``fsync``
    has little left to wait for.

    Args:
        fd: an open file descriptor; it stays open (the caller fsyncs and closes it).

    Example:
        >>> import tempfile, os
        >>> fd, path = tempfile.mkstemp()
        >>> writer = HashingWriter(fd)
        >>> writer.write(b"abc"), writer.result()[1]
        (3, 3)
        >>> writer.result()[0] == sha256_stream(open(path, "rb"))[0]
        True
        >>> os.close(fd)
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._digest = hashlib.sha256()
        self._size = 0

    def writable(self) -> bool:
        """Always true."""
        return True

    def fileno(self) -> int:
        """The file descriptor written to."""
        return self._fd

    def write(self, data: Any) -> int:
        """Write all of ``data`` (any buffer) and hash it; returns its length in bytes."""
        view = memoryview(data).cast("B")
        total = len(view)
        for start in range(0, total, WRITE_PIECE):
            piece = view[start : start + WRITE_PIECE]
            if len(piece) >= PARALLEL_MIN:
                hashed = _hash_pool().submit(self._digest.update, piece)
                try:
                    _write_all(self._fd, piece)
                    start_writeback(self._fd, self._size + start, len(piece))
                finally:
                    hashed.result()
            else:
                self._digest.update(piece)
                _write_all(self._fd, piece)
        self._size += total
        return total

    def result(self) -> tuple[str, int]:
        """``(hex SHA-256, size in bytes)`` of everything written so far."""
        return self._digest.hexdigest(), self._size


def write_hashed(digest: Any, data: Any, write: Callable[[memoryview], Any]) -> int:
    """``write`` all of ``data`` while ``digest`` hashes it, in order; returns its length in bytes.

    Pieces of :data:`WRITE_PIECE` bytes: each piece of :data:`PARALLEL_MIN` bytes or more is hashed on
    the shared hash thread while ``write`` stores it (SHA-256 and the write system call both release
    the GIL), so a large file costs about the longer of the two, not their sum.

    Example:
        >>> import hashlib, io
        >>> out, digest = io.BytesIO(), hashlib.sha256()
        >>> write_hashed(digest, b"abc" * 200_000, out.write)
        600000
        >>> digest.hexdigest() == hashlib.sha256(out.getvalue()).hexdigest()
        True
    """
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_PIECE):
        piece = view[start : start + WRITE_PIECE]
        if len(piece) >= PARALLEL_MIN:
            hashed = _hash_pool().submit(digest.update, piece)
            try:
                write(piece)
            finally:
                hashed.result()
        else:
            digest.update(piece)
            write(piece)
    return len(view)


def _write_all(fd: int, view: memoryview) -> None:
    """``os.write`` until every byte of ``view`` is written (a write may store fewer bytes)."""
    while len(view):
        done = os.write(fd, view)
        view = view[done:]


def sha256_stream(handle: IO[bytes]) -> tuple[str, int]:
    """Return ``(hex SHA-256, size in bytes)`` of everything left in ``handle``.

    Example:
        >>> import io
        >>> sha256_stream(io.BytesIO(b"abc"))[0][:16], sha256_stream(io.BytesIO(b"abc"))[1]
        ('ba7816bf8f01cfea', 3)
    """
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class Storage(Protocol):
    """The file operations a checkpoint directory needs from its back end."""

    root: str

    def join(self, *parts: str) -> str:
        """Join path parts below ``root``."""
        ...

    def child_dirs(self, path: str) -> list[str]:
        """Names of the directories directly inside ``path`` (empty if ``path`` does not exist)."""
        ...

    def files(self, path: str) -> dict[str, int]:
        """``{name: size}`` of the plain files directly inside ``path``."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a file exists at ``path``."""
        ...

    def open_read(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Open ``path`` for binary reading."""
        ...

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Let ``producer`` write ``path`` durably; return the file's ``(sha256, size)``."""
        ...

    def copy_file(self, src: str, dst: str) -> None:
        """Make ``dst`` a durable copy of the file ``src``."""
        ...

    def remove_file(self, path: str) -> None:
        """Delete the file ``path``; a missing one is fine."""
        ...

    def remove_tree(self, path: str) -> None:
        """Delete the directory tree (or file) ``path``; a missing one is fine."""
        ...


class LocalStorage:
    """A directory on a local (POSIX) filesystem; every file written is fsynced.

    Example:
        >>> import tempfile
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> store.write_file(store.join("a.bin"), lambda h: h.write(b"abc"))[1], store.files(store.root)
        (3, {'a.bin': 3})
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # absolute, so the paths it hands out (events, CheckpointInfo.path) mean the same from any
        # working directory
        self.root = os.path.abspath(os.fspath(Path(root).expanduser()))

    def join(self, *parts: str) -> str:
        """Join ``parts`` below the root."""
        return os.path.join(self.root, *parts)

    def child_dirs(self, path: str) -> list[str]:
        """Directory names inside ``path``."""
        try:
            with os.scandir(path) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, path: str) -> dict[str, int]:
        """``{name: size}`` of the plain files in ``path``."""
        try:
            with os.scandir(path) as it:
                return {e.name: e.stat().st_size for e in it if e.is_file(follow_symlinks=False)}
        except (FileNotFoundError, NotADirectoryError):
            return {}

    def exists(self, path: str) -> bool:
        """Whether ``path`` is a file."""
        return os.path.isfile(path)

    @contextlib.contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for reading."""
        with open(path, "rb") as handle:
            yield handle

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Write a new file through ``producer``, hashed while it is written, and fsync it once.

        ``producer`` gets a :class:`HashingWriter`: no buffer in between and no second pass over
        the file for its digest.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            writer = HashingWriter(fd)
            producer(writer)  # type: ignore[arg-type]  # a binary stream that only writes
            os.fsync(fd)
        finally:
            os.close(fd)
        return writer.result()

    def copy_file(self, src: str, dst: str) -> None:
        """Hard-link ``src`` as ``dst``, or copy and fsync it where a link is impossible."""
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
            with open(dst, "rb+") as handle:
                os.fsync(handle.fileno())

    def remove_file(self, path: str) -> None:
        """Unlink ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def remove_tree(self, path: str) -> None:
        """Delete the tree at ``path`` (a plain file or a link is unlinked); what is gone is ignored."""
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):  # a plain file or a link
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)


class FsspecStorage:
    """Any fsspec filesystem (S3, GCS, Azure, ...), its listing cache refreshed before each look.

    Attributes:
        fs: the fsspec filesystem.
        root: the directory's path inside it (no protocol, no trailing ``/``).
        protocol: the URL's protocol (``s3``), for paths shown to people.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.fs, path = url_to_fs(url, **(storage_options or {}))
        self.root = str(path).rstrip("/")
        self.protocol = url.split("://", 1)[0]

    def join(self, *parts: str) -> str:
        """Join ``parts`` below the root with ``/``."""
        return "/".join([self.root, *parts])

    def _refresh(self, path: str) -> None:
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)

    def _entries(self, path: str) -> list[dict[str, Any]]:
        self._refresh(path)
        try:
            return list(self.fs.ls(path, detail=True))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def child_dirs(self, path: str) -> list[str]:
        """Directory (prefix) names inside ``path``."""
        return sorted(
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            for e in self._entries(path)
            if e["type"] == "directory"
        )

    def files(self, path: str) -> dict[str, int]:
        """``{name: size}`` of the objects directly inside ``path``."""
        return {
            str(e["name"]).rsplit("/", 1)[-1]: int(e["size"])
            for e in self._entries(path)
            if e["type"] == "file"
        }

    def exists(self, path: str) -> bool:
        """Whether an object exists at ``path``."""
        self._refresh(path)
        return bool(self.fs.isfile(path))

    @contextlib.contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        """Open an object for reading."""
        with self.fs.open(path, "rb") as handle:
            yield handle

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Upload what ``producer`` writes as one object; hash it on the way."""
        buffer = io.BytesIO()
        producer(buffer)
        data = buffer.getvalue()
        with self.fs.open(path, "wb") as handle:
            handle.write(data)
        return hashlib.sha256(data).hexdigest(), len(data)

    def copy_file(self, src: str, dst: str) -> None:
        """Server-side copy of one object."""
        self.fs.copy(src, dst)

    def remove_file(self, path: str) -> None:
        """Delete the object ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            if self.exists(path):
                self.fs.rm(path)

    def remove_tree(self, path: str) -> None:
        """Delete every object under ``path``."""
        self._refresh(path)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self._refresh(path)


def open_storage(
    directory: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> LocalStorage | FsspecStorage:
    """Pick the back end for ``directory``: a path or ``file://`` URL is local, any other URL is fsspec.

    Example:
        >>> type(open_storage("/tmp/ckpts")).__name__, open_storage("file:///tmp/ckpts").root
        ('LocalStorage', '/tmp/ckpts')
    """
    text = os.fspath(directory)
    if "://" in text:
        protocol, rest = text.split("://", 1)
        if protocol == "file":
            return LocalStorage(rest)
        return FsspecStorage(text, storage_options)
    return LocalStorage(text)
