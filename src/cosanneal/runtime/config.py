"""The training config: typed sections read from TOML/YAML/JSON plus ``--set key=value`` overrides.

Every key is checked once, when the config is loaded: an unknown key, a wrong type or a bad value raises
:class:`~cosanneal.errors.ConfigError` with one line naming the dotted key and the fix, e.g.
``optimizer.lrr: unknown key; allowed: name, lr, momentum, ...``.

Example:
    >>> cfg = config_from_dict({"epochs": 3, "schedule": {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"}})
    >>> cfg.epochs, cfg.optimizer.name, cfg.schedule["kind"]
    (3, 'sgd', 'cosine')
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cosanneal.errors import ConfigError, SpecError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``[model]``: a built-in model by ``name`` or a user's ``entry = "pkg.module:function"``."""

    name: str = "cnn"
    entry: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``[data]``: a built-in data set by ``name`` or ``entry`` returning ``(train, val)`` datasets."""

    name: str = "digits"
    entry: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class GroupConfig:
    """``[[optimizer.groups]]``: parameters whose name matches the regex ``match`` get these options."""

    match: str
    lr_scale: float = 1.0
    weight_decay: float | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """``[optimizer]``: SGD or AdamW.

    The LR comes from the schedule (absolute); a group's ``lr_scale`` multiplies it for the parameters
    that group matches.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None
    groups: tuple[GroupConfig, ...] = ()


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """``[scheduler]``: how the PyTorch scheduler counts updates and whether momentum is annealed."""

    count: Literal["optimizer", "manual"] = "optimizer"
    momentum: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``[eval]``: evaluate every ``every_steps`` updates, or at every epoch end when it is not set."""

    every_steps: int | None = None
    batch_size: int = 512


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: the policy handed to :class:`~cosanneal.runtime.checkpoints.Checkpoints`."""

    enabled: bool = True
    keep_last: int = 3
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    keep_cycle_ends: bool = True
    every_steps: int | None = None
    every_seconds: float | None = None
    at_restarts: bool = True
    async_write: bool = False


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """``[guard]``: the non-finite guard (skip, then roll back and adjust the schedule, then stop)."""

    enabled: bool = True
    max_consecutive: int = 3
    on_exhausted: Literal["rollback", "stop"] = "rollback"
    lr_factor: float = 0.5
    adjust: Literal["peak", "floor"] = "peak"
    max_rollbacks: int = 2


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    """``[early_stopping]``: restart-aware early stopping on cycle-end metrics (off unless enabled)."""

    enabled: bool = False
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience_cycles: int = 2
    min_delta: float = 0.0


@dataclasses.dataclass(frozen=True)
class TelemetryConfig:
    """``[telemetry]``: sinks and buffering of the per-update telemetry."""

    tensorboard: bool = True
    prometheus_port: int | None = None  # serve /metrics on this port (0: any free port) while training
    prometheus_address: str = "127.0.0.1"
    prometheus_textfile: str | None = None  # node-exporter textfile written atomically at the end
    mlflow_tracking_uri: str | None = None  # e.g. "sqlite:///mlflow.db" or a directory / server URL
    mlflow_experiment: str = "cosanneal"
    every: int = 1  # record per-update scalars every N-th update (events and restarts are always exact)
    flush_rows: int = 1000
    flush_seconds: float = 1.0
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class DebugConfig:
    """``[debug]``: fault injection for drills and tests (NaN loss at given updates, a delay per step)."""

    inject_nan_at: tuple[int, ...] = ()
    sleep_per_step: float = 0.0
    lr_trace_dir: str | None = None  # every rank writes lr-rank<r>.json there (DDP agreement checks)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training job. ``schedule`` is a schedule dict (``kind`` + parameters; durations allowed)."""

    name: str = "run"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    max_steps: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    schedule: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"}
    )
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    guard: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    telemetry: TelemetryConfig = dataclasses.field(default_factory=TelemetryConfig)
    debug: DebugConfig = dataclasses.field(default_factory=DebugConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (tuples as lists), e.g. for the run store's params."""
        out: dict[str, Any] = _plain(dataclasses.asdict(self))
        return out


_POSITIVE = {
    "epochs",
    "batch_size",
    "max_steps",
    "eval.every_steps",
    "eval.batch_size",
    "checkpoint.keep_last",
    "checkpoint.every_steps",
    "checkpoint.every_seconds",
    "guard.max_consecutive",
    "guard.lr_factor",
    "early_stopping.patience_cycles",
    "telemetry.every",
    "telemetry.flush_rows",
    "telemetry.flush_seconds",
    "optimizer.eps",
    "optimizer.grad_clip",
}
_NON_NEGATIVE = {
    "seed",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "guard.max_rollbacks",
    "debug.sleep_per_step",
    "early_stopping.min_delta",
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        type(None): "none",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the dataclass's shape."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a table of options, got {value!r}")
        return _build(tp, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must be {_type_name(tp)}, got none")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: must be {_type_name(tp)}, got {value!r}"
        )
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    return value


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"{dotted}: unknown key; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(dotted, value, hints[key])
        if value is not None and dotted in _POSITIVE and not kwargs[key] > 0:
            raise ConfigError(f"{dotted}: must be > 0, got {value!r}")
        if value is not None and dotted in _NON_NEGATIVE and not kwargs[key] >= 0:
            raise ConfigError(f"{dotted}: must be >= 0, got {value!r}")
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(f"{where}: required key is missing")
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a config mapping and return a :class:`TrainConfig`.

    Raises:
        ConfigError: one line naming the dotted key and the fix.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a table of options, got {type(data).__name__}")
    cfg: TrainConfig = _build(TrainConfig, data)
    if cfg.amp == "fp16" and cfg.scheduler.count != "optimizer":
        raise ConfigError(
            "scheduler.count: amp = 'fp16' needs count = 'optimizer', so updates GradScaler skips do not advance the schedule"
        )
    if "kind" not in cfg.schedule:
        raise ConfigError('schedule.kind: required key is missing (e.g. kind = "cosine")')
    for i, group in enumerate(cfg.optimizer.groups):
        try:
            re.compile(group.match)
        except re.error as exc:
            raise ConfigError(f"optimizer.groups[{i}].match: not a valid regular expression ({exc})") from exc
        if not group.lr_scale > 0:
            raise ConfigError(f"optimizer.groups[{i}].lr_scale: must be > 0, got {group.lr_scale!r}")
    return cfg


def load_config(path: str | Path | None, sets: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML/YAML/JSON config file (or none), apply ``--set key=value`` overrides, validate.

    Example:
        >>> load_config(None, ["epochs=2", "optimizer.name=adamw"]).optimizer.name
        'adamw'
    """
    from cosanneal.schedules.spec import apply_overrides, read_mapping

    try:
        data: dict[str, Any] = dict(read_mapping(path)) if path is not None else {}
        data = apply_overrides(data, sets)
    except SpecError as exc:
        raise ConfigError(str(exc)) from exc
    return config_from_dict(data)
