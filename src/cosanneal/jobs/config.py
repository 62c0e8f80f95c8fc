"""The training config: typed sections read from TOML/YAML/JSON plus ``--set key=value`` overrides.

Every key is checked once, when the config is loaded: an unknown key, a wrong type or a bad value raises
:class:`~cosanneal.errors.ConfigError` with one line naming the dotted key and the fix, e.g.
``optimizer.lrr: unknown key; allowed: name, lr, momentum, ...``. Numbers are checked against the ranges
in ``_RANGES`` (``optimizer.momentum`` in ``[0, 1)``, ``telemetry.prometheus_port`` in ``[0, 65535]``,
...) and every integer must fit run.db's 64-bit integers (``< 2**63``). The schedule is built once
(unbound) to check its parameters, the built-in model's and data set's options are checked against
their signatures, and the metrics that checkpoints and early stopping rank by must be ones the built-in
task reports (:data:`BUILTIN_METRICS`; :func:`check_metric_names` does the same check for any task).

Example:
    >>> cfg = config_from_dict({"epochs": 3, "schedule": {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"}})
    >>> cfg.epochs, cfg.optimizer.name, cfg.schedule["kind"]
    (3, 'sgd', 'cosine')
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import shlex
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cosanneal.errors import ConfigError, SpecError

#: The schedule of a config without a ``[schedule]`` table: one cosine decay over the whole run, to 0.
#: ``--set schedule.<key>=<value>`` on such a config changes this schedule's ``<key>``.
DEFAULT_SCHEDULE: dict[str, Any] = {"kind": "cosine", "peak_lr": 0.1, "cycle_steps": "1dur"}

#: The metrics each built-in task reports at every evaluation (as recorded: ``val_`` + the task's name).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("val_loss", "val_acc"),
    "language_model": ("val_loss", "val_ppl"),
}

#: The metrics the built-in classification task (the default) reports at every evaluation.
BUILTIN_METRICS: tuple[str, ...] = TASK_METRICS["classification"]

#: Every integer in a config is below this: run.db stores steps, counts and the seed as SQLite INTEGERs.
INT_LIMIT = 2**63


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``[model]``: a built-in model by ``name`` or a user's ``entry = "pkg.module:function"``."""

    name: str = "cnn"
    entry: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``[data]``: a built-in data set by ``name`` or ``entry`` returning ``(train, val)`` datasets.

    The data sets are map-style (``__getitem__`` + ``__len__``) or iterable
    (``torch.utils.data.IterableDataset``); batches come through a ``torch.utils.data.DataLoader``
    with ``num_workers`` worker processes (0: in the training process), ``pin_memory`` (on CUDA
    only) and ``prefetch_factor`` batches in flight per worker. See :mod:`cosanneal.jobs.loading`.
    """

    name: str = "digits"
    entry: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_workers: int = 0
    pin_memory: bool = True
    prefetch_factor: int = 2


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """``[task]``: what one training step computes and what an evaluation reports.

    A built-in task by ``name`` (``classification``: cross-entropy and accuracy; ``language_model``:
    next-token cross-entropy and perplexity) or a user's ``entry``: ``"pkg.module:make_task"`` (called
    with ``options``) returning an object with ``training_step(model, batch)`` and
    ``evaluate(model, batches)``, or ``"pkg.module"`` defining those two functions. See
    :mod:`cosanneal.jobs.tasks`.
    """

    name: str = "classification"
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
    """``[optimizer]``: SGD, AdamW, any ``torch.optim`` optimizer by class name, or ``module:Class``.

    The LR comes from the schedule (absolute); a group's ``lr_scale`` multiplies it for the parameters
    that group matches. ``momentum``/``nesterov`` are SGD's, ``betas``/``eps`` AdamW's; every other
    optimizer takes its keyword arguments from ``options`` (see :mod:`cosanneal.jobs.optimizers`).
    """

    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None
    groups: tuple[GroupConfig, ...] = ()
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    """``[checkpoint]``: the policy handed to :class:`~cosanneal.runtime.checkpoints.Checkpoints`.

    ``best_mode`` defaults to the metric's direction: ``min`` for a loss, perplexity or error rate
    (:func:`cosanneal.runs.lower_is_better`), ``max`` for anything else (accuracy, BLEU, ...).
    """

    enabled: bool = True
    keep_last: int = 3
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    keep_cycle_ends: bool = True
    every_steps: int | None = None
    every_seconds: float | None = None
    at_restarts: bool = True
    async_write: bool = False
    sharded: bool = False


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
    """``[early_stopping]``: restart-aware early stopping on cycle-end metrics (off unless enabled).

    ``mode`` defaults to the metric's direction, as ``checkpoint.best_mode`` does.
    """

    enabled: bool = False
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience_cycles: int = 2
    min_delta: float = 0.0


@dataclasses.dataclass(frozen=True)
class SinkEntry:
    """One of ``telemetry.sinks`` given as a table: ``{entry = "pkg.module:make_sink", options = {...}}``."""

    entry: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


#: The built-in sinks ``telemetry.sinks`` can name without an import path.
BUILTIN_SINKS = ("tensorboard", "prometheus", "mlflow", "wandb")


@dataclasses.dataclass(frozen=True)
class TelemetryConfig:
    """``[telemetry]``: sinks and buffering of the per-update telemetry.

    ``sinks`` lists extra sinks: a built-in by name (one of :data:`BUILTIN_SINKS`),
    a factory ``"package.module:make_sink"``, or ``{entry = ..., options = {...}}``; see
    :mod:`cosanneal.jobs.sink_factories`. ``tensorboard = true``, a Prometheus port or textfile and an
    MLflow URI add their built-in sink as before.

    ``price_per_device_hour`` turns on the Prometheus sink's cost metrics: the cost so far
    (``price x devices x wall hours`` of every session of the run) and the planned total
    (``price x devices x planned updates x planned_step_seconds / 3600``, the seconds per update as
    measured when not given); see :mod:`cosanneal.sinks.prometheus`.
    """

    sinks: tuple[str | SinkEntry, ...] = ()
    tensorboard: bool = True
    prometheus_port: int | None = None  # serve /metrics on this port (0: any free port) while training
    prometheus_address: str = "127.0.0.1"
    prometheus_textfile: str | None = None  # node-exporter textfile, rewritten atomically at every flush
    mlflow_tracking_uri: str | None = None  # e.g. "sqlite:///mlflow.db" or a directory / server URL
    mlflow_experiment: str = "cosanneal"
    every: int = 1  # record per-update scalars every N-th update (events and restarts are always exact)
    flush_rows: int = 1000
    flush_seconds: float = 1.0
    progress: bool = True
    progress_seconds: float = 30.0  # seconds between two progress lines when stderr is not a terminal
    # cost metrics of the Prometheus sink (cosanneal_cost, cosanneal_planned_cost); None: none exported
    price_per_device_hour: float | None = None
    devices: int | None = None  # devices the price applies to; None: the world size (WORLD_SIZE, 1 alone)
    planned_step_seconds: float | None = None  # wall seconds per update planned; None: as measured


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
    """``[slurm]``: requeue the job after its preemption checkpoint when SLURM warns it.

    Under SLURM (``SLURM_JOB_ID`` set), ``signal`` (``sbatch --signal=USR1@120`` sends SIGUSR1 two
    minutes before the time limit) makes the trainer checkpoint at its next step boundary, then rank 0
    runs ``<scontrol> requeue <job id>`` and the job exits; SLURM starts it again and it resumes from
    the checkpoint. Outside SLURM, or with ``requeue = false``, the signal only checkpoints and stops.
    """

    requeue: bool = True
    signal: Literal["SIGUSR1", "SIGUSR2", "SIGTERM"] = "SIGUSR1"
    scontrol: str = "scontrol"  # the command (may hold words: "sudo -n scontrol")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``[distributed]``: the process group under ``torchrun`` (ignored when the job runs alone).

    ``timeout_seconds`` bounds ``init_process_group`` and every collective of the job (torch's
    ``timeout``); ``None`` keeps the backend's default (30 minutes for gloo, 10 for NCCL). Under
    ``torchrun --max-restarts`` a shorter one turns a group that never forms (a restarted rendezvous
    whose workers wait for each other forever) into a failed attempt the agent restarts.
    """

    timeout_seconds: float | None = None


