"""The format of one checkpoint: its files, how a snapshot is staged, read back, verified and applied.

One checkpoint is one directory named ``step-<updates done, 9 digits>`` holding::

    model.safetensors      the model's tensors (tied weights stored once)
    optimizer.pt           optimizer.state_dict(), read back with torch.load(weights_only=True)
    state.json             step, epoch, batch index, scheduler state, RNG states, trackers, metrics
    MANIFEST.json          SHA-256 and size of every file above; written last (runtime/manifest.py)

This module knows nothing of when checkpoints are saved or kept (the manager,
:mod:`cosanneal.runtime.checkpoints`) nor of how a directory is committed on a back end (the strategy,
:mod:`cosanneal.runtime.ckpt_commit`): it writes the files into the staging path the strategy hands it
and asks the strategy for the verified files when it reads.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import torch

from cosanneal.runtime.ckpt_commit import CommitStrategy, FileSource
from cosanneal.runtime.ckpt_policy import as_schedule
from cosanneal.runtime.ckpt_tensors import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    CpuStaging,
    clone_to_cpu,
    load_model_tensors,
    load_optimizer,
    model_tensors,
    save_optimizer,
    unwrap,
    write_safetensors,
)
from cosanneal.runtime.ckpt_types import (
    CheckpointError,
    CheckpointInfo,
    LoadedCheckpoint,
    SkippedCheckpoint,
    describe_os_error,
)
from cosanneal.runtime.manifest import MANIFEST_NAME, build_manifest, seal
from cosanneal.runtime.rng import capture_rng_state, restore_rng_state

FORMAT_VERSION = 1
STATE_FILE = "state.json"
STEP_WIDTH = 9
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CorruptError(Exception):
    """A checkpoint does not verify or does not decode: loading skips it (the message says why)."""


def step_name(step: int) -> str:
    """The directory name of the checkpoint after ``step`` updates.

    Example:
        >>> step_name(1200), step_of("step-000001200"), step_of(".tmp-step-000001200-ab12cd34")
        ('step-000001200', 1200, None)
    """
    return f"step-{step:0{STEP_WIDTH}d}"


def step_of(name: str) -> int | None:
    """The step of a checkpoint directory's name, ``None`` for any other name."""
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


@dataclasses.dataclass
class Snapshot:
    """A checkpoint's content taken at save time, ready to be written (now or on a background thread).

    Attributes:
        info: what the checkpoint will be known as.
        name: its directory name.
        tensors: the model's tensors for safetensors (CPU).
        optimizer: the optimizer's state dict, or ``None``.
        state_json: the encoded ``state.json``.
    """

    info: CheckpointInfo
    name: str
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    state_json: bytes


@dataclasses.dataclass(frozen=True)
class Staged:
    """A snapshot written into its staging path: the files' digests and the manifest to commit it with."""

    digests: Mapping[str, tuple[str, int]]
    manifest: bytes

    @property
    def files(self) -> list[str]:
        """Every file of the committed checkpoint, the manifest included."""
        return [*self.digests, MANIFEST_NAME]


def jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (numpy and 0-d torch scalars become numbers).

    Raises:
        CheckpointError: something ``state.json`` cannot hold; ``where`` names it.

    Example:
        >>> jsonable({"a": (1, torch.tensor(2.5))}, "trackers")
        {'a': [1, 2.5]}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where} has key {key!r}; state.json needs string keys")
            out[key] = jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    raise CheckpointError(
        f"{where} is a {type(value).__name__}, which state.json cannot hold; pass numbers, strings, lists, dicts"
    )


def metric_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """``metrics`` as ``{name: float}``.

    Raises:
        CheckpointError: a value is not a number.
    """
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"metrics[{key!r}] must be a number, got {value!r}") from exc
    return out


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ours = version("cosanneal")
    except Exception:  # not installed as a distribution
        ours = "unknown"
    return {"cosanneal": ours, "torch": torch.__version__, "python": sys.version.split()[0]}


def _fingerprint(scheduler: Any) -> str | list[str] | None:
    inner = getattr(scheduler, "schedule", None)
    if isinstance(inner, tuple):
        try:
            return [as_schedule(s).fingerprint() for s in inner]
        except TypeError:
            return None
    try:
        return as_schedule(scheduler).fingerprint()
    except TypeError:
        return None


