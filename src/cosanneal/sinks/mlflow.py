"""MLflow sink: a run's params, metrics, tags, events and artifacts in an MLflow tracking store.

:class:`MLflowSink` is a run-store :class:`~cosanneal.runtime.runstore.Sink`: flushed batches are queued
and sent every ``send_seconds`` with one ``MlflowClient.log_batch`` call per 1000 metrics, on the store's
writer thread, so MLflow adds no work to the training loop. What goes where:

==========================  ======================================================================
MLflow                      from
==========================  ======================================================================
params                      ``params`` flattened to dotted keys (``config.optimizer.name``,
                            ``schedule.peak_lr``); values as JSON (strings as is), cut to MLflow's
                            6000-character limit
tags                        ``tags`` (e.g. ``schedule_fingerprint``), ``cosanneal.version``,
                            ``python.version``, ``torch.version``
metric ``lr/group_<i>``     scalar ``lr`` of group ``i`` (any grouped scalar: ``<name>/group_<i>``)
metric ``loss``, ...        ungrouped scalars under their run-store names (``lr_expected/group_<i>``,
                            ``loss``, ``val_loss``, ``val_acc``, ``grad_norm``, ``cycle``, ...)
metric ``events/<kind>``    running count of events of that kind at the event's step
                            (``events/restart``, ``events/rollback``, ``events/resumed``, ...)
artifact ``events.jsonl``   every event of the run (from ``run_dir/run.db`` when given), at close
artifacts                   ``report.html`` from ``run_dir``; ``lr_loss.png`` drawn at close from the
                            whole run (not when KILLED); ``checkpoints/best/`` on request
==========================  ======================================================================

The metric step is the run-store step (the optimizer update index). On :meth:`MLflowSink.close` the run
ends ``FINISHED``, ``FAILED`` when a ``run_failed`` event was seen, or ``KILLED`` when a ``preempted`` one
was. With ``run_dir``, the MLflow run id is kept in ``run_dir/mlflow_run_id`` and a resumed job reopens
that run, so a preempted and resumed job is one MLflow run with one continuous history.

An MLflow failure never stops training: it is reported as a :class:`MLflowSinkWarning` and the sink goes
on (after :data:`MAX_FAILURES` failures in a row it stops calling MLflow).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cosanneal.runtime.runstore import EventRow, ScalarRow

#: File in the run directory that holds the MLflow run id (what a resumed job reopens).
RUN_ID_FILE = "mlflow_run_id"
#: MLflow's limits: characters of a param value, params/tags and metrics per ``log_batch`` call.
MAX_PARAM_VALUE = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
#: Consecutive failed MLflow calls after which the sink stops calling MLflow.
MAX_FAILURES = 3

_INVALID_KEY = re.compile(r"[^\w./\- ]")
_T = TypeVar("_T")


class MLflowSinkWarning(UserWarning):
    """An MLflow call failed; training goes on, the MLflow run may be incomplete."""


def metric_key(name: str, group: int | None = None) -> str:
    """The MLflow metric key of a run-store scalar: ``name``, or ``name/group_<i>`` for a param group.

    Characters MLflow does not accept in keys (anything but letters, digits, ``_ - . / space``) become ``_``.

    Example:
        >>> metric_key("lr", 0), metric_key("loss"), metric_key("val_acc"), metric_key("a:b", 2)
        ('lr/group_0', 'loss', 'val_acc', 'a_b/group_2')
    """
    key = _INVALID_KEY.sub("_", name)
    return key if group is None else f"{key}/group_{group}"


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 3] + "..."
    return text


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings flattened to dotted keys, each leaf a string MLflow accepts as a param value.

    A leaf ``v`` becomes ``v`` if it is a string, else ``json.dumps(v)`` (lists stay one value); a
    value longer than :data:`MAX_PARAM_VALUE` characters is cut and ends with ``...``. An empty
    mapping is the leaf ``{}``.

    Example:
        >>> flatten_params({"config": {"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}, "amp": None},
        ...                 "schedule": {"peak_lr": 0.1}})
        {'config.optimizer.name': 'sgd', 'config.optimizer.betas': '[0.9, 0.99]', 'config.amp': 'null', \
'schedule.peak_lr': '0.1'}
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        dotted = f"{prefix}{_INVALID_KEY.sub('_', str(key))}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, dotted + "."))
        else:
            out[dotted] = _param_value(dict(value) if isinstance(value, Mapping) else value)
    return out


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _versions() -> dict[str, str]:
    from cosanneal.runtime.runstore import environment

    env = environment()
    return {f"{k}.version": str(env.get(k)) for k in ("cosanneal", "python", "torch")}


class MLflowSink:
    """Sends a run store's rows to one MLflow run (see the module docs for the mapping).

    Args:
        tracking_uri: Where MLflow stores runs: ``sqlite:///mlflow.db``, ``http://host:5000``, ...
        experiment: Experiment name (created when missing).
        run_name: Name of a new MLflow run (default: the run directory's name, else MLflow's).
        params: Logged as params, flattened with :func:`flatten_params`; the trainer passes
            ``{"config": <config dict>, "schedule": <schedule dict>}``.
        tags: Extra tags (the trainer passes ``{"schedule_fingerprint": ...}``).
        run_dir: The cosanneal run directory: holds ``mlflow_run_id`` (so a resumed job reuses its
            MLflow run) and the artifacts logged at close.
        log_best_checkpoint: Also log ``run_dir/checkpoints/best/`` as artifact ``checkpoints/best``.
        artifact_location: Artifact root of the experiment when this sink creates it (default:
            MLflow's, which for a database URI is relative to the working directory).
        send_seconds: Send queued metrics at most this often (and at every run-store ``flush()``,
            at close, and whenever 1000 are queued): each MLflow call costs milliseconds of Python.

    Raises:
        ImportError: ``mlflow`` is not installed (``pip install mlflow``).

    Example:
        >>> import tempfile
        >>> from mlflow.tracking import MlflowClient
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = tempfile.mkdtemp()
        >>> uri = f"sqlite:///{d}/mlflow.db"
        >>> sink = MLflowSink(uri, params={"schedule": {"peak_lr": 0.1}}, run_dir=d + "/run",
        ...                   artifact_location=d + "/artifacts")
        >>> with RunStore(d + "/run", sinks=[sink]) as store:
        ...     store.log_scalar(0, "lr", 0.1, group=0)
        ...     store.log_scalar(1, "lr", 0.05, group=0)
        >>> client = MlflowClient(uri)
        >>> [(m.step, m.value) for m in client.get_metric_history(sink.run_id, "lr/group_0")]
        [(0, 0.1), (1, 0.05)]
        >>> run = client.get_run(sink.run_id)
        >>> run.data.params["schedule.peak_lr"], run.info.status
        ('0.1', 'FINISHED')
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "cosanneal",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        log_best_checkpoint: bool = False,
        artifact_location: str | None = None,
        send_seconds: float = 5.0,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("MLflowSink needs mlflow: pip install mlflow") from exc
        self.tracking_uri = tracking_uri
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.log_best_checkpoint = log_best_checkpoint
        self.run_id: str | None = None
        self.resumed = False
        self._failures = 0
        self._client: Any = None
        self._counts: dict[str, int] = {}
        self._events: list[EventRow] = []
        self._pending: list[Any] = []
        self.send_seconds = float(send_seconds)
        self._sent = time.monotonic()
        self._status = "FINISHED"
        self._closed = False
        try:
            self._client = MlflowClient(tracking_uri=tracking_uri)
            self._open_run(experiment, run_name, artifact_location)
        except Exception as exc:
            self._client = None
            self._warn(f"could not open an MLflow run at {tracking_uri!r} ({exc}); MLflow logging is off")
            return
        self._safe("log params and tags", lambda: self._log_params_and_tags(params or {}, tags or {}))

    # ---- setup --------------------------------------------------------------------------------
    def _open_run(self, experiment: str, run_name: str | None, artifact_location: str | None) -> None:
        """Reopen the run named in ``run_dir/mlflow_run_id`` if the store has it, else create one."""
        client = self._client
        previous = self._previous_run()
        if previous is not None:
            self.run_id, self.resumed = previous.info.run_id, True
            client.update_run(self.run_id, status="RUNNING")
            self._counts = {
                k[len("events/") :]: int(v)
                for k, v in previous.data.metrics.items()
                if k.startswith("events/")
            }
            return
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment, artifact_location=artifact_location)
        )
        name = run_name or (self.run_dir.name if self.run_dir is not None else None)
        self.run_id = client.create_run(experiment_id, run_name=name).info.run_id
        if self.run_dir is not None:
            from cosanneal.io import atomic_write_text

            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / RUN_ID_FILE, self.run_id + "\n")

    def _previous_run(self) -> Any:
        if self.run_dir is None or not (self.run_dir / RUN_ID_FILE).is_file():
            return None
        run_id = (self.run_dir / RUN_ID_FILE).read_text(encoding="utf-8").strip()
        try:
            run = self._client.get_run(run_id)
        except Exception:  # not in this tracking store (another URI): start a new run
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _log_params_and_tags(self, params: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        flat = flatten_params(params)
        if self.resumed:  # a param may be logged once: send only the keys the run does not have yet
            existing = self._client.get_run(self.run_id).data.params
            flat = {k: v for k, v in flat.items() if k not in existing}
        all_tags = {**_versions(), **{str(k): str(v) for k, v in tags.items()}}
        if self.run_dir is not None:
            all_tags["cosanneal.run_dir"] = str(self.run_dir.resolve())
        param_rows = [Param(k, v) for k, v in flat.items()]
        tag_rows = [RunTag(k, v) for k, v in all_tags.items()]
        for chunk in _chunks(param_rows, MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=list(chunk))
        for tag_chunk in _chunks(tag_rows, MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=list(tag_chunk))

    # ---- failure policy -----------------------------------------------------------------------
    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(f"cosanneal: MLflow sink: {message}", MLflowSinkWarning, stacklevel=3)

    def _safe(self, what: str, call: Callable[[], None]) -> bool:
        """Run one MLflow call; on failure warn and go on (give up after MAX_FAILURES in a row)."""
        if self._client is None:
            return False
        try:
            call()
        except Exception as exc:
            self._failures += 1
            self._warn(f"could not {what} ({type(exc).__name__}: {exc})")
            if self._failures >= MAX_FAILURES:
                self._client = None
                self._warn(f"{MAX_FAILURES} failures in a row; MLflow logging is off for run {self.run_id}")
            return False
        self._failures = 0
        return True

    # ---- the Sink protocol --------------------------------------------------------------------
    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Queue one batch: scalars as metrics, events as running counts ``events/<kind>``.

        The queue is sent when it is ``send_seconds`` old or holds a full ``log_batch`` call.
        """
        from mlflow.entities import Metric

        pending = self._pending
        pending.extend(
            Metric(metric_key(r.name, r.group), r.value, int(r.wall * 1000), r.step) for r in scalars
        )
        for ev in events:
            self._events.append(ev)
            if ev.kind == "run_failed":
                self._status = "FAILED"
            elif ev.kind == "preempted" and self._status != "FAILED":
                self._status = "KILLED"
            count = self._counts[ev.kind] = self._counts.get(ev.kind, 0) + 1
            pending.append(
                Metric(metric_key(f"events/{ev.kind}"), float(count), int(ev.wall * 1000), ev.step)
            )
        if len(pending) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._sent >= self.send_seconds:
            self.flush()

    def flush(self) -> None:
        """Send every queued metric now (one ``log_batch`` call per 1000)."""
        pending, self._pending = self._pending, []
        self._sent = time.monotonic()
        for chunk in _chunks(pending, MAX_METRICS_PER_BATCH):
            if not self._safe("log metrics", self._sender(list(chunk))):
                return

    def _sender(self, metrics: list[Any]) -> Callable[[], None]:
        return lambda: self._client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        """Log the artifacts and end the run (``FINISHED``, ``FAILED`` or ``KILLED``); idempotent."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._client is None:
            return
        with tempfile.TemporaryDirectory(prefix="cosanneal-mlflow-") as tmp:
            self._safe("log the events", lambda: self._log_events(Path(tmp)))
            if self.run_dir is not None:
                run_dir = self.run_dir
                self._safe("log the artifacts", lambda: self._log_artifacts(run_dir, Path(tmp)))
        self._safe(
            "end the run",
            lambda: self._client.set_terminated(self.run_id, self._status, int(time.time() * 1000)),
        )

    # ---- artifacts ----------------------------------------------------------------------------
    def _all_events(self) -> list[dict[str, Any]]:
        """Every event of the run: from ``run.db`` (all sessions) when there is one, else this session's."""
        if self.run_dir is not None and (self.run_dir / "run.db").is_file():
            from cosanneal import runs

            run = runs.open(self.run_dir)
            try:
                return run.events()
            finally:
                run.close()
        return [{"step": e.step, "kind": e.kind, "wall": e.wall, **e.payload} for e in self._events]

    def _log_events(self, tmp: Path) -> None:
        events = self._all_events()
        if not events:
            return
        path = tmp / "events.jsonl"
        lines = (json.dumps(e, sort_keys=True, default=str, allow_nan=True) for e in events)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self._client.log_artifact(self.run_id, str(path))

    def _log_artifacts(self, run_dir: Path, tmp: Path) -> None:
        report = run_dir / "report.html"
        if report.is_file():
            self._client.log_artifact(self.run_id, str(report))
        if self._status != "KILLED" and (run_dir / "run.db").is_file():
            from cosanneal.plotting import plot_run

            # Always drawn now, from the whole run: run_dir/lr_loss.png is written by the CLI only after
            # the store (and this sink) closed, so one found there is an earlier session's.
            plot = tmp / "lr_loss.png"
            plot_run(run_dir, plot)
            self._client.log_artifact(self.run_id, str(plot))
        best = run_dir / "checkpoints" / "best"
        if self.log_best_checkpoint and best.is_dir() and any(best.iterdir()):
            self._client.log_artifacts(self.run_id, str(best), artifact_path="checkpoints/best")

    def __repr__(self) -> str:
        state = "off" if self._client is None else ("closed" if self._closed else "open")
        return f"MLflowSink({self.tracking_uri!r}, run_id={self.run_id!r}, {state})"
