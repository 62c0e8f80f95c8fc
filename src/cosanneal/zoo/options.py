"""Checks of the built-in models' and data sets' options, shared by their constructors and config loading.

Each check returns ``None`` for a good value or the problem as a phrase (``"must be an integer >= 1"``),
so a constructor can raise :class:`ValueError` and config loading a
:class:`~cosanneal.errors.ConfigError` naming ``model.options.<name>``, from the same rule.

Example:
    >>> count(16), count(0), probability(0.1), fraction(1.0)
    (None, 'must be an integer >= 1', None, 'must be a number in (0, 1)')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cosanneal.errors import ConfigError

Check = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def count(value: Any) -> str | None:
    """A size (channels, classes, features, samples): an integer >= 1."""
    return None if _is_int(value) and value >= 1 else "must be an integer >= 1"


def seed(value: Any) -> str | None:
    """A seed: an integer >= 0."""
    return None if _is_int(value) and value >= 0 else "must be an integer >= 0"


def probability(value: Any) -> str | None:
    """A dropout probability: a number in [0, 1) (1 would drop every unit)."""
    return None if _is_number(value) and 0.0 <= value < 1.0 else "must be a number in [0, 1)"


def fraction(value: Any) -> str | None:
    """A share of the samples that leaves some on both sides: a number in (0, 1)."""
    return None if _is_number(value) and 0.0 < value < 1.0 else "must be a number in (0, 1)"


def _show(value: Any) -> str:
    text = repr(value) if not (_is_int(value) and abs(value) >= 10**20) else "a huge integer"
    return text if len(text) <= 80 else text[:77] + "..."


def first_problem(checks: Mapping[str, Check], values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first ``(option, "must be ..., got ...")`` among ``values`` that fails its check, else ``None``."""
    for name, value in values.items():
        problem = checks[name](value) if name in checks else None
        if problem is not None:
            return name, f"{problem}, got {_show(value)}"
    return None


def raise_value_error(checks: Mapping[str, Check], **values: Any) -> None:
    """Raise :class:`ValueError` ``"<option>: must be ..., got ..."`` for the first bad value (constructors)."""
    found = first_problem(checks, values)
    if found is not None:
        raise ValueError(f"{found[0]}: {found[1]}")


def check_options(
    section: str,
    name: str,
    parameters: Mapping[str, Sequence[str]],
    checks: Mapping[str, Check],
    options: Any,
) -> None:
    """Check a config's ``<section>.name`` and ``<section>.options`` against a built-in's options and checks.

    Raises:
        ConfigError: ``<section>.name`` is not a built-in, an option is not a parameter of that
            built-in, or an option's value fails its check; one line naming the dotted key.
    """
    if name not in parameters:
        raise ConfigError(
            f"{section}.name: must be one of {', '.join(sorted(parameters))}, got {_show(name)}"
        )
    if not isinstance(options, Mapping):
        raise ConfigError(f"{section}.options: must be a table, got {_show(options)}")
    allowed = parameters[name]
    for key in options:
        if key not in allowed:
            part = key if isinstance(key, str) and key.isidentifier() else repr(key)
            raise ConfigError(
                f"{section}.options.{part}: unknown option of {section} {name!r}; allowed: {', '.join(allowed)}"
            )
    found = first_problem(checks, options)
    if found is not None:
        raise ConfigError(f"{section}.options.{found[0]}: {found[1]}")
