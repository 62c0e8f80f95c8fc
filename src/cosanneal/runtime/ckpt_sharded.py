"""Sharded checkpoints through ``torch.distributed.checkpoint`` (DCP): every rank writes its own shards.

For FSDP2 (``fully_shard``) and DDP jobs whose state should not pass through rank 0. One checkpoint is
still one ``step-<N>/`` directory, committed the way the single-file format is (a hidden staging
sibling, every file fsynced, the manifest written last, then the rename); only its files differ::

    step-000001200/
        __0_0.distcp ...       each rank's shards of the model and optimizer state (DCP's files)
        .metadata              DCP's index of the shards (written by DCP's coordinator, rank 0)
        rank-00000.json ...    each rank's RNG states, as it saved them
        state.json             step, epoch, batch index, scheduler, trackers, metrics, the world size
        MANIFEST.json          SHA-256 and size of every file above (signed with a key); written last

Saving (every rank calls it): rank 0 opens the staging directory and tells every rank where it is;
each rank gives DCP its ``get_state_dict`` (DTensor shards under FSDP2; DCP's planner spreads DDP's
replicated tensors over the ranks), writes its RNG file and hashes the files it wrote; rank 0
gathers the digests, writes ``state.json`` and commits. A failure on any rank, reported to all,
aborts the staging directory on every rank alike. With ``async_write``, DCP's ``async_save`` copies
the state to CPU in :meth:`ShardedWriter.save` and the rest runs on a background thread of each
rank. Every collective of the checkpoint runs on a process group of its own (gloo), so a background
write never interleaves with the training step's collectives.

Loading reshards: the model (and optimizer) given to the loader hold the *new* layout (another world
size, FSDP2 or a plain module in one process) and DCP reads into it. Before DCP reads anything, the
ranks verify the manifest together, each hashing its share of the files; a failure anywhere skips
the checkpoint on every rank. ``.metadata`` is a pickle (DCP's format), read only once its digest
matched the manifest: with a checkpoint key set, only what a key holder wrote can reach it.

Example:
    >>> import tempfile, torch
    >>> from cosanneal.runtime.checkpoints import Checkpoints
    >>> ckpts = Checkpoints(tempfile.mkdtemp(), sharded=True, best=None)
    >>> model = torch.nn.Linear(2, 1)
    >>> _ = ckpts.save(5, model=model, optimizer=torch.optim.AdamW(model.parameters()))
    >>> other = torch.nn.Linear(2, 1)
    >>> ckpts.load_latest(other, torch.optim.AdamW(other.parameters())).world_size
    1
    >>> torch.equal(other.weight, model.weight)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import torch

from cosanneal.runtime import ckpt_format
from cosanneal.runtime.ckpt_async import BackgroundWriter
from cosanneal.runtime.ckpt_commit import CommitStrategy, FileSource, LocalCommit
from cosanneal.runtime.ckpt_format import STATE_FILE, CorruptError, step_name
from cosanneal.runtime.ckpt_retention import Retention
from cosanneal.runtime.ckpt_tensors import unwrap
from cosanneal.runtime.ckpt_types import CheckpointError, CheckpointInfo, LoadedCheckpoint, describe_os_error
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, read_manifest, seal
from cosanneal.runtime.rng import capture_rng_state, restore_rng_state
from cosanneal.runtime.storage import write_hashed

METADATA_FILE = ".metadata"


def _failures() -> tuple[type[BaseException], ...]:
    """What DCP raises: its CheckpointException (every rank's error, on every rank) is a BaseException.

    Imported when an exception is matched, not with this module: ``torch.distributed.checkpoint``
    takes 0.7 s to import, and a job that never writes the sharded format should not pay it.
    """
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


SHARDED_FORMAT = "dcp-1"


def rank_file(rank: int) -> str:
    """The name of rank ``rank``'s RNG file.

    Example:
        >>> rank_file(3)
        'rank-00003.json'
    """
    return f"rank-{rank:05d}.json"


def is_sharded(store: CommitStrategy, path: str) -> bool:
    """Whether the checkpoint at ``path`` is in the sharded (DCP) format."""
    return bool(store.storage.exists(f"{path}/{METADATA_FILE}"))


def check_store(store: CommitStrategy, url: str) -> None:
    """Refuse a directory sharded checkpoints cannot be written to (DCP writes local files).

    Raises:
        CheckpointError: ``url`` is an object-store URL.
    """
    if not isinstance(store, LocalCommit):
        raise CheckpointError(
            f"sharded=True needs a local or shared POSIX directory (every rank writes its own files), got "
            f"{url!r}; mount the bucket (e.g. s3fs, GCS FUSE) or use sharded=False for object stores"
        )


# ---- the group every checkpoint collective runs on ---------------------------------------------------
class Group:
    """The job's ranks for checkpoint collectives: a gloo group of its own, or one process alone."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.distributed = bool(dist.is_available() and dist.is_initialized())
        self.rank = int(dist.get_rank()) if self.distributed else 0
        self.size = int(dist.get_world_size()) if self.distributed else 1
        self.group: Any = dist.new_group(backend="gloo") if self.distributed else None

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self.group)
        return out

    def first_problem(self, problem: str | None) -> str | None:
        """The first rank's problem (``None``: no rank has one), the same on every rank."""
        for rank, found in enumerate(self.gather(problem)):
            if found is not None:
                return found if self.size == 1 else f"rank {rank}: {found}"
        return None


