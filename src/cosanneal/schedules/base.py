"""The :class:`Schedule` base class, the kind registry and step handling.

A schedule is an immutable value: the learning rate at step ``t`` depends only on the schedule's
configuration and ``t``. Subclasses are frozen dataclasses that implement :meth:`Schedule._vector`
(and may add a faster :meth:`Schedule._scalar`); the base class validates steps, dispatches scalar
and array calls, and provides serialisation, fingerprints and duration binding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

from cosanneal.errors import ScheduleError
from cosanneal.schedules import durations

FloatArray = npt.NDArray[np.float64]
StepArray = npt.ArrayLike
S = TypeVar("S", bound="Schedule")

_REGISTRY: dict[str, type[Schedule]] = {}


def register(kind: str) -> Any:
    """Class decorator: make a schedule class constructible by :func:`from_dict` under ``kind``."""

    def wrap(cls: type[S]) -> type[S]:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise RuntimeError(f"schedule kind {kind!r} registered twice")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


def kinds() -> list[str]:
    """The registered schedule kinds, sorted."""
    return sorted(_REGISTRY)


class CycleInfo(NamedTuple):
    """Where a step falls: the cycle's ``index``, its first step ``start`` and its ``length`` in steps."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the documented field name
    start: float
    length: float


def _plain(value: Any) -> Any:
    """Turn a field value into JSON-ready data (schedules to dicts, tuples to lists)."""
    if isinstance(value, Schedule):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_number(value: float) -> int | float:
    """Return a whole float as an int, anything else unchanged (for readable step values)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def power(base: float, exponent: float) -> float:
    """``base ** exponent`` for one step, as ``np.power`` computes it over an array of exponents.

    On CPUs with AVX-512, numpy's array ``power`` runs a vectorised kernel whose results differ
    from the C library's ``pow`` by an ulp now and then, and with one exponent broadcast over an
    array it squares, roots or inverts exactly for ``2``, ``0.5`` and ``-1`` instead. So
    ``x ** y`` in Python can disagree with the array path. This runs the kernel an array of
    exponents gets (``lr * gamma ** k`` over steps ``k``); :func:`power_fixed` is the one for a
    fixed exponent over an array of bases. Either keeps ``schedule(t)`` bit-identical to
    ``schedule([t])`` on every machine.

    Example:
        >>> power(0.5, 2.0)
        0.25
    """
    return float(np.power(np.array([base]), np.array([exponent]))[0])


def power_fixed(base: float, exponent: float) -> float:
    """``base ** exponent`` as ``np.power(bases, exponent)`` computes it with one fixed exponent.

    Example:
        >>> power_fixed(9.0, 0.5)
        3.0
    """
    return float(np.power(base, exponent))


def check_step(t: Any) -> float:
    """Validate a scalar step and return it as a float."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise ScheduleError(f"step must be a number >= 0, got {t!r}")
    ft = float(t)
    if not (ft >= 0.0 and ft != math.inf):
        raise ScheduleError(f"step must be a finite number >= 0, got {t!r}")
    return ft


def check_steps(t: StepArray) -> FloatArray:
    """Validate an array of steps and return it as float64."""
    raw = np.asarray(t)
    if raw.dtype == np.bool_ or raw.dtype.kind not in "iuf":
        raise ScheduleError(f"steps must be numbers >= 0, got an array of {raw.dtype}")
    arr = np.array(raw, dtype=np.float64)  # always a fresh array: _vector may work in place
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0.0).all()):
        bad = arr[~(np.isfinite(arr) & (arr >= 0.0))].flat[0]
        raise ScheduleError(f"step must be a finite number >= 0, got {bad!r}")
    return arr


