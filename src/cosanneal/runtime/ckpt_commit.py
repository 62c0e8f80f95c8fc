"""How a checkpoint becomes visible and disappears atomically: one strategy object per storage back end.

A reader must never see half a checkpoint, neither while it is written nor while it is deleted. What
makes that true differs per back end, and this module is the only place that knows:

* :class:`LocalCommit` (a POSIX directory) writes into a hidden temporary sibling
  (``.tmp-step-…-<hex>``), fsyncs every file, writes the manifest, fsyncs the directory, renames it
  into place (atomic; an older version of the same name is renamed aside first and put back if the
  rename fails) and fsyncs the parent. Deleting renames the directory aside to a hidden
  ``.trash-step-…-<hex>`` sibling first, then deletes it.
* :class:`ObjectStoreCommit` (fsspec: S3, GCS, ...) has no atomic rename (a "rename" is a copy and a
  delete), so it writes the files straight into the final prefix and the manifest, written last, is
  the commit marker. Deleting, and re-writing a name, removes the marker first.

Either way a checkpoint counts as committed only when its manifest exists (:meth:`CommitStrategy.committed`),
and a killed writer's leftovers are hidden or uncommitted until the next writer removes them
(:meth:`CommitStrategy.leftovers`). The manager and the format call these methods and never ask which
back end they are on.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import errno
import os
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

from cosanneal.io import fsync_dir
from cosanneal.runtime.manifest import MANIFEST_NAME, check_bytes, read_manifest, verify
from cosanneal.runtime.storage import FsspecStorage, LocalStorage, Storage, open_storage

__all__ = [
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "CommitStrategy",
    "FileSource",
    "LocalCommit",
    "ObjectStoreCommit",
    "Verified",
    "open_strategy",
]

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"

#: The step of a checkpoint directory's name, or ``None`` for a name that is not a checkpoint.
StepOf = Callable[[str], "int | None"]


@dataclasses.dataclass(frozen=True)
class FileSource:
    """One file's content, as the format produces it.

    Attributes:
        to_stream: writes the content into a binary stream (every back end hashes it as it is written).
    """

    to_stream: Callable[[IO[bytes]], None]

    @classmethod
    def of_bytes(cls, data: bytes) -> FileSource:
        """A source for content already in memory."""

        def write(handle: IO[bytes]) -> None:
            handle.write(data)

        return cls(write)


@dataclasses.dataclass(frozen=True)
class Verified:
    """A checkpoint's files once its manifest verified: read from their paths, or already in memory.

    Attributes:
        directory: the checkpoint's directory.
        contents: the files read (and hashed) in memory while verifying; empty where they are local.
    """

    directory: str
    contents: Mapping[str, bytes] = dataclasses.field(default_factory=dict)

    def source(self, name: str) -> str | bytes:
        """The content of ``name`` if it was read while verifying, else its local path."""
        return self.contents.get(name, f"{self.directory}/{name}")


class CommitStrategy(abc.ABC):
    """Commit, delete, list and verify checkpoints on one back end, never exposing half of one.

    Args:
        storage: the back end's file operations.

    Attributes:
        storage: the back end.
        root: the checkpoint directory's path on the back end.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.root = storage.root

    def join(self, *parts: str) -> str:
        """Join path parts below :attr:`root`."""
        return self.storage.join(*parts)

    # ---- listing ------------------------------------------------------------------------------
    def checkpoint_dirs(self, where: str, step_of: StepOf) -> dict[int, str]:
        """``{step: path}`` of the checkpoint directories in ``where``, committed or not.

        Args:
            where: the directory to list.
            step_of: the step a directory name stands for, ``None`` for other names.
        """
        out: dict[int, str] = {}
        for name in self.storage.child_dirs(where):
            step = step_of(name)
            if step is not None:
                out[step] = f"{where}/{name}"
        return out

    def is_committed(self, path: str) -> bool:
        """Whether the checkpoint at ``path`` is committed: its manifest exists (not hash-verified)."""
        return self.storage.exists(f"{path}/{MANIFEST_NAME}")

    def committed(self, where: str, step_of: StepOf) -> dict[int, str]:
        """``{step: path}`` of the committed checkpoints in ``where`` (see :meth:`checkpoint_dirs`)."""
        return {s: p for s, p in self.checkpoint_dirs(where, step_of).items() if self.is_committed(p)}

    def leftovers(self, where: str, step_of: StepOf) -> list[str]:
        """What killed writers left in ``where`` (temporary and trash directories), for the writer to remove."""
        del step_of  # a checkpoint directory is complete here once it exists
        return [
            f"{where}/{name}"
            for name in self.storage.child_dirs(where)
            if name.startswith((TMP_PREFIX, TRASH_PREFIX))
        ]

    # ---- writing ------------------------------------------------------------------------------
    @abc.abstractmethod
    def begin(self, final: str) -> str:
        """Prepare where a checkpoint that will become ``final`` is written; return that staging path."""

    @abc.abstractmethod
    def write(self, path: str, source: FileSource) -> tuple[str, int]:
        """Write one file of a checkpoint being staged, durably; return its ``(sha256, size)``."""

    @abc.abstractmethod
    def commit(self, staging: str, final: str, manifest: bytes) -> None:
        """Write the manifest into ``staging`` and make the checkpoint visible as ``final``."""

    def abort(self, staging: str) -> None:
        """Remove a staged checkpoint that will not be committed."""
        self.remove(staging)

    @abc.abstractmethod
    def copy(self, src: str, dst: str, names: list[str]) -> None:
        """Commit ``dst`` as a copy of the committed checkpoint ``src`` (its files ``names``, manifest included)."""

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Delete a checkpoint (or a leftover) so that no half of it is ever visible; missing is fine."""

    # ---- reading ------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_verified(self, path: str, step: int) -> Verified:
        """Check the checkpoint at ``path`` against its manifest.

        Raises:
            ValueError: it does not verify; the message says why (missing or malformed manifest,
                missing, truncated or modified file).
            FileNotFoundError: a file vanished while it was read.
            OSError: the storage cannot be read.
        """

    # ---- naming -------------------------------------------------------------------------------
    @abc.abstractmethod
    def display(self, path: str) -> str:
        """``path`` as people and events see it (a local path, or a URL)."""

    @abc.abstractmethod
    def resolve(self, text: str) -> str:
        """A user's reference to a checkpoint (a path, URL or a name inside the directory) as a storage path."""

    def absent(self, path: str) -> bool:
        """Whether ``path`` is known not to exist (cheaply; ``False`` when only reading it would tell)."""
        del path
        return False


