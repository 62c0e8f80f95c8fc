"""The report's charts as PNGs: one matplotlib figure per concern, every run overlaid in its own colour.

These are the page's print and no-script view and the files in ``<stem>_files/``; the page's
interactive charts draw the same panels from :mod:`cosanneal.analysis.report_series`.

Figures use matplotlib's object API on the Agg canvas (no pyplot state, no display). The x axis of every
chart is the optimizer update (step), with the epoch on a top axis when every run has the same
``steps_per_epoch``. Run ``k`` is drawn in colour ``C<k>`` everywhere, so a run keeps its colour from
chart to chart and in the header's swatch. Legends sit to the right of the plot area, never on the
data. Loss is on a log axis (non-positive values are left out); the smoothed curves are the EMA of
:func:`~cosanneal.analysis.report_series.ema` with weight ``smoothing`` (default
:data:`~cosanneal.analysis.report_series.DEFAULT_SMOOTHING`), over the raw curve drawn faintly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cosanneal.analysis.report_data import RunData
from cosanneal.analysis.report_series import (
    DEFAULT_SMOOTHING,
    MAX_MARKED_RESTARTS,
    ema,
    epoch_axis,
    lr_panels,
    phase_spans,
)
from cosanneal.plotting import DPI, png_bytes

__all__ = ["CHARTS", "Chart", "color", "render_charts"]

_WIDTH = 10.0
_HEIGHT = 4.0
_PHASE_SHADES = {0.0: ("warmup", "tab:orange", 0.12), 2.0: ("hold", "tab:gray", 0.15)}


def color(index: int) -> str:
    """The colour of run ``index`` (matplotlib's ``C0``..``C9`` cycle, as ``#rrggbb``).

    Example:
        >>> color(0)
        '#1f77b4'
    """
    from matplotlib.colors import to_hex

    return str(to_hex(f"C{index % 10}"))


@dataclasses.dataclass(frozen=True)
class Chart:
    """A rendered chart.

    Attributes:
        key: short file-safe name (``lr``, ``loss``, ...), used in the PNG's file name.
        title: the figure heading in the HTML.
        png: the PNG bytes.
    """

    key: str
    title: str
    png: bytes


def _shared_steps_per_epoch(data: Sequence[RunData]) -> float | None:
    axes = [epoch_axis(d) for d in data]
    per = {a.get("steps_per_epoch") for a in axes}
    if not data or any(a["kind"] != "per_epoch" for a in axes) or len(per) != 1:
        return None
    value = per.pop()
    return float(value) if isinstance(value, int | float) else None


def _figure(data: Sequence[RunData], rows: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH, _HEIGHT * (0.75 * rows + 0.25)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step (optimizer update)")
    per_epoch = _shared_steps_per_epoch(data)
    if per_epoch is not None:
        top = axes[0].secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch", fontsize="small")
    return fig, list(axes)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _legend(ax: Any) -> None:
    """The legend outside the plot area, to the right of it: it never covers a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small")


def _lr_chart(data: Sequence[RunData], smoothing: float) -> Any:
    panels = lr_panels(data)
    fig, axes = _figure(data, max(len(panels), 1))
    if not panels:
        _empty(axes[0], "no lr series logged")
        return fig
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_ylabel(panel.label(data) if len(panels) > 1 else "lr")
        shaded: set[str] = set()
        runs_in = sorted({m.run for m in panel.members})
        several_groups = len({m.group for m in panel.members}) > 1
        first = data[runs_in[0]]
        if "phase" in first.series:
            for start, end, phase in phase_spans(*first.series["phase"]):
                _, shade, alpha = next(v for v in _PHASE_SHADES.values() if v[0] == phase)
                label = None if phase in shaded else f"{phase} ({first.summary.name})"
                ax.axvspan(start, end, color=shade, alpha=alpha, lw=0, label=label)
                shaded.add(phase)
        for m in panel.members:
            c, name = color(m.run), data[m.run].summary.name + (f" g{m.group}" if several_groups else "")
            if m.lr is not None:
                ax.plot(*m.lr, color=c, lw=1.6, label=f"{name} lr")
            if m.expected is not None:
                ax.plot(*m.expected, color="black", lw=0.9, ls=(0, (2, 2)),
                        label=f"{name} expected" if len(data) > 1 else "expected (lr_expected)")  # fmt: skip
        for k in runs_in:
            run = data[k]
            restarts = [e["step"] for e in run.events_of("restart")]
            for j, step in enumerate(restarts[:MAX_MARKED_RESTARTS]):
                ax.axvline(step, color=color(k), ls="--", lw=0.8, alpha=0.7,
                           label=f"{run.summary.name} restart" if j == 0 else None)  # fmt: skip
            for j, event in enumerate(run.events_of("schedule_replanned")):
                ax.axvline(event["step"], color=color(k), ls="-.", lw=1.2,
                           label=f"{run.summary.name} replan" if j == 0 else None)  # fmt: skip
        _legend(ax)
    return fig


def _log_y(ax: Any) -> None:
    if any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines()):
        ax.set_yscale("log", nonpositive="mask")


