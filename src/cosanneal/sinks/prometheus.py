"""Prometheus sink: a run's live state as Prometheus metrics, served on ``/metrics`` and/or as a textfile.

The sink receives the run store's flushed batches on its writer thread (never the training thread),
folds them into one state under a lock, and a custom collector builds every metric from a snapshot of
that state, so each scrape is consistent (an LR and its expected LR always come from the same update).
It uses its own :class:`prometheus_client.CollectorRegistry`, never the global one. With ``textfile``
set it also writes the exposition atomically (temporary file, fsync, rename) on every flush and at close,
for node-exporter's textfile collector: the final state outlives the process.

Metrics (every one also carries the constant labels, see below):

============================================  =========  =============================================
metric                                        type       value
============================================  =========  =============================================
``cosanneal_learning_rate{group}``            gauge      LR the optimizer used for group ``group``
``cosanneal_expected_learning_rate{group}``   gauge      the configured (closed-form) LR of that update
``cosanneal_momentum{group}``                 gauge      momentum / beta1 (when annealed)
``cosanneal_step``                            gauge      schedule step of the last update
``cosanneal_optimizer_steps_total``           counter    updates recorded by this process
``cosanneal_cycle``                           gauge      index of the schedule cycle
``cosanneal_phase{phase}``                    gauge      1 for the current phase (warmup|anneal|hold)
``cosanneal_restarts_total``                  counter    restarts the run went through (see below)
``cosanneal_configured_restarts``             gauge      restarts of the schedule within its horizon
``cosanneal_in_restart_window``               gauge      1 in a warmup or just after a restart
``cosanneal_loss``                            gauge      training loss of the last update
``cosanneal_gradient_norm``                   gauge      gradient norm of the last update
``cosanneal_samples_per_second``              gauge      throughput of the last update
``cosanneal_validation_loss``                 gauge      last validation loss
``cosanneal_validation_metric{metric}``       gauge      every other validation metric (``acc``, ...)
``cosanneal_nonfinite_steps_total``           counter    updates with non-finite values
``cosanneal_rollbacks_total``                 counter    non-finite guard rollbacks
``cosanneal_checkpoints_total``               counter    checkpoints saved
``cosanneal_last_checkpoint_timestamp_seconds``  gauge   wall time of the last checkpoint (start: the
                                                         process start)
``cosanneal_last_step_timestamp_seconds``     gauge      wall time of the last update
``cosanneal_step_duration_seconds``           histogram  seconds per update
``cosanneal_run_start_timestamp_seconds``     gauge      when this process's sink started
``cosanneal_run_duration_seconds``            gauge      seconds from start to the last batch
``cosanneal_run_status{status}``              gauge      1 for the current status, 0 for the others
``cosanneal_run_failures_total``              counter    ``run_failed`` events
============================================  =========  =============================================

Cost metrics, exported only with a :class:`CostPlan` (``telemetry.price_per_device_hour``):

============================================  =========  =============================================
metric                                        type       value
============================================  =========  =============================================
``cosanneal_cost``                            gauge      cost so far, in the price's currency
``cosanneal_planned_cost``                    gauge      planned total cost of the run
``cosanneal_planned_steps``                   gauge      updates the run is planned to make
``cosanneal_planned_step_seconds``            gauge      wall seconds per update of the plan
``cosanneal_price_per_device_hour``           gauge      the configured price
``cosanneal_devices``                         gauge      devices the price applies to
``cosanneal_previous_sessions_seconds``       gauge      wall seconds of the run's earlier sessions
============================================  =========  =============================================

Formulas (``rate = price_per_device_hour * devices / 3600``, per second):

* ``cosanneal_cost = rate * (previous_seconds + t - start)``: ``previous_seconds`` are the wall
  seconds of the run's earlier sessions (a resumed run continues from them), ``start`` is when this
  process's sink started and ``t`` the time of the scrape while the run is running, the time of its
  last row once it finished, failed or was preempted.
* ``cosanneal_planned_cost = rate * planned_steps * planned_step_seconds``. ``planned_step_seconds``
  is the configured one, or as measured in this session: ``(last update's wall - start) /
  (step + 1 - resumed_from)``, the wall time per update including data loading, evaluations and
  checkpoints (``resumed_from`` is the ``step`` of this session's ``resumed`` event, 0 for a fresh
  run). Without a planned step count (or before the first update) it is not exported.

The burn rate the alert rules page on is ``cost / (planned_cost * (step + 1) / planned_steps)``:
what the run spent over what its progress (``step`` counts the updates of every session) was
planned to cost (deploy/prometheus/rules.yml). With a configured ``planned_step_seconds`` it compares
the run with its plan; with the measured one it is the overhead of everything that is not an update
of this session: earlier sessions' work lost at a kill or preemption, rollbacks, waits.

Constant labels: each key of ``labels`` becomes a label named ``cosanneal_<key>`` (the trainer passes
``{"job": config name, "run": run directory name}``, giving ``cosanneal_job`` and ``cosanneal_run``), so
they never clash with the ``job`` and ``instance`` labels Prometheus attaches to every target.

``cosanneal_restarts_total`` counts the ``restart`` events seen, plus, when a ``schedule`` is given, the
restarts the schedule had at or before the first update this process recorded (a resumed run keeps
counting from where it was). A rollback across a restart replays it and counts it again, which is what
the "more restarts than configured" alert is for.

``cosanneal_in_restart_window`` is 1 while the schedule is in a warmup (the initial one or a per-cycle
one) and during the first :data:`RESTART_WINDOW_FRACTION` of every cycle that starts with a restart:
``start <= step < start + ceil(RESTART_WINDOW_FRACTION * length)``; without a schedule, only in warmup.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from cosanneal.errors import ConfigError
from cosanneal.io import atomic_write_bytes
from cosanneal.runtime.runstore import EventRow, ScalarRow

#: Upper bounds (seconds) of the ``cosanneal_step_duration_seconds`` buckets (``+Inf`` is added).
STEP_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Fraction of a cycle's length, from its restart, during which ``cosanneal_in_restart_window`` is 1.
RESTART_WINDOW_FRACTION = 0.1
#: Values of the ``phase`` label (index = the telemetry ``phase`` code).
PHASES: tuple[str, ...] = ("warmup", "anneal", "hold")
#: Values of the ``status`` label of ``cosanneal_run_status``.
STATUSES: tuple[str, ...] = ("running", "finished", "early_stopped", "preempted", "failed")
_STATUS_OF_EVENT = {
    "run_finished": "finished",
    "early_stop": "early_stopped",
    "preempted": "preempted",
    "run_failed": "failed",
}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def in_restart_window(schedule: Any, step: int) -> bool:
    """Whether ``step`` is in a warmup or within the first part of a cycle that began with a restart.

    Formula: ``phase(step) == "warmup"`` or (``start > 0``, ``length`` finite and
    ``step < start + ceil(RESTART_WINDOW_FRACTION * length)``) where ``(start, length)`` is
    ``schedule.cycle(step)``; the hold after the last cycle is not a restart.

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, warmup_steps=5, cycle_steps=20, max_cycles=3)
        >>> [in_restart_window(s, t) for t in (0, 4, 5, 25, 26, 27, 45, 60, 70)]
        [True, True, False, True, True, False, True, False, False]
    """
    if schedule.phase(step) == "warmup":
        return True
    info = schedule.cycle(step)
    if info.start <= 0 or not math.isfinite(info.length) or schedule.phase(info.start) == "hold":
        return False
    return bool(step < info.start + math.ceil(RESTART_WINDOW_FRACTION * info.length))


def configured_restarts(schedule: Any) -> float:
    """Number of restarts ``schedule`` makes before its horizon; NaN when it restarts forever.

    Example:
        >>> from cosanneal import Cosine
        >>> configured_restarts(Cosine(0.1, cycle_steps=10, max_cycles=4))
        3.0
        >>> configured_restarts(Cosine(0.1, cycle_steps=10, max_cycles=None))
        nan
    """
    end = schedule.horizon
    if end is None or not math.isfinite(end):
        return math.nan
    return float(len(schedule.restarts(end)))


@dataclasses.dataclass(frozen=True)
class CostPlan:
    """What the cost metrics are computed from (module docstring: the formulas).

    Attributes:
        price_per_device_hour: price of one device for one hour (any currency), ``> 0``.
        devices: devices the job holds, ``>= 1``.
        previous_seconds: wall seconds of the run's earlier sessions, ``>= 0``.
        planned_steps: updates the run is planned to make, or a function returning them once known
            (called on the writer thread until it returns a number); ``None``: unknown.
        planned_step_seconds: planned wall seconds per update; ``None``: as measured.

    Raises:
        ConfigError: a value out of its range, naming the ``telemetry`` key it comes from.

    Example:
        >>> plan = CostPlan(price_per_device_hour=3.0, devices=2, planned_steps=7200,
        ...                 planned_step_seconds=0.5)
        >>> plan.rate_per_second * 3600, plan.planned_cost(7200)
        (6.0, 6.0)
    """

    price_per_device_hour: float
    devices: int = 1
    previous_seconds: float = 0.0
    planned_steps: int | Callable[[], int | None] | None = None
    planned_step_seconds: float | None = None

    def __post_init__(self) -> None:
        checks = (
            ("price_per_device_hour", self.price_per_device_hour, 0.0, True),
            ("devices", self.devices, 1, False),
            ("planned_step_seconds", self.planned_step_seconds, 0.0, True),
        )
        for key, value, low, open_low in checks:
            if value is None:
                continue
            if key == "devices" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"telemetry.devices: must be an integer >= 1, got {value!r}")
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or (value <= low if open_low else value < low)
            ):
                bound = f"> {low:g}" if open_low else f">= {low:g}"
                raise ConfigError(f"telemetry.{key}: must be a finite number {bound}, got {value!r}")
        if not math.isfinite(self.previous_seconds) or self.previous_seconds < 0:
            raise ConfigError(
                f"cost: previous_seconds must be a finite number >= 0, got {self.previous_seconds!r}"
            )

    @property
    def rate_per_second(self) -> float:
        """Cost of one wall second of the job: ``price_per_device_hour * devices / 3600``."""
        return self.price_per_device_hour * self.devices / 3600.0

    def planned_cost(self, steps: int, step_seconds: float | None = None) -> float | None:
        """``rate_per_second * steps * seconds``: the configured seconds per update, else ``step_seconds``."""
        seconds = self.planned_step_seconds if self.planned_step_seconds is not None else step_seconds
        return None if seconds is None else self.rate_per_second * steps * seconds


@dataclasses.dataclass
class _State:
    """Everything the metrics show; mutated only under :attr:`PrometheusSink._lock`."""

    started: float
    lr: dict[int, float] = dataclasses.field(default_factory=dict)
    expected: dict[int, float] = dataclasses.field(default_factory=dict)
    momentum: dict[int, float] = dataclasses.field(default_factory=dict)
    validation: dict[str, float] = dataclasses.field(default_factory=dict)
    gauges: dict[str, float] = dataclasses.field(default_factory=dict)
    step: int | None = None
    steps: int = 0
    phase: int | None = None
    restarts: int = 0
    nonfinite: int = 0
    nonfinite_step: int | None = None
    rollbacks: int = 0
    checkpoints: int = 0
    last_checkpoint: float = 0.0
    last_step_wall: float = math.nan
    last_wall: float = 0.0
    status: str = "running"
    failures: int = 0
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(STEP_BUCKETS) + 1))
    step_time_sum: float = 0.0
    in_window: bool = False
    resumed_from: int = 0
    planned_steps: int | None = None

    def snapshot(self) -> _State:
        return dataclasses.replace(
            self,
            lr=dict(self.lr),
            expected=dict(self.expected),
            momentum=dict(self.momentum),
            validation=dict(self.validation),
            gauges=dict(self.gauges),
            buckets=list(self.buckets),
        )


_GAUGE_ROWS = {
    "loss": ("cosanneal_loss", "Training loss of the last recorded update."),
    "grad_norm": ("cosanneal_gradient_norm", "Gradient norm of the last recorded update."),
    "samples_per_s": ("cosanneal_samples_per_second", "Training samples per second of the last update."),
    "cycle": ("cosanneal_cycle", "Index of the schedule cycle of the last update."),
}


class PrometheusSink:
    """A run-store sink exposing the run as Prometheus metrics (module docstring: the metric table).

    Args:
        address: Interface the ``/metrics`` server binds (loopback by default).
        port: Port of the server; ``None``: no server, ``0``: any free port (see :attr:`port`).
        textfile: Path of a node-exporter textfile (must end in ``.prom``), rewritten atomically after
            every batch of rows (each run-store flush, ``telemetry.flush_seconds``) and at close.
        labels: Constant labels; key ``k`` becomes label ``cosanneal_<k>``.
        schedule: The run's schedule: gives ``cosanneal_configured_restarts``, the restart window and the
            restarts before a resume.
        registry: Registry to register the collector in (default: a new, private one).
        cost: The price and plan of the cost metrics; ``None``: no cost metrics.

    Raises:
        ConfigError: a bad label name, a textfile not ending in ``.prom``, or a port that cannot be bound.

    Example:
        >>> sink = PrometheusSink(labels={"job": "demo"})
        >>> sink.write([ScalarRow(0, "lr", 0, 0.1, 1.0e9), ScalarRow(0, "lr_expected", 0, 0.1, 1.0e9)], [])
        >>> print(sink.exposition().decode().splitlines()[2])
        cosanneal_learning_rate{cosanneal_job="demo",group="0"} 0.1
        >>> sink.close()
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int | None = None,
        textfile: str | None = None,
        labels: Mapping[str, str] | None = None,
        schedule: Any = None,
        registry: Any = None,
        cost: CostPlan | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        const = {f"cosanneal_{k}": str(v) for k, v in (labels or {}).items()}
        for name in const:
            if not _LABEL.match(name):
                raise ConfigError(
                    f"prometheus labels: {name[len('cosanneal_') :]!r} is not a valid label name "
                    "(letters, digits and _, not starting with a digit)"
                )
        if textfile is not None and not str(textfile).endswith(".prom"):
            raise ConfigError(
                f"telemetry.prometheus_textfile must end in .prom (node-exporter reads only *.prom), "
                f"got {textfile!r}"
            )
        self.textfile = textfile
        self.schedule = schedule
        self.cost = cost
        self._label_names = tuple(const)
        self._label_values = tuple(const.values())
        self._configured = configured_restarts(schedule) if schedule is not None else math.nan
        now = time.time()
        self._state = _State(started=now, last_checkpoint=now, last_wall=now)
        if cost is not None and isinstance(cost.planned_steps, int):
            self._state.planned_steps = cost.planned_steps
        self._lock = threading.Lock()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        if port is not None:
            self._serve(address, port)

    def _serve(self, address: str, port: int) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"telemetry.prometheus_port: cannot serve /metrics on {address}:{port} ({exc.strerror or exc}); "
                "choose another port, or 0 for any free port"
            ) from exc
        self.port = int(self._server.server_port)

    # ---- the Sink protocol (writer thread) ----------------------------------------------------
    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Fold one flushed batch into the state the next scrape shows."""
        with self._lock:
            st = self._state
            for row in scalars:
                self._scalar(st, row)
            for ev in events:
                self._event(st, ev)
            if st.step is not None:
                if self.schedule is not None:
                    st.in_window = in_restart_window(self.schedule, st.step)
                else:
                    st.in_window = st.phase == 0
            walls = [r.wall for r in scalars] + [e.wall for e in events]
            if walls:
                st.last_wall = max(st.last_wall, max(walls))
        self._resolve_planned_steps()
        self.flush()  # the textfile follows every batch, not only checkpoints and the end

    def _resolve_planned_steps(self) -> None:
        """Ask the cost plan's ``planned_steps`` function until it knows (outside the lock: it may do I/O)."""
        source = None if self.cost is None else self.cost.planned_steps
        if not callable(source) or self._state.planned_steps is not None:
            return
        steps = source()
        if steps is not None:
            with self._lock:
                self._state.planned_steps = int(steps)

    def _scalar(self, st: _State, row: ScalarRow) -> None:
        name, value = row.name, row.value
        if name == "lr":
            group = row.group or 0
            if row.step != st.step:
                if st.step is None and self.schedule is not None:
                    st.restarts += len(self.schedule.restarts(row.step + 1))
                st.step = row.step
                st.steps += 1
                st.last_step_wall = row.wall
            st.lr[group] = value
        elif name == "lr_expected":
            st.expected[row.group or 0] = value
        elif name == "momentum":
            st.momentum[row.group or 0] = value
        elif name == "phase":
            st.phase = int(value) if math.isfinite(value) else None
        elif name == "step_time":
            if math.isfinite(value):
                i = next((i for i, b in enumerate(STEP_BUCKETS) if value <= b), len(STEP_BUCKETS))
                st.buckets[i] += 1
                st.step_time_sum += value
        elif name == "nonfinite":
            if value != 0:
                self._count_nonfinite(st, row.step)
        elif name.startswith("val_"):
            st.validation[name[4:]] = value
        elif name in _GAUGE_ROWS:
            st.gauges[name] = value

    def _event(self, st: _State, ev: EventRow) -> None:
        kind = ev.kind
        if kind == "restart":
            st.restarts += 1
        elif kind == "checkpoint_saved":
            st.checkpoints += 1
            st.last_checkpoint = max(st.last_checkpoint, ev.wall)
        elif kind == "nonfinite":
            self._count_nonfinite(st, ev.step)
        elif kind == "rollback":
            st.rollbacks += 1
        elif kind == "resumed":
            st.resumed_from = ev.step
        elif kind in ("schedule_replanned", "world_size_changed"):
            self._schedule_changed(st, ev)
        elif kind in _STATUS_OF_EVENT:
            st.status = _STATUS_OF_EVENT[kind]
            if kind == "run_failed":
                st.failures += 1

    def _schedule_changed(self, st: _State, ev: EventRow) -> None:
        """A replan or a world-size change: the run's new length, and a replan's schedule from here on."""
        total = ev.payload.get("total_steps")
        if isinstance(total, int) and not isinstance(total, bool):
            st.planned_steps = total
        new = ev.payload.get("schedule")
        if ev.kind == "schedule_replanned" and isinstance(new, dict):
            from cosanneal.schedules import from_dict

            self.schedule = from_dict(new)
            self._configured = configured_restarts(self.schedule)

    @staticmethod
    def _count_nonfinite(st: _State, step: int) -> None:
        """Count one update per step (an event and a scalar of the same step count once)."""
        if st.nonfinite_step != step:
            st.nonfinite += 1
            st.nonfinite_step = step

    def flush(self) -> None:
        """Rewrite the textfile (when configured) with the current state."""
        if self.textfile is not None:
            atomic_write_bytes(self.textfile, self.exposition())

    def close(self) -> None:
        """Write the final textfile and stop the HTTP server (idempotent)."""
        self.flush()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- exposition ---------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what ``/metrics`` serves)."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))

    def snapshot(self) -> _State:
        """A consistent copy of the state (taken under the lock)."""
        with self._lock:
            return self._state.snapshot()


