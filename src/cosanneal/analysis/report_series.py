"""The report's interactive data: every chart's series as one JSON document the page's script draws.

The PNG charts (:mod:`cosanneal.analysis.report_figures`) and the interactive ones are drawn from the
same panels, so both show the same things. The values in the JSON are the run store's float64 values,
written with Python's shortest round-trip ``repr`` (``JSON.parse`` reads back the identical double);
a non-finite value is ``null`` (a gap in the line). A series longer than ``max_points`` keeps, of every
bucket of consecutive steps, the first point, its minimum and maximum and its first non-finite point
(:func:`decimate`): the points kept are still exact store values, and spikes survive.

Definitions the page (and ``docs/report.md``) uses:

* **peak** of an LR series: the largest finite value of the run's ``lr_expected`` for that param group
  (of ``lr`` when no expected LR is logged); the *normalised* view divides ``lr`` and ``lr_expected``
  by it, so the curve's maximum is 1 whatever the peak LR.
* **LR panels** (:func:`lr_panels`): the ``(run, group)`` LR series are put together in one panel when
  they have the same schedule shape: the same schedule fingerprint and group, or the same normalised
  curve on the steps they share (``rtol=1e-9``); a separate panel only for a different shape.
* **epoch** of a step: from an ``epoch`` scalar the run logged (linear between its points), else
  ``step / steps_per_epoch`` from the run's params (or its config); unknown otherwise (:func:`epoch_axis`).
* **smoothing**: a debiased exponential moving average with weight ``w`` (TensorBoard's):
  ``m_t = w m_(t-1) + (1 - w) x_t``, shown as ``m_t / (1 - w^n)`` after ``n`` finite values
  (:func:`ema`); ``w = 0`` is the raw curve. Non-finite values are skipped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.analysis.report_data import FloatArray, IntArray, RunData, Series

__all__ = [
    "DEFAULT_MAX_POINTS",
    "DEFAULT_SMOOTHING",
    "LrPanel",
    "LrSeries",
    "chart_data",
    "decimate",
    "ema",
    "epoch_axis",
    "lr_panels",
    "normalised",
    "peak_of",
]

#: The EMA weight of the loss, gradient-norm and throughput curves in the PNGs and, initially, the page.
DEFAULT_SMOOTHING = 0.9
#: A series longer than this is thinned to about this many points in the page's JSON (see decimate).
DEFAULT_MAX_POINTS = 10_000
#: Restart lines drawn per run at most (as in the PNGs).
MAX_MARKED_RESTARTS = 200
_RTOL = 1e-9
_PHASES = {0.0: ("warmup", "#ff7f0e", 0.12), 2.0: ("hold", "#7f7f7f", 0.15)}


def ema(values: npt.ArrayLike, weight: float) -> FloatArray:
    """The debiased exponential moving average of ``values`` (see the module docstring).

    Non-finite values are skipped: the average carries over them and they stay non-finite in the result.

    Args:
        values: the raw curve.
        weight: ``w`` in ``[0, 1)``; ``0`` returns the values unchanged.

    Example:
        >>> ema([1.0, 3.0, float("nan"), 3.0], 0.5).tolist()
        [1.0, 2.3333333333333335, nan, 2.7142857142857144]
    """
    x = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing: {weight!r} is not in [0, 1)")
    out = np.array(x, copy=True)
    if weight == 0.0:
        return out
    m, n = 0.0, 0
    for i, v in enumerate(x.tolist()):
        if math.isfinite(v):
            m = weight * m + (1.0 - weight) * v
            n += 1
            out[i] = m / (1.0 - weight**n)
    return out


def normalised(values: npt.ArrayLike, peak: float | None) -> FloatArray:
    """``values / peak``: an LR curve on the scale of its own peak (1 at the peak).

    Example:
        >>> normalised([0.0, 0.05, 0.2], 0.2).tolist()
        [0.0, 0.25, 1.0]
    """
    x = np.asarray(values, dtype=np.float64)
    return x / peak if peak else np.full_like(x, np.nan)


def peak_of(values: npt.ArrayLike) -> float | None:
    """The largest finite, positive value, or ``None``.

    Example:
        >>> peak_of([0.0, 0.1, float("nan"), 0.05]), peak_of([0.0])
        (0.1, None)
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    return float(x.max()) if len(x) else None


