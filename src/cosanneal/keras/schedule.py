r"""A Keras ``LearningRateSchedule`` computed with ``keras.ops`` from the step, equal to the numpy closed form.

:class:`LearningRateSchedule` wraps any cosanneal schedule ``s`` for any Keras 3 optimizer:
``keras.optimizers.SGD(learning_rate=LearningRateSchedule(s))``. Keras calls it with the optimizer's
``iterations`` (the number of updates done, from 0), so update ``k = 1, 2, ...`` uses ``s(k - 1)``;
the LR is the schedule's own formula in ``keras.ops`` (see :mod:`cosanneal.schedules._traced`), so
it runs inside compiled train steps on every backend, without host callbacks.

Precision: on the torch backend the LR is computed in float64 with int64 steps and rounded once to
``keras.config.floatx()``, so a float32 LR is the float32 rounding of ``s(t)`` (within one float32
ulp). Elsewhere (jax, numpy, tensorflow; Keras' ops compute in 32 bits on jax and numpy even with
``jax_enable_x64``) it is computed in float32 with int32 steps: every boundary still falls on the
same integer step, the values are within a few float32 roundings of the peak.

Serialisation: ``get_config()`` is ``{"schedule": s.to_dict()}``; the class is registered as
``"cosanneal>LearningRateSchedule"``, so optimizers and whole models saved with ``model.save`` load
back with the same schedule (import :mod:`cosanneal.keras` first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    import keras
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    if exc.name != "tensorflow":
        raise
    raise ImportError(
        "cosanneal.keras: Keras found no backend (its default, tensorflow, is not installed); "
        "set KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras"
    ) from exc
import numpy as np

from cosanneal.errors import ScheduleError
from cosanneal.schedules._traced import Programs
from cosanneal.schedules.base import Schedule

__all__ = ["LearningRateSchedule"]

_ops = keras.ops


class _KerasOps:
    """The :class:`~cosanneal.schedules._traced.ArrayOps` of ``keras.ops`` (any backend)."""

    def __init__(self, wide: bool) -> None:
        self.wide = wide
        self._float = "float64" if wide else "float32"
        self._int = "int64" if wide else "int32"

    def const(self, value: float) -> Any:
        return _ops.convert_to_tensor(value, dtype=self._float)

    def iconst(self, value: int) -> Any:
        return _ops.convert_to_tensor(value, dtype=self._int)

    def table(self, values: Sequence[float]) -> Any:
        return _ops.convert_to_tensor(np.asarray(values, dtype=self._float))

    def itable(self, values: Sequence[int]) -> Any:
        return _ops.convert_to_tensor(np.asarray(values, dtype=self._int))

    def to_float(self, x: Any) -> Any:
        return _ops.cast(x, self._float)

    def to_int(self, x: Any) -> Any:
        return _ops.cast(x, self._int)

    def cos(self, x: Any) -> Any:
        return _ops.cos(x)

    def sin(self, x: Any) -> Any:
        return _ops.sin(x)

    def log1p(self, x: Any) -> Any:
        return _ops.log1p(x)

    def exp(self, x: Any) -> Any:
        return _ops.exp(x)

    def sqrt(self, x: Any) -> Any:
        return _ops.sqrt(x)

    # keras.ops promotes 64-bit results to 32 bits in floor, minimum, maximum and floor_divide (as
    # JAX without x64 does, on every backend); in float64/int64 these are built from ops that keep it
    def floor(self, x: Any) -> Any:
        if not self.wide:
            return _ops.floor(x)
        return x - _ops.mod(x, self.const(1.0))  # exact: the remainder of a float by 1 is exact

    def power(self, x: Any, y: Any) -> Any:
        return _ops.power(x, y)

    def minimum(self, a: Any, b: Any) -> Any:
        return _ops.where(a < b, a, b) if self.wide else _ops.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return _ops.where(a > b, a, b) if self.wide else _ops.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return _ops.where(cond, a, b)

    def take(self, table: Any, index: Any) -> Any:
        return _ops.take(table, index)

    def floor_divide(self, a: Any, b: Any) -> Any:
        if not self.wide:
            return _ops.floor_divide(a, b)
        q = self.to_int(self.floor(self.to_float(a) / self.to_float(b)))  # within one of the quotient
        r = a - q * b
        q = q - self.to_int(r < self.iconst(0))
        return q + self.to_int(a - q * b >= b)

    def mod(self, a: Any, b: Any) -> Any:
        return _ops.mod(a, b)

    def logical_and(self, a: Any, b: Any) -> Any:
        return _ops.logical_and(a, b)

    def logical_or(self, a: Any, b: Any) -> Any:
        return _ops.logical_or(a, b)

    def logical_not(self, a: Any) -> Any:
        return _ops.logical_not(a)


def _wide(step: Any) -> bool:
    """Whether ``keras.ops`` computes in float64 with int64 steps here: on the torch backend only.

    Keras maps 64-bit results to 32 bits in its ops on the jax and numpy backends (``result_type``
    follows JAX without x64, whatever ``jax_enable_x64`` says), and Apple's MPS device has no
    float64; there the program runs in float32/int32. TensorFlow is not verified in float64 and
    runs the float32/int32 program too.
    """
    if keras.backend.backend() != "torch":
        return False
    return getattr(getattr(step, "device", None), "type", None) != "mps"


@keras.saving.register_keras_serializable(package="cosanneal", name="LearningRateSchedule")
class LearningRateSchedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """A cosanneal schedule as a Keras learning-rate schedule: the LR at optimizer step ``t`` is ``s(t)``.

    Formula: ``LearningRateSchedule(s)(step) = s(step)`` for every integer ``step >= 0`` (Keras'
    ``optimizer.iterations``), cast to ``keras.config.floatx()``; boundaries at exactly the same
    step as ``s``. A negative step gives NaN.

    Args:
        schedule: any cosanneal schedule, or its :meth:`~cosanneal.schedules.base.Schedule.to_dict`
            mapping (what :meth:`get_config` holds), with durations bound to steps.

    Raises:
        ScheduleError: not a schedule, unbound durations, or a schedule this backend cannot compute
            exactly (an :class:`~cosanneal.schedules._traced.UntraceableScheduleError` saying what
            to change).

    Example:
        >>> import keras
        >>> from cosanneal import Cosine
        >>> sgdr = Cosine(peak_lr=0.1, cycle_steps=10, cycle_mult=2, max_cycles=None, min_lr=0.001)
        >>> lr = LearningRateSchedule(sgdr)
        >>> [round(float(lr(t)), 6) for t in (0, 5, 9, 10, 30)]
        [0.1, 0.0505, 0.003423, 0.1, 0.1]
        >>> LearningRateSchedule.from_config(lr.get_config()).schedule == sgdr
        True
        >>> opt = keras.optimizers.SGD(learning_rate=lr)
        >>> again = keras.optimizers.SGD.from_config(opt.get_config())
        >>> round(float(again.learning_rate), 6)  # the LR of the next update, s(iterations) = s(0)
        0.1
    """

    def __init__(self, schedule: Schedule | Mapping[str, Any]) -> None:
        self._program = Programs(schedule)
        self.schedule = self._program.schedule
        self._program(_wide(None))  # validate now, not at the first training step

    def __call__(self, step: Any) -> Any:
        """LR at optimizer step ``step`` (an integer or an integer tensor)."""
        if isinstance(step, bool) or (
            isinstance(step, (float, np.floating)) and not float(step).is_integer()
        ):
            raise ScheduleError(f"step must be a whole number of optimizer updates, got {step!r}")
        if isinstance(step, (float, np.floating)):
            step = int(step)
        n = _ops.convert_to_tensor(step)
        dtype = keras.backend.standardize_dtype(n.dtype)
        if not dtype.startswith(("int", "uint")):
            raise ScheduleError(
                f"step must be an integer tensor (the optimizer's iterations), got dtype {dtype}; "
                "cast it with keras.ops.cast(step, 'int32')"
            )
        wide = _wide(n)
        ops = _KerasOps(wide)
        lr = self._program(wide)(ops, ops.to_int(n))
        return _ops.cast(lr, keras.config.floatx())

    def get_config(self) -> dict[str, Any]:
        """``{"schedule": schedule.to_dict()}``."""
        return {"schedule": self.schedule.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LearningRateSchedule:
        """Rebuild from :meth:`get_config`."""
        return cls(config["schedule"])

    def __repr__(self) -> str:
        return f"LearningRateSchedule({self.schedule!r})"