class _Collector:
    """Builds every metric family from one snapshot of a :class:`PrometheusSink`'s state."""

    def __init__(self, sink: PrometheusSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        sink = self.sink
        st = sink.snapshot()
        names, values = list(sink._label_names), list(sink._label_values)

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=names)
            if value is not None:
                family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        def per(name: str, doc: str, label: str, data: Mapping[Any, float]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=[*names, label])
            for key in sorted(data):
                family.add_metric([*values, str(key)], data[key])
            return family

        yield per("cosanneal_learning_rate", "LR the optimizer used, per param group.", "group", st.lr)
        yield per(
            "cosanneal_expected_learning_rate",
            "LR the schedule prescribes for the same update, per param group.",
            "group",
            st.expected,
        )
        yield per("cosanneal_momentum", "Momentum or beta1 per param group.", "group", st.momentum)
        yield gauge("cosanneal_step", "Schedule step of the last recorded update.", st.step)
        yield counter("cosanneal_optimizer_steps", "Optimizer updates recorded by this process.", st.steps)
        for row, (name, doc) in _GAUGE_ROWS.items():
            yield gauge(name, doc, st.gauges.get(row))
        phases = {p: float(st.phase == i) for i, p in enumerate(PHASES)} if st.phase is not None else {}
        yield per("cosanneal_phase", "1 for the schedule's current phase, 0 for the others.", "phase", phases)
        yield counter("cosanneal_restarts", "Schedule restarts the run went through.", st.restarts)
        yield gauge(
            "cosanneal_configured_restarts",
            "Restarts the schedule makes before its horizon (NaN: endless).",
            sink._configured,
        )
        yield gauge(
            "cosanneal_in_restart_window",
            "1 during a warmup or the first part of a cycle after a scheduled restart.",
            float(st.in_window),
        )
        yield gauge("cosanneal_validation_loss", "Last validation loss.", st.validation.get("loss"))
        others = {k: v for k, v in st.validation.items() if k != "loss"}
        yield per("cosanneal_validation_metric", "Last value of each validation metric.", "metric", others)
        yield counter("cosanneal_nonfinite_steps", "Updates with non-finite loss or gradients.", st.nonfinite)
        yield counter("cosanneal_rollbacks", "Rollbacks to the last good checkpoint.", st.rollbacks)
        yield counter("cosanneal_checkpoints", "Checkpoints saved.", st.checkpoints)
        yield gauge(
            "cosanneal_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint (the process start before the first one).",
            st.last_checkpoint,
        )
        yield gauge(
            "cosanneal_last_step_timestamp_seconds",
            "Unix time of the last recorded update.",
            st.last_step_wall,
        )
        hist = HistogramMetricFamily(
            "cosanneal_step_duration_seconds", "Seconds per optimizer update.", labels=names
        )
        cumulative, buckets = 0, []
        for bound, count in zip([*STEP_BUCKETS, math.inf], st.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), float(cumulative)))
        hist.add_metric(values, buckets, st.step_time_sum)
        yield hist
        yield gauge("cosanneal_run_start_timestamp_seconds", "Unix time this process started.", st.started)
        yield gauge(
            "cosanneal_run_duration_seconds",
            "Seconds from the start to the last batch.",
            st.last_wall - st.started,
        )
        status = {s: float(s == st.status) for s in STATUSES}
        yield per(
            "cosanneal_run_status", "1 for the run's current status, 0 for the others.", "status", status
        )
        yield counter("cosanneal_run_failures", "Failures (run_failed events) of the run.", st.failures)
        if sink.cost is not None:
            yield from _cost_families(sink.cost, st, gauge)