def decimate(steps: IntArray, values: FloatArray, max_points: int) -> tuple[IntArray, FloatArray]:
    """At most about ``max_points`` points of a series, each an exact point of it.

    The steps are cut into ``max_points // 4`` buckets; each keeps its first point, its minimum, its
    maximum and its first non-finite point. The last point is always kept.

    Example:
        >>> s = np.arange(1000)
        >>> v = np.sin(s / 50.0)
        >>> ks, kv = decimate(s, v, 100)
        >>> len(ks) <= 100, bool(np.all(v[ks] == kv)), int(ks[-1]), float(kv.max()) == float(v.max())
        (True, True, 999, True)
    """
    n = len(steps)
    if n <= max_points:
        return steps, values
    buckets = max(max_points // 4, 1)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = [n - 1]
    finite = np.isfinite(values)
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if b <= a:
            continue
        keep.append(a)
        chunk = finite[a:b]
        if chunk.any():
            masked = np.where(chunk, values[a:b], np.nan)
            keep += [a + int(np.nanargmin(masked)), a + int(np.nanargmax(masked))]
        if not chunk.all():
            keep.append(a + int(np.argmin(chunk)))
    idx = np.unique(np.asarray(keep, dtype=np.int64))
    return steps[idx], values[idx]


def epoch_axis(run: RunData) -> dict[str, Any]:
    """How run ``run`` maps a step to an epoch, for the page's epoch axis.

    Returns:
        ``{"kind": "scalar", "steps": [...], "epochs": [...]}`` from a logged ``epoch`` scalar,
        ``{"kind": "per_epoch", "steps_per_epoch": n}`` from the ``steps_per_epoch`` param or config key,
        or ``{"kind": "unknown", "why": ...}``.

    Example:
        >>> from cosanneal.analysis.report_data import RunData, RunSummary
        >>> s = RunSummary("a", "/a", "finished", 10, None, 0, 0, None, None, {}, 0, 0, None, None, None, 1)
        >>> epoch_axis(RunData(s, {"steps_per_epoch": 20}, {}, {}, {}, []))
        {'kind': 'per_epoch', 'steps_per_epoch': 20.0}
    """
    if "epoch" in run.series and len(run.series["epoch"][0]):
        steps, epochs = run.series["epoch"]
        ok = np.isfinite(epochs)
        if ok.any():
            return {"kind": "scalar", "steps": _ints(steps[ok]), "epochs": _floats(epochs[ok])}
    config = run.params.get("config")
    per_epoch = run.params.get("steps_per_epoch")
    if per_epoch is None and isinstance(config, dict):
        per_epoch = config.get("steps_per_epoch")
    if isinstance(per_epoch, int | float) and not isinstance(per_epoch, bool) and per_epoch > 0:
        return {"kind": "per_epoch", "steps_per_epoch": float(per_epoch)}
    return {"kind": "unknown", "why": "no epoch scalar and no steps_per_epoch param in the run store"}


def epochs_of(axis: dict[str, Any], steps: npt.ArrayLike) -> FloatArray | None:
    """The epochs of ``steps`` under an :func:`epoch_axis` mapping, or ``None`` when it is unknown.

    Example:
        >>> epochs_of({"kind": "per_epoch", "steps_per_epoch": 20.0}, [0, 10, 40]).tolist()
        [0.0, 0.5, 2.0]
    """
    s = np.asarray(steps, dtype=np.float64)
    if axis["kind"] == "per_epoch":
        return s / float(axis["steps_per_epoch"])
    if axis["kind"] == "scalar":
        known = np.asarray(axis["steps"], dtype=np.float64)
        return np.asarray(np.interp(s, known, np.asarray(axis["epochs"])), dtype=np.float64)
    return None


@dataclasses.dataclass(frozen=True)
class LrSeries:
    """The LR of one param group of one run.

    Attributes:
        run: the run's index (its colour).
        group: the param group.
        lr: ``(steps, lr used)``, or ``None`` when only the expected LR was logged.
        expected: ``(steps, lr_expected)``, or ``None``.
        peak: see the module docstring.
    """

    run: int
    group: int
    lr: Series | None
    expected: Series | None
    peak: float | None

    @property
    def shape(self) -> Series:
        """The curve that defines the schedule shape: the expected LR, else the LR used."""
        curve = self.expected if self.expected is not None else self.lr
        assert curve is not None
        return curve


@dataclasses.dataclass(frozen=True)
class LrPanel:
    """One LR panel: series of the same schedule shape.

    Attributes:
        members: the series, in run then group order.
    """

    members: tuple[LrSeries, ...]

    def label(self, data: Sequence[RunData]) -> str:
        """The panel's y label: ``lr`` and the groups it shows, e.g. ``lr, sgdr g0, nan g0``."""
        runs = {m.run for m in self.members}
        groups = {m.group for m in self.members}
        if len(runs) == len(data) and len(groups) == 1:
            return f"lr, group {next(iter(groups))}" if max(groups) > 0 else "lr"
        names = [f"{data[m.run].summary.name} g{m.group}" for m in self.members]
        return "lr, " + ", ".join(names)


def _same_shape(a: LrSeries, b: LrSeries, fingerprints: Sequence[str | None]) -> bool:
    fa, fb = fingerprints[a.run], fingerprints[b.run]
    if fa is not None and fa == fb and a.group == b.group:
        return True
    (sa, va), (sb, vb) = a.shape, b.shape
    common, ia, ib = np.intersect1d(sa, sb, assume_unique=True, return_indices=True)
    if len(common) < 2 or a.peak is None or b.peak is None:
        return False
    na, nb = normalised(va[ia], a.peak), normalised(vb[ib], b.peak)
    both = np.isfinite(na) & np.isfinite(nb)
    if (np.isfinite(na) != np.isfinite(nb)).any() or both.sum() < 2:
        return False
    return bool(np.allclose(na[both], nb[both], rtol=_RTOL, atol=1e-15))


def lr_panels(data: Sequence[RunData]) -> list[LrPanel]:
    """The LR panels of the report: one per schedule shape (see the module docstring).

    Every ``(run, group)`` LR series goes into the first panel whose first member has its shape, so
    runs (and param groups) that differ only in peak LR share one panel and their normalised curves
    coincide.

    Example:
        >>> from cosanneal.analysis.report_data import RunData, RunSummary
        >>> def run(name, peak):
        ...     s = RunSummary(name, "/", "finished", 4, None, 0, 0, None, None, {}, 0, 0, None, None, None, 1)
        ...     t = np.arange(4)
        ...     return RunData(s, {}, {0: (t, peak * np.array([0.5, 1, 0.5, 0.1]))}, {}, {}, [])
        >>> [len(p.members) for p in lr_panels([run("a", 0.1), run("b", 0.01)])]
        [2]
    """
    fingerprints = [d.summary.fingerprint for d in data]
    items: list[LrSeries] = []
    for k, run in enumerate(data):
        for group in sorted(set(run.lr) | set(run.lr_expected)):
            lr, expected = run.lr.get(group), run.lr_expected.get(group)
            shape = expected if expected is not None else lr
            assert shape is not None
            peak = peak_of(shape[1])
            items.append(LrSeries(k, group, lr, expected, peak))
    panels: list[list[LrSeries]] = []
    for item in items:
        for members in panels:
            if _same_shape(members[0], item, fingerprints):
                members.append(item)
                break
        else:
            panels.append([item])
    return [LrPanel(tuple(m)) for m in panels]


# ---- the JSON document --------------------------------------------------------------------------------
def _floats(values: npt.ArrayLike) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _ints(values: npt.ArrayLike) -> list[int]:
    return [int(v) for v in np.asarray(values).tolist()]


def _line(run: int, label: str, series: Series, max_points: int, **style: Any) -> dict[str, Any]:
    steps, values = decimate(series[0], series[1], max_points)
    return {"run": run, "label": label, "x": _ints(steps), "y": _floats(values), **style}


def _points(run: int, label: str, steps: Sequence[int], y: float, **style: Any) -> dict[str, Any]:
    return {
        "run": run,
        "label": label,
        "x": [int(s) for s in steps],
        "y": [y] * len(steps),
        "mode": "points",
        **style,
    }


def _restarts(data: Sequence[RunData], dash: str, only: Sequence[int] | None = None) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for k, run in enumerate(data):
        if only is not None and k not in only:
            continue
        steps = [int(e["step"]) for e in run.events_of("restart")][:MAX_MARKED_RESTARTS]
        lines += [{"run": k, "x": s, "dash": dash, "label": f"{run.summary.name} restart"} for s in steps]
        replans = [int(e["step"]) for e in run.events_of("schedule_replanned")]
        lines += [
            {"run": k, "x": s, "dash": "9,3,2,3", "label": f"{run.summary.name} replan"} for s in replans
        ]
    return lines


def phase_spans(steps: IntArray, codes: FloatArray) -> list[tuple[float, float, str]]:
    """The warmup and hold spans of a ``phase`` series as ``(first step, last step + 1, phase)``.

    Example:
        >>> phase_spans(np.arange(6), np.array([0.0, 0, 1, 1, 2, 2]))
        [(0.0, 2.0, 'warmup'), (4.0, 6.0, 'hold')]
    """
    spans: list[tuple[float, float, str]] = []
    if not len(steps):
        return spans
    change = np.flatnonzero(np.diff(codes) != 0) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [len(steps)]]).astype(np.int64)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        code = float(codes[s])
        if code in _PHASES:
            spans.append((float(steps[s]), float(steps[e - 1]) + 1.0, _PHASES[code][0]))
    return spans


