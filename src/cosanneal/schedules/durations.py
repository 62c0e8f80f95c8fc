r"""Durations: lengths written as steps, epochs, a fraction of the run, samples or tokens.

Anywhere a schedule accepts a length, it also accepts a string (Composer's units):

* ``"500"`` or ``"500st"``: 500 optimizer steps (updates; turned into the number 500 at construction);
* ``"3ep"``: 3 epochs, resolved with ``steps_per_epoch``;
* ``"0.05dur"``: 5% of the run, resolved with ``total_steps``;
* ``"2e6sp"``: 2,000,000 training samples, resolved with ``samples_per_update`` (the global batch:
  batch size x gradient accumulation x world size);
* ``"5e7tok"``: 50,000,000 tokens, resolved with ``tokens_per_update`` (samples per update x tokens
  per sample).

Sample and token counts must be whole numbers; they are read exactly (``"2e6sp"`` is the integer
2000000, never a float) and turned into updates by

.. math:: \mathrm{updates} = \left\lceil \frac{\mathrm{samples}}{\mathrm{samples\_per\_update}} \right\rceil

(tokens likewise), in exact rational arithmetic: an update always consumes a whole batch, so rounding
up is the only choice that never trains on fewer samples than asked (it trains on fewer than
``samples + samples_per_update``). Any count >= 1 is at least one update.

Epoch, fraction, sample and token lengths stay strings until :meth:`Schedule.bind` resolves them once;
a schedule that still holds one refuses to be evaluated.

Example:
    >>> parse("warmup_steps", "500st")
    500
    >>> parse("warmup_steps", "3ep"), parse("cycle_steps", "2e6sp"), parse("cycle_steps", "5e7tok")
    ('3ep', '2000000sp', '50000000tok')
    >>> resolve("warmup_steps", "3ep", total_steps=None, steps_per_epoch=390)
    1170
    >>> resolve("cycle_steps", "0.25dur", total_steps=1000, steps_per_epoch=None)
    250
    >>> resolve("cycle_steps", "2000000sp", total_steps=None, steps_per_epoch=None, samples_per_update=512)
    3907
"""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

from cosanneal.errors import ScheduleError

_PATTERN = re.compile(
    r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*(st|ep|dur|sp|tok)?\s*$"
)
#: Each unit that needs :meth:`Schedule.bind` -> the keyword that resolves it.
BINDINGS: dict[str, str] = {
    "ep": "steps_per_epoch",
    "dur": "total_steps",
    "sp": "samples_per_update",
    "tok": "tokens_per_update",
}
_COUNTED = {"sp": "samples", "tok": "tokens"}
_MAX_DIGITS = 300  # a count of samples or tokens with more digits than this is refused

Length = int | float | str


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _count(name: str, raw: str, amount: str, unit: str) -> int:
    """A sample or token count, read exactly (``"2e6"`` -> 2000000); a fraction of one is refused."""
    exact = Decimal(amount)
    if exact.adjusted() >= _MAX_DIGITS:
        raise ScheduleError(f"{name}={raw!r} is too large a number of {_COUNTED[unit]}")
    if exact != exact.to_integral_value():
        raise ScheduleError(
            f"{name} must be a whole number of {_COUNTED[unit]}, got {raw!r}; give a count like '2000000{unit}'"
        )
    return int(exact)


def parse(name: str, value: Any) -> Any:
    """Normalise a length: numbers pass through, ``"N"``/``"Nst"`` become numbers, other units stay.

    Args:
        name: the parameter's name, for the error message.
        value: a number or a duration string.

    Returns:
        The value unchanged when it is not a string, a number for step strings, or the normalised
        string (``"3ep"``, ``"0.05dur"``, ``"2000000sp"``, ``"50000000tok"``) for the other units;
        sample and token counts are written as whole numbers.

    Raises:
        ScheduleError: the string is not a duration, a fraction is above ``1dur``, or a sample or
            token count is not a whole number.

    Example:
        >>> parse("cycle_steps", "1.5e3"), parse("cycle_steps", "2.5e6sp"), parse("cycle_steps", ".5dur")
        (1500, '2500000sp', '0.5dur')
    """
    if not isinstance(value, str):
        return value
    match = _PATTERN.match(value)
    if match is None:
        raise ScheduleError(
            f"{name} must be a number or a duration like '500', '500st', '3ep', '0.05dur', '2e6sp' or "
            f"'5e7tok', got {value!r}"
        )
    amount, unit = match.group(1), match.group(2) or "st"
    if unit == "st":
        return _number(amount)
    if unit in _COUNTED:
        return f"{_count(name, value, amount, unit)}{unit}"
    if unit == "dur" and float(amount) > 1.0:
        raise ScheduleError(f"{name} as a fraction of the run must be <= 1dur, got {value!r}")
    return f"{_number(amount)}{unit}"


