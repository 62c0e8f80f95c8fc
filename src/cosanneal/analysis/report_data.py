"""What a report shows of one run: its series, events and the summary numbers of its header.

Everything here is read from the run store with :func:`cosanneal.runs.open`; nothing is recomputed from
the model or the checkpoints. The summary's definitions (the ones ``docs/report.md`` documents):

* ``status``: the last terminal event: ``run_finished`` -> ``finished``, ``early_stop`` ->
  ``early_stopped``, ``preempted`` -> ``preempted``, ``run_failed`` -> ``failed``, ``resumed`` ->
  ``running``; no such event -> ``incomplete`` (still running, or killed without a trace).
* ``updates``: ``max(last logged step + 1, run_finished.updates)``: the optimizer updates done.
* ``throughput``: samples processed / seconds spent in updates,
  ``sum(samples_per_s * step_time) / sum(step_time)`` over the steps that logged both.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal import runs

__all__ = ["RunData", "RunSummary", "load_run", "summarize"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Series = tuple[IntArray, FloatArray]

#: Event kind -> the status it leaves a run in; the last such event decides.
STATUS_OF_EVENT: dict[str, str] = {
    "run_finished": "finished",
    "early_stop": "early_stopped",
    "preempted": "preempted",
    "run_failed": "failed",
    "resumed": "running",
}


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The numbers in a run's header.

    Attributes:
        name: the run's label (its directory name, made unique among the reported runs).
        path: the run directory.
        status: see the module docstring.
        updates: optimizer updates done.
        epochs: epochs done, when the store tells (``None`` otherwise).
        restarts: ``restart`` events.
        checkpoints: checkpoints saved: the distinct steps of ``checkpoint_saved`` events (a step
            saved again, after a kill before its commit, counts once).
        best_checkpoint_step: step of the last ``checkpoint_best`` event, or ``None``.
        best_metric: ``(name, value, step)`` of the best validation value (the checkpoint's metric and
            mode from the config, default ``val_loss`` / ``min``), or ``None`` without validation.
        final_metrics: the last value of every ``val_*`` series.
        nonfinite: ``nonfinite`` events plus steps whose ``nonfinite`` scalar is non-zero.
        rollbacks: ``rollback`` events.
        wall_seconds: last minus first wall time of the store's rows, or ``None`` for an empty run.
        throughput: samples per second of update time, or ``None`` when not logged.
        fingerprint: the schedule fingerprint (param ``schedule_fingerprint``), or ``None``.
        sessions: processes that wrote the run (more than 1 after a resume).
        checkpoints_kept: of those, the ones not deleted since (no ``checkpoint_deleted`` event): the
            ``step-*`` directories the run left, what ``cosanneal train``'s summary calls "checkpoints
            kept" (``best/`` copies are not counted).
        replans: one line per ``schedule_replanned`` event (``cosanneal replan``): where, how, the
            totals and the new schedule's fingerprint.
    """

    name: str
    path: str
    status: str
    updates: int
    epochs: float | None
    restarts: int
    checkpoints: int
    best_checkpoint_step: int | None
    best_metric: tuple[str, float, int] | None
    final_metrics: dict[str, float]
    nonfinite: int
    rollbacks: int
    wall_seconds: float | None
    throughput: float | None
    fingerprint: str | None
    sessions: int
    checkpoints_kept: int = 0
    replans: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunData:
    """One run, loaded: params, every scalar series a chart needs, events and the summary.

    Attributes:
        summary: the header numbers.
        params: the run's params (``config``, ``schedule``, ``schedule_fingerprint``, ``seed``, ``env``).
        lr: group -> ``(steps, lr)``.
        lr_expected: group -> ``(steps, expected lr)``.
        series: ungrouped series by name (``loss``, ``grad_norm``, ``phase``, ``val_*``, ...).
        events: every event, in logging order.
    """

    summary: RunSummary
    params: dict[str, Any]
    lr: dict[int, Series]
    lr_expected: dict[int, Series]
    series: dict[str, Series]
    events: list[dict[str, Any]]

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one kind, in logging order."""
        return [e for e in self.events if e["kind"] == kind]


def _grouped(run: runs.Run, name: str, names: list[str]) -> dict[int, Series]:
    if name not in names:
        return {}
    groups = run.groups(name)
    return {g: run.scalar(name, g) for g in groups} if groups else {0: run.scalar(name)}


def load_run(path: str | os.PathLike[str], name: str) -> RunData:
    """Read one run store into memory and summarise it.

    Args:
        path: the run directory (or its ``run.db``).
        name: the label the report gives the run.

    Raises:
        FileNotFoundError: no run store at ``path``.

    Example:
        >>> import tempfile
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = tempfile.mkdtemp()
        >>> with RunStore(d) as s:
        ...     s.log_scalars(0, {"lr": 0.1, "lr_expected": 0.1}, group=0)
        ...     s.log_event(1, "run_finished", updates=1)
        >>> data = load_run(d, "demo")
        >>> data.summary.status, data.summary.updates, sorted(data.lr)
        ('finished', 1, [0])
    """
    with runs.open(path) as run:
        names = run.scalar_names()
        params = run.params
        lr = _grouped(run, "lr", names)
        expected = _grouped(run, "lr_expected", names)
        series = {n: run.scalar(n) for n in names if not run.groups(n)}
        events = run.events()
        store = run.summary()
    summary = summarize(name, Path(path), params, lr, series, events, store)
    return RunData(summary, params, lr, expected, series, events)


def _status(events: list[dict[str, Any]]) -> str:
    status = "incomplete"
    for event in events:
        status = STATUS_OF_EVENT.get(event["kind"], status)
    return status


def _updates(lr: dict[int, Series], series: dict[str, Series], events: list[dict[str, Any]]) -> int:
    last = -1
    per_update = [v for k, v in series.items() if not k.startswith("val_")]  # val_* sit at updates done
    for steps, _ in [*lr.values(), *per_update]:
        if len(steps):
            last = max(last, int(steps[-1]))
    finished = [int(e.get("updates", 0)) for e in events if e["kind"] == "run_finished"]
    return max([last + 1, *finished])


def _section(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _best(config: dict[str, Any], series: dict[str, Series]) -> tuple[str, float, int] | None:
    checkpoint = _section(config, "checkpoint")
    metric = str(checkpoint.get("best_metric") or "val_loss")
    mode = str(checkpoint.get("best_mode") or "min")
    if metric not in series:
        metric, mode = "val_loss", "min"
    if metric not in series:
        return None
    steps, values = series[metric]
    finite = np.isfinite(values)
    if not finite.any():
        return None
    masked = np.where(finite, values, np.inf if mode == "min" else -np.inf)
    i = int(np.argmin(masked) if mode == "min" else np.argmax(masked))
    return metric, float(values[i]), int(steps[i])


def _epochs(params: dict[str, Any], config: dict[str, Any], status: str, updates: int) -> float | None:
    per_epoch = params.get("steps_per_epoch") or config.get("steps_per_epoch")
    if isinstance(per_epoch, int | float) and per_epoch > 0:
        return updates / float(per_epoch)
    epochs = config.get("epochs")
    if status == "finished" and config.get("max_steps") is None and isinstance(epochs, int | float):
        return float(epochs)  # a finished epoch-driven run did exactly its configured epochs
    return None


def _throughput(series: dict[str, Series]) -> float | None:
    if "samples_per_s" not in series or "step_time" not in series:
        return None
    s_steps, rate = series["samples_per_s"]
    t_steps, seconds = series["step_time"]
    common, si, ti = np.intersect1d(s_steps, t_steps, assume_unique=True, return_indices=True)
    ok = np.isfinite(rate[si]) & np.isfinite(seconds[ti])
    total = float(seconds[ti][ok].sum())
    if not len(common) or total <= 0.0:
        return None
    return float((rate[si][ok] * seconds[ti][ok]).sum()) / total


def summarize(
    name: str,
    path: Path,
    params: dict[str, Any],
    lr: dict[int, Series],
    series: dict[str, Series],
    events: list[dict[str, Any]],
    store: dict[str, Any],
) -> RunSummary:
    """Compute the header numbers of a run from what :func:`load_run` read (see the module docstring)."""
    config = _section(params, "config")
    status = _status(events)
    updates = _updates(lr, series, events)
    kinds = [e["kind"] for e in events]
    saved = {int(e["step"]) for e in events if e["kind"] == "checkpoint_saved"}
    deleted = {int(e["step"]) for e in events if e["kind"] == "checkpoint_deleted"}
    best_events = [e for e in events if e["kind"] == "checkpoint_best"]
    nonfinite_steps = 0
    if "nonfinite" in series:
        values = series["nonfinite"][1]
        nonfinite_steps = int(np.count_nonzero(np.isnan(values) | (values != 0)))
    finals: dict[str, float] = {}
    for key in sorted(series):
        if key.startswith("val_") and len(series[key][1]):
            finals[key] = float(series[key][1][-1])
    wall = store.get("wall_seconds")
    fingerprint = params.get("schedule_fingerprint")
    return RunSummary(
        name=name,
        path=str(path),
        status=status,
        updates=updates,
        epochs=_epochs(params, config, status, updates),
        restarts=kinds.count("restart"),
        checkpoints=len(saved),
        best_checkpoint_step=int(best_events[-1]["step"]) if best_events else None,
        best_metric=_best(config, series),
        final_metrics=finals,
        nonfinite=kinds.count("nonfinite") + nonfinite_steps,
        rollbacks=kinds.count("rollback"),
        wall_seconds=float(wall) if wall is not None and math.isfinite(wall) else None,
        throughput=_throughput(series),
        fingerprint=str(fingerprint) if fingerprint is not None else None,
        sessions=int(store.get("sessions", 0)),
        checkpoints_kept=len(saved - deleted),
        replans=tuple(replan_line(e) for e in events if e["kind"] == "schedule_replanned"),
    )


def replan_line(event: dict[str, Any]) -> str:
    """One ``schedule_replanned`` event as the report shows it.

    Example:
        >>> replan_line({"step": 40, "mode": "cycles", "total_steps_before": 160, "total_steps": 240,
        ...              "fingerprint_after": "ab12"})
        'at update 40 (cycles): 160 -> 240 updates, schedule ab12'
    """
    return (
        f"at update {event['step']} ({event.get('mode')}): {event.get('total_steps_before')} -> "
        f"{event.get('total_steps')} updates, schedule {event.get('fingerprint_after')}"
    )