#: The rules ``resume.world_size`` names (see :mod:`cosanneal.jobs.world_size`).
WORLD_SIZE_RULES = ("accumulate", "linear", "sqrt", "refuse")


@dataclasses.dataclass(frozen=True)
class ResumeConfig:
    """``[resume]``: how a job resumes from a checkpoint saved by another number of ranks.

    The schedule counts updates of a global batch ``B = batch_size x world_size``. ``world_size``:

    * ``"accumulate"`` (default): keep ``B``: each of the ``w'`` ranks takes ``B / w'`` samples per
      update in micro-batches no larger than before (accumulation grows or shrinks); the schedule, the
      LR and the data position continue exactly. Refused (exit 2, one line) when ``w'`` does not divide ``B``.
    * ``"linear"`` / ``"sqrt"``: keep ``batch_size`` per rank, so ``B`` changes by ``r = w' / w``; the LR
      is scaled by ``r`` or ``sqrt(r)`` from the switch on and the rest of the schedule is re-bound in
      samples (:class:`~cosanneal.schedules.rebatch.Rebatch`).
    * ``"refuse"``: any other world size is refused (exit 2, one line).
    """

    world_size: Literal["accumulate", "linear", "sqrt", "refuse"] = "accumulate"


@dataclasses.dataclass(frozen=True)
class DebugConfig:
    """``[debug]``: fault injection for drills and tests (NaN loss at given updates, a delay per step)."""

    inject_nan_at: tuple[int, ...] = ()
    sleep_per_step: float = 0.0
    lr_trace_dir: str | None = None  # every rank writes lr-rank<r>.json there (DDP agreement checks)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training job. ``schedule`` is a schedule dict (``kind`` + parameters; durations allowed).

    ``batch_size`` is the samples of one optimizer update on one rank; ``accumulate = k`` splits it
    into ``k`` micro-batches of ``batch_size / k`` whose gradients are summed before the update (the
    schedule advances once per update, never per micro-batch). ``max_steps`` caps the run at a number
    of updates or a duration (``"2e6sp"`` samples, ``"5e7tok"`` tokens, ``"3ep"``). ``compile = true``
    runs the model and the optimizer step under ``torch.compile`` with tensor LRs (no recompiles as
    the LR changes), with ``compile_backend`` (``inductor`` by default; ``aot_eager`` needs no C++ compiler).
    """

    name: str = "run"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    max_steps: int | str | None = None
    accumulate: int = 1
    compile: bool = False
    compile_backend: Literal["inductor", "aot_eager", "eager", "cudagraphs"] = "inductor"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    schedule: dict[str, Any] = dataclasses.field(default_factory=lambda: copy.deepcopy(DEFAULT_SCHEDULE))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    guard: GuardConfig = dataclasses.field(default_factory=GuardConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    telemetry: TelemetryConfig = dataclasses.field(default_factory=TelemetryConfig)
    slurm: SlurmConfig = dataclasses.field(default_factory=SlurmConfig)
    resume: ResumeConfig = dataclasses.field(default_factory=ResumeConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    debug: DebugConfig = dataclasses.field(default_factory=DebugConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (tuples as lists), e.g. for the run store's params."""
        out: dict[str, Any] = _plain(dataclasses.asdict(self))
        return out


