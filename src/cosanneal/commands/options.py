"""What the commands share: one spelling per notion, the deprecated spellings, examples in ``--help``.

The vocabulary (docs/cli.md):

* ``--steps N``: the run length in optimizer updates, for every command that needs one (``plan``
  takes a budget such as ``90ep`` under the same name);
* ``-o/--output``: every file or directory a command writes;
* ``--run-dir``: the one run a command creates (``train``, ``demo``); commands that read runs take them
  as positional arguments (``report``, ``verify``, ``ensemble``);
* ``--set KEY=VALUE``: an override of the spec or config, repeatable.

The spellings of the previous release (``--total``, ``--total-steps``, ``--out``, ``--runs-dir``,
lr-find's ``--steps``) still work for one release: :func:`renamed` takes them and prints a deprecation
warning to stderr.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from cosanneal.errors import CosannealError

__all__ = [
    "ConfigArg",
    "DType",
    "DTypeOpt",
    "SetOpt",
    "StepsOpt",
    "StepsPerEpochOpt",
    "UsageError",
    "atomic_write",
    "examples",
    "fmt_number",
    "metric_names",
    "renamed",
    "warn",
]

T = TypeVar("T")


class UsageError(CosannealError, ValueError):
    """A command line that cannot be run as given (two spellings of one option, ...): exit 2."""


def warn(message: str) -> None:
    """Print ``warning: <message>`` to stderr."""
    typer.echo(f"warning: {message}", err=True)


def renamed(value: T | None, old_value: T | None, *, old: str, new: str) -> T | None:
    """The value of an option given under its new name or, with a deprecation warning, its old one.

    Example:
        >>> renamed(5, None, old="--total", new="--steps")
        5

    Raises:
        UsageError: both spellings were given.
    """
    if old_value is None:
        return value
    if value is not None:
        raise UsageError(f"{old} is the old spelling of {new}; give {new} only")
    warn(f"{old} is deprecated and will be removed in the next release; use {new}")
    return old_value


def examples(*lines: str) -> str:
    """The ``Examples:`` epilog of a command's ``--help``, one command line per line, kept as written.

    The epilog starts with click's no-rewrap marker (a backspace line), so the lines are not refilled.

    Example:
        >>> examples("cosanneal show sgdr.toml --steps 3000").splitlines()[-1]
        '  cosanneal show sgdr.toml --steps 3000'
    """
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (:func:`cosanneal.io.atomic_write_bytes`); an OS error is a user error."""
    from cosanneal.io import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CosannealError(f"cannot write {path}: {exc.strerror or exc}") from None


def fmt_number(x: float) -> str:
    """A number as short as it reads exactly: an integer without a point, else 6 significant digits.

    Example:
        >>> fmt_number(3000.0), fmt_number(0.1), fmt_number(float("inf"))
        ('3000', '0.1', 'inf')
    """
    if math.isinf(x):
        return "inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else f"{x:.6g}"


class DType(StrEnum):
    """Training precisions ``lint`` can check the floor against (the keys of ``lint.DTYPES``).

    ``fp16``/``bf16`` (and ``amp-*``) are autocast/AMP with fp32 master weights; ``pure-*`` are weights
    updated in half precision with no fp32 copy, where small updates are lost.
    """

    fp16 = "fp16"
    float16 = "float16"
    amp_fp16 = "amp-fp16"
    bf16 = "bf16"
    bfloat16 = "bfloat16"
    amp_bf16 = "amp-bf16"
    fp32 = "fp32"
    float32 = "float32"
    pure_fp16 = "pure-fp16"
    pure_float16 = "pure-float16"
    pure_bf16 = "pure-bf16"
    pure_bfloat16 = "pure-bfloat16"


SpecArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="SPEC",
        help="Schedule spec or training config (.toml, .yaml, .yml, .json); may be left out when --set "
        "gives kind. A training config's steps come from its epochs, batch size and data.",
        show_default=False,
    ),
]
ConfigArg = Annotated[
    Path, typer.Argument(metavar="CONFIG", help="Training config (TOML, YAML or JSON).", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a value (repeatable); dotted keys reach nested values: schedule.peak_lr=0.01.",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(
        "--steps",
        min=1,
        metavar="N",
        help="Run length in optimizer updates (default: a training config's length, else the schedule's end).",
        show_default=False,
    ),
]
StepsPerEpochOpt = Annotated[
    float | None,
    typer.Option(
        "--steps-per-epoch",
        min=0.0,
        metavar="N",
        help="Optimizer updates per epoch, for durations like '3ep' (a training config gives its own).",
        show_default=False,
    ),
]
DTypeOpt = Annotated[
    DType | None,
    typer.Option(
        "--dtype",
        help="Precision of the weight updates, to check the floor for underflow.",
        show_default=False,
    ),
]


#: Metric names offered by shell completion for ``--metric`` (any ``val_<name>`` a task reports works).
KNOWN_METRICS = ("val_loss", "val_acc", "val_ppl", "val_err", "train_loss")


def metric_names(incomplete: str) -> list[str]:
    """Shell completion of ``--metric``: the built-in tasks' metrics that start with ``incomplete``.

    Example:
        >>> metric_names("val_p")
        ['val_ppl']
    """
    return [m for m in KNOWN_METRICS if m.startswith(incomplete)]
