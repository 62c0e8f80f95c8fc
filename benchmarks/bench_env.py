"""What a benchmark prints about its environment (shared by the scripts in this folder)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def versions(names: Iterable[str]) -> str:
    """``"Python 3.11.7, torch 2.13.0, ..."``: the interpreter and each named distribution's version.

    Example:
        >>> versions(["surely-not-installed-xyz"]).endswith("surely-not-installed-xyz (not installed)")
        True
    """
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def shuffled_rounds(names: Sequence[T], rounds: int, seed: int) -> Iterator[tuple[int, list[T]]]:
    """Round 0 is the warm-up (discarded by callers); each round runs every name once, shuffled.

    Example:
        >>> [r for r, order in shuffled_rounds("ab", 2, seed=0)], sorted(next(shuffled_rounds("ab", 2, 0))[1])
        ([0, 1, 2], ['a', 'b'])
    """
    rng = random.Random(seed)
    for r in range(rounds + 1):
        order = list(names)
        rng.shuffle(order)
        yield r, order