def is_unbound(value: Any) -> bool:
    """True when ``value`` is a length in epochs, a fraction, samples or tokens that still needs binding."""
    return isinstance(value, str)


def split(value: str) -> tuple[str, int | float]:
    """The unit (``"ep"``, ``"dur"``, ``"sp"`` or ``"tok"``) and amount of a parsed unbound length.

    Example:
        >>> split("3ep"), split("0.5dur"), split("2000000sp")
        (('ep', 3), ('dur', 0.5), ('sp', 2000000))
    """
    match = _PATTERN.match(value)
    if match is None or match.group(2) in (None, "st"):
        raise ValueError(f"not a parsed unbound duration: {value!r}")  # internal: parse() normalises first
    amount, unit = match.group(1), match.group(2)
    return unit, int(amount) if unit in _COUNTED else _number(amount)


def binding(value: str) -> str:
    """The :meth:`Schedule.bind` keyword that resolves a parsed unbound length.

    Example:
        >>> binding("3ep"), binding("2000000sp")
        ('steps_per_epoch', 'samples_per_update')
    """
    return BINDINGS[split(value)[0]]


def _per_update(keyword: str, value: Any) -> Fraction:
    """``samples_per_update`` / ``tokens_per_update`` as an exact fraction, checked to be a number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < math.inf):
        raise ScheduleError(f"{keyword} must be a number > 0, got {value!r}")
    return Fraction(int(value)) if isinstance(value, numbers.Integral) else Fraction(float(value))


def resolve(
    name: str,
    value: Any,
    *,
    total_steps: int | float | None,
    steps_per_epoch: int | float | None,
    samples_per_update: int | float | None = None,
    tokens_per_update: int | float | None = None,
) -> Any:
    r"""Turn an epoch, fraction, sample or token length into steps; numbers pass through unchanged.

    Formulas: ``"Nep"`` -> ``N * steps_per_epoch``; ``"Fdur"`` -> ``F * total_steps`` (a whole result
    as an int); ``"Ssp"`` -> :math:`\lceil S / \mathrm{samples\_per\_update} \rceil` and ``"Ktok"`` ->
    :math:`\lceil K / \mathrm{tokens\_per\_update} \rceil`, an int computed exactly (see the module docs
    for why it rounds up).

    Raises:
        ScheduleError: the length needs a keyword (``steps_per_epoch``, ``total_steps``,
            ``samples_per_update``, ``tokens_per_update``) that was not given, or that keyword is not a
            number > 0.

    Example:
        >>> resolve("cycle_steps", "50000000tok", total_steps=None, steps_per_epoch=None,
        ...         tokens_per_update=512 * 1024)
        96
    """
    if not is_unbound(value):
        return value
    unit, amount = split(value)
    keyword = BINDINGS[unit]
    if unit in _COUNTED:
        per = samples_per_update if unit == "sp" else tokens_per_update
        if per is None:
            raise ScheduleError(f"{name}={value!r} is in {_COUNTED[unit]}; pass {keyword} to bind()")
        return math.ceil(Fraction(amount) / _per_update(keyword, per))
    if unit == "ep":
        if steps_per_epoch is None:
            raise ScheduleError(f"{name}={value!r} is in epochs; pass steps_per_epoch to bind()")
        steps = float(amount) * float(steps_per_epoch)
    else:
        if total_steps is None:
            raise ScheduleError(f"{name}={value!r} is a fraction of the run; pass total_steps to bind()")
        steps = float(amount) * float(total_steps)
    return int(steps) if steps.is_integer() else steps


def round_steps(value: Any) -> Any:
    """Round a resolved length to whole steps (for parameters that must be integers)."""
    if isinstance(value, float):
        return round(value)
    return value