class Schedule(ABC):
    """Base class of every learning-rate schedule.

    Subclasses are frozen dataclasses. ``s(t)`` accepts an int, a float or an array of steps and
    returns a float or an array of the same shape. Steps must be finite and ``>= 0``.
    """

    kind: ClassVar[str] = ""
    #: Fields that accept duration strings (``"3ep"``, ``"0.05dur"``, ``"2e6sp"``, ``"5e7tok"``).
    duration_fields: ClassVar[tuple[str, ...]] = ()
    #: Duration fields that must be whole steps once bound.
    integer_duration_fields: ClassVar[tuple[str, ...]] = ()

    # ---- immutability -----------------------------------------------------------------------
    def __copy__(self: S) -> S:
        return self

    def __deepcopy__(self: S, memo: dict[int, Any]) -> S:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return (_rebuild, (type(self), fields))

    # ---- evaluation -------------------------------------------------------------------------
    @overload
    def __call__(self, t: float) -> float: ...

    @overload
    def __call__(self, t: np.ndarray | Sequence[float]) -> FloatArray: ...

    def __call__(self, t: Any) -> Any:
        """Learning rate at step ``t`` (a number, or an array evaluated without a Python loop)."""
        self.require_bound()
        if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
            return self._scalar(check_step(t))
        arr = check_steps(t)
        return self._vector(arr.reshape(-1)).reshape(arr.shape)

    def _scalar(self, t: float) -> float:
        """LR at one validated step. Subclasses may override with a faster pure-Python path."""
        return float(self._vector(np.array([t], dtype=np.float64))[0])

    @abstractmethod
    def _vector(self, t: FloatArray) -> FloatArray:
        """LR at an array of validated steps, same shape."""

    # ---- introspection ----------------------------------------------------------------------
    @property
    @abstractmethod
    def peak(self) -> float:
        """The largest LR the schedule ever gives (the reference for per-group scaling)."""

    @property
    def horizon(self) -> float | None:
        """The step from which the LR never changes again, or ``None`` if it changes forever."""
        return None

    def phase(self, t: float) -> str:
        """``"warmup"``, ``"anneal"`` or ``"hold"`` at step ``t``."""
        t = check_step(t)
        end = self.horizon
        return "hold" if end is not None and t >= end else "anneal"

    def cycle(self, t: float) -> CycleInfo:
        """The cycle containing step ``t``; schedules without restarts have one cycle."""
        check_step(t)
        end = self.horizon
        return CycleInfo(0, 0, math.inf if end is None else as_number(float(end)))

    def restarts(self, until: float) -> list[int | float]:
        """Steps before ``until`` where the LR restarts (jumps back up); none by default."""
        return []

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every parameter, with a ``kind`` key; :func:`from_dict` rebuilds an equal schedule."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def canonical(self) -> dict[str, Any]:
        """Like :meth:`to_dict` but without parameters left at their defaults (stable across versions)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            if default is not dataclasses.MISSING and value == default and type(value) is type(default):
                continue
            if isinstance(value, Schedule):
                out[f.name] = value.canonical()
            elif isinstance(value, tuple) and value and isinstance(value[0], Schedule):
                out[f.name] = [v.canonical() for v in value]
            else:
                out[f.name] = as_number(_plain(value))
        return out

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of :meth:`canonical`; equal schedules share it.

        Example:
            >>> from cosanneal import Cosine
            >>> Cosine(0.1, cycle_steps=100).fingerprint() == Cosine(0.1, cycle_steps=100.0).fingerprint()
            True
        """
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_fields(cls: type[S], fields: Mapping[str, Any]) -> S:
        """Build from a parameter mapping (without ``kind``), naming unknown parameters."""
        allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in fields if k not in allowed]
        if unknown:
            raise ScheduleError(
                f"unknown parameter {unknown[0]!r} for kind {cls.kind!r}; allowed: {', '.join(allowed)}"
            )
        try:
            return cls(**fields)
        except TypeError as exc:  # a required parameter is missing
            missing = [
                f.name
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
                and f.name not in fields
            ]
            if missing:
                raise ScheduleError(f"kind {cls.kind!r} needs parameter {missing[0]!r}") from exc
            raise

    # ---- durations --------------------------------------------------------------------------
    def unbound_fields(self) -> dict[str, str]:
        """Parameters still given in epochs, as a fraction of the run, in samples or in tokens."""
        return {
            name: getattr(self, name)
            for name in self.duration_fields
            if durations.is_unbound(getattr(self, name))
        }

    def require_bound(self) -> None:
        """Raise :class:`ScheduleError` if some length still needs :meth:`bind`.

        A schedule is immutable, so a passed check is remembered (outside the dataclass fields: it
        takes no part in equality, hashing, pickling or :meth:`to_dict`).
        """
        if "_bound_ok" in self.__dict__:
            return
        unbound = self.unbound_fields()
        if not unbound:
            self.__dict__["_bound_ok"] = True
            return
        name, value = next(iter(unbound.items()))
        keyword = durations.binding(value)
        counted = keyword in ("samples_per_update", "tokens_per_update")
        which = f"{keyword}=..." if counted else "total_steps=..., steps_per_epoch=..."
        raise ScheduleError(f"{name}={value!r} is not in steps yet; call .bind({which}) first")

    def bind(
        self: S,
        total_steps: float | None = None,
        steps_per_epoch: float | None = None,
        *,
        samples_per_update: float | None = None,
        tokens_per_update: float | None = None,
    ) -> S:
        r"""Return this schedule with every epoch, fraction, sample and token length resolved to steps.

        Formulas: ``"Nep"`` -> ``N * steps_per_epoch`` steps, ``"Fdur"`` -> ``F * total_steps`` steps,
        ``"Ssp"`` -> :math:`\lceil S / \mathrm{samples\_per\_update} \rceil` updates and ``"Ktok"`` ->
        :math:`\lceil K / \mathrm{tokens\_per\_update} \rceil` (exact; never fewer samples or tokens
        than asked, see :mod:`cosanneal.schedules.durations`); parameters that must be whole steps
        (warmup lengths) are rounded to the nearest integer.

        Args:
            total_steps: optimizer updates in the run, for ``"Fdur"``.
            steps_per_epoch: optimizer updates per epoch, for ``"Nep"``.
            samples_per_update: training samples one update consumes (batch size x gradient
                accumulation x world size), for ``"Ssp"``.
            tokens_per_update: tokens one update consumes (``samples_per_update`` x tokens per
                sample), for ``"Ktok"``.

        Raises:
            ScheduleError: a length needs a keyword that was not given, or a resolved length is
                invalid for its parameter.

        Example:
            >>> from cosanneal import Cosine
            >>> s = Cosine(0.1, warmup_steps="1ep", cycle_steps="0.5dur")
            >>> b = s.bind(total_steps=1000, steps_per_epoch=100)
            >>> (b.warmup_steps, b.cycle_steps)
            (100, 500)
            >>> Cosine(0.1, warmup_steps="1e5sp", cycle_steps="2e8tok").bind(
            ...     samples_per_update=256, tokens_per_update=256 * 2048).cycle_steps
            382
        """
        changes: dict[str, Any] = {}
        for name in self.duration_fields:
            value = getattr(self, name)
            if durations.is_unbound(value):
                resolved = durations.resolve(
                    name,
                    value,
                    total_steps=total_steps,
                    steps_per_epoch=steps_per_epoch,
                    samples_per_update=samples_per_update,
                    tokens_per_update=tokens_per_update,
                )
                if name in self.integer_duration_fields:
                    resolved = durations.round_steps(resolved)
                changes[name] = resolved
        return dataclasses.replace(self, **changes) if changes else self  # type: ignore[type-var]


def _rebuild(cls: type[S], fields: dict[str, Any]) -> S:
    return cls(**fields)


def from_dict(data: Mapping[str, Any]) -> Schedule:
    """Build any registered schedule from a mapping with a ``kind`` key.

    Example:
        >>> s = from_dict({"kind": "cosine", "peak_lr": 0.1, "cycle_steps": 100})
        >>> round(s(50), 6)
        0.05
    """
    if not isinstance(data, Mapping):
        raise ScheduleError(f"a schedule must be a mapping with a 'kind' key, got {data!r}")
    if "kind" not in data:
        raise ScheduleError(f"schedule needs a 'kind' key; one of: {', '.join(kinds())}")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in _REGISTRY:  # a list or a dict is no kind (nor hashable)
        raise ScheduleError(f"kind must be one of {', '.join(kinds())}; got {kind!r}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    return _REGISTRY[kind].from_fields(fields)
