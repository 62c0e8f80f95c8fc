"""The report's charts: one matplotlib figure per concern, every run overlaid in its own colour.

Figures use matplotlib's object API on the Agg canvas (no pyplot state, no display). The x axis of every
chart is the optimizer update (step). Run ``k`` is drawn in colour ``C<k>`` everywhere, so a run keeps
its colour from chart to chart and in the header's swatch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cosanneal.analysis.report_data import RunData
from cosanneal.plotting import DPI, png_bytes

__all__ = ["CHARTS", "Chart", "color", "render_charts"]

_WIDTH = 10.0
_HEIGHT = 4.0
_PHASE_SHADES = {0.0: ("warmup", "tab:orange", 0.12), 2.0: ("hold", "tab:gray", 0.15)}
_MAX_MARKED_RESTARTS = 200
_SMOOTH_MIN_POINTS = 50


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


def _figure(rows: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH, _HEIGHT * (0.75 * rows + 0.25)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step (optimizer update)")
    return fig, list(axes)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")


def _phase_spans(steps: np.ndarray, codes: np.ndarray) -> list[tuple[float, float, str]]:
    spans: list[tuple[float, float, str]] = []
    if not len(steps):
        return spans
    change = np.flatnonzero(np.diff(codes) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(steps)]])
    for s, e in zip(starts, ends, strict=True):
        code = float(codes[s])
        if code in _PHASE_SHADES:
            last = float(steps[e - 1]) + 1.0
            spans.append((float(steps[s]), last, _PHASE_SHADES[code][0]))
    return spans


def _lr_chart(data: Sequence[RunData]) -> Any:
    groups = sorted({g for d in data for g in d.lr} | {g for d in data for g in d.lr_expected})
    fig, axes = _figure(max(len(groups), 1))
    if not groups:
        _empty(axes[0], "no lr series logged")
        return fig
    for ax, group in zip(axes, groups, strict=True):
        ax.set_ylabel(f"lr, group {group}")
        shaded: set[str] = set()
        for k, run in enumerate(data):
            c, name = color(k), run.summary.name
            if k == 0 and "phase" in run.series:
                for start, end, phase in _phase_spans(*run.series["phase"]):
                    _, shade, alpha = next(v for v in _PHASE_SHADES.values() if v[0] == phase)
                    label = None if phase in shaded else f"{phase} ({name})"
                    ax.axvspan(start, end, color=shade, alpha=alpha, lw=0, label=label)
                    shaded.add(phase)
            if group in run.lr:
                ax.plot(*run.lr[group], color=c, lw=1.6, label=f"{name} lr")
            if group in run.lr_expected:
                ax.plot(*run.lr_expected[group], color="black", lw=0.9, ls=(0, (2, 2)),
                        label=f"{name} expected" if len(data) > 1 else "expected (lr_expected)")  # fmt: skip
            restarts = [e["step"] for e in run.events_of("restart")]
            for j, step in enumerate(restarts[:_MAX_MARKED_RESTARTS]):
                ax.axvline(step, color=c, ls="--", lw=0.8, alpha=0.7,
                           label=f"{name} restart" if j == 0 else None)  # fmt: skip
        _legend(ax)
    return fig


def _smooth(values: np.ndarray) -> np.ndarray:
    window = max(len(values) // 50, 1)
    if len(values) < _SMOOTH_MIN_POINTS or window == 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _loss_chart(data: Sequence[RunData]) -> Any:
    val_metrics = sorted({n for d in data for n in d.series if n.startswith("val_") and n != "val_loss"})
    fig, axes = _figure(1 + (1 if val_metrics else 0))
    ax = axes[0]
    ax.set_ylabel("loss")
    drawn = False
    for k, run in enumerate(data):
        c, name = color(k), run.summary.name
        if "loss" in run.series:
            steps, loss = run.series["loss"]
            ax.plot(steps, loss, color=c, lw=0.7, alpha=0.35)
            ax.plot(steps, _smooth(loss), color=c, lw=1.4, label=f"{name} train")
            drawn = True
        if "val_loss" in run.series:
            ax.plot(*run.series["val_loss"], "o--", color=c, ms=4, lw=1.0, label=f"{name} validation")
            drawn = True
        for e in run.events_of("restart"):
            ax.axvline(e["step"], color=c, ls=":", lw=0.7, alpha=0.6)
    if not drawn:
        _empty(ax, "no loss logged")
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


def _series_chart(name: str, ylabel: str, empty: str) -> Callable[[Sequence[RunData]], Any]:
    def draw(data: Sequence[RunData]) -> Any:
        fig, (ax,) = _figure()
        ax.set_ylabel(ylabel)
        drawn = False
        for k, run in enumerate(data):
            if name in run.series:
                steps, values = run.series[name]
                ax.plot(steps, values, color=color(k), lw=0.7, alpha=0.35)
                ax.plot(steps, _smooth(values), color=color(k), lw=1.4, label=run.summary.name)
                drawn = True
        if not drawn:
            _empty(ax, empty)
        _legend(ax)
        return fig

    return draw


def _lanes(data: Sequence[RunData], ylabel: str) -> tuple[Any, Any]:
    """A figure with one horizontal lane per run (lane ``k`` at y = k, labelled with the run's name)."""
    fig, (ax,) = _figure()
    ax.set_ylabel(ylabel)
    ax.set_yticks(range(len(data)), [d.summary.name for d in data])
    ax.set_ylim(-0.5, len(data) - 0.5)
    return fig, ax


def _nonfinite_chart(data: Sequence[RunData]) -> Any:
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


def _checkpoint_chart(data: Sequence[RunData]) -> Any:
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
CHARTS: tuple[tuple[str, str, Callable[[Sequence[RunData]], Any]], ...] = (
    ("lr", "Learning rate per param group: used, expected, restarts and phases", _lr_chart),
    ("loss", "Training and validation loss", _loss_chart),
    ("grad_norm", "Gradient norm", _series_chart("grad_norm", "gradient norm", "no grad_norm logged")),
    ("nonfinite", "Non-finite values and rollbacks", _nonfinite_chart),
    ("checkpoints", "Checkpoints (best marked)", _checkpoint_chart),
    (
        "throughput",
        "Throughput (samples/s)",
        _series_chart("samples_per_s", "samples / s", "no samples_per_s logged"),
    ),
)


def render_charts(data: Sequence[RunData]) -> list[Chart]:
    """Draw every chart of :data:`CHARTS` for the runs, in page order.

    Example:
        >>> [key for key, _, _ in CHARTS]
        ['lr', 'loss', 'grad_norm', 'nonfinite', 'checkpoints', 'throughput']
    """
    charts = []
    for key, title, draw in CHARTS:
        fig = draw(data)
        charts.append(Chart(key, title, png_bytes(fig)))
    return charts