class LocalCommit(CommitStrategy):
    """Commit by atomic rename of a fsynced temporary sibling; delete by renaming aside first.

    Example:
        >>> import os, tempfile
        >>> local = LocalCommit(LocalStorage(tempfile.mkdtemp()))
        >>> staging = local.begin(local.join("step-1"))
        >>> _ = local.write(f"{staging}/a.bin", FileSource.of_bytes(b"abc"))
        >>> os.path.basename(staging).startswith(".tmp-step-1-"), local.is_committed(local.join("step-1"))
        (True, False)
        >>> local.commit(staging, local.join("step-1"), b"{}")
        >>> sorted(os.listdir(local.join("step-1")))
        ['MANIFEST.json', 'a.bin']
    """

    storage: LocalStorage

    def __init__(self, storage: LocalStorage) -> None:
        super().__init__(storage)
        self._root_made = False

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

    def write(self, path: str, source: FileSource) -> tuple[str, int]:
        """Write ``path`` from ``source``, fsynced; return its SHA-256 and size."""
        return self.storage.write_file(path, source.to_stream)

    def commit(self, staging: str, final: str, manifest: bytes) -> None:
        """Write the manifest into ``staging``, then rename it to ``final`` (see :meth:`_publish`)."""
        self.storage.write_file(f"{staging}/{MANIFEST_NAME}", FileSource.of_bytes(manifest).to_stream)
        self._publish(staging, final)

    def _publish(self, staging: str, final: str) -> None:
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

    def copy(self, src: str, dst: str, names: list[str]) -> None:
        """Hard-link (or copy) ``names`` into a temporary sibling of ``dst``, then rename it into place."""
        staging = self.begin(dst)
        try:
            for name in names:
                self.storage.copy_file(os.path.join(src, name), os.path.join(staging, name))
            self._publish(staging, dst)
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(staging)
            raise

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
        self.storage.remove_tree(path)

    def read_verified(self, path: str, step: int) -> Verified:
        """Hash every file on disk against the manifest (sizes first); the files are then read from disk."""
        reason = verify(self.storage, path, step)
        if reason is not None:
            raise ValueError(reason)
        return Verified(path)

    def display(self, path: str) -> str:
        """``path`` itself."""
        return path

    def resolve(self, text: str) -> str:
        """A ``file://`` URL's path, an absolute path, a directory relative to the working directory, or a name."""
        if "://" in text:
            return text.split("://", 1)[1]
        if os.path.isabs(text):
            return text
        if os.path.isdir(text):  # relative to the working directory
            return os.path.abspath(text)
        return self.join(*text.strip("/").split("/"))  # a name inside the directory

    def absent(self, path: str) -> bool:
        """Whether ``path`` is not a directory."""
        return not os.path.isdir(path)


