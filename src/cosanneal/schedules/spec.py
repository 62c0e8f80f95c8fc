"""Schedule spec files: a schedule written as TOML, YAML or JSON, plus ``key=value`` overrides.

A spec is a mapping with a ``kind`` key and the schedule's parameters (the same data as
:meth:`Schedule.to_dict`). The mapping may also sit under a ``schedule`` table, so a whole training
config can be passed. Keys that start with ``_`` (``"_comment"``) are notes and are ignored, which
gives JSON files a place for comments.

Overrides (``--set key=value`` on the command line) are applied before the schedule is built. The
value is read as a TOML value (``0.1``, ``1e-3``, ``true``, ``"text"``, ``[1, 2]``), then as a
number, then as ``null``/``none`` (Python ``None``), else kept as a plain string (``cosine``,
``3ep``). Dotted keys reach into nested tables and lists: ``schedules.1.peak_lr``.

Every problem becomes one :class:`~cosanneal.errors.SpecError` line naming the file, the key and
the fix.
"""

from __future__ import annotations

import copy
import difflib
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosanneal.errors import ScheduleError, SpecError
from cosanneal.schedules.base import Schedule, from_dict, kinds

__all__ = ["SUFFIXES", "load_spec", "parse_value", "read_spec", "apply_overrides"]

#: File suffixes :func:`read_spec` understands.
SUFFIXES = (".toml", ".yaml", ".yml", ".json")
_NULLS = ("null", "none", "None", "~")


def _parse_toml(text: str, name: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{name}: invalid TOML: {exc}") from None


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _parse_yaml(text: str, name: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml ships with the cli extra
        raise SpecError(f"{name}: reading YAML needs pyyaml (pip install 'cosanneal[cli]')") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{name}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}: invalid YAML: {str(exc).splitlines()[0]}") from None


def _strip_notes(value: Any) -> Any:
    """Drop keys that start with ``_`` from every mapping inside ``value``."""
    if isinstance(value, Mapping):
        return {
            k: _strip_notes(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))
        }
    if isinstance(value, list):
        return [_strip_notes(v) for v in value]
    return value


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file that must hold a mapping (a spec or a whole training config).

    Raises:
        SpecError: the file cannot be read, is not valid for its format, or is not a mapping.
    """
    p = Path(path)
    name = str(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise SpecError(
            f"{name}: the file must end in {', '.join(SUFFIXES)}; got {p.suffix or 'no suffix'!r}"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{name}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{name}: cannot read the file: it is not UTF-8 text") from None
    parse = {".toml": _parse_toml, ".json": _parse_json}.get(suffix, _parse_yaml)
    data = parse(text, name)
    if not isinstance(data, Mapping):
        raise SpecError(f"{name}: the file must hold a mapping of keys, got {type(data).__name__}")
    out: dict[str, Any] = _strip_notes(data)
    return out


def read_spec(path: str | Path) -> dict[str, Any]:
    """Read a spec file into the schedule mapping (the ``schedule`` table when there is one).

    Args:
        path: a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Returns:
        The mapping with ``kind`` and the parameters, notes (``_`` keys) removed.

    Raises:
        SpecError: the file cannot be read, is not valid for its format, or holds no schedule.
    """
    name = str(path)
    data: Mapping[str, Any] = read_mapping(path)
    if "kind" not in data and isinstance(data.get("schedule"), Mapping):
        data = data["schedule"]
    if "kind" not in data:
        raise SpecError(
            f"{name}: no 'kind' key (and no 'schedule' table); add kind = one of {', '.join(kinds())}"
        )
    return dict(data)


def parse_value(text: str) -> Any:
    """Read an override value: a TOML value, else a number, else ``None`` for null/none, else the string.

    Example:
        >>> [parse_value(v) for v in ["0.1", "1e-3", "5", "true", "none", "cosine", "3ep", "[0.1, 0.01]"]]
        [0.1, 0.001, 5, True, None, 'cosine', '3ep', [0.1, 0.01]]
    """
    text = text.strip()
    if text in _NULLS:
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and abs(number) < 2**53 and "." not in text else number


def _descend(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise SpecError(
                f"--set {key}: {part!r} is not an index of a list of {len(node)} (use 0..{len(node) - 1})"
            )
        return node[int(part)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise SpecError(f"--set {key}: {part!r} is inside a value that is not a table or a list")


def apply_overrides(data: Mapping[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a copy of ``data`` (dotted keys reach into tables and lists).

    Example:
        >>> apply_overrides({"kind": "cosine", "peak_lr": 0.1}, ["peak_lr=0.2", "cycle_steps=100"])
        {'kind': 'cosine', 'peak_lr': 0.2, 'cycle_steps': 100}

    Raises:
        SpecError: a pair has no ``=``, an empty key, or a path that does not exist.
    """
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for pair in sets:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value (like peak_lr=0.1), got {pair!r}")
        parts = key.split(".")
        if any(not p for p in parts):
            raise SpecError(f"--set {key}: empty part in the dotted key; write keys like schedules.1.peak_lr")
        if parts[0] == "schedule" and len(parts) > 1 and "schedule" not in out:
            parts = parts[1:]
        node: Any = out
        for part in parts[:-1]:
            node = _descend(node, part, key)
        last, value = parts[-1], parse_value(raw)
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise SpecError(f"--set {key}: {last!r} is not an index of a list of {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(f"--set {key}: {parts[-2]!r} is not a table or a list")
    return out


def load_spec(path: str | Path | None, sets: Sequence[str] = ()) -> Schedule:
    """Build a schedule from a spec file and/or ``key=value`` overrides.

    Args:
        path: a ``.toml``, ``.yaml``/``.yml`` or ``.json`` spec file, or ``None`` to build the spec
            from ``sets`` alone (``["kind=cosine", "peak_lr=0.1", "cycle_steps=1000"]``).
        sets: overrides applied in order, each ``key=value``.

    Returns:
        The schedule (not yet bound: epoch and fraction durations stay as written).

    Raises:
        SpecError: anything wrong with the file, an override or the schedule's parameters, as one
            line starting with the file name (or ``--set``).

    Example:
        >>> s = load_spec(None, ["kind=cosine", "peak_lr=0.1", "cycle_steps=100"])
        >>> s(50)
        0.05
    """
    source = str(path) if path is not None else "--set"
    data = read_spec(path) if path is not None else {}
    merged = apply_overrides(data, sets)
    if "kind" not in merged:
        raise SpecError(f"{source}: no 'kind' given; pass --set kind=<one of {', '.join(kinds())}>")
    kind = merged["kind"]
    if not isinstance(kind, str) or kind not in kinds():
        close = difflib.get_close_matches(str(kind), kinds(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(
            f"{source}: kind {kind!r} is not a schedule kind; {hint}use one of {', '.join(kinds())}"
        )
    try:
        return from_dict(merged)
    except (ScheduleError, TypeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{source}: {message}") from None