def measured_step_seconds(state: _State) -> float | None:
    """Wall seconds per update of this session: ``(last update's wall - start) / (step + 1 - resumed_from)``.

    ``None`` before the session's first update.

    Example:
        >>> st = _State(started=100.0, step=49, last_step_wall=125.0, resumed_from=40)
        >>> measured_step_seconds(st)
        2.5
    """
    if state.step is None or not math.isfinite(state.last_step_wall):
        return None
    updates = state.step + 1 - state.resumed_from
    if updates <= 0:
        return None
    return max(0.0, state.last_step_wall - state.started) / updates


def _cost_families(
    cost: CostPlan, st: _State, gauge: Callable[[str, str, float | None], Any]
) -> Iterator[Any]:
    """The cost gauges of one snapshot (module docstring: the formulas)."""
    end = time.time() if st.status == "running" else st.last_wall
    seconds = cost.previous_seconds + max(0.0, end - st.started)
    yield gauge(
        "cosanneal_cost",
        "Cost so far: price per device-hour x devices x wall hours of every session of the run.",
        cost.rate_per_second * seconds,
    )
    step_seconds = (
        cost.planned_step_seconds if cost.planned_step_seconds is not None else measured_step_seconds(st)
    )
    planned = None if st.planned_steps is None else cost.planned_cost(st.planned_steps, step_seconds)
    yield gauge(
        "cosanneal_planned_cost",
        "Planned total cost: price per device-hour x devices x planned updates x seconds per update.",
        planned,
    )
    yield gauge(
        "cosanneal_planned_steps",
        "Updates the run is planned to make.",
        None if st.planned_steps is None else float(st.planned_steps),
    )
    yield gauge(
        "cosanneal_planned_step_seconds",
        "Wall seconds per update of the plan (configured, or measured in this session).",
        step_seconds,
    )
    yield gauge(
        "cosanneal_price_per_device_hour", "Configured price of one device-hour.", cost.price_per_device_hour
    )
    yield gauge("cosanneal_devices", "Devices the price applies to.", float(cost.devices))
    yield gauge(
        "cosanneal_previous_sessions_seconds",
        "Wall seconds of the run's earlier sessions, included in cosanneal_cost.",
        cost.previous_seconds,
    )
