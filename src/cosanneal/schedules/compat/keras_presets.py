r"""Keras presets: ``CosineDecay`` and ``CosineDecayRestarts`` as :class:`~cosanneal.Cosine` values.

Both take Keras' own parameter names and return a :class:`~cosanneal.Cosine` that gives the same
learning rate as ``keras.optimizers.schedules`` (Keras 3.15, computed in float64) at every step.
Keras computes in ``floatx()`` (float32 unless ``keras.config.set_floatx("float64")``), so a
float32 Keras run differs from these values by float32 rounding (about 1e-7 relative).

Lengths (``decay_steps``, ``warmup_steps``, ``first_decay_steps``) accept whole or fractional steps
or a cosanneal duration (``"500st"``, ``"3ep"``, ``"0.9dur"``), resolved later by ``bind()``.
"""

from __future__ import annotations

from typing import Any

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules import durations
from cosanneal.schedules.cosine import Cosine

__all__ = ["keras_cosine_decay", "keras_cosine_decay_restarts"]


def _length(name: str, value: Any, *, whole: bool = False) -> Any:
    """A Keras step count: a number > 0 (an integer >= 0 when ``whole``) or a duration string."""
    parsed = durations.parse(name, value)
    if durations.is_unbound(parsed):
        return parsed
    if whole:
        return v.integer(name, parsed)
    v.number(name, parsed, gt=0.0)
    return parsed


def keras_cosine_decay(
    initial_learning_rate: float,
    decay_steps: float | str,
    alpha: float = 0.0,
    warmup_target: float | None = None,
    warmup_steps: int | str = 0,
) -> Cosine:
    r"""``keras.optimizers.schedules.CosineDecay`` as a :class:`~cosanneal.Cosine`.

    Without ``warmup_target`` (``I = initial_learning_rate``, ``D = decay_steps``):

    .. math:: \mathrm{lr}(t) = I\,\bigl(\alpha + (1-\alpha)\tfrac12(1+\cos(\pi \min(t, D)/D))\bigr)

    With ``warmup_target`` ``P`` and ``W = warmup_steps``: a linear warmup from ``I`` to ``P`` over
    ``W`` steps, then the same decay from ``P`` to ``alpha P`` over the next ``D`` steps (Keras'
    ``decay_steps`` excludes the warmup, exactly like ``Cosine.cycle_steps``). After the decay the
    LR holds ``alpha`` times its start, as Keras does.

    Args:
        initial_learning_rate: Keras' ``initial_learning_rate`` (> 0; with a warmup, >= 0 and
            <= ``warmup_target``).
        decay_steps: length of the cosine decay (> 0), warmup excluded.
        alpha: final LR as a fraction of the decay's start (0..1).
        warmup_target: LR at the end of the warmup; ``None`` means no warmup.
        warmup_steps: length of the linear warmup (whole steps); needs ``warmup_target``.

    Returns:
        ``Cosine(peak_lr, min_ratio=alpha, warmup_steps, warmup_start_lr, cycle_steps=decay_steps)``.

    Raises:
        ScheduleError: a parameter is out of range, or ``warmup_steps`` is given without
            ``warmup_target`` (Keras silently ignores it then; cosanneal refuses the ambiguity).

    Example:
        >>> s = keras_cosine_decay(0.0, 100, alpha=0.1, warmup_target=0.2, warmup_steps=10)
        >>> s(5), s(10), round(s(60), 12), round(s(110), 12), round(s(10**6), 12)
        (0.1, 0.2, 0.11, 0.02, 0.02)
    """
    start = v.number("initial_learning_rate", initial_learning_rate, ge=0.0)
    ratio = v.number("alpha", alpha, ge=0.0, le=1.0)
    decay = _length("decay_steps", decay_steps)
    warmup = _length("warmup_steps", warmup_steps, whole=True)
    if warmup_target is None:
        if warmup != 0:
            raise ScheduleError(
                f"warmup_steps={warmup_steps!r} needs warmup_target (Keras ignores warmup_steps without it); "
                "set warmup_target or drop warmup_steps"
            )
        v.number("initial_learning_rate", initial_learning_rate, gt=0.0)
        return Cosine(peak_lr=start, min_ratio=ratio, cycle_steps=decay)
    target = v.number("warmup_target", warmup_target, gt=0.0)
    if start > target:
        raise ScheduleError(
            f"initial_learning_rate must be <= warmup_target ({warmup_target!r}) for a warmup, "
            f"got {initial_learning_rate!r}"
        )
    return Cosine(
        peak_lr=target,
        min_ratio=ratio,
        warmup_steps=warmup,
        warmup_start_lr=start,
        cycle_steps=decay,
    )


def keras_cosine_decay_restarts(
    initial_learning_rate: float,
    first_decay_steps: float | str,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> Cosine:
    r"""``keras.optimizers.schedules.CosineDecayRestarts`` as an endless :class:`~cosanneal.Cosine`.

    Cycle ``i`` lasts ``first_decay_steps * t_mul**i`` steps (boundaries may be fractional with
    ``t_mul = 1.5``); inside it, with progress ``p`` in [0, 1) and ``I = initial_learning_rate``:

    .. math:: \mathrm{lr} = \alpha I + (1-\alpha)\, I\, m^i\, \tfrac12 (1 + \cos(\pi p))

    The floor ``alpha * I`` is absolute and ``m_mul`` decays only the height above it, which is
    ``Cosine``'s ``peak_decay_mode="amplitude"``. Restarts never end (``max_cycles=None``).

    Args:
        initial_learning_rate: LR at step 0 (> 0).
        first_decay_steps: length of the first cycle (> 0; may be fractional or a duration).
        t_mul: cycle length multiplier (>= 1; Keras returns NaN after a finite time for < 1).
        m_mul: amplitude multiplier per restart (> 0).
        alpha: floor as a fraction of ``initial_learning_rate`` (0..1).

    Returns:
        ``Cosine(peak_lr=I, min_ratio=alpha, cycle_steps=first_decay_steps, cycle_mult=t_mul,
        peak_decay=m_mul, peak_decay_mode="amplitude", max_cycles=None)``.

    Example:
        >>> s = keras_cosine_decay_restarts(1.0, 10, t_mul=1.5, m_mul=0.5, alpha=0.2)
        >>> s.restarts(60)
        [10, 25, 47.5]
        >>> s(0), round(s(10), 12), round(s(25), 12), round(s(10 + 7.5), 12)
        (1.0, 0.6, 0.4, 0.4)
    """
    peak = v.number("initial_learning_rate", initial_learning_rate, gt=0.0)
    first = _length("first_decay_steps", first_decay_steps)
    mult = v.number("t_mul", t_mul, gt=0.0)
    if mult < 1.0:
        raise ScheduleError(
            f"t_mul must be >= 1, got {t_mul!r} (Keras' CosineDecayRestarts turns NaN once the shrinking "
            "cycles run out)"
        )
    decay = v.number("m_mul", m_mul, gt=0.0)
    ratio = v.number("alpha", alpha, ge=0.0, le=1.0)
    return Cosine(
        peak_lr=peak,
        min_ratio=ratio,
        cycle_steps=first,
        cycle_mult=mult,
        peak_decay=decay,
        peak_decay_mode="amplitude",
        max_cycles=None,
    )