@dataclasses.dataclass(frozen=True)
class _Range:
    """An interval a number must lie in; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_bound(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_bound(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_bound(self.low)}, {_bound(self.high)}{right}"


def _bound(x: float | None) -> str:
    return "2**63" if x == INT_LIMIT else f"{x:g}"


_POSITIVE = _Range(0, low_open=True)
_NON_NEGATIVE = _Range(0)
_UNIT = _Range(0, 1, high_open=True)  # momenta and betas: [0, 1)
_SECONDS = _Range(0, 3600)  # waits the loop or the writer thread sleeps through (at most an hour)

#: The allowed range of every numeric key (``[]`` stands for any list index).
_RANGES: dict[str, _Range] = {
    "seed": _Range(0, INT_LIMIT, high_open=True),
    "epochs": _POSITIVE,
    "batch_size": _POSITIVE,
    "max_steps": _POSITIVE,
    "accumulate": _POSITIVE,
    "data.num_workers": _Range(0, 256),
    "data.prefetch_factor": _POSITIVE,
    "optimizer.momentum": _UNIT,
    "optimizer.weight_decay": _NON_NEGATIVE,
    "optimizer.betas[]": _UNIT,
    "optimizer.eps": _POSITIVE,
    "optimizer.grad_clip": _POSITIVE,
    "optimizer.groups[].lr_scale": _POSITIVE,
    "optimizer.groups[].weight_decay": _NON_NEGATIVE,
    "scheduler.momentum[]": _UNIT,
    "eval.every_steps": _POSITIVE,
    "eval.batch_size": _POSITIVE,
    "checkpoint.keep_last": _POSITIVE,
    "checkpoint.every_steps": _POSITIVE,
    "checkpoint.every_seconds": _POSITIVE,
    "guard.max_consecutive": _POSITIVE,
    "guard.lr_factor": _Range(0, 1, low_open=True, high_open=True),
    "guard.max_rollbacks": _NON_NEGATIVE,
    "early_stopping.patience_cycles": _POSITIVE,
    "early_stopping.min_delta": _NON_NEGATIVE,
    "telemetry.prometheus_port": _Range(0, 65535),  # 0: any free port
    "telemetry.every": _POSITIVE,
    "telemetry.flush_rows": _POSITIVE,
    "telemetry.flush_seconds": _Range(0, 3600, low_open=True),
    "telemetry.progress_seconds": _POSITIVE,
    "telemetry.price_per_device_hour": _POSITIVE,
    "telemetry.devices": _Range(1, INT_LIMIT, high_open=True),
    "telemetry.planned_step_seconds": _POSITIVE,
    "debug.inject_nan_at[]": _NON_NEGATIVE,
    "debug.sleep_per_step": _SECONDS,
    "distributed.timeout_seconds": _Range(0, 86400, low_open=True),
}

#: String keys that must not be empty (a run name, a path, a URI, an address, a module:function).
_NON_EMPTY = {
    "name",
    "model.name",
    "optimizer.name",
    "model.entry",
    "data.name",
    "data.entry",
    "task.name",
    "task.entry",
    "telemetry.prometheus_address",
    "telemetry.prometheus_textfile",
    "telemetry.mlflow_tracking_uri",
    "telemetry.mlflow_experiment",
    "debug.lr_trace_dir",
}
_ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_INDEX = re.compile(r"\[\d+\]")


def _show(value: Any) -> str:
    """``repr(value)``, short enough for one line (a huge integer is described, not printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return (
            f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'thousands of'} digits"
        )
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_range(key: str, value: float, given: Any) -> None:
    """Raise unless ``value`` lies in the range of ``key`` (and, for an integer, below 2**63).

    ``given`` is the value as the user wrote it, for the message.
    """
    allowed = _RANGES.get(_INDEX.sub("[]", key))
    if allowed is not None and not allowed.holds(value):
        raise ConfigError(f"{key}: must be {allowed}, got {_show(given)}")
    if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
        raise ConfigError(
            f"{key}: must be < 2**63 (run.db stores it as a 64-bit integer), got {_show(value)}"
        )


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
    if origin is dict or dataclasses.is_dataclass(tp):
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
            raise ConfigError(f"{key}: must be a table of options, got {_show(value)}")
        return _build(tp, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {_type_name(tp)}, got {_show(value)}")
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
                if isinstance(value, Mapping) and dataclasses.is_dataclass(arg):
                    raise  # a table meant as that table: its own error names the key inside it
                if arg in (int, str) and type(value) is arg:
                    raise  # an integer out of range, an empty string: that type's own error
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: must be {_type_name(tp)}, got {_show(value)}"
        )
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must be a list of {len(args)} values, got {_show(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a table, got {_show(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_show(value)}")
        _check_range(key, value, value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {_show(value)}")
        _check_range(key, number, value)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {_show(value)}")
        if key in _NON_EMPTY and not value.strip():
            raise ConfigError(f"{key}: must not be empty")
        return value
    return value


def _did_you_mean(prefix: str, key: Any, fields: Iterable[str]) -> str:
    """``"did you mean 'momentum'? "`` for a near miss, a pointer for a key that lives elsewhere, or ``""``.

    Example:
        >>> _did_you_mean("optimizer", "momentun", ["name", "momentum"]), _did_you_mean("", "zzz", ["name"])
        ("did you mean 'momentum'? ", '')
        >>> _did_you_mean("optimizer", "lr", ["name"])
        "the LR comes from the schedule: set schedule.peak_lr (or a group's lr_scale); "
    """
    import difflib

    if prefix == "optimizer" and key in ("lr", "learning_rate"):
        return "the LR comes from the schedule: set schedule.peak_lr (or a group's lr_scale); "
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        part = (
            key if isinstance(key, str) and key.isidentifier() else repr(key)
        )  # a key with "\n" stays one line
        dotted = f"{prefix}.{part}" if prefix else part
        if key not in fields:
            raise ConfigError(
                f"{dotted}: unknown key; {_did_you_mean(prefix, key, fields)}allowed: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(dotted, value, hints[key])
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


def check_metric_names(config: TrainConfig, reported: Iterable[str]) -> None:
    """Refuse a metric that checkpoints or early stopping rank by and the task does not report.

    The built-in task's names (:data:`BUILTIN_METRICS`) are checked when the config is loaded; a
    trainer whose task reports other names calls this with them at the first evaluation. Only the
    keys in use are checked: ``checkpoint.best_metric`` when checkpoints are enabled,
    ``early_stopping.metric`` when early stopping is.

    Args:
        config: the training config.
        reported: the names of the metrics one evaluation of the task returns (``val_loss``, ...).

    Raises:
        ConfigError: one line naming the key, the metric and the names allowed.

    Example:
        >>> cfg = config_from_dict({"checkpoint": {"best_metric": "val_acc", "best_mode": "max"}})
        >>> check_metric_names(cfg, ["val_loss", "val_acc"])
        >>> check_metric_names(cfg, ["val_loss", "val_ppl"])
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: checkpoint.best_metric: 'val_acc' is not a metric the task reports; use one of val_loss, val_ppl
    """
    names = sorted(set(reported))
    allowed = f"use one of {', '.join(names)}" if names else "the task reports no metric"
    in_use = (
        ("checkpoint.best_metric", config.checkpoint.enabled, config.checkpoint.best_metric),
        ("early_stopping.metric", config.early_stopping.enabled, config.early_stopping.metric),
    )
    for key, enabled, metric in in_use:
        if enabled and metric not in names:
            raise ConfigError(f"{key}: {metric!r} is not a metric the task reports; {allowed}")


def _check_schedule(schedule: Mapping[str, Any]) -> None:
    """Build the schedule once, unbound (durations stay as written), so a bad parameter fails at load."""
    from cosanneal.errors import ScheduleError
    from cosanneal.schedules import from_dict, kinds

    if "kind" not in schedule:
        raise ConfigError('schedule.kind: required key is missing (e.g. kind = "cosine")')
    kind = schedule["kind"]
    if not isinstance(kind, str) or kind not in kinds():
        raise ConfigError(f"schedule.kind: must be one of {', '.join(kinds())}, got {_show(kind)}")
    try:
        from_dict(schedule)
    except ScheduleError as exc:
        message = str(exc).splitlines()[0]
        unknown = re.match(r"unknown parameter '(\w+)' for kind '\w+'; (allowed: .*)", message)
        if unknown:
            raise ConfigError(f"schedule.{unknown[1]}: unknown key for kind {kind!r}; {unknown[2]}") from None
        raise ConfigError(
            f"schedule.{message}" if re.match(r"\w+ ", message) else f"schedule: {message}"
        ) from None
    except (OverflowError, TypeError, ValueError) as exc:  # a value the schedule's own checks did not expect
        key = next((k for k, v in schedule.items() if isinstance(v, int) and abs(v) >= 2**1023), None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"schedule.{key}: must be a finite number" if key else f"schedule: {first}"
        raise ConfigError(where) from None


def _check_builtins(cfg: TrainConfig) -> None:
    """The built-in model's and data set's names and options (a ``module:function`` entry is checked when built)."""
    from cosanneal.zoo.catalog import check_data_options, check_model_options  # no torch import

    for key, entry in (("model.entry", cfg.model.entry), ("data.entry", cfg.data.entry)):
        if entry is not None and not _ENTRY.fullmatch(entry):
            raise ConfigError(f"{key}: must look like 'package.module:function', got {_show(entry)}")
    if cfg.model.entry is None:
        check_model_options(cfg.model.name, cfg.model.options)
    if cfg.data.entry is None:
        check_data_options(cfg.data.name, cfg.data.options)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a config mapping and return a :class:`TrainConfig`.

    Raises:
        ConfigError: one line naming the dotted key and the fix.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a table of options, got {type(data).__name__}")
    cfg: TrainConfig = _build(TrainConfig, data)
    cfg = _default_modes(cfg, data)
    if cfg.amp == "fp16" and cfg.scheduler.count != "optimizer":
        raise ConfigError(
            "scheduler.count: amp = 'fp16' needs count = 'optimizer', so updates GradScaler skips do not advance the schedule"
        )
    _check_schedule(cfg.schedule)
    opt = cfg.optimizer
    if not (opt.name.isidentifier() or _ENTRY.fullmatch(opt.name)):
        raise ConfigError(
            f"optimizer.name: must be 'sgd', 'adamw', a torch.optim class name or 'package.module:Class', "
            f"got {_show(opt.name)}"
        )
    for key in opt.options:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"optimizer.options: {_show(key)} is not a keyword argument name")
    if opt.name.lower() == "sgd" and opt.nesterov and opt.momentum <= 0:
        raise ConfigError(
            f"optimizer.nesterov: needs optimizer.momentum > 0, got momentum = {opt.momentum!r}; "
            "raise the momentum or set nesterov = false"
        )
    for i, group in enumerate(opt.groups):
        try:
            re.compile(group.match)
        except re.error as exc:
            raise ConfigError(f"optimizer.groups[{i}].match: not a valid regular expression ({exc})") from exc
    momentum = cfg.scheduler.momentum
    if momentum is not None and momentum[1] > momentum[0]:
        raise ConfigError(
            f"scheduler.momentum: must be [max, min] with min <= max, got {list(momentum)!r}; swap the two"
        )
    for i, sink in enumerate(cfg.telemetry.sinks):
        entry = sink if isinstance(sink, str) else sink.entry
        if entry not in BUILTIN_SINKS and not _ENTRY.fullmatch(entry):
            raise ConfigError(
                f"telemetry.sinks[{i}]: must be one of {', '.join(BUILTIN_SINKS)} or 'package.module:function', "
                f"got {_show(entry)}"
            )
    _check_cost(cfg.telemetry)
    if not shlex_words(cfg.slurm.scontrol):
        raise ConfigError(
            f"slurm.scontrol: must name a command, got {_show(cfg.slurm.scontrol)}; use 'scontrol'"
        )
    _check_builtins(cfg)
    _check_loop(cfg)
    if cfg.task.entry is None:
        check_metric_names(cfg, TASK_METRICS[cfg.task.name])
    return cfg


def shlex_words(command: str) -> list[str]:
    """``command`` split like a shell would, ``[]`` when it holds no word or unbalanced quotes."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def _check_cost(tel: TelemetryConfig) -> None:
    """The cost keys need a price, and the price a Prometheus sink to export the cost."""
    if tel.price_per_device_hour is None:
        for key in ("devices", "planned_step_seconds"):
            if getattr(tel, key) is not None:
                raise ConfigError(
                    f"telemetry.{key}: needs telemetry.price_per_device_hour (the cost metrics are off "
                    "without a price); set a price or remove it"
                )
        return
    listed = {s if isinstance(s, str) else s.entry for s in tel.sinks}
    if tel.prometheus_port is None and tel.prometheus_textfile is None and "prometheus" not in listed:
        raise ConfigError(
            "telemetry.price_per_device_hour: the cost is exported by the Prometheus sink, and there is "
            "none; set telemetry.prometheus_port or telemetry.prometheus_textfile"
        )


def _default_modes(cfg: TrainConfig, data: Mapping[str, Any]) -> TrainConfig:
    """A ranking mode not given follows its metric's name: ``min`` for a loss, perplexity or error, else ``max``."""
    from cosanneal.runs import lower_is_better

    def given(section: str, key: str) -> bool:
        table = data.get(section)
        return isinstance(table, Mapping) and key in table

    def mode(metric: str) -> Literal["min", "max"]:
        return "min" if lower_is_better(metric) else "max"

    if not given("checkpoint", "best_mode"):
        cfg = dataclasses.replace(
            cfg, checkpoint=dataclasses.replace(cfg.checkpoint, best_mode=mode(cfg.checkpoint.best_metric))
        )
    if not given("early_stopping", "mode"):
        cfg = dataclasses.replace(
            cfg, early_stopping=dataclasses.replace(cfg.early_stopping, mode=mode(cfg.early_stopping.metric))
        )
    return cfg


def _check_loop(cfg: TrainConfig) -> None:
    """The task, accumulation and run length: what the training loop itself needs."""
    from cosanneal.errors import ScheduleError
    from cosanneal.schedules import durations

    task = cfg.task
    if task.entry is not None and not (_ENTRY.fullmatch(task.entry) or _MODULE.fullmatch(task.entry)):
        raise ConfigError(
            f"task.entry: must look like 'package.module:make_task' or 'package.module', got {_show(task.entry)}"
        )
    if task.entry is None:
        if task.name not in TASK_METRICS:
            raise ConfigError(
                f"task.name: must be one of {', '.join(TASK_METRICS)} (or set task.entry), got {_show(task.name)}"
            )
        if task.options:
            raise ConfigError(
                f"task.options: the built-in task {task.name!r} takes no options, got {', '.join(map(str, task.options))}"
            )
    if cfg.batch_size % cfg.accumulate:
        divisors = [d for d in range(1, min(cfg.batch_size, 64) + 1) if cfg.batch_size % d == 0]
        raise ConfigError(
            f"accumulate: batch_size {cfg.batch_size} does not split into {cfg.accumulate} equal micro-batches; "
            f"use an accumulate that divides it ({', '.join(map(str, divisors[:8]))}) or change batch_size"
        )
    if isinstance(cfg.max_steps, str):
        try:
            parsed = durations.parse("max_steps", cfg.max_steps)
        except ScheduleError as exc:
            raise ConfigError(re.sub(r"^max_steps ", "max_steps: ", str(exc))) from None
        if isinstance(parsed, str) and parsed.endswith("dur"):
            raise ConfigError(
                f"max_steps: a fraction of the run cannot set the run's length, got {_show(cfg.max_steps)}; "
                "give updates, epochs ('3ep'), samples ('2e6sp') or tokens ('5e7tok')"
            )
        if isinstance(parsed, str) and float(re.sub(r"[a-z]+$", "", parsed)) <= 0:
            raise ConfigError(f"max_steps: must be > 0, got {_show(cfg.max_steps)}")
        if not isinstance(parsed, str):
            _check_range("max_steps", parsed, cfg.max_steps)
            if not float(parsed).is_integer():
                raise ConfigError(f"max_steps: must be a whole number of updates, got {_show(cfg.max_steps)}")


def load_config(path: str | Path | None, sets: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML/YAML/JSON config file (or none), apply ``--set key=value`` overrides, validate.

    A ``--set schedule.<key>=...`` on a config without a ``[schedule]`` table changes that key of the
    default schedule (:data:`DEFAULT_SCHEDULE`).

    Example:
        >>> load_config(None, ["epochs=2", "optimizer.name=adamw"]).optimizer.name
        'adamw'
        >>> load_config(None, ["schedule.peak_lr=0.02"]).schedule
        {'kind': 'cosine', 'peak_lr': 0.02, 'cycle_steps': '1dur'}
    """
    from cosanneal.schedules.spec import apply_overrides, read_mapping

    try:
        data: dict[str, Any] = dict(read_mapping(path)) if path is not None else {}
        if "schedule" not in data and any(pair.strip().startswith("schedule.") for pair in sets):
            data["schedule"] = copy.deepcopy(DEFAULT_SCHEDULE)
        data = apply_overrides(data, sets)
    except SpecError as exc:
        raise ConfigError(str(exc)) from exc
    return config_from_dict(data)
