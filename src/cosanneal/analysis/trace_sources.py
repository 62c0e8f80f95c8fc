"""Read the LR a job really used, as ``(steps, lrs)``, from wherever the job logged it.

Sources (see :func:`read_trace`):

* a cosanneal run directory (``run.db``): series ``lr`` of one param group; the run's stored schedule
  comes along, so ``cosanneal verify RUN`` needs no ``--schedule``;
* a TensorBoard log directory (or one event file): the scalar tag given, else the single LR-looking tag
  (``lr/group_0``, ``lr-SGD``, ``learning_rate``, ``train/lr``...). Values are float32 there, so the
  trace carries a resolution of ``2**-23`` (relative);
* a CSV or JSONL file of ``(step, lr)`` rows; the step column may be called ``step``, ``iteration``,
  ``iter``, ``global_step`` or ``update``, the LR column ``lr``, ``learning_rate`` or ``lr-*``;
* an MLflow run, ``mlflow:<run_id>``, read with the MLflow client from ``tracking_uri``.

A step logged twice (a resumed job repeats steps) keeps the value logged last. Every problem is a
:class:`TraceError` with one line naming the source and what exists.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError

__all__ = ["FLOAT32_RESOLUTION", "Trace", "TraceError", "find_lr_keys", "load_trace", "read_trace"]

#: Relative resolution of a float32 value (TensorBoard stores scalars as float32).
FLOAT32_RESOLUTION = 2.0**-23

_STEP_KEYS = ("step", "global_step", "iteration", "iter", "update", "updates", "optimizer_step", "steps")
_LR_EXACT = ("lr", "learning_rate", "learning-rate", "learningrate")
_LR_PATTERN = re.compile(r"(^|[/_\-. ])(lr|learning[_\- ]?rate)($|[/_\-. ])", re.IGNORECASE)
_NOT_LR = re.compile(r"expected|scale|find|_max|_min|momentum|decay", re.IGNORECASE)


class TraceError(CosannealError, ValueError):
    """An LR trace cannot be read: missing file, unknown tag or column, no values."""


@dataclasses.dataclass(frozen=True)
class Trace:
    """An LR trace and what is known about where it came from.

    Attributes:
        steps: Optimizer-update indices, sorted, unique.
        lrs: The LR used at each step (float64; NaN where a NaN was logged).
        source: Human-readable origin (``"run.db lr group 0"``, ``"tensorboard tag lr/group_0"``).
        resolution: Relative precision of the stored values (0 for float64 sources).
        schedule: The schedule stored with the source (run directories), else ``None``.
        scale: Factor of the stored schedule for this param group (run directories), else 1.
        stride: Updates between two recorded steps when the source says (a run's ``telemetry.every``),
            else ``None`` (inferred from the steps).
        last_step: The run's last update when the source records its end (a run directory's last
            ``run_finished`` or ``preempted`` event), else ``None``.
        steps_per_epoch: Updates per epoch when the source records it (a run directory's params).
    """

    steps: npt.NDArray[np.int64]
    lrs: npt.NDArray[np.float64]
    source: str
    resolution: float = 0.0
    schedule: Any = None
    scale: float = 1.0
    stride: int | None = None
    last_step: int | None = None
    steps_per_epoch: float | None = None


def find_lr_keys(keys: Iterable[str]) -> list[str]:
    """The names among ``keys`` that look like a learning-rate series, sorted.

    Example:
        >>> find_lr_keys(["loss", "lr/group_0", "lr_expected/group_0", "lr-SGD", "train/lr", "learning_rate"])
        ['learning_rate', 'lr-SGD', 'lr/group_0', 'train/lr']
    """
    return sorted(k for k in keys if _LR_PATTERN.search(k) and not _NOT_LR.search(k))


def _pick(keys: Sequence[str], tag: str | None, group: int, what: str, source: str) -> str:
    """The series to read: ``tag`` if given (must exist), else the single LR-looking key (per group)."""
    if tag is not None:
        if tag not in keys:
            shown = ", ".join(sorted(keys)[:30]) or "none"
            raise TraceError(f"{source}: no {what} {tag!r}; {what}s found: {shown}")
        return tag
    found = find_lr_keys(keys)
    if not found:
        shown = ", ".join(sorted(keys)[:30]) or "none"
        raise TraceError(f"{source}: no learning-rate {what} found; pass --tag one of: {shown}")
    if len(found) > 1:
        same_group = [k for k in found if re.search(rf"(?<![0-9.]){group}$", k)]
        exact = [k for k in found if k.lower() in _LR_EXACT]
        for narrowed in (same_group, exact):
            if len(narrowed) == 1:
                return narrowed[0]
        raise TraceError(
            f"{source}: several learning-rate {what}s ({', '.join(found)}); pass --tag one of them"
        )
    return found[0]


def _finish(
    steps: Sequence[float], lrs: Sequence[float], source: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Sort by step (stable: the last value logged for a step wins) and check the steps."""
    if not steps:
        raise TraceError(f"{source}: the trace is empty")
    s = np.asarray(steps, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(s != np.round(s)):
        bad = next(x for x in s if not (math.isfinite(x) and x >= 0 and x == round(x)))
        raise TraceError(f"{source}: steps must be whole numbers >= 0, got {bad!r}")
    v = np.asarray(lrs, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    ints, v = s[order].astype(np.int64), v[order]
    last = np.ones(len(ints), dtype=bool)
    last[:-1] = ints[1:] != ints[:-1]
    return ints[last], v[last]


# ---- run directories ----------------------------------------------------------------------------
def _read_run(path: Path, group: int, tag: str | None) -> Trace:
    from cosanneal import runs
    from cosanneal.schedules import from_dict

    name = tag or "lr"
    try:
        run = runs.open(path)
    except (FileNotFoundError, ValueError) as exc:
        raise TraceError(str(exc)) from None
    with run:
        try:
            steps, lrs = run.scalar(name, group)
        except KeyError as exc:
            raise TraceError(f"{path}: {exc.args[0]}") from None
        params = run.params
        schedule = None
        if isinstance(params.get("schedule"), dict):
            try:
                schedule = from_dict(params["schedule"])
            except (CosannealError, TypeError) as exc:
                raise TraceError(f"{path}: the stored schedule cannot be rebuilt: {exc}") from None
        scale = 1.0
        if schedule is not None and name == "lr" and "lr_expected" in run.scalar_names():
            try:
                e_steps, expected = run.scalar("lr_expected", group)
            except KeyError:
                e_steps = np.zeros(0, dtype=np.int64)
            if len(e_steps):
                base = float(schedule(float(e_steps[0])))
                if base != 0.0 and math.isfinite(float(expected[0])):
                    scale = float(expected[0]) / base
        stride, last_step = _recorded_coverage(params, run.events())
    per_epoch = params.get("steps_per_epoch")
    steps_per_epoch = (
        float(per_epoch) if isinstance(per_epoch, (int, float)) and _positive(per_epoch) else None
    )
    source = f"{path} ({name}, group {group})"
    return Trace(
        steps, lrs, source, schedule=schedule, scale=scale, stride=stride, last_step=last_step,
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip


def _positive(value: float) -> bool:
    return not isinstance(value, bool) and math.isfinite(value) and value > 0


def _recorded_coverage(
    params: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> tuple[int | None, int | None]:
    """``(stride, last update)`` a run store states: its config's ``telemetry.every`` and its end.

    A trainer run records scalars every ``telemetry.every`` updates (``step % every == 0``); its last
    ``run_finished`` / ``preempted`` event is at the number of updates done, so the last update is one less.
    """
    config = params.get("config")
    telemetry = config.get("telemetry") if isinstance(config, Mapping) else None
    every = telemetry.get("every") if isinstance(telemetry, Mapping) else None
    stride = every if isinstance(every, int) and not isinstance(every, bool) and every >= 1 else None
    ends = [e["step"] for e in events if e.get("kind") in ("run_finished", "preempted")]
    last_step = int(ends[-1]) - 1 if ends and int(ends[-1]) >= 1 else None
    return stride, last_step


# ---- TensorBoard ------------------------------------------------------------------------------
def _event_dirs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted({p.parent for p in path.rglob("events.out.tfevents.*") if p.is_file()})


def _read_tensorboard(path: Path, tag: str | None, group: int) -> Trace:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = _event_dirs(path)
    if not dirs:
        raise TraceError(
            f"{path}: not a run directory (no run.db) nor a TensorBoard log directory (no "
            "events.out.tfevents.* files)"
        )
    found: dict[str, tuple[Any, str]] = {}
    for where in dirs:
        acc = EventAccumulator(str(where), size_guidance={"scalars": 0})
        acc.Reload()
        rel = "." if where == path or where.is_file() else where.relative_to(path).as_posix()
        for t in acc.Tags().get("scalars", []):
            found[t if rel == "." else f"{rel}/{t}"] = (acc, t)
    if not found:
        raise TraceError(
            f"{path}: no TensorBoard scalars found (no events.out.tfevents.* files with scalars)"
        )
    key = _pick(list(found), tag, group, "tag", str(path))
    acc, inner = found[key]
    events = sorted(acc.Scalars(inner), key=lambda e: e.wall_time)
    steps, lrs = _finish([e.step for e in events], [e.value for e in events], f"{path} tag {key}")
    return Trace(steps, lrs, f"{path} (tensorboard tag {key})", FLOAT32_RESOLUTION)


# ---- CSV / JSONL ------------------------------------------------------------------------------
def _column(keys: Sequence[str], wanted: Sequence[str]) -> str | None:
    lowered = {k.strip().lower(): k for k in keys}
    for w in wanted:
        if w in lowered:
            return lowered[w]
    return None


def _rows_to_trace(rows: Sequence[Mapping[str, Any]], path: Path, tag: str | None, group: int) -> Trace:
    if not rows:
        raise TraceError(f"{path}: no rows")
    keys = list(rows[0].keys())
    step_key = _column(keys, _STEP_KEYS)
    if step_key is None:
        raise TraceError(
            f"{path}: no step column; name one of {', '.join(_STEP_KEYS)} (columns: {', '.join(keys)})"
        )
    lr_key = _pick([k for k in keys if k != step_key], tag, group, "column", str(path))
    steps: list[float] = []
    lrs: list[float] = []
    for n, row in enumerate(rows, start=2):
        raw_step, raw_lr = row.get(step_key), row.get(lr_key)
        if raw_lr in (None, ""):
            continue  # a row logged without the LR (other metrics only)
        try:
            steps.append(float(raw_step))  # type: ignore[arg-type]
            lrs.append(float(raw_lr))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TraceError(
                f"{path}: row {n}: {step_key}={raw_step!r}, {lr_key}={raw_lr!r} are not numbers"
            ) from None
    s, v = _finish(steps, lrs, str(path))
    return Trace(s, v, f"{path} (column {lr_key})")


def _read_csv(path: Path, tag: str | None, group: int) -> Trace:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        if reader.fieldnames is None:
            raise TraceError(f"{path}: empty file; expected a header such as 'step,lr'")
    return _rows_to_trace(rows, path, tag, group)


def _read_jsonl(path: Path, tag: str | None, group: int) -> Trace:
    rows: list[Mapping[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}: line {n} is not JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise TraceError(f"{path}: line {n} is not a JSON object")
            rows.append(obj)
    keys: list[str] = []
    for r in rows:  # JSONL rows may carry different keys; take their union, in order
        keys.extend(k for k in r if k not in keys)
    return _rows_to_trace([{k: r.get(k) for k in keys} for r in rows], path, tag, group)


# ---- MLflow -----------------------------------------------------------------------------------
def _read_mlflow(run_id: str, tag: str | None, group: int, tracking_uri: str | None) -> Trace:
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:  # pragma: no cover - mlflow is an extra
        raise TraceError("reading an MLflow run needs mlflow (pip install 'cosanneal[mlflow]')") from None
    source = f"mlflow:{run_id}"
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TraceError(f"{source}: {first} (tracking URI {tracking_uri or 'default'})") from None
    key = _pick(list(run.data.metrics), tag, group, "metric", source)
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
    steps, lrs = _finish([m.step for m in history], [m.value for m in history], f"{source} metric {key}")
    return Trace(steps, lrs, f"{source} (metric {key})")


# ---- entry points -----------------------------------------------------------------------------
def read_trace(
    source: str | os.PathLike[str], tag: str | None = None, group: int = 0, tracking_uri: str | None = None
) -> Trace:
    r"""Read an LR trace and its provenance from a run directory, TensorBoard logs, CSV/JSONL or MLflow.

    Args:
        source: A run directory (holds ``run.db``), a ``.db`` file, a TensorBoard log directory or
            event file, a ``.csv``/``.jsonl``/``.ndjson`` file, or ``mlflow:<run_id>``.
        tag: The series to read (TensorBoard tag, column, MLflow metric key, run-store scalar name);
            default: the learning-rate series found.
        group: Param group, for run directories and to choose among per-group tags (``lr/group_1``).
        tracking_uri: MLflow tracking URI for ``mlflow:`` sources (default: MLflow's own default).

    Raises:
        TraceError: the source does not exist, holds no such series, or is ambiguous.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "lr.csv"
        >>> _ = p.write_text("iteration,learning_rate\n0,0.1\n1,0.05\n")
        >>> t = read_trace(p)
        >>> t.steps.tolist(), t.lrs.tolist(), t.resolution
        ([0, 1], [0.1, 0.05], 0.0)
    """
    text = os.fspath(source)
    if text.startswith("mlflow:"):
        run_id = text[len("mlflow:") :].strip()
        if not run_id:
            raise TraceError("mlflow: source needs a run id: mlflow:<run_id>")
        return _read_mlflow(run_id, tag, group, tracking_uri)
    path = Path(text)
    if not path.exists():
        raise TraceError(f"{path}: no such file or directory")
    if (path.is_dir() and (path / "run.db").is_file()) or path.suffix == ".db":
        return _read_run(path, group, tag)
    if path.is_file() and path.suffix.lower() == ".csv":
        return _read_csv(path, tag, group)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(path, tag, group)
    if path.is_dir() or path.name.startswith("events.out.tfevents."):
        return _read_tensorboard(path, tag, group)
    raise TraceError(
        f"{path}: unknown trace format; use a run directory, a TensorBoard log directory, .csv, .jsonl "
        "or mlflow:<run_id>"
    )


def load_trace(
    source: str | os.PathLike[str], tag: str | None = None, group: int = 0, tracking_uri: str | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    r"""``(steps, lrs)`` of an LR trace; see :func:`read_trace` for the sources and arguments.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "lr.jsonl"
        >>> _ = p.write_text('{"step": 1, "lr": 0.5}\n{"step": 0, "lr": 1.0}\n')
        >>> steps, lrs = load_trace(p)
        >>> steps.tolist(), lrs.tolist()
        ([0, 1], [1.0, 0.5])
    """
    trace = read_trace(source, tag=tag, group=group, tracking_uri=tracking_uri)
    return trace.steps, trace.lrs