# ---- writing ----------------------------------------------------------------------------------------
def take_snapshot(
    info: CheckpointInfo,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    trackers: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
    *,
    copy: bool,
    staging: CpuStaging | None = None,
) -> Snapshot:
    """Take the state to checkpoint as ``info`` (RNG states included, captured now).

    Args:
        info: the checkpoint's step, epoch, batch index, metrics, cycle end and time.
        model: the model (a DDP wrapper is unwrapped).
        optimizer: its optimizer, or ``None``.
        scheduler: an LR scheduler whose ``state_dict()`` is JSON data, or ``None``.
        trackers: JSON-able states of the guard, early stopping and other helpers.
        extra: any other JSON-able data.
        copy: copy every tensor to CPU memory now (for a write that must not see later updates).
        staging: reuse these CPU buffers for the copies.

    Raises:
        CheckpointError: the model or a value cannot be stored.
    """
    try:
        tensors, aliases = model_tensors(model, copy=copy, staging=staging)
    except TypeError as exc:
        raise CheckpointError(f"model cannot be stored in safetensors: {exc}") from exc
    opt_state = None
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        if copy:
            opt_state = clone_to_cpu(opt_state, staging, "optimizer")
    state = state_record(
        info,
        scheduler,
        trackers,
        extra,
        model={"file": MODEL_FILE, "aliases": aliases},
        optimizer=None if optimizer is None else {"file": OPTIMIZER_FILE},
        rng=capture_rng_state(),
    )
    return Snapshot(info, step_name(info.step), tensors, opt_state, encode_state(state))


def state_record(
    info: CheckpointInfo,
    scheduler: Any,
    trackers: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
    **parts: Any,
) -> dict[str, Any]:
    """The content of ``state.json`` for ``info``: positions, metrics, scheduler, trackers, ``parts``.

    ``parts`` says where the tensors are (``model``, ``optimizer``; ``sharded`` for the DCP format)
    and holds ``rng`` (``None`` when each rank keeps its own). The scheduler state is taken now.

    Raises:
        CheckpointError: a value is not JSON data.
    """
    return {
        "format_version": FORMAT_VERSION,
        "step": info.step,
        "epoch": info.epoch,
        "batch_index": info.batch_index,
        "cycle_end": info.cycle_end,
        "wall_time": info.wall_time,
        "metrics": info.metrics,
        "trackers": jsonable(dict(trackers or {}), "trackers"),
        "extra": jsonable(dict(extra or {}), "extra"),
        "scheduler": None
        if scheduler is None
        else jsonable(scheduler.state_dict(), "scheduler.state_dict()"),
        "schedule_fingerprint": None if scheduler is None else _fingerprint(scheduler),
        **parts,
        "versions": _versions(),
    }


def encode_state(state: Mapping[str, Any]) -> bytes:
    """``state.json``'s bytes: sorted keys, indented, one trailing newline."""
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _model_source(tensors: dict[str, torch.Tensor]) -> FileSource:
    """The safetensors file of ``tensors``, streamed from the tensors' memory (hashed as it is written)."""

    def to_stream(handle: IO[bytes]) -> None:
        write_safetensors(tensors, handle, {"format": "pt"})

    return FileSource(to_stream)


def write_snapshot(store: CommitStrategy, staging: str, snap: Snapshot) -> Staged:
    """Write ``snap``'s files into ``staging`` through ``store``; return their digests and the manifest.

    The manifest is not written here: committing it is the strategy's step (:meth:`CommitStrategy.commit`).
    """
    opt = snap.optimizer
    digests = {MODEL_FILE: store.write(f"{staging}/{MODEL_FILE}", _model_source(snap.tensors))}
    if opt is not None:
        digests[OPTIMIZER_FILE] = store.write(
            f"{staging}/{OPTIMIZER_FILE}", FileSource(lambda h: save_optimizer(opt, h))
        )
    digests[STATE_FILE] = store.write(f"{staging}/{STATE_FILE}", FileSource.of_bytes(snap.state_json))
    return Staged(digests, seal(build_manifest(snap.info.step, digests)))


# ---- reading ----------------------------------------------------------------------------------------
def read_state(store: CommitStrategy, path: str) -> dict[str, Any] | None:
    """The checkpoint's ``state.json`` (not verified), or ``None`` when it cannot be read or parsed."""
    try:
        with store.storage.open_read(f"{path}/{STATE_FILE}") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def info_from_state(step: int, shown: str, state: Mapping[str, Any]) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of the checkpoint at ``shown`` (its displayed path) from its state."""
    metrics = state.get("metrics") or {}
    return CheckpointInfo(
        step=step,
        path=shown,
        epoch=int(state.get("epoch", 0)),
        batch_index=int(state.get("batch_index", 0)),
        metrics={str(k): float(v) for k, v in metrics.items()},
        cycle_end=bool(state.get("cycle_end", False)),
        wall_time=float(state.get("wall_time", 0.0)),
    )


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A verified, decoded checkpoint not yet applied to any live object."""

    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None