def _state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(unwrap(model))}
    model_sd, optim_sd = get_state_dict(unwrap(model), optimizer)
    return {"model": model_sd, "optim": optim_sd}


@contextlib.contextmanager
def _alone_is_fine() -> Iterator[None]:
    """Silence DCP's warning that one process without a process group saves or loads alone: we mean it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.distributed is disabled, unavailable or uninitialized"
        )
        yield


def _last_line(exc: BaseException) -> str:
    """The line that says what went wrong: DCP wraps each rank's traceback, whose last line is the error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class _HashingStream(io.RawIOBase):
    """A file DCP writes into, hashed as it goes (DCP only writes, tells and fsyncs its streams)."""

    def __init__(self, raw: IO[bytes], done: Callable[[tuple[str, int]], None]) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self._size = 0
        self._done = done

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = write_hashed(self._sha, data, self._raw.write)  # a buffered file writes every byte
        self._size += written
        return written

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            self._done((self._sha.hexdigest(), self._size))
        super().close()


def _hashing_filesystem() -> tuple[Any, dict[str, tuple[str, int]]]:
    """DCP's local file system with every written file hashed as it is written: no second pass.

    Returns the file system for :class:`FileSystemWriter` and the ``{file name: (sha256, size)}``
    it fills (a rename, as of ``.metadata.tmp`` to ``.metadata``, carries the digest along).
    """
    from torch.distributed.checkpoint.filesystem import FileSystem

    digests: dict[str, tuple[str, int]] = {}

    class HashingFileSystem(FileSystem):
        @contextlib.contextmanager
        def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[Any]:
            if "w" not in mode:
                with super().create_stream(path, mode) as stream:
                    yield stream
                return
            name = os.path.basename(os.fspath(path))
            with (
                open(path, mode) as raw,
                _HashingStream(raw, lambda d: digests.__setitem__(name, d)) as stream,
            ):
                yield stream

        def rename(self, path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> None:
            super().rename(path, new_path)
            old = os.path.basename(os.fspath(path))
            if old in digests:
                digests[os.path.basename(os.fspath(new_path))] = digests.pop(old)

    return HashingFileSystem(), digests


def _file_digest(path: str) -> tuple[str, int]:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    return digest.hexdigest(), os.path.getsize(path)


# ---- saving ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Pending:
    """One save between DCP's write and the commit: what every rank needs to finish it."""

    info: CheckpointInfo
    reason: str
    staging: str
    final: str
    rank_json: bytes
    state_json: bytes | None  # rank 0 only
    started: float
    hashed: dict[str, tuple[str, int]]  # what DCP wrote on this rank, hashed as it was written


class ShardedWriter:
    """Save sharded checkpoints into one directory, in order, with every rank taking part.

    Args:
        store: the directory's (local) commit strategy.
        retention: what to keep after each commit (rank 0 applies it).
        url: the directory as the user gave it (for error messages).
        async_write: write through DCP's ``async_save`` and finish on a background thread.
        emit: ``emit(kind, **payload)`` for ``checkpoint_saved`` and ``checkpoint_failed`` (rank 0).
        before_commit: ``before_commit(info)`` between ``checkpoint_saved`` and the commit (rank 0).
        clean: removes what killed writers left (rank 0; the single-file writer's clean-up).
        signed: the ``signed`` payload of the audit events (the key in use), or ``{}``.
    """

    def __init__(
        self,
        store: CommitStrategy,
        retention: Retention,
        *,
        url: str,
        async_write: bool,
        emit: Callable[..., None],
        before_commit: Callable[[CheckpointInfo], None] | None,
        clean: Callable[[], None],
        signed: Callable[[], dict[str, Any]],
    ) -> None:
        self._store = store
        self._retention = retention
        self._url = url
        self._emit = emit
        self._before_commit = before_commit
        self._clean = clean
        self._signed = signed
        self._background = BackgroundWriter("cosanneal-sharded-writer") if async_write else None
        self._group: Group | None = None

    @property
    def group(self) -> Group:
        """The checkpoint process group (made at the first collective, on every rank alike)."""
        if self._group is None:
            self._group = Group()
        return self._group

    def wait(self) -> None:
        """Block until a background save is committed; re-raise its error."""
        if self._background is not None:
            self._background.wait()

    def save(
        self,
        info: CheckpointInfo,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        trackers: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None,
        reason: str,
    ) -> None:
        """Write ``info``'s checkpoint from every rank (now, or its file writes in the background)."""
        from torch.distributed.checkpoint.filesystem import FileSystemWriter
        from torch.distributed.checkpoint.state_dict_saver import async_save, save

        self.wait()
        group = self.group
        final = self._store.join(step_name(info.step))
        opened: tuple[str | None, str | None] = (None, None)
        if group.rank == 0:
            try:
                self._clean()
                opened = (self._store.begin(final), None)
            except Exception as exc:
                opened = (None, describe_os_error(exc))
        staging, problem = group.broadcast(opened)
        if staging is None:
            raise self._error(info, str(problem))
        try:
            state_json = None
            if group.rank == 0:
                state = ckpt_format.state_record(
                    info,
                    scheduler,
                    trackers,
                    extra,
                    sharded={"format": SHARDED_FORMAT, "world_size": group.size},
                    optimizer=None if optimizer is None else {"sharded": True},
                    rng=None,
                )
                state_json = ckpt_format.encode_state(state)
            rank_json = ckpt_format.encode_state({"rank": group.rank, "rng": capture_rng_state()})
            pending = _Pending(info, reason, staging, final, rank_json, state_json, time.monotonic(), {})
            state_dict = _state_dicts(model, optimizer)
            writer = FileSystemWriter(staging, sync_files=True)
            writer.fs, pending.hashed = _hashing_filesystem()
        except Exception as exc:
            problem = group.first_problem(f"{type(exc).__name__}: {exc}")
            self._abort(staging)
            raise self._error(info, str(problem)) from exc
        group.first_problem(None)  # every rank got this far: DCP's collectives can start
        if self._background is None:
            try:
                with _alone_is_fine():
                    save(state_dict, storage_writer=writer, process_group=group.group)
                written: str | None = None
            except _failures() as exc:
                written = _last_line(exc)
            self._finish(pending, written)
            return
        response = async_save(state_dict, storage_writer=writer, process_group=group.group)
        future: Any = getattr(response, "upload_completion", response)  # newer torch: an AsyncSaveResponse

        def finish() -> None:
            try:
                future.result()
                written: str | None = None
            except _failures() as exc:
                written = _last_line(exc)
            self._finish(pending, written)

        self._background.submit(finish)

    def _finish(self, pending: _Pending, written: str | None) -> None:
        """Hash this rank's files, gather the digests on rank 0, commit there, and agree on the outcome."""
        group, store = self.group, self._store
        digests: dict[str, tuple[str, int]] = {}
        problem = written
        if problem is None:
            try:
                name = rank_file(group.rank)
                digests[name] = store.write(
                    f"{pending.staging}/{name}", FileSource.of_bytes(pending.rank_json)
                )
                digests.update(pending.hashed)  # this rank's shard files (and rank 0's .metadata)
            except Exception as exc:
                problem = describe_os_error(exc)
        gathered = group.gather((digests, problem))
        problems = [f"rank {r}: {p}" for r, (_, p) in enumerate(gathered) if p is not None]
        outcome: str | None = "; ".join(problems) or None
        if group.rank == 0:
            outcome = self._commit(pending, gathered, outcome)
        outcome = group.broadcast(outcome)
        if outcome is not None:
            if group.rank == 0:
                self._abort(pending.staging)
            raise self._error(pending.info, outcome)
        if group.rank == 0:
            files = sorted({name for d, _ in gathered for name in d} | {STATE_FILE, MANIFEST_NAME})
            try:
                self._retention.saved(pending.info, pending.final, files)
            except Exception as exc:
                raise CheckpointError(
                    f"checkpoint {step_name(pending.info.step)} was saved, but updating best/ or rotation "
                    f"failed: {describe_os_error(exc)}"
                ) from exc

    def _commit(
        self,
        pending: _Pending,
        gathered: list[tuple[dict[str, tuple[str, int]], str | None]],
        outcome: str | None,
    ) -> str | None:
        """Rank 0: write ``state.json`` and the manifest, commit; the reason it failed, or ``None``."""
        if outcome is not None:
            return outcome
        store, info = self._store, pending.info
        announced = False
        try:
            digests: dict[str, tuple[str, int]] = {}
            for rank_digests, _ in gathered:
                digests.update(rank_digests)
            on_disk = {n for n in os.listdir(pending.staging) if not n.startswith(".metadata.")}
            unhashed = sorted(on_disk - set(digests) - {STATE_FILE})
            if unhashed:
                return f"files no rank accounted for: {', '.join(unhashed)}"
            assert pending.state_json is not None
            digests[STATE_FILE] = store.write(
                f"{pending.staging}/{STATE_FILE}", FileSource.of_bytes(pending.state_json)
            )
            announced = True
            self._emit(
                "checkpoint_saved",
                step=info.step,
                path=info.path,
                reason=pending.reason,
                cycle_end=info.cycle_end,
                seconds=round(time.monotonic() - pending.started, 6),
                sharded=self.group.size,
                **self._signed(),
            )
            if self._before_commit is not None:
                self._before_commit(info)
            store.commit(pending.staging, pending.final, seal(build_manifest(info.step, digests)))
        except Exception as exc:
            if announced:
                with contextlib.suppress(Exception):
                    self._emit("checkpoint_failed", step=info.step, path=info.path, reason=str(exc))
            return describe_os_error(exc)
        return None

    def _abort(self, staging: str) -> None:
        if self.group.rank == 0:
            with contextlib.suppress(Exception):
                self._store.abort(staging)

    def _error(self, info: CheckpointInfo, problem: str) -> CheckpointError:
        return CheckpointError(
            f"could not write sharded checkpoint {step_name(info.step)} to {self._url}: {problem}; "
            "the partial write was removed and earlier checkpoints are intact"
        )


# ---- loading -----------------------------------------------------------------------------------------
def _verify_share(store: CommitStrategy, path: str, step: int, group: Group) -> dict[str, Any]:
    """Every rank checks the manifest and hashes its share of the files; the same verdict on all ranks.

    Raises:
        CorruptError: the manifest or any file fails on any rank (the message names the rank).
    """
    problem: str | None = None
    manifest: dict[str, Any] = {}
    try:
        manifest = read_manifest(store.storage, path)
        if manifest.get("step") != step:
            problem = f"manifest is for step {manifest.get('step')!r}, directory is step {step}"
        else:
            present = store.storage.files(path)
            names = sorted(manifest["files"])
            for name in names:
                if name not in present:
                    problem = f"{name} is missing"
                    break
                if present[name] != manifest["files"][name]["size"]:
                    problem = (
                        f"{name} has {present[name]} bytes, manifest says {manifest['files'][name]['size']}"
                    )
                    break
            for name in names[group.rank :: group.size] if problem is None else []:
                sha, _ = _file_digest(os.path.join(path, name))
                if sha != manifest["files"][name]["sha256"]:
                    problem = f"{name} fails its SHA-256 check (corrupt or modified)"
                    break
    except ValueError as exc:
        problem = str(exc)
    except OSError as exc:
        problem = f"cannot read: {describe_os_error(exc)}"
    found = group.first_problem(problem)
    if found is not None:
        raise CorruptError(found)
    return manifest


def load(
    store: CommitStrategy,
    path: str,
    step: int,
    shown: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    *,
    group: Group,
    restore_rng: bool,
    skipped: list[Any],
) -> LoadedCheckpoint:
    """Verify and load the sharded checkpoint at ``path`` into ``model``'s (and ``optimizer``'s) layout.

    Every rank calls it. RNG states are restored per rank when the checkpoint was saved by as many
    ranks as load it (rank ``r`` gets rank ``r``'s); at another world size they are left alone, since
    no rank's stream continues there (:attr:`LoadedCheckpoint.world_size` says so).

    Raises:
        CorruptError: it does not verify (on any rank) or its ``state.json`` does not decode.
        CheckpointError: it does not fit the model or the optimizer.
    """
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    manifest = _verify_share(store, path, step, group)
    try:
        with open(os.path.join(path, STATE_FILE), "rb") as handle:
            state = json.loads(handle.read().decode("utf-8"))
        sharded = state["sharded"]
        if (
            state.get("format_version") != ckpt_format.FORMAT_VERSION
            or sharded.get("format") != SHARDED_FORMAT
        ):
            raise CorruptError(f"state.json is not sharded format {SHARDED_FORMAT}")
        if state.get("step") != step:
            raise CorruptError(f"state.json says step {state.get('step')!r}, directory says {step}")
        saved_world = int(sharded["world_size"])
    except CorruptError:
        raise
    except Exception as exc:
        raise CorruptError(f"does not decode: {type(exc).__name__}: {exc}") from exc
    if optimizer is not None and state.get("optimizer") is None:
        raise CheckpointError(f"checkpoint {shown} holds no optimizer state, but an optimizer was given")
    target = _state_dicts(model, optimizer)
    try:
        with _alone_is_fine():
            dcp_load(target, storage_reader=FileSystemReader(path), process_group=group.group)
        if optimizer is None:
            set_model_state_dict(unwrap(model), target["model"])
        else:
            set_state_dict(
                unwrap(model), optimizer, model_state_dict=target["model"], optim_state_dict=target["optim"]
            )
    except _failures() as exc:
        raise CheckpointError(
            f"checkpoint {shown} (sharded, saved by {saved_world} ranks) does not fit the model or optimizer: "
            f"{_last_line(exc)}"
        ) from exc
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    own = rank_file(group.rank)
    if restore_rng and saved_world == group.size and own in manifest["files"]:
        with open(os.path.join(path, own), "rb") as handle:
            restore_rng_state(json.loads(handle.read().decode("utf-8"))["rng"])
    return ckpt_format.loaded_from_state(state, step, shown, skipped, world_size=saved_world)
