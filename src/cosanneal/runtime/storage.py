"""Where checkpoints live: a local directory or an fsspec URL (``s3://bucket/run/checkpoints``).

Both back ends expose the few operations the checkpoint writer needs. The difference that matters is
how a checkpoint is *committed*:

* :class:`LocalStorage` writes into a hidden temporary sibling directory (``.tmp-step-…``), fsyncs
  every file and the directory, renames it into place (atomic on POSIX) and fsyncs the parent. A
  reader never sees a partial directory.
* :class:`FsspecStorage` (object stores, where a "rename" is a copy and a delete) writes the files
  straight into the final prefix with the manifest written last: the manifest is the commit marker,
  and a prefix without one is ignored by readers and removed by the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from cosanneal.io import fsync_dir

CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


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
    """The operations a checkpoint directory needs from its back end."""

    root: str
    local: bool

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

    def local_path(self, path: str) -> str | None:
        """A filesystem path for ``path`` when the back end is local, else ``None``."""
        ...

    def begin(self, final: str) -> str:
        """Prepare a staging directory for a checkpoint that will become ``final``; return it."""
        ...

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Let ``producer`` write ``path`` durably; return the file's ``(sha256, size)``."""
        ...

    def write_local(self, path: str, producer: Callable[[str], None]) -> tuple[str, int]:
        """Let ``producer(path)`` create a local file, fsync it; return ``(sha256, size)``."""
        ...

    def commit(self, staging: str, final: str) -> None:
        """Make ``staging`` visible as ``final`` (after the manifest was written into it)."""
        ...

    def remove(self, path: str) -> None:
        """Delete a directory tree; missing paths are fine."""
        ...

    def clone_dir(self, src: str, dst: str, names: list[str]) -> None:
        """Make ``dst`` hold the same files as ``src`` (hard links locally, copies remotely)."""
        ...


class LocalStorage:
    """A directory on a local (POSIX) filesystem; commits by atomic rename."""

    local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # absolute, so the paths it hands out (events, CheckpointInfo.path) mean the same from any
        # working directory
        self.root = os.path.abspath(os.fspath(Path(root).expanduser()))
        self._root_made = False

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

    def local_path(self, path: str) -> str | None:
        """``path`` itself."""
        return path

    def begin(self, final: str) -> str:
        """Create a fresh hidden sibling of ``final`` to write into.

        The first write creates the root (and its parents); once it existed, a root that is gone is an
        error (``ENOENT``), never silently recreated: the run directory vanished under the job.
        """
        if not self._root_made:
            os.makedirs(self.root, exist_ok=True)
            self._root_made = True
        elif not os.path.isdir(self.root):
            raise FileNotFoundError(errno.ENOENT, "the checkpoint directory vanished", self.root)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        staging = os.path.join(
            os.path.dirname(final), f"{TMP_PREFIX}{os.path.basename(final)}-{uuid.uuid4().hex[:8]}"
        )
        os.mkdir(staging)
        return staging

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Write through ``producer``, fsync, and hash what is on disk."""
        with open(path, "xb") as handle:
            producer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        return self._digest(path)

    def write_local(self, path: str, producer: Callable[[str], None]) -> tuple[str, int]:
        """Let ``producer`` create ``path``, then fsync and hash it."""
        producer(path)
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        return self._digest(path)

    def _digest(self, path: str) -> tuple[str, int]:
        with open(path, "rb") as handle:
            return sha256_stream(handle)

    def commit(self, staging: str, final: str) -> None:
        """Fsync ``staging``, rename it to ``final`` (replacing an older one) and fsync the parent."""
        fsync_dir(staging)
        parent = os.path.dirname(final)
        trash = None
        if os.path.lexists(final):
            trash = os.path.join(parent, f"{TRASH_PREFIX}{os.path.basename(final)}-{uuid.uuid4().hex[:8]}")
            os.rename(final, trash)
        try:
            os.rename(staging, final)
        except OSError:
            if trash is not None:  # put the previous version back
                os.rename(trash, final)
            raise
        fsync_dir(parent)
        if trash is not None:
            self.remove(trash)

    def remove(self, path: str) -> None:
        """Delete ``path``: renamed aside to a hidden ``.trash-`` sibling first, then deleted.

        The rename is atomic, so a kill during the deletion never leaves a visible half directory
        under the checkpoint's own name; the ``.trash-`` leftover is removed by the next writer's
        clean-up. What is already gone is ignored.
        """
        if os.path.isdir(path) and not os.path.islink(path):
            name = os.path.basename(path.rstrip(os.sep))
            if not name.startswith((TRASH_PREFIX, TMP_PREFIX)):
                trash = os.path.join(os.path.dirname(path), f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, trash)
                    path = trash
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):  # a plain file or a link
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)

    def clone_dir(self, src: str, dst: str, names: list[str]) -> None:
        """Hard-link ``names`` from ``src`` into ``dst`` (copying where links are impossible)."""
        os.makedirs(dst, exist_ok=True)
        for name in names:
            try:
                os.link(os.path.join(src, name), os.path.join(dst, name))
            except OSError:
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
                with open(os.path.join(dst, name), "rb+") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(dst)


class FsspecStorage:
    """Any fsspec filesystem (S3, GCS, Azure, ...); the manifest written last is the commit marker."""

    local = False

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.fs, path = url_to_fs(url, **(storage_options or {}))
        self.root = str(path).rstrip("/")

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

    def local_path(self, path: str) -> str | None:
        """Always ``None``: objects are read through fsspec."""
        return None

    def begin(self, final: str) -> str:
        """Uncommit and clear ``final`` (manifest first), then write straight into it."""
        manifest = f"{final}/MANIFEST.json"
        if self.exists(manifest):
            self.fs.rm(manifest)
        self.remove(final)
        return final

    def write_file(self, path: str, producer: Callable[[IO[bytes]], None]) -> tuple[str, int]:
        """Upload what ``producer`` writes; hash it on the way."""
        buffer = io.BytesIO()
        producer(buffer)
        data = buffer.getvalue()
        with self.fs.open(path, "wb") as handle:
            handle.write(data)
        return hashlib.sha256(data).hexdigest(), len(data)

    def write_local(self, path: str, producer: Callable[[str], None]) -> tuple[str, int]:
        """Not available remotely: callers use :meth:`write_file`."""
        raise NotImplementedError("write_local needs a local filesystem")

    def commit(self, staging: str, final: str) -> None:
        """Nothing to do: the manifest, already written, is the commit marker."""

    def remove(self, path: str) -> None:
        """Delete every object under ``path``; a checkpoint's manifest goes first (it is uncommitted at once)."""
        self._refresh(path)
        manifest = f"{path}/MANIFEST.json"
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isfile(manifest):
                self.fs.rm(manifest)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self._refresh(path)

    def clone_dir(self, src: str, dst: str, names: list[str]) -> None:
        """Server-side copy of ``names`` (the manifest last, so ``dst`` commits last)."""
        ordered = sorted(names, key=lambda n: n == "MANIFEST.json")
        for name in ordered:
            self.fs.copy(f"{src}/{name}", f"{dst}/{name}")


def open_storage(directory: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Storage:
    """Pick the back end for ``directory``: a path or ``file://`` URL is local, any other URL is fsspec.

    Example:
        >>> open_storage("/tmp/ckpts").local, open_storage("file:///tmp/ckpts").root
        (True, '/tmp/ckpts')
    """
    text = os.fspath(directory)
    if "://" in text:
        protocol, rest = text.split("://", 1)
        if protocol == "file":
            return LocalStorage(rest)
        return FsspecStorage(text, storage_options)
    return LocalStorage(text)
