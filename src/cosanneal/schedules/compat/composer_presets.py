r"""Composer preset: ``CosineAnnealingWithWarmupScheduler`` as a :class:`~cosanneal.Cosine`.

Followed: ``composer/optim/scheduler.py`` of mosaicml/composer at commit
``0f1df8bbb65a6c2eadff4093e85a1f00908d30ef`` (the version read for this preset).
Composer was **not run** (it cannot be installed beside torch 2.13); its documented formula is the
test reference. Composer's schedulers return a multiplier of the optimizer's LR; the preset takes
that LR as ``base_lr`` and is evaluated at Composer's batch count (``state.timestamp.batch``).

Composer times are accepted as written for Composer: ``100`` or ``"100ba"`` (batches = optimizer
steps here), ``"2ep"``, ``"0.1dur"`` or a ``composer.core.Time``-like object with ``value`` and
``unit``. Samples, tokens and seconds are refused. ``scale_schedule_ratio`` is not supported (it is
1.0, Composer's default).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules import durations
from cosanneal.schedules.cosine import Cosine

__all__ = ["composer_cosine_with_warmup"]

_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*(ba|st|ep|dur)?\s*$")
_UNITS = {"ba": "ba", "st": "ba", "batch": "ba", "ep": "ep", "epoch": "ep", "dur": "dur", "duration": "dur"}


def _time(name: str, value: Any) -> tuple[Decimal, str]:
    """Parse a Composer time into ``(amount, unit)`` with unit ``"ba"``, ``"ep"`` or ``"dur"``."""
    if hasattr(value, "unit") and hasattr(value, "value"):  # composer.core.Time
        unit_name = str(getattr(value.unit, "value", value.unit)).lower()
        amount = value.value
        if unit_name not in _UNITS or isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ScheduleError(f"{name} must be in batches, epochs or dur, got {value!r}")
        number = v.number(name, amount, ge=0.0)
        return (Decimal(amount) if isinstance(amount, int) else Decimal(repr(number))), _UNITS[unit_name]
    if isinstance(value, str):
        match = _TIME.match(value)
        if match is None:
            raise ScheduleError(
                f"{name} must be batches ('100ba' or 100), epochs ('2ep') or a fraction ('0.1dur'), got {value!r}"
            )
        return Decimal(match.group(1)), _UNITS[match.group(2) or "ba"]
    return Decimal(v.integer(name, value)), "ba"


def _whole(name: str, amount: Decimal, unit: str, original: Any) -> int:
    if amount != amount.to_integral_value():
        raise ScheduleError(
            f"{name} in {'batches' if unit == 'ba' else 'epochs'} must be whole, got {original!r}"
        )
    return int(amount)


def _batches(
    name: str, time: tuple[Decimal, str], original: Any, max_duration: Any, dataloader_len: int | None
) -> int | None:
    """Composer's ``_convert_time`` to batches (``int`` truncation); ``None`` if it needs more context."""
    amount, unit = time
    if unit == "ba":
        return _whole(name, amount, unit, original)
    if unit == "ep":
        epochs = _whole(name, amount, unit, original)
        return None if dataloader_len is None else epochs * dataloader_len
    if max_duration is None:
        return None
    max_amount, max_unit = _time("max_duration", max_duration)
    if max_unit == "dur":
        raise ScheduleError(f"max_duration must be in batches or epochs, got {max_duration!r}")
    frac = float(amount)
    if max_unit == "ep":
        if dataloader_len is None:
            return None
        return int(frac * dataloader_len * _whole("max_duration", max_amount, "ep", max_duration))
    return int(frac * _whole("max_duration", max_amount, "ba", max_duration))


