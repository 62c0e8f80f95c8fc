"""Construction-time checks shared by every schedule.

Each check raises :class:`~cosanneal.errors.ScheduleError` with a one-line message that names the
parameter as the user wrote it, the value received and what is allowed. Checks run once, when a
schedule is built; nothing is checked per step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from cosanneal.errors import ScheduleError


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float:
    """Return ``value`` as a float after checking it is a finite real number within the bounds.

    Example:
        >>> number("gamma", 0.5, gt=0.0, le=1.0)
        0.5
    """
    if not _is_real(value):
        raise ScheduleError(f"{name} must be a number, got {value!r}")
    fvalue = float(value)
    if not math.isfinite(fvalue):
        raise ScheduleError(f"{name} must be a finite number, got {value!r}")
    if gt is not None and not fvalue > gt:
        raise ScheduleError(f"{name} must be > {gt:g}, got {value!r}")
    if ge is not None and not fvalue >= ge:
        raise ScheduleError(f"{name} must be >= {ge:g}, got {value!r}")
    if le is not None and not fvalue <= le:
        raise ScheduleError(f"{name} must be <= {le:g}, got {value!r}")
    if lt is not None and not fvalue < lt:
        raise ScheduleError(f"{name} must be < {lt:g}, got {value!r}")
    return fvalue


def integer(name: str, value: Any, *, ge: int = 0) -> int:
    """Return ``value`` as an int after checking it is a whole number ``>= ge``.

    Integral floats such as ``5.0`` (as TOML or JSON may give them) are accepted.

    Example:
        >>> integer("warmup_steps", 5.0)
        5
    """
    if (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or (
        _is_real(value) and math.isfinite(float(value)) and float(value).is_integer()
    ):
        ivalue = int(value)
    else:
        raise ScheduleError(f"{name} must be an integer >= {ge}, got {value!r}")
    if ivalue < ge:
        raise ScheduleError(f"{name} must be an integer >= {ge}, got {value!r}")
    return ivalue


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` after checking it is one of ``allowed``.

    Example:
        >>> choice("warmup_shape", "linear", ("linear", "cosine"))
        'linear'
    """
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise ScheduleError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """Return ``value`` after checking it is a bool."""
    if not isinstance(value, bool):
        raise ScheduleError(f"{name} must be true or false, got {value!r}")
    return value