def _lr_chart(data: Sequence[RunData], panels: Sequence[LrPanel], max_points: int) -> dict[str, Any]:
    out = []
    for i, panel in enumerate(panels):
        runs_in = sorted({m.run for m in panel.members})
        series: list[dict[str, Any]] = []
        for m in panel.members:
            name = data[m.run].summary.name
            suffix = f" g{m.group}" if len({x.group for x in panel.members}) > 1 else ""
            if m.lr is not None:
                series.append(
                    _line(
                        m.run, f"{name}{suffix} lr", m.lr, max_points, group=m.group, peak=m.peak, width=1.6
                    )
                )
            if m.expected is not None:
                series.append(
                    _line(
                        m.run,
                        f"{name}{suffix} expected",
                        m.expected,
                        max_points,
                        group=m.group,
                        peak=m.peak,
                        width=0.9,
                        dash="2,2",
                        color="#000000",
                    )
                )
        spans = []
        first = data[runs_in[0]]
        if "phase" in first.series:
            for start, end, phase in phase_spans(*first.series["phase"]):
                shade = next(v for v in _PHASES.values() if v[0] == phase)
                spans.append(
                    {
                        "run": runs_in[0],
                        "x0": start,
                        "x1": end,
                        "color": shade[1],
                        "alpha": shade[2],
                        "label": f"{phase} ({first.summary.name})",
                    }
                )
        out.append(
            {
                "id": f"lr-{i}",
                "ylabel": panel.label(data),
                "series": series,
                "spans": spans,
                "vlines": _restarts(data, "4,3", runs_in),
                "ylog": False,
                "toggles": ["log", "normalised"],
            }
        )
    if not out:
        out.append(_empty_panel("lr-0", "lr", "no lr series logged"))
    return {"key": "lr", "panels": out}