def _refused_pickle(exc: BaseException) -> str:
    """Why ``optimizer.pt`` was refused, without torch's advice to retry with ``weights_only=False``.

    That advice would run whatever the file holds; an optimizer state never needs it, so a refusal
    means the file was not written by cosanneal (or was tampered with).
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = (
        f"it would call {found.group(1)}" if found else "it holds objects that are not tensors or plain data"
    )
    return (
        f"{OPTIMIZER_FILE} refused by torch.load(weights_only=True): {what}, which no optimizer state "
        "needs; the file was not written by cosanneal or was tampered with, so it is not loaded (never "
        "load it with weights_only=False)"
    )


def decode(store: CommitStrategy, path: str, step: int, map_location: Any) -> Decoded:
    """Verify and decode the checkpoint at ``path`` without touching any live object.

    Raises:
        CorruptError: it does not verify (manifest missing or not matching) or does not decode.
        CheckpointError: the storage cannot be read.
    """
    try:
        source = store.read_verified(path, step).source
    except ValueError as exc:
        raise CorruptError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise CorruptError(f"file vanished while verifying: {exc}") from exc
    except OSError as exc:
        raise CheckpointError(
            f"cannot read checkpoint {store.display(path)}: {describe_os_error(exc)}"
        ) from exc
    try:
        raw = source(STATE_FILE)
        if isinstance(raw, str):
            with open(raw, "rb") as handle:
                raw = handle.read()
        state = json.loads(raw.decode("utf-8"))
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise CorruptError(f"state.json is not format {FORMAT_VERSION}")
        if state.get("step") != step:
            raise CorruptError(f"state.json says step {state.get('step')!r}, directory says {step}")
        aliases = state["model"]["aliases"]
        tensors = load_model_tensors(source(MODEL_FILE), map_location, aliases)
        opt_state = None
        if state.get("optimizer") is not None:
            opt_state = load_optimizer(source(OPTIMIZER_FILE), map_location)
    except CorruptError:
        raise
    except pickle.UnpicklingError as exc:
        raise CorruptError(_refused_pickle(exc)) from exc
    except Exception as exc:  # safetensors/json/key errors: the content does not decode
        raise CorruptError(f"does not decode: {type(exc).__name__}: {exc}") from exc
    return Decoded(state, tensors, opt_state)


def apply(
    decoded: Decoded,
    step: int,
    shown: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    *,
    restore_rng: bool,
    skipped: list[SkippedCheckpoint],
) -> LoadedCheckpoint:
    """Restore the model, optimizer, scheduler and (optionally) RNG states from ``decoded``.

    Args:
        decoded: what :func:`decode` returned.
        step: the checkpoint's step.
        shown: its path as people see it (errors and :attr:`CheckpointInfo.path`).
        model: restored with ``load_state_dict(strict=True)`` (a DDP wrapper is unwrapped).
        optimizer: restored when given; the checkpoint must hold an optimizer state then.
        scheduler: restored with ``load_state_dict`` when given and saved.
        restore_rng: also restore the Python, NumPy, torch (and CUDA) RNG states.
        skipped: the checkpoints passed over before this one.

    Raises:
        CheckpointError: the checkpoint does not fit the model or the optimizer.
    """
    state = decoded.state
    try:
        unwrap(model).load_state_dict(decoded.tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {shown} does not fit the model: {exc}") from exc
    if optimizer is not None:
        if decoded.optimizer is None:
            raise CheckpointError(f"checkpoint {shown} holds no optimizer state, but an optimizer was given")
        try:
            optimizer.load_state_dict(decoded.optimizer)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {shown} does not fit the optimizer: {exc}") from exc
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng") is not None:
        restore_rng_state(state["rng"])
    return loaded_from_state(state, step, shown, skipped)


def loaded_from_state(
    state: Mapping[str, Any], step: int, shown: str, skipped: list[SkippedCheckpoint], world_size: int = 1
) -> LoadedCheckpoint:
    """The :class:`LoadedCheckpoint` of a checkpoint whose ``state.json`` is ``state`` (already applied)."""
    return LoadedCheckpoint(
        info=info_from_state(step, shown, state),
        trackers=state.get("trackers") or {},
        extra=state.get("extra") or {},
        scheduler_state=state.get("scheduler"),
        schedule_fingerprint=state.get("schedule_fingerprint"),
        skipped=skipped,
        world_size=world_size,
    )
