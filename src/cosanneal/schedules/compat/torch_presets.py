"""PyTorch presets: ``torch.optim.lr_scheduler`` cosine schedules as cosanneal schedules.

Each function takes the PyTorch scheduler's own parameter names (plus ``base_lr``, the optimizer's
``lr``) and returns a schedule whose value at update ``t`` equals ``optimizer.param_groups[0]["lr"]``
after ``t`` calls of ``scheduler.step()``, to 1e-12 relative (1e-15 absolute near zero). Where a
PyTorch scheduler keeps going past its horizon (``CosineAnnealingLR`` climbs back up after
``T_max``) the preset holds its floor; see ``docs/compat.md``.
"""

from __future__ import annotations

from cosanneal.errors import ScheduleError
from cosanneal.schedules import _validate as v
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.onecycle import OneCycle

__all__ = [
    "torch_cosine_annealing_lr",
    "torch_cosine_annealing_warm_restarts",
    "torch_linear_warmup_cosine",
    "torch_one_cycle_lr",
]


def _floor(base_lr: float, eta_min: float) -> None:
    base = v.number("base_lr", base_lr, gt=0.0)
    if v.number("eta_min", eta_min, ge=0.0) > base:
        raise ScheduleError(f"eta_min must be <= base_lr ({base_lr!r}), got {eta_min!r}")


def torch_cosine_annealing_lr(base_lr: float, T_max: int, eta_min: float = 0.0) -> Cosine:  # noqa: N803
    """``CosineAnnealingLR(optimizer, T_max, eta_min)`` with ``optimizer``'s ``lr = base_lr``.

    ``lr(t) = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2`` for ``t <= T_max``; PyTorch
    then climbs back up (period ``2 T_max``), this schedule holds ``eta_min``.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        T_max: steps of the half cosine (an integer >= 1).
        eta_min: the floor (0 <= eta_min <= base_lr).

    Returns:
        ``Cosine(base_lr, min_lr=eta_min, cycle_steps=T_max)``.

    Example:
        >>> s = torch_cosine_annealing_lr(0.1, T_max=100, eta_min=0.001)
        >>> s(0), round(s(50), 12), s(100), s(150)
        (0.1, 0.0505, 0.001, 0.001)
    """
    _floor(base_lr, eta_min)
    t_max = v.integer("T_max", T_max, ge=1)
    return Cosine(peak_lr=base_lr, min_lr=eta_min, cycle_steps=t_max)


def torch_cosine_annealing_warm_restarts(
    base_lr: float,
    T_0: int,  # noqa: N803
    T_mult: int = 1,  # noqa: N803
    eta_min: float = 0.0,
) -> Cosine:
    """``CosineAnnealingWarmRestarts(optimizer, T_0, T_mult, eta_min)`` stepped once per update (SGDR).

    Cycle ``i`` lasts ``T_0 T_mult^i`` steps and anneals from ``base_lr`` to ``eta_min``; restarts
    go on forever, as in PyTorch.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        T_0: length of the first cycle (an integer >= 1).
        T_mult: cycle length multiplier (an integer >= 1).
        eta_min: the floor (0 <= eta_min <= base_lr).

    Returns:
        ``Cosine(base_lr, min_lr=eta_min, cycle_steps=T_0, cycle_mult=T_mult, max_cycles=None)``.

    Example:
        >>> s = torch_cosine_annealing_warm_restarts(1.0, T_0=10, T_mult=2)
        >>> s.restarts(100), s(10), s(29) < s(30) == 1.0
        ([10, 30, 70], 1.0, True)
    """
    _floor(base_lr, eta_min)
    t_0 = v.integer("T_0", T_0, ge=1)
    t_mult = v.integer("T_mult", T_mult, ge=1)
    return Cosine(peak_lr=base_lr, min_lr=eta_min, cycle_steps=t_0, cycle_mult=t_mult, max_cycles=None)


def torch_linear_warmup_cosine(
    base_lr: float,
    start_factor: float,
    warmup_iters: int,
    T_max: int,  # noqa: N803
    eta_min: float = 0.0,
) -> Cosine:
    """``SequentialLR`` of ``LinearLR`` warmup and ``CosineAnnealingLR``, switching at ``warmup_iters``.

    The PyTorch call is ``SequentialLR(optimizer, [LinearLR(optimizer, start_factor,
    total_iters=warmup_iters), CosineAnnealingLR(optimizer, T_max, eta_min)], milestones=[warmup_iters])``.
    PyTorch restarts the cosine from ``base_lr`` at the milestone, so the warmup rises linearly from
    ``start_factor * base_lr`` over ``warmup_iters`` steps and the cosine reaches ``eta_min`` at
    ``warmup_iters + T_max``; PyTorch then climbs back up, this schedule holds ``eta_min``.

    Args:
        base_lr: the optimizer's initial LR (> 0).
        start_factor: ``LinearLR``'s first multiplier (0 < start_factor <= 1).
        warmup_iters: ``LinearLR``'s ``total_iters`` and the milestone (an integer >= 0).
        T_max: ``CosineAnnealingLR``'s half period (an integer >= 1).
        eta_min: the floor (0 <= eta_min <= base_lr).

    Returns:
        ``Cosine(base_lr, min_lr=eta_min, warmup_steps=warmup_iters,
        warmup_start_lr=start_factor * base_lr, cycle_steps=T_max)``.

    Example:
        >>> s = torch_linear_warmup_cosine(1.0, start_factor=0.1, warmup_iters=10, T_max=100)
        >>> round(s(0), 12), round(s(5), 12), s(10), round(s(60), 12), s(110), s(200)
        (0.1, 0.55, 1.0, 0.5, 0.0, 0.0)
    """
    _floor(base_lr, eta_min)
    factor = v.number("start_factor", start_factor, gt=0.0, le=1.0)
    warmup = v.integer("warmup_iters", warmup_iters)
    t_max = v.integer("T_max", T_max, ge=1)
    return Cosine(
        peak_lr=base_lr,
        min_lr=eta_min,
        warmup_steps=warmup,
        warmup_start_lr=float(base_lr) * factor,
        cycle_steps=t_max,
    )


def torch_one_cycle_lr(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> OneCycle:
    """``OneCycleLR(optimizer, max_lr, total_steps, ...)``, LR and momentum (``cycle_momentum=True``).

    Parameters are ``OneCycleLR``'s, in its order (``cycle_momentum`` is the scheduler's business:
    the momentum curve is :meth:`OneCycle.momentum`). ``total_steps`` wins over
    ``epochs * steps_per_epoch``, as in PyTorch. PyTorch raises past ``total_steps``; this schedule
    holds the final LR from step ``total_steps - 1``.

    Returns:
        ``OneCycle(max_lr, total_steps, ...)``.

    Example:
        >>> s = torch_one_cycle_lr(0.1, epochs=10, steps_per_epoch=10)
        >>> s.total_steps, round(s(0), 12), round(s(29), 9), float(s.momentum(0))
        (100, 0.004, 0.1, 0.95)
    """
    if total_steps is None:
        if epochs is None or steps_per_epoch is None:
            raise ScheduleError("give total_steps, or epochs and steps_per_epoch (OneCycleLR needs one)")
        total_steps = v.integer("epochs", epochs, ge=1) * v.integer("steps_per_epoch", steps_per_epoch, ge=1)
    return OneCycle(
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