def _empty_panel(pid: str, ylabel: str, text: str) -> dict[str, Any]:
    return {"id": pid, "ylabel": ylabel, "series": [], "empty": text, "ylog": False, "toggles": []}


def _loss_chart(data: Sequence[RunData], max_points: int) -> dict[str, Any]:
    series: list[dict[str, Any]] = []
    for k, run in enumerate(data):
        name = run.summary.name
        if "loss" in run.series:
            series.append(_line(k, f"{name} train", run.series["loss"], max_points, smooth=True))
        if "val_loss" in run.series:
            series.append(
                _line(
                    k,
                    f"{name} validation",
                    run.series["val_loss"],
                    max_points,
                    mode="linepoints",
                    dash="5,3",
                    marker="o",
                )
            )
    panels = [
        {
            "id": "loss-0",
            "ylabel": "loss",
            "series": series,
            "vlines": _restarts(data, "1,3"),
            "ylog": True,
            "toggles": ["log"],
        }
    ]
    if not series:
        panels = [_empty_panel("loss-0", "loss", "no loss logged")]
    metrics = sorted({n for d in data for n in d.series if n.startswith("val_") and n != "val_loss"})
    if metrics:
        val = [
            _line(
                k,
                f"{run.summary.name} {m}",
                run.series[m],
                max_points,
                mode="linepoints",
                marker="osD^v"[j % 5],
            )
            for k, run in enumerate(data)
            for j, m in enumerate(metrics)
            if m in run.series
        ]
        panels.append(
            {"id": "loss-1", "ylabel": "validation metrics", "series": val, "ylog": False, "toggles": ["log"]}
        )
    return {"key": "loss", "panels": panels}


def _series_chart(
    key: str, name: str, ylabel: str, empty: str, data: Sequence[RunData], max_points: int
) -> dict[str, Any]:
    series = [
        _line(k, run.summary.name, run.series[name], max_points, smooth=True)
        for k, run in enumerate(data)
        if name in run.series
    ]
    if not series:
        return {"key": key, "panels": [_empty_panel(f"{key}-0", ylabel, empty)]}
    return {
        "key": key,
        "panels": [{"id": f"{key}-0", "ylabel": ylabel, "series": series, "ylog": False, "toggles": ["log"]}],
    }


