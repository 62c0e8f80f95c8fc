"""timm preset: ``timm.scheduler.CosineLRScheduler`` stepped per update, as a :class:`~cosanneal.Cosine`.

The preset takes timm's own parameter names and reproduces ``CosineLRScheduler(...,
t_in_epochs=False)`` driven by ``step_update(num_updates=t)``: the optimizer's LR after that call
equals the schedule at ``t``, to 1e-12 relative (1e-15 absolute near zero), with one documented
exception: timm finds the cycle index with a floating-point logarithm when ``cycle_mul != 1``, and at
a restart that falls exactly on a whole step (``cycle_mul=0.8``: steps 180 and 244 for
``t_initial=100``) it can give that one step the end-of-cycle floor ``lr_min`` instead of the new
cycle's peak. This schedule restarts exactly there. timm's noise options are not reproduced.
"""

from __future__ import annotations

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules.cosine import Cosine

__all__ = ["timm_cosine"]


def timm_cosine(
    base_lr: float,
    t_initial: int,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
) -> Cosine:
    """``CosineLRScheduler(optimizer, t_initial, ..., t_in_epochs=False)`` with ``step_update``.

    Cycle ``i`` lasts ``t_initial * cycle_mul**i`` updates and anneals from
    ``base_lr * cycle_decay**i`` to ``lr_min`` along ``cos(pi (u / t_i)**k_decay)``; after
    ``cycle_limit`` cycles the LR holds ``lr_min``. The linear warmup from ``warmup_lr_init`` lasts
    ``warmup_t`` updates and comes before the first cycle when ``warmup_prefix`` is true, or overlays
    its start (timm's default) when false.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        t_initial: length of the first cycle in updates (an integer >= 1).
        lr_min: the floor (0 <= lr_min <= base_lr).
        cycle_mul: cycle length multiplier (> 0; below 1 the cycles shrink).
        cycle_decay: each cycle's peak is ``cycle_decay`` times the previous one (> 0).
        cycle_limit: number of cycles before holding ``lr_min`` (an integer >= 1).
        warmup_t: warmup length in updates (an integer >= 0; < ``t_initial`` unless ``warmup_prefix``).
        warmup_lr_init: LR at update 0 of the warmup (0 <= warmup_lr_init <= base_lr).
        warmup_prefix: warmup before the first cycle (true) or over its start (false).
        k_decay: k-decay exponent on the cycle progress (> 0).

    Returns:
        ``Cosine(base_lr, min_lr=lr_min, warmup_steps=warmup_t, warmup_start_lr=warmup_lr_init,
        cycle_steps=t_initial, cycle_mult=cycle_mul, peak_decay=cycle_decay, max_cycles=cycle_limit,
        k=k_decay, warmup_prefix=warmup_prefix)``.

    Example:
        >>> s = timm_cosine(0.1, t_initial=100, cycle_mul=2.0, cycle_decay=0.5, cycle_limit=3, warmup_t=5)
        >>> s(0), s(100), s(300), s.horizon, s(700)
        (0.0, 0.05, 0.025, 700.0, 0.0)
    """
    base = v.number("base_lr", base_lr, gt=0.0)
    if v.number("lr_min", lr_min, ge=0.0) > base:
        raise ScheduleError(f"lr_min must be <= base_lr ({base_lr!r}), got {lr_min!r}")
    if v.number("warmup_lr_init", warmup_lr_init, ge=0.0) > base:
        raise ScheduleError(f"warmup_lr_init must be <= base_lr ({base_lr!r}), got {warmup_lr_init!r}")
    t_init = v.integer("t_initial", t_initial, ge=1)
    v.number("cycle_mul", cycle_mul, gt=0.0)
    v.number("cycle_decay", cycle_decay, gt=0.0)
    v.number("k_decay", k_decay, gt=0.0)
    limit = v.integer("cycle_limit", cycle_limit, ge=1)
    warmup = v.integer("warmup_t", warmup_t)
    v.flag("warmup_prefix", warmup_prefix)
    if not warmup_prefix and warmup >= t_init:
        raise ScheduleError(
            f"warmup_t must be < t_initial ({t_init}) when warmup_prefix is false, got {warmup_t!r}"
        )
    return Cosine(
        peak_lr=base_lr,
        min_lr=lr_min,
        warmup_steps=warmup,
        warmup_start_lr=warmup_lr_init,
        cycle_steps=t_init,
        cycle_mult=cycle_mul,
        peak_decay=cycle_decay,
        max_cycles=limit,
        k=k_decay,
        warmup_prefix=warmup_prefix,
    )
