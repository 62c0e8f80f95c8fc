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
  ``prometheus_textfile`` adds it. Its labels are the job (``name``) and the run (the run directory's
  name), and for a sweep's trial (a run directory ``<study>/trial-<n>``) the sweep (the study).
  With ``telemetry.price_per_device_hour`` it exports the run's cost (:func:`cost_plan`).
* ``"mlflow"`` logs to ``telemetry.mlflow_tracking_uri``, which adds it.
* ``"wandb"`` logs to a Weights & Biases run; only ``telemetry.sinks`` adds it. Its options are
  :data:`WANDB_OPTIONS` (``project``, ``entity``, ``name``, ``mode``, ``dir``, ``tags``, ``settings``).

For a built-in, the ``options`` of an entry override the ``[telemetry]`` keys of the same name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cosanneal.errors import ConfigError
from cosanneal.jobs.config import BUILTIN_SINKS, SinkEntry, TrainConfig
from cosanneal.runtime.runstore import Sink
from cosanneal.schedules.base import Schedule
from cosanneal.schedules.replan import CHANGE_EVENTS

__all__ = ["SinkContext", "build_sinks", "cost_plan", "previous_seconds", "sink_entries", "sink_labels"]

#: A sweep trial's run directory name (``<runs_dir>/<study>/trial-<n>``, :mod:`cosanneal.tune.sweep`).
_TRIAL_DIR = re.compile(r"trial-\d+")


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


def sink_labels(name: str, run_dir: Path) -> dict[str, str]:
    """The labels of a run's metrics: ``job``, ``run`` and, for a sweep's trial, ``sweep`` (its study).

    Example:
        >>> sink_labels("digits", Path("runs/digits"))
        {'job': 'digits', 'run': 'digits'}
        >>> sink_labels("digits", Path("sweeps/lr-study/trial-3"))
        {'job': 'digits', 'run': 'trial-3', 'sweep': 'lr-study'}
    """
    labels = {"job": name, "run": run_dir.name}
    if _TRIAL_DIR.fullmatch(run_dir.name) and run_dir.parent.name:
        labels["sweep"] = run_dir.parent.name
    return labels


def _read_only(run_dir: Path) -> sqlite3.Connection | None:
    """A read-only connection to ``run_dir/run.db``, or ``None`` when there is none."""
    db = run_dir / "run.db"
    if not db.is_file():
        return None
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)


def previous_seconds(run_dir: Path) -> float:
    """Wall seconds of the run's sessions so far, from the run store's ``sessions`` table.

    Formula: ``sum(end - started)`` over the sessions, where ``end`` is ``ended`` for a session that
    closed its run store (a finished, failed or preempted process) and, for one killed before
    (``ended`` empty: SIGKILL, a lost node), the wall time of the last row that session wrote (its
    ``started`` when none): the devices are charged until the process died, not for the time the job
    then waited to be restarted. That last row is known to within ``telemetry.flush_seconds``. A later
    resume deletes the rows past its checkpoint, so a killed session counted again by a third session
    may count a little less (down to its last kept row). 0 without a run store.

    Example:
        >>> import tempfile
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = Path(tempfile.mkdtemp())
        >>> RunStore(d).close()
        >>> 0.0 <= previous_seconds(d) < 60.0
        True
        >>> previous_seconds(d / "none")
        0.0
    """
    conn = _read_only(run_dir)
    if conn is None:
        return 0.0
    try:
        rows = conn.execute(
            # the rows are appended: a session's last row by rowid is its last one, found from the end
            "SELECT started, COALESCE(ended, MAX(started,"
            " COALESCE((SELECT wall FROM scalars WHERE session = s.id ORDER BY rowid DESC LIMIT 1), 0),"
            " COALESCE((SELECT wall FROM events WHERE session = s.id ORDER BY rowid DESC LIMIT 1), 0)))"
            " FROM sessions AS s ORDER BY id"
        ).fetchall()
    except sqlite3.Error:
        return 0.0
    finally:
        conn.close()
    return float(sum(max(0.0, float(end) - float(started)) for started, end in rows))


def _planned_steps(run_dir: Path) -> Callable[[], int | None]:
    """A function returning the run's length once the trainer has recorded it.

    The ``total_steps`` param, or the ``total_steps`` of the run's latest schedule change (a
    ``schedule_replanned`` or ``world_size_changed`` event, ``CHANGE_EVENTS``) when it has one; the
    rule of :func:`cosanneal.jobs.replan.run_plan`, read with one query since it runs at every scrape.
    """

    def read() -> int | None:
        try:
            conn = _read_only(run_dir)
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT value FROM params WHERE key = 'total_steps'").fetchone()
                changed = conn.execute(
                    f"SELECT payload FROM events WHERE kind IN ({', '.join('?' * len(CHANGE_EVENTS))})"
                    " ORDER BY step DESC, rowid DESC LIMIT 1",
                    CHANGE_EVENTS,
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        if changed is not None:  # a replan or a resize since: its length is the run's now
            row = (json.dumps(json.loads(changed[0]).get("total_steps")),)
        if row is None:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return read


def cost_plan(telemetry: Mapping[str, Any], run_dir: Path) -> Any:
    """The Prometheus sink's :class:`~cosanneal.sinks.prometheus.CostPlan`, or ``None`` without a price.

    ``devices`` defaults to the world size (``WORLD_SIZE``, set by ``torchrun``; 1 alone), the earlier
    sessions' seconds come from the run store (:func:`previous_seconds`) and the planned updates from
    the ``total_steps`` the trainer records in its params.

    Example:
        >>> import tempfile
        >>> plan = cost_plan({"price_per_device_hour": 2.5, "devices": 8}, Path(tempfile.mkdtemp()))
        >>> plan.rate_per_second * 3600, plan.previous_seconds
        (20.0, 0.0)
        >>> cost_plan({}, Path(".")) is None
        True
    """
    price = telemetry.get("price_per_device_hour")
    if price is None:
        return None
    from cosanneal.sinks.prometheus import CostPlan  # type: ignore[import-not-found,unused-ignore]

    devices = telemetry.get("devices")
    if devices is None:
        world = os.environ.get("WORLD_SIZE", "1")
        devices = int(world) if world.isdigit() and int(world) >= 1 else 1
    return CostPlan(
        price_per_device_hour=price,
        devices=devices,
        previous_seconds=previous_seconds(run_dir),
        planned_steps=_planned_steps(run_dir),
        planned_step_seconds=telemetry.get("planned_step_seconds"),
    )


def _prometheus(context: SinkContext) -> Sink:
    from cosanneal.sinks.prometheus import PrometheusSink  # type: ignore[import-not-found,unused-ignore]

    tel = {**context.config.get("telemetry", {}), **context.options}
    sink: Sink = PrometheusSink(
        address=tel.get("prometheus_address", "127.0.0.1"),
        port=tel.get("prometheus_port"),
        textfile=tel.get("prometheus_textfile"),
        labels=sink_labels(context.name, context.run_dir),
        schedule=context.schedule,
        cost=cost_plan(tel, context.run_dir),
    )
    if tel.get("prometheus_port") == 0:  # any free port: say which, or no scraper can find it
        address = tel.get("prometheus_address", "127.0.0.1")
        print(f"prometheus: serving /metrics on http://{address}:{sink.port}/metrics", file=sys.stderr)  # type: ignore[attr-defined]
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