def composer_cosine_with_warmup(
    base_lr: float,
    t_warmup: Any,
    t_max: Any = "1dur",
    alpha_f: float = 0.0,
    *,
    max_duration: Any = None,
    dataloader_len: int | None = None,
) -> Cosine:
    r"""Composer's ``CosineAnnealingWithWarmupScheduler`` (per batch) as a :class:`~cosanneal.Cosine`.

    With ``W = t_warmup``, ``M = t_max`` (``t_max`` *includes* the warmup) and ``t`` in batches:

    .. math::
        \mathrm{lr}(t) = \mathrm{base\_lr} \times \begin{cases}
            t / W, & t < W \\
            \alpha_f + (1 - \alpha_f)\,\tfrac12\,(1 + \cos(\pi \min(1, (t - W)/(M - W)))), & t \ge W
        \end{cases}

    Times that Composer converts with ``max_duration`` or the dataloader length (``"0.1dur"``,
    ``"2ep"``) are resolved here with Composer's own rules (``int`` truncation) when
    ``max_duration`` (and, for epochs, ``dataloader_len``) are given. Without them, two times in
    the same unit give an unbound schedule to ``bind()`` later (``"Nep"`` is exact; ``"Fdur"``
    rounds the warmup to the nearest step where Composer truncates).

    Args:
        base_lr: the optimizer's LR, which Composer multiplies by the scheduler's factor (> 0).
        t_warmup: warmup length (batches, ``"Nba"``, ``"Nep"`` or ``"Fdur"``).
        t_max: total length including the warmup (Composer's default ``"1dur"``); > ``t_warmup``.
        alpha_f: final LR multiplier (0..1).
        max_duration: the Trainer's ``max_duration`` (batches or ``"Nep"``), to resolve ``dur``.
        dataloader_len: batches per epoch, to resolve epochs.

    Returns:
        ``Cosine(peak_lr=base_lr, min_ratio=alpha_f, warmup_steps=W, cycle_steps=M - W)``.

    Raises:
        ScheduleError: ``t_max <= t_warmup`` (Composer then holds ``base_lr`` forever), times in
            units that cannot be combined without ``max_duration``/``dataloader_len``, or a value
            out of range.

    Example:
        Hand check, ``base_lr = 0.1``, ``W = 10``, ``M = 110``, ``alpha_f = 0.1``: at ``t = 5`` the
        factor is ``5/10``; at ``t = 60``, ``tau = 1/2`` and the factor is ``0.1 + 0.9 * 0.5 = 0.55``;
        at ``t = 110`` it is ``0.1``.

        >>> s = composer_cosine_with_warmup(0.1, "10ba", t_max="110ba", alpha_f=0.1)
        >>> s(5), s(10), round(s(60), 12), round(s(110), 12)
        (0.05, 0.1, 0.055, 0.01)
        >>> composer_cosine_with_warmup(0.1, "0.1dur", max_duration=1000).cycle_steps
        900
        >>> composer_cosine_with_warmup(0.1, "0.1dur").bind(total_steps=1000).warmup_steps
        100
    """
    peak = v.number("base_lr", base_lr, gt=0.0)
    ratio = v.number("alpha_f", alpha_f, ge=0.0, le=1.0)
    if dataloader_len is not None:
        dataloader_len = v.integer("dataloader_len", dataloader_len, ge=1)
    warm, total = _time("t_warmup", t_warmup), _time("t_max", t_max)
    w_steps = 0 if warm[0] == 0 else _batches("t_warmup", warm, t_warmup, max_duration, dataloader_len)
    m_steps = _batches("t_max", total, t_max, max_duration, dataloader_len)
    if w_steps is not None and m_steps is not None:
        if m_steps <= w_steps:
            raise _not_after(t_warmup, t_max, f" ({m_steps} <= {w_steps} batches)")
        return Cosine(peak_lr=peak, min_ratio=ratio, warmup_steps=w_steps, cycle_steps=m_steps - w_steps)
    if warm[1] != total[1] and w_steps != 0:
        raise ScheduleError(
            f"t_warmup={t_warmup!r} and t_max={t_max!r} need max_duration= (and dataloader_len= for epochs) "
            "to be combined; pass them or give both in the same unit"
        )
    unit = total[1]
    if total[0] <= warm[0]:
        raise _not_after(t_warmup, t_max, "")
    cycle = durations.parse("t_max", f"{total[0] - warm[0]}{unit}")
    warmup = 0 if warm[0] == 0 else durations.parse("t_warmup", f"{warm[0]}{unit}")
    return Cosine(peak_lr=peak, min_ratio=ratio, warmup_steps=warmup, cycle_steps=cycle)


def _not_after(t_warmup: Any, t_max: Any, detail: str) -> ScheduleError:
    return ScheduleError(
        f"t_max must be > t_warmup, got t_max={t_max!r} and t_warmup={t_warmup!r}{detail} "
        "(Composer holds base_lr forever after the warmup then; use a constant schedule)"
    )
