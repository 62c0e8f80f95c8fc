"""Turning a model and an optimizer into checkpoint files and back, without ever unpickling code.

* Model tensors go to safetensors. Tied weights (two state-dict names for one tensor, e.g. an
  embedding shared with the output layer) are stored once; the other names are recorded as aliases
  and filled in again on load, so ``load_state_dict(strict=True)`` sees every key.
* The optimizer's ``state_dict()`` goes through ``torch.save`` and is read back with
  ``torch.load(weights_only=True)`` only: tensors, numbers, strings, lists, tuples and dicts load;
  anything that would run code on unpickling is refused.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from typing import IO, Any

import torch

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"

# safetensors' dtype names, in the order its writer lays tensors out (larger kinds first; ties by name)
_SAFETENSORS_DTYPES: tuple[tuple[str, str], ...] = (
    ("uint64", "U64"),
    ("int64", "I64"),
    ("float64", "F64"),
    ("complex64", "C64"),
    ("float32", "F32"),
    ("uint32", "U32"),
    ("int32", "I32"),
    ("bfloat16", "BF16"),
    ("float16", "F16"),
    ("uint16", "U16"),
    ("int16", "I16"),
    ("float8_e8m0fnu", "F8_E8M0"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("int8", "I8"),
    ("uint8", "U8"),
    ("bool", "BOOL"),
)
_DTYPE_CODES: dict[torch.dtype, tuple[int, str]] = {
    getattr(torch, name): (rank, code)
    for rank, (name, code) in enumerate(_SAFETENSORS_DTYPES)
    if hasattr(torch, name)
}


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], handle: IO[bytes], metadata: Mapping[str, str]
) -> None:
    """Stream ``tensors`` into ``handle`` as a safetensors file, straight from the tensors' memory.

    The layout is safetensors' own: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
    (``{"__metadata__": ..., name: {"dtype", "shape", "data_offsets"}}``, padded with spaces to a
    multiple of 8), then the tensors' bytes back to back, larger dtypes first and then by name. The
    bytes equal ``safetensors.torch.save(tensors, metadata)``'s, but no copy of the whole file is made
    in memory: each tensor's buffer is written (and hashed, by a hashing stream) where it lies. A
    dtype this writer does not know is handed to safetensors itself.

    Args:
        tensors: CPU tensors by name (no two sharing memory).
        handle: a binary stream.
        metadata: string metadata for the header.

    Example:
        >>> from safetensors.torch import save
        >>> t = {"w": torch.ones(2, 2), "step": torch.tensor(3)}
        >>> out = io.BytesIO()
        >>> write_safetensors(t, out, {"format": "pt"})
        >>> out.getvalue() == save(t, {"format": "pt"})
        True
    """
    if any(t.dtype not in _DTYPE_CODES or t.device.type != "cpu" for t in tensors.values()):
        from safetensors.torch import save

        handle.write(save(dict(tensors), dict(metadata)))
        return
    order = sorted(tensors, key=lambda name: (_DTYPE_CODES[tensors[name].dtype][0], name))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    flat: list[torch.Tensor] = []
    offset = 0
    for name in order:
        tensor = tensors[name].detach()
        data = tensor.contiguous().reshape(-1).view(torch.uint8)
        header[name] = {
            "dtype": _DTYPE_CODES[tensor.dtype][1],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + data.numel()],
        }
        offset += data.numel()
        flat.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    handle.write(struct.pack("<Q", len(text)) + text)
    for data in flat:
        if data.numel():
            handle.write(data.numpy().data)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (else ``model``)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


class CpuStaging:
    """Reusable CPU buffers for snapshots: ``copy_`` into last time's buffer instead of a fresh clone.

    A fresh clone of a large state touches newly mapped memory page by page, which costs several
    times a plain memory copy; an asynchronous checkpoint writer waits for the previous write before
    the next snapshot, so last time's buffers are free to be overwritten. One snapshot's worth of CPU
    memory stays allocated between saves.

    Example:
        >>> staging = CpuStaging()
        >>> a = staging.copy("w", torch.ones(3))
        >>> b = staging.copy("w", torch.zeros(3))
        >>> a is b, b.tolist()
        (True, [0.0, 0.0, 0.0])
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def copy(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU copy of ``tensor`` (contiguous), in the buffer kept under ``key`` when it fits."""
        tensor = tensor.detach()
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
            self._buffers[key] = buffer
        buffer.copy_(tensor)
        return buffer


def _identity(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def model_tensors(
    model: torch.nn.Module, *, copy: bool, staging: CpuStaging | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state as CPU tensors for safetensors, plus ``{alias: stored name}`` for tied ones.

    Args:
        model: the module (a DDP/DataParallel wrapper is unwrapped).
        copy: clone every tensor (for a background write that must not see later updates); without
            it CPU tensors are shared with the model where possible.
        staging: reuse these buffers for the copies (see :class:`CpuStaging`).

    Raises:
        TypeError: a state-dict value is not a tensor (e.g. an arbitrary ``get_extra_state`` object).

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> tied = torch.nn.ModuleDict({"a": lin, "b": lin})
        >>> tensors, aliases = model_tensors(tied, copy=True)
        >>> sorted(tensors), sorted(aliases.items())
        (['a.bias', 'a.weight'], [('b.bias', 'a.bias'), ('b.weight', 'a.weight')])
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[Any, int]] = set()
    for name, value in unwrap(model).state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state entry {name!r} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        key = _identity(value)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        storage = (value.device, value.untyped_storage().data_ptr())
        # A view that shares storage with another entry without being identical must be its own copy.
        must_copy = copy or storage in storages or not value.is_contiguous()
        storages.add(storage)
        if copy and staging is not None:
            tensors[name] = staging.copy(f"model/{name}", value)
        elif value.device.type != "cpu":
            tensors[name] = value.to("cpu").contiguous()  # a device-to-host copy: never shared
        else:
            tensors[name] = value.clone(memory_format=torch.contiguous_format) if must_copy else value
    return tensors, aliases


def clone_to_cpu(obj: Any, staging: CpuStaging | None = None, key: str = "") -> Any:
    """A deep copy of nested dicts/lists/tuples with every tensor cloned to CPU memory.

    Example:
        >>> src = {"state": {0: {"buf": torch.ones(2)}}, "groups": [{"lr": 0.1}]}
        >>> dst = clone_to_cpu(src)
        >>> _ = src["state"][0]["buf"].add_(1)
        >>> dst["state"][0]["buf"].tolist(), dst["groups"]
        ([1.0, 1.0], [{'lr': 0.1}])
    """
    if isinstance(obj, torch.Tensor):
        if staging is not None:
            return staging.copy(key, obj)
        obj = obj.detach()
        return obj.clone() if obj.device.type == "cpu" else obj.to("cpu")  # clone() beats to(copy=True)
    if isinstance(obj, dict):
        return {k: clone_to_cpu(v, staging, f"{key}/{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_to_cpu(v, staging, f"{key}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(clone_to_cpu(v, staging, f"{key}/{i}") for i, v in enumerate(obj))
    return obj


def save_optimizer(state: Mapping[str, Any], handle: IO[bytes]) -> None:
    """``torch.save`` the optimizer state into ``handle``."""
    torch.save(dict(state), handle)


def load_optimizer(source: str | bytes, map_location: Any) -> dict[str, Any]:
    """Read an optimizer state with ``torch.load(weights_only=True)`` (no fallback, ever).

    Raises:
        pickle.UnpicklingError: the file holds anything but plain data and tensors.
    """
    stream: str | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    data = torch.load(stream, map_location=map_location, weights_only=True)
    if not isinstance(data, dict):
        raise TypeError(f"optimizer file holds a {type(data).__name__}, expected a dict")
    return data


def load_model_tensors(
    source: str | bytes, map_location: Any, aliases: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """Read the safetensors file (a path or bytes) and re-create the tied names from ``aliases``."""
    from safetensors.torch import load, load_file

    device = str(map_location) if map_location is not None else "cpu"
    tensors = load(source) if isinstance(source, bytes) else load_file(source, device="cpu")
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    for alias, target in aliases.items():
        if target not in tensors:
            raise KeyError(f"alias {alias!r} points at {target!r}, which the file does not hold")
        tensors[alias] = tensors[target]
    return tensors