class ObjectStoreCommit(CommitStrategy):
    """Write straight into the final prefix, the manifest last as the commit marker; delete it first."""

    storage: FsspecStorage

    def __init__(self, storage: FsspecStorage) -> None:
        super().__init__(storage)

    def leftovers(self, where: str, step_of: StepOf) -> list[str]:
        """Temporary and trash prefixes, and checkpoint prefixes without a manifest (killed writes)."""
        out = []
        for name in self.storage.child_dirs(where):
            path = f"{where}/{name}"
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)) or (
                step_of(name) is not None and not self.is_committed(path)
            ):
                out.append(path)
        return out

    def begin(self, final: str) -> str:
        """Uncommit and clear ``final`` (manifest first), then write straight into it."""
        self.remove(final)
        return final

    def write(self, path: str, source: FileSource) -> tuple[str, int]:
        """Upload one object."""
        return self.storage.write_file(path, source.to_stream)

    def commit(self, staging: str, final: str, manifest: bytes) -> None:
        """Write the manifest, the commit marker, into the prefix (``staging`` is ``final``)."""
        del final
        self.storage.write_file(f"{staging}/{MANIFEST_NAME}", FileSource.of_bytes(manifest).to_stream)

    def copy(self, src: str, dst: str, names: list[str]) -> None:
        """Server-side copies of ``names`` into ``dst``, the manifest last so ``dst`` commits last."""
        staging = self.begin(dst)
        try:
            for name in sorted(names, key=lambda n: n == MANIFEST_NAME):
                self.storage.copy_file(f"{src}/{name}", f"{staging}/{name}")
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(staging)
            raise

    def remove(self, path: str) -> None:
        """Delete every object under ``path``, the manifest first (uncommitting it at once)."""
        self.storage.remove_file(f"{path}/{MANIFEST_NAME}")
        self.storage.remove_tree(path)

    def read_verified(self, path: str, step: int) -> Verified:
        """Read every file the manifest lists once, and check its size and SHA-256 in memory."""
        del step  # the manifest's step is not compared here; state.json's is, when it is decoded
        manifest = read_manifest(self.storage, path)
        contents: dict[str, bytes] = {}
        for name in manifest["files"]:
            with self.storage.open_read(f"{path}/{name}") as handle:
                contents[name] = handle.read()
        reason = check_bytes(manifest, contents)
        if reason is not None:
            raise ValueError(reason)
        return Verified(path, contents)

    def display(self, path: str) -> str:
        """``path`` as a URL (``s3://bucket/...``)."""
        return f"{self.storage.protocol}://{path}"

    def resolve(self, text: str) -> str:
        """A URL's path, or a name inside the directory."""
        if "://" in text:
            return text.split("://", 1)[1].rstrip("/")
        return self.join(*text.strip("/").split("/"))


def open_strategy(
    directory: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> CommitStrategy:
    """The commit strategy for ``directory``: a path or ``file://`` URL is local, any other URL an object store.

    Args:
        directory: a local directory or an fsspec URL (``s3://bucket/run/checkpoints``).
        storage_options: passed to fsspec for URLs (credentials, ``endpoint_url``, ...).

    Example:
        >>> type(open_strategy("/tmp/ckpts")).__name__, open_strategy("file:///tmp/ckpts").root
        ('LocalCommit', '/tmp/ckpts')
    """
    storage = open_storage(directory, storage_options)
    if isinstance(storage, LocalStorage):
        return LocalCommit(storage)
    return ObjectStoreCommit(storage)