def _loss_chart(data: Sequence[RunData], smoothing: float) -> Any:
    val_metrics = sorted({n for d in data for n in d.series if n.startswith("val_") and n != "val_loss"})
    fig, axes = _figure(data, 1 + (1 if val_metrics else 0))
    ax = axes[0]
    ax.set_ylabel("loss (log)")
    drawn = False
    for k, run in enumerate(data):
        c, name = color(k), run.summary.name
        if "loss" in run.series:
            steps, loss = run.series["loss"]
            ax.plot(steps, loss, color=c, lw=0.7, alpha=0.35)
            ax.plot(steps, ema(loss, smoothing), color=c, lw=1.4, label=f"{name} train")
            drawn = True
        if "val_loss" in run.series:
            ax.plot(*run.series["val_loss"], "o--", color=c, ms=4, lw=1.0, label=f"{name} validation")
            drawn = True
        for e in run.events_of("restart"):
            ax.axvline(e["step"], color=c, ls=":", lw=0.7, alpha=0.6)
    if not drawn:
        _empty(ax, "no loss logged")
    else:
        _log_y(ax)
    _legend(ax)
    if val_metrics:
        ax_val = axes[1]
        ax_val.set_ylabel("validation metrics")
        for k, run in enumerate(data):
            for j, metric in enumerate(val_metrics):
                if metric in run.series:
                    marker = "osD^v"[j % 5]
                    ax_val.plot(*run.series[metric], marker=marker, color=color(k), ms=4, lw=1.0,
                                label=f"{run.summary.name} {metric}")  # fmt: skip
        _legend(ax_val)
    return fig


def _series_chart(name: str, ylabel: str, empty: str) -> Callable[[Sequence[RunData], float], Any]:
    def draw(data: Sequence[RunData], smoothing: float) -> Any:
        fig, (ax,) = _figure(data)
        ax.set_ylabel(ylabel)
        drawn = False
        for k, run in enumerate(data):
            if name in run.series:
                steps, values = run.series[name]
                ax.plot(steps, values, color=color(k), lw=0.7, alpha=0.35)
                ax.plot(steps, ema(values, smoothing), color=color(k), lw=1.4, label=run.summary.name)
                drawn = True
        if not drawn:
            _empty(ax, empty)
        _legend(ax)
        return fig

    return draw


def _lanes(data: Sequence[RunData], ylabel: str) -> tuple[Any, Any]:
    """A figure with one horizontal lane per run (lane ``k`` at y = k, labelled with the run's name)."""
    fig, (ax,) = _figure(data)
    ax.set_ylabel(ylabel)
    ax.set_yticks(range(len(data)), [d.summary.name for d in data])
    ax.set_ylim(-0.5, len(data) - 0.5)
    return fig, ax


