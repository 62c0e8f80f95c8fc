"""An offline text corpus every machine has: the Python standard library's own sources.

The ``.py`` files under the running interpreter's ``stdlib`` directory (``sysconfig``), read as bytes
in the order of a SHA-256 of their relative path (a fixed mix of the whole library); test suites,
``site-packages`` and generated files are left out. The first files, up to ``val_fraction`` of
``max_bytes``, are the validation split and the rest the training split (whole files, so no
validation text is seen in training), and each split is cut into non-overlapping windows of
``block + 1`` bytes: sample ``i`` is ``(window[:-1], window[1:])``, the next-byte prediction pair.
The corpus depends on the Python version (3.11's stdlib differs from 3.12's); its size and a
fingerprint are in :func:`corpus_info`, which the demo records.

Example:
    >>> train, val = pysource(block=32, max_bytes=200_000)
    >>> x, y = train[0]
    >>> tuple(x.shape), bool((x[1:] == y[:-1]).all())
    ((32,), True)
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from pathlib import Path

import torch
from torch.utils.data import Dataset

_SKIP = ("test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo")


class Windows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Non-overlapping ``block + 1``-byte windows of a byte string, as ``(input, target)`` pairs."""

    def __init__(self, data: torch.Tensor, block: int) -> None:
        self.data = data
        self.block = block

    def __len__(self) -> int:
        return (len(self.data) - 1) // self.block

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.block
        window = self.data[start : start + self.block + 1]
        return window[:-1], window[1:]


def _files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*.py")
        if not any(part in _SKIP for part in p.relative_to(root).parts[:-1])
        and not p.name.startswith("test_")
    )


def _key(rel: str) -> str:
    return hashlib.sha256(rel.encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def _corpus(max_bytes: int, val_fraction: float) -> tuple[bytes, bytes, str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        ((p.relative_to(root).as_posix(), p) for p in _files(root)), key=lambda item: _key(item[0])
    )
    train, val = bytearray(), bytearray()
    digest = hashlib.sha256()
    val_bytes = max_bytes * val_fraction
    for rel, path in files:  # in the order of a hash of the path: a mix of the whole library
        if len(train) + len(val) >= max_bytes:
            break
        try:
            text = path.read_bytes()
        except OSError:
            continue
        digest.update(rel.encode() + b"\0" + text)
        (val if len(val) < val_bytes else train).extend(text + b"\n")
    if not train or not val:
        raise ValueError(
            f"max_bytes: {max_bytes} bytes of the standard library leave a split empty; raise max_bytes"
        )
    return bytes(train), bytes(val), digest.hexdigest()[:16]


def corpus_info(max_bytes: int = 3_000_000, val_fraction: float = 0.1) -> dict[str, object]:
    """Where the corpus comes from and what it holds (bytes per split, a fingerprint of its files)."""
    train, val, fingerprint = _corpus(max_bytes, val_fraction)
    return {
        "source": sysconfig.get_paths()["stdlib"],
        "train_bytes": len(train),
        "val_bytes": len(val),
        "fingerprint": fingerprint,
    }


def pysource(
    block: int = 64, max_bytes: int = 3_000_000, val_fraction: float = 0.1
) -> tuple[Windows, Windows]:
    """The standard library's sources as ``(train, val)`` next-byte data sets of ``block``-byte windows.

    Raises:
        ValueError: a bad option (naming it), or too few bytes for both splits.
    """
    from cosanneal.zoo.data import OPTION_CHECKS
    from cosanneal.zoo.options import raise_value_error

    raise_value_error(OPTION_CHECKS, block=block, max_bytes=max_bytes, val_fraction=val_fraction)
    train, val, _ = _corpus(max_bytes, val_fraction)

    def tensor(data: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()

    return Windows(tensor(train), block), Windows(tensor(val), block)


__all__ = ["Windows", "corpus_info", "pysource"]
