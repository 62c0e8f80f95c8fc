"""Durations: lengths written as steps, epochs or a fraction of the run.

Anywhere a schedule accepts a length, it also accepts a string:

* ``"500"`` or ``"500st"``: 500 optimizer steps (turned into the number 500 at construction);
* ``"3ep"``: 3 epochs, resolved with ``steps_per_epoch``;
* ``"0.05dur"``: 5% of the run, resolved with ``total_steps``.

Epoch and fraction lengths stay strings until :meth:`Schedule.bind` resolves them once; a schedule
that still holds one refuses to be evaluated.

Example:
    >>> parse("warmup_steps", "500st")
    500
    >>> parse("warmup_steps", "3ep")
    '3ep'
    >>> resolve("warmup_steps", "3ep", total_steps=None, steps_per_epoch=390)
    1170
    >>> resolve("cycle_steps", "0.25dur", total_steps=1000, steps_per_epoch=None)
    250
"""

from __future__ import annotations

import re
from typing import Any

from cosanneal.errors import ScheduleError

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*(st|ep|dur)?\s*$")

Length = int | float | str


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def parse(name: str, value: Any) -> Any:
    """Normalise a length: numbers pass through, ``"N"``/``"Nst"`` become numbers, ``ep``/``dur`` stay.

    Args:
        name: the parameter's name, for the error message.
        value: a number or a duration string.

    Returns:
        The value unchanged when it is not a string, a number for step strings, or the normalised
        string (``"3ep"``, ``"0.05dur"``) for epoch and fraction lengths.

    Raises:
        ScheduleError: the string is not a duration.
    """
    if not isinstance(value, str):
        return value
    match = _PATTERN.match(value)
    if match is None:
        raise ScheduleError(
            f"{name} must be a number or a duration like '500', '500st', '3ep' or '0.05dur', got {value!r}"
        )
    amount, unit = match.group(1), match.group(2) or "st"
    if unit == "st":
        return _number(amount)
    if unit == "dur" and float(amount) > 1.0:
        raise ScheduleError(f"{name} as a fraction of the run must be <= 1dur, got {value!r}")
    return f"{_number(amount)}{unit}"


def is_unbound(value: Any) -> bool:
    """True when ``value`` is an epoch or fraction length that still needs :meth:`Schedule.bind`."""
    return isinstance(value, str)


def resolve(
    name: str,
    value: Any,
    *,
    total_steps: int | float | None,
    steps_per_epoch: int | float | None,
) -> Any:
    """Turn an epoch or fraction length into steps; numbers pass through unchanged.

    Formulas: ``"Nep"`` -> ``N * steps_per_epoch``; ``"Fdur"`` -> ``F * total_steps``. A whole
    result is returned as an int.

    Raises:
        ScheduleError: the length needs ``steps_per_epoch`` or ``total_steps`` and it was not given.
    """
    if not is_unbound(value):
        return value
    match = _PATTERN.match(value)
    assert match is not None  # parse() accepted it at construction
    amount, unit = float(match.group(1)), match.group(2)
    if unit == "ep":
        if steps_per_epoch is None:
            raise ScheduleError(f"{name}={value!r} is in epochs; pass steps_per_epoch to bind()")
        steps = amount * float(steps_per_epoch)
    else:
        if total_steps is None:
            raise ScheduleError(f"{name}={value!r} is a fraction of the run; pass total_steps to bind()")
        steps = amount * float(total_steps)
    return int(steps) if steps.is_integer() else steps


def round_steps(value: Any) -> Any:
    """Round a resolved length to whole steps (for parameters that must be integers)."""
    if isinstance(value, float):
        return round(value)
    return value