def _nonfinite_chart(data: Sequence[RunData], smoothing: float) -> Any:
    fig, ax = _lanes(data, "non-finite / rollback")
    drawn = False
    for k, run in enumerate(data):
        bad = [e["step"] for e in run.events_of("nonfinite")]
        if "nonfinite" in run.series:
            steps, values = run.series["nonfinite"]
            bad += steps[np.isnan(values) | (values != 0)].tolist()
        if bad:
            ax.plot(bad, [k] * len(bad), "x", color=color(k), ms=8, mew=2,
                    label=f"{run.summary.name} non-finite ({len(bad)})")  # fmt: skip
            drawn = True
        rollbacks = [e["step"] for e in run.events_of("rollback")]
        if rollbacks:
            ax.plot(rollbacks, [k] * len(rollbacks), "v", color="tab:red", ms=9,
                    label=f"{run.summary.name} rollback ({len(rollbacks)})")  # fmt: skip
            drawn = True
        ax.axhline(k, color=color(k), lw=0.6, alpha=0.4)
        ax.plot([0, max(run.summary.updates - 1, 0)], [k, k], "|", color=color(k), ms=12)
    if not drawn:
        _empty(ax, "no non-finite values in any run")
    _legend(ax)
    return fig


def _checkpoint_chart(data: Sequence[RunData], smoothing: float) -> Any:
    fig, ax = _lanes(data, "checkpoints")
    drawn = False
    for k, run in enumerate(data):
        name, c = run.summary.name, color(k)
        ax.axhline(k, color=c, lw=0.6, alpha=0.4)
        saved = sorted({int(e["step"]) for e in run.events_of("checkpoint_saved")})
        if saved:
            ax.plot(saved, [k] * len(saved), "o", color=c, ms=6, label=f"{name} saved ({len(saved)})")
            drawn = True
        marks = (
            ("checkpoint_loaded", "s", "loaded"),
            ("checkpoint_skipped_corrupt", "X", "corrupt, skipped"),
        )
        for kind, marker, text in marks:
            steps = [e["step"] for e in run.events_of(kind)]
            if steps:
                ax.plot(steps, [k] * len(steps), marker, color="tab:red", ms=9, mfc="none",
                        label=f"{name} {text}")  # fmt: skip
                drawn = True
        best = run.summary.best_checkpoint_step
        if best is not None:
            ax.plot([best], [k], "*", color="gold", mec="black", ms=18, label=f"{name} best (step {best})")
            drawn = True
    if not drawn:
        _empty(ax, "no checkpoint events")
    _legend(ax)
    return fig


#: The charts in page order: (key, title, drawing function).
CHARTS: tuple[tuple[str, str, Callable[[Sequence[RunData], float], Any]], ...] = (
    ("lr", "Learning rate: used, expected, restarts and phases (one panel per schedule shape)", _lr_chart),
    ("loss", "Training and validation loss (log scale)", _loss_chart),
    ("grad_norm", "Gradient norm", _series_chart("grad_norm", "gradient norm", "no grad_norm logged")),
    ("nonfinite", "Non-finite values and rollbacks", _nonfinite_chart),
    ("checkpoints", "Checkpoints (best marked)", _checkpoint_chart),
    (
        "throughput",
        "Throughput (samples/s)",
        _series_chart("samples_per_s", "samples / s", "no samples_per_s logged"),
    ),
)


def render_charts(data: Sequence[RunData], *, smoothing: float = DEFAULT_SMOOTHING) -> list[Chart]:
    """Draw every chart of :data:`CHARTS` for the runs, in page order.

    Args:
        data: the runs, in colour order.
        smoothing: the EMA weight of the smoothed loss, gradient-norm and throughput curves.

    Example:
        >>> [key for key, _, _ in CHARTS]
        ['lr', 'loss', 'grad_norm', 'nonfinite', 'checkpoints', 'throughput']
    """
    charts = []
    for key, title, draw in CHARTS:
        fig = draw(data, smoothing)
        charts.append(Chart(key, title, png_bytes(fig)))
    return charts
