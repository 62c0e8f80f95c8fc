r"""An optax schedule computed by ``jax.numpy`` from the update count, equal to the numpy closed form.

:class:`OptaxSchedule` wraps any cosanneal schedule ``s`` as the callable optax expects,
``lr = schedule(count)``, for ``optax.sgd(learning_rate=...)``, ``optax.inject_hyperparams`` or a
hand-written ``optax.scale_by_schedule``. The learning rate is the schedule's own formula, written
in ``jax.numpy`` (see :mod:`cosanneal.schedules._traced`), so it traces into ``jax.jit``, ``vmap``
and ``grad`` like optax's own schedules: no host callback and no table of LR values.

Count convention: optax counts updates from 0 and gives ``schedule(count)`` to the update number
``count + 1``; cosanneal's step 0 is the first update too, so the first update uses ``s(0)``:

.. math:: \mathrm{lr}_{\mathrm{update}\ k}\ (k = 1, 2, \dots) = s(k - 1) = \mathtt{schedule}(\mathrm{count} = k - 1)

Precision: with ``jax_enable_x64`` the result is float64 and agrees with ``s`` to 1e-12 relative;
without it (JAX's default) every boundary still falls on the same integer count (integer
arithmetic on the int32 count) and the values are float32, within a few float32 roundings of the
peak (measured: at most 4 ``eps32 * peak``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules._traced import Programs
from cosanneal.schedules.base import Schedule, check_step, check_steps

__all__ = ["OptaxSchedule"]


class _JaxOps:
    """The :class:`~cosanneal.schedules._traced.ArrayOps` of ``jax.numpy``."""

    def __init__(self, wide: bool) -> None:
        self.wide = wide
        self._float: Any = jnp.float64 if wide else jnp.float32
        self._int: Any = jnp.int64 if wide else jnp.int32

    def const(self, value: float) -> Any:
        return jnp.asarray(value, dtype=self._float)

    def iconst(self, value: int) -> Any:
        return jnp.asarray(value, dtype=self._int)

    def table(self, values: Sequence[float]) -> Any:
        return jnp.asarray(np.asarray(values, dtype=np.float64), dtype=self._float)

    def itable(self, values: Sequence[int]) -> Any:
        return jnp.asarray(np.asarray(values, dtype=np.int64), dtype=self._int)

    def to_float(self, x: Any) -> Any:
        return jnp.asarray(x).astype(self._float)

    def to_int(self, x: Any) -> Any:
        return jnp.asarray(x).astype(self._int)

    def take(self, table: Any, index: Any) -> Any:
        return jnp.take(table, index, mode="clip")

    def cos(self, x: Any) -> Any:
        return jnp.cos(x)

    def sin(self, x: Any) -> Any:
        return jnp.sin(x)

    def log1p(self, x: Any) -> Any:
        return jnp.log1p(x)

    def exp(self, x: Any) -> Any:
        return jnp.exp(x)

    def sqrt(self, x: Any) -> Any:
        return jnp.sqrt(x)

    def floor(self, x: Any) -> Any:
        return jnp.floor(x)

    def power(self, a: Any, b: Any) -> Any:
        return jnp.power(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return jnp.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return jnp.maximum(a, b)

    def floor_divide(self, a: Any, b: Any) -> Any:
        return jnp.floor_divide(a, b)

    def mod(self, a: Any, b: Any) -> Any:
        return jnp.remainder(a, b)

    def logical_and(self, a: Any, b: Any) -> Any:
        return jnp.logical_and(a, b)

    def logical_or(self, a: Any, b: Any) -> Any:
        return jnp.logical_or(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return jnp.where(cond, a, b)

    def logical_not(self, a: Any) -> Any:
        return jnp.logical_not(a)


def _x64() -> bool:
    """Whether JAX computes in 64 bits now (``jax_enable_x64``)."""
    return bool(jax.dtypes.canonicalize_dtype(np.float64) == np.float64)


def _host_count(count: Any) -> np.ndarray | None:
    """A Python or numpy count as an int64 array (checked: >= 0, whole); ``None`` for a jax array."""
    if isinstance(count, jax.Array):
        return None
    if isinstance(count, bool) or not isinstance(count, (numbers.Real, np.ndarray, Sequence)):
        raise ScheduleError(f"count must be an integer (or an array of them) >= 0, got {count!r}")
    if isinstance(count, numbers.Real):
        steps = np.asarray(check_step(count))  # names the value as given: "got -1"
    else:
        steps = check_steps(cast(Any, count))
    if not np.array_equal(steps, np.floor(steps)):
        bad = steps[steps != np.floor(steps)].flat[0]
        raise ScheduleError(f"count must be a whole number of updates, got {float(bad)!r}")
    return steps.astype(np.int64)


class OptaxSchedule:
    """A cosanneal schedule as an optax schedule: ``lr = OptaxSchedule(s)(count)``, traced by JAX.

    Formula: ``OptaxSchedule(s)(count) = s(count)`` for every integer ``count >= 0`` (optax's update
    counter, starting at 0); boundaries (warmup end, restarts, milestones) at exactly the same count
    as ``s``, values in float64 with ``jax_enable_x64`` (1e-12 relative) or float32 (a few float32
    roundings of the peak). A negative count gives NaN (a traced function cannot raise).

    Args:
        schedule: any cosanneal schedule (or its :meth:`~cosanneal.schedules.base.Schedule.to_dict`
            mapping), with its durations bound to steps.

    Raises:
        ScheduleError: the schedule is not a schedule, still has unbound durations, or cannot be
            computed exactly with JAX's current precision (an
            :class:`~cosanneal.schedules._traced.UntraceableScheduleError` saying what to change).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from cosanneal import Cosine
        >>> sgdr = Cosine(peak_lr=0.1, warmup_steps=10, cycle_steps=100, cycle_mult=2, max_cycles=None)
        >>> lr = OptaxSchedule(sgdr)
        >>> [round(float(lr(t)), 6) for t in (0, 5, 10, 60, 110, 310)]
        [0.0, 0.05, 0.1, 0.05, 0.1, 0.1]
        >>> counts = jnp.arange(400)
        >>> bool(jnp.allclose(jax.jit(jax.vmap(lr))(counts), sgdr(range(400)), atol=1e-8))
        True
        >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
        >>> state = opt.init({"w": jnp.zeros(3)})
        >>> float(state.hyperparams["learning_rate"]) == float(lr(0))
        True
    """

    def __init__(self, schedule: Schedule | Mapping[str, Any]) -> None:
        self._program = Programs(schedule)
        self.schedule = self._program.schedule
        self._program(_x64())  # validate now, not at the first traced call

    def __call__(self, count: Any) -> jax.Array:
        """LR at update count ``count`` (an integer, or an integer array of any shape)."""
        wide = _x64()
        ops = _JaxOps(wide)
        host = _host_count(count)
        if host is not None:
            limit = 2**53 if wide else 2**31 - 1
            if host.size and int(host.max()) > limit:
                raise ScheduleError(f"count must be <= {limit} here, got {int(host.max())}")
            n = jnp.asarray(host, dtype=ops._int)
        else:
            if not jnp.issubdtype(count.dtype, jnp.integer):
                raise ScheduleError(
                    f"count must be an integer array (optax's update count), got dtype {count.dtype}; "
                    "cast it with .astype(int)"
                )
            n = count.astype(ops._int)
        out: jax.Array = self._program(wide)(ops, n)
        return out

    def __repr__(self) -> str:
        return f"OptaxSchedule({self.schedule!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OptaxSchedule) and other.schedule == self.schedule

    def __hash__(self) -> int:
        return hash((OptaxSchedule, self.schedule))