def _lanes_panel(
    pid: str, ylabel: str, data: Sequence[RunData], series: list[dict[str, Any]], empty: str
) -> dict[str, Any]:
    extent = [
        {
            "run": k,
            "label": f"{d.summary.name} updates",
            "x": [0, max(d.summary.updates - 1, 0)],
            "y": [float(k), float(k)],
            "mode": "points",
            "marker": "|",
            "hover": False,
        }
        for k, d in enumerate(data)
    ]
    panel: dict[str, Any] = {
        "id": pid,
        "ylabel": ylabel,
        "series": extent + series,
        "ylog": False,
        "toggles": [],
        "lanes": [d.summary.name for d in data],
    }
    if not series:
        panel["note"] = empty
    return panel


def _nonfinite_chart(data: Sequence[RunData]) -> dict[str, Any]:
    series: list[dict[str, Any]] = []
    for k, run in enumerate(data):
        bad = [int(e["step"]) for e in run.events_of("nonfinite")]
        if "nonfinite" in run.series:
            steps, values = run.series["nonfinite"]
            bad += steps[np.isnan(values) | (values != 0)].tolist()
        if bad:
            series.append(
                _points(k, f"{run.summary.name} non-finite ({len(bad)})", sorted(bad), float(k), marker="x")
            )
        rollbacks = [int(e["step"]) for e in run.events_of("rollback")]
        if rollbacks:
            series.append(
                _points(
                    k,
                    f"{run.summary.name} rollback ({len(rollbacks)})",
                    rollbacks,
                    float(k),
                    marker="v",
                    color="#d62728",
                )
            )
    panel = _lanes_panel(
        "nonfinite-0", "non-finite / rollback", data, series, "no non-finite values in any run"
    )
    return {"key": "nonfinite", "panels": [panel]}


def _checkpoint_chart(data: Sequence[RunData]) -> dict[str, Any]:
    series: list[dict[str, Any]] = []
    for k, run in enumerate(data):
        name = run.summary.name
        saved = sorted({int(e["step"]) for e in run.events_of("checkpoint_saved")})
        if saved:
            series.append(_points(k, f"{name} saved ({len(saved)})", saved, float(k), marker="o"))
        for kind, marker, text in (
            ("checkpoint_loaded", "s", "loaded"),
            ("checkpoint_skipped_corrupt", "X", "corrupt, skipped"),
        ):
            steps = [int(e["step"]) for e in run.events_of(kind)]
            if steps:
                series.append(_points(k, f"{name} {text}", steps, float(k), marker=marker, color="#d62728"))
        best = run.summary.best_checkpoint_step
        if best is not None:
            series.append(
                _points(k, f"{name} best (step {best})", [best], float(k), marker="*", color="#ffd700")
            )
    return {
        "key": "checkpoints",
        "panels": [_lanes_panel("checkpoints-0", "checkpoints", data, series, "no checkpoint events")],
    }


def chart_data(
    data: Sequence[RunData],
    *,
    colors: Sequence[str],
    titles: dict[str, str],
    smoothing: float = DEFAULT_SMOOTHING,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """The JSON document of the interactive charts (what the page's script reads).

    Args:
        data: the runs, in colour order.
        colors: run ``k``'s colour as ``#rrggbb``.
        titles: chart key -> its heading.
        smoothing: the initial EMA weight of the smoothed curves.
        max_points: the most points kept per series (see :func:`decimate`).

    Returns:
        ``{"version", "smoothing", "runs": [{"name", "color", "epoch"}], "charts": [{"key", "title",
        "panels": [{"id", "ylabel", "ylog", "toggles", "series": [{"run", "label", "x", "y", ...}],
        "vlines", "spans", "lanes"}]}]}``; series ``x`` are steps, ``y`` values (``null``: non-finite).
    """
    panels = lr_panels(data)
    charts = [
        _lr_chart(data, panels, max_points),
        _loss_chart(data, max_points),
        _series_chart("grad_norm", "grad_norm", "gradient norm", "no grad_norm logged", data, max_points),
        _nonfinite_chart(data),
        _checkpoint_chart(data),
        _series_chart(
            "throughput", "samples_per_s", "samples / s", "no samples_per_s logged", data, max_points
        ),
    ]
    for chart in charts:
        chart["title"] = titles.get(chart["key"], chart["key"])
    runs = [{"name": d.summary.name, "color": colors[k], "epoch": epoch_axis(d)} for k, d in enumerate(data)]
    return {"version": 1, "smoothing": smoothing, "runs": runs, "charts": charts}
