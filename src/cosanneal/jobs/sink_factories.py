"""Sinks from a config: the built-in ones and a user's, all built through one path.

``telemetry.sinks`` lists sinks beside the run store. Each one is a built-in name, a factory given as
``"package.module:make_sink"``, or a table ``{entry = "package.module:make_sink", options = {...}}``.
A factory is called once, on rank 0, with a :class:`SinkContext`. It returns an object with the run
store's :class:`~cosanneal.runtime.runstore.Sink` methods (``write(scalars, events)``, ``flush()``,
``close()``, and optionally ``rewind(step)``). It runs on the store's writer thread, never on the
training thread::

    # my_project/sinks.py
    def make_sink(context):
        return JsonlSink(context.run_dir / "rows.jsonl", **context.options)

    # config.toml
    [telemetry]
    sinks = ["my_project.sinks:make_sink", {entry = "my_project.sinks:make_sink", options = {every = 10}}]

The built-ins are made the same way:

* ``"tensorboard"`` writes event files to ``run_dir/tb``. ``telemetry.tensorboard = true`` adds it.
* ``"prometheus"`` serves ``/metrics`` or writes a textfile. ``telemetry.prometheus_port`` or
  ``prometheus_textfile`` adds it.
* ``"mlflow"`` logs to ``telemetry.mlflow_tracking_uri``, which adds it.
* ``"wandb"`` logs to a Weights & Biases run; only ``telemetry.sinks`` adds it. Its options are
  :data:`WANDB_OPTIONS` (``project``, ``entity``, ``name``, ``mode``, ``dir``, ``tags``, ``settings``).

For a built-in, the ``options`` of an entry override the ``[telemetry]`` keys of the same name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cosanneal.errors import ConfigError
from cosanneal.jobs.config import BUILTIN_SINKS, SinkEntry, TrainConfig
from cosanneal.runtime.runstore import Sink
from cosanneal.schedules.base import Schedule

__all__ = ["SinkContext", "build_sinks", "sink_entries"]


@dataclasses.dataclass(frozen=True)
class SinkContext:
    """What a sink factory is given.

    Attributes:
        run_dir: the run directory (absolute).
        name: the job's name (``name`` in the config).
        config: the whole training config as plain data (:meth:`TrainConfig.to_dict`).
        schedule: the bound schedule the run follows.
        options: this entry's ``options`` table (empty for a plain string entry).
    """

    run_dir: Path
    name: str
    config: Mapping[str, Any]
    schedule: Schedule
    options: Mapping[str, Any]


def sink_entries(cfg: TrainConfig) -> list[SinkEntry]:
    """Every sink the config asks for: the ``[telemetry]`` switches' built-ins, then ``telemetry.sinks``.

    A built-in that a switch adds and ``telemetry.sinks`` also lists is made once, with the listed
    entry's options.

    Example:
        >>> from cosanneal.jobs.config import config_from_dict
        >>> cfg = config_from_dict({"telemetry": {"sinks": ["pkg.mod:make"], "prometheus_port": 0}})
        >>> [e.entry for e in sink_entries(cfg)]
        ['tensorboard', 'prometheus', 'pkg.mod:make']
    """
    listed = [SinkEntry(s) if isinstance(s, str) else s for s in cfg.telemetry.sinks]
    names = {e.entry for e in listed}
    tel = cfg.telemetry
    switched = [
        name
        for name, on in (
            ("tensorboard", tel.tensorboard),
            ("prometheus", tel.prometheus_port is not None or tel.prometheus_textfile is not None),
            ("mlflow", tel.mlflow_tracking_uri is not None),
        )
        if on and name not in names
    ]
    return [SinkEntry(name) for name in switched] + listed


def _tensorboard(context: SinkContext) -> Sink:
    from cosanneal.sinks.tensorboard import TensorBoardSink

    return TensorBoardSink(Path(context.options.get("log_dir", context.run_dir / "tb")))


def _prometheus(context: SinkContext) -> Sink:
    from cosanneal.sinks.prometheus import PrometheusSink  # type: ignore[import-not-found,unused-ignore]

    tel = {**context.config.get("telemetry", {}), **context.options}
    sink: Sink = PrometheusSink(
        address=tel.get("prometheus_address", "127.0.0.1"),
        port=tel.get("prometheus_port"),
        textfile=tel.get("prometheus_textfile"),
        labels={"job": context.name, "run": context.run_dir.name},
        schedule=context.schedule,
    )
    return sink


def _mlflow(context: SinkContext) -> Sink:
    from cosanneal.sinks.mlflow import MLflowSink  # type: ignore[import-not-found,unused-ignore]

    tel = {**context.config.get("telemetry", {}), **context.options}
    uri = tel.get("mlflow_tracking_uri")
    if uri is None:
        raise ConfigError("telemetry.mlflow_tracking_uri: the mlflow sink needs a tracking URI")
    sink: Sink = MLflowSink(
        tracking_uri=uri,
        experiment=tel.get("mlflow_experiment", "cosanneal"),
        run_name=context.run_dir.name,
        params={"config": dict(context.config), "schedule": context.schedule.to_dict()},
        tags={"schedule_fingerprint": context.schedule.fingerprint()},
        run_dir=context.run_dir,
    )
    return sink


#: The options of the ``"wandb"`` sink (the arguments of :class:`~cosanneal.sinks.wandb.WandbSink`).
WANDB_OPTIONS = ("project", "entity", "name", "mode", "dir", "tags", "settings")


def _wandb(context: SinkContext) -> Sink:
    from cosanneal.sinks.wandb import WandbSink

    unknown = sorted(set(context.options) - set(WANDB_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; options are {', '.join(WANDB_OPTIONS)}")
    options = dict(context.options)
    tags = options.pop("tags", ())
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"tags must be a list of strings, got {tags!r}")
    directory = options.pop("dir", None)
    sink: Sink = WandbSink(
        **options,
        dir=None if directory is None else context.run_dir / directory,  # relative to the run directory
        tags=list(tags),
        config={
            "config": dict(context.config),
            "schedule": context.schedule.to_dict(),
            "schedule_fingerprint": context.schedule.fingerprint(),
        },
        run_dir=context.run_dir,
    )
    return sink


_BUILTIN: dict[str, Callable[[SinkContext], Sink]] = {
    "tensorboard": _tensorboard,
    "prometheus": _prometheus,
    "mlflow": _mlflow,
    "wandb": _wandb,
}
assert set(_BUILTIN) == set(BUILTIN_SINKS)


def _factory(entry: str, key: str) -> Callable[[SinkContext], Any]:
    if entry in _BUILTIN:
        return _BUILTIN[entry]
    from cosanneal.jobs.builders import resolve_entry

    return resolve_entry(entry, key)


def resolve_factories(cfg: TrainConfig) -> list[tuple[str, SinkEntry, Callable[[SinkContext], Any]]]:
    """Import every factory (before the run writes anything), with the key that names it in errors."""
    entries = sink_entries(cfg)
    listed = len(entries) - len(cfg.telemetry.sinks)
    out = []
    for i, entry in enumerate(entries):
        key = f"telemetry.sinks[{i - listed}]" if i >= listed else f"telemetry.{entry.entry}"
        out.append((key, entry, _factory(entry.entry, key)))
    return out


def build_sinks(
    factories: list[tuple[str, SinkEntry, Callable[[SinkContext], Any]]],
    cfg: TrainConfig,
    run_dir: Path,
    schedule: Schedule,
) -> list[Sink]:
    """Call each factory; a factory that fails or returns no sink is a one-line ConfigError.

    The sinks made before a failure are closed.
    """
    made: list[Sink] = []
    config = cfg.to_dict()
    try:
        for key, entry, factory in factories:
            context = SinkContext(run_dir, cfg.name, config, schedule, dict(entry.options))
            try:
                sink = factory(context)
            except ConfigError:
                raise
            except Exception as exc:  # a user's factory: any failure is a config problem here
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"{key}: {entry.entry} failed: {type(exc).__name__}: {first}") from exc
            if not isinstance(sink, Sink):
                raise ConfigError(
                    f"{key}: {entry.entry} returned {type(sink).__name__}, not a sink (it needs write(scalars, "
                    "events), flush() and close())"
                )
            made.append(sink)
    except BaseException:
        for sink in made:
            try:
                sink.close()
            except Exception:
                continue
        raise
    return made
