"""Capture and restore the global random number generators as JSON-safe data.

Covers Python's :mod:`random`, NumPy's legacy global generator (``np.random.*``), torch's CPU
generator and, when CUDA is available, every CUDA device's generator. Byte states are base64 text;
Mersenne-Twister key arrays are lists of ints, so the result survives ``json.dumps``/``loads``
unchanged and restoring it makes the next draws identical to the ones the captured run would have
made.
"""

from __future__ import annotations

import base64
import random
import warnings
from typing import Any

import numpy as np

RNG_FORMAT = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def capture_rng_state() -> dict[str, Any]:
    """The states of the Python, NumPy, torch and CUDA global generators, as JSON-safe data.

    Returns:
        ``{"format", "python", "numpy", "torch", "cuda"}``; ``torch`` and ``cuda`` are ``None`` when
        torch (or CUDA) is not available.

    Example:
        >>> import json, random
        >>> state = json.loads(json.dumps(capture_rng_state()))
        >>> a = random.random()
        >>> restore_rng_state(state)
        >>> random.random() == a
        True
    """
    version, key, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out: dict[str, Any] = {
        "format": RNG_FORMAT,
        "python": {"version": version, "state": list(key), "gauss_next": gauss},
        "numpy": {
            "name": str(name),
            "key": [int(v) for v in mt],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": None,
        "cuda": None,
    }
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional for the core
        return out
    out["torch"] = _b64(torch.get_rng_state().numpy().tobytes())
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global generators back to a state from :func:`capture_rng_state`.

    CUDA states are restored only when the same number of devices is visible; otherwise a warning
    says they were left alone (e.g. a GPU checkpoint resumed on CPU).

    Raises:
        ValueError: ``state`` is not a capture of this format.
    """
    if not isinstance(state, dict) or state.get("format") != RNG_FORMAT:
        raise ValueError(f"rng state must be a capture of format {RNG_FORMAT}, got {type(state).__name__}")
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            np.asarray(npy["key"], dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    if state.get("torch") is None:
        return
    import torch

    torch.set_rng_state(torch.frombuffer(bytearray(_unb64(state["torch"])), dtype=torch.uint8))
    cuda = state.get("cuda")
    if cuda is None:
        return
    if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
        warnings.warn(
            f"checkpoint holds RNG states for {len(cuda)} CUDA device(s) but "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} are visible; CUDA RNG not restored",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(_unb64(s)), dtype=torch.uint8) for s in cuda])
