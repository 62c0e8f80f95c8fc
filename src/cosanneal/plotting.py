"""Draw learning-rate curves to PNG with matplotlib (imported only when a plot is drawn).

The figure is built with matplotlib's object API and the Agg canvas, so no global pyplot state or
display is involved. Each schedule is one line; its restarts are dashed vertical lines in the same
colour; the first schedule's warmup and hold phases are shaded.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from cosanneal.schedules.base import FloatArray, Schedule
from cosanneal.schedules.lint import timeline

__all__ = ["DPI", "FIGSIZE", "Curve", "curve", "plot_curves", "plot_run", "png_bytes"]

#: Figure size in inches and resolution: PNGs are 1200 x 540 pixels.
FIGSIZE = (10.0, 4.5)
DPI = 120
#: At most this many points are evaluated per curve (plus both sides of every restart).
MAX_POINTS = 20_000
#: Restart lines are drawn only when a curve has at most this many restarts.
MAX_RESTART_LINES = 200
_SHADES = {"warmup": ("tab:orange", 0.12), "hold": ("tab:gray", 0.15)}
_OTHER_SHADE = ("tab:green", 0.08)


@dataclasses.dataclass(frozen=True)
class Curve:
    """A schedule sampled for plotting.

    Attributes:
        label: legend text (usually the spec file's name).
        steps: the sampled steps, increasing.
        lr: the LR at those steps.
        restarts: steps where the LR restarts, within the run.
        spans: ``(start, end, phase)`` for every phase other than ``"anneal"``.
    """

    label: str
    steps: FloatArray
    lr: FloatArray
    restarts: list[float]
    spans: list[tuple[int, int, str]]


def _sample_steps(total_steps: int, restarts: Sequence[float]) -> FloatArray:
    if total_steps <= MAX_POINTS:
        return np.arange(total_steps, dtype=np.float64)
    grid = np.unique(np.linspace(0, total_steps - 1, MAX_POINTS).round())
    edges = [x for r in restarts for x in (np.ceil(r) - 1.0, np.ceil(r)) if 0 <= x < total_steps]
    return np.unique(np.concatenate([grid, np.asarray(edges, dtype=np.float64)]))


def curve(schedule: Schedule, total_steps: int, label: str) -> Curve:
    """Sample a bound schedule over steps ``0 .. total_steps - 1`` (every step up to 20,000 steps).

    Example:
        >>> from cosanneal import Cosine
        >>> c = curve(Cosine(1.0, warmup_steps=2, cycle_steps=4, max_cycles=2), 12, "demo")
        >>> c.restarts, c.spans
        ([6.0], [(0, 2, 'warmup'), (10, 12, 'hold')])
    """
    restarts = [float(r) for r in schedule.restarts(total_steps)]
    steps = _sample_steps(total_steps, restarts)
    spans = [(g.start, g.end, g.phase) for g in timeline(schedule, total_steps) if g.phase != "anneal"]
    merged: list[tuple[int, int, str]] = []
    for span in spans:
        if merged and merged[-1][2] == span[2] and merged[-1][1] == span[0]:
            merged[-1] = (merged[-1][0], span[1], span[2])
        else:
            merged.append(span)
    return Curve(label, steps, np.asarray(schedule(steps), dtype=np.float64), restarts, merged)


def plot_curves(curves: Sequence[Curve], *, log_y: bool = False, title: str | None = None) -> Any:
    """A matplotlib ``Figure`` with every curve, the restarts marked and the first curve's phases shaded.

    Args:
        curves: one or more sampled schedules (the first one's phases are shaded).
        log_y: use a logarithmic LR axis (steps with LR 0 are left out of the line).
        title: the figure title.

    Returns:
        A ``matplotlib.figure.Figure`` attached to an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shaded: set[str] = set()
    for start, end, phase in curves[0].spans if curves else []:
        color, alpha = _SHADES.get(phase, _OTHER_SHADE)
        ax.axvspan(start, end, color=color, alpha=alpha, lw=0, label=None if phase in shaded else phase)
        shaded.add(phase)
    for k, c in enumerate(curves):
        color = f"C{k}"
        lr = np.where(c.lr > 0, c.lr, np.nan) if log_y else c.lr
        ax.plot(c.steps, lr, color=color, lw=1.6, label=c.label)
        if 0 < len(c.restarts) <= MAX_RESTART_LINES:
            for j, r in enumerate(c.restarts):
                ax.axvline(
                    r,
                    color=color,
                    ls="--",
                    lw=0.8,
                    alpha=0.6,
                    label=f"{c.label} restarts" if j == 0 else None,
                )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_xlim(left=0)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def png_bytes(fig: Any) -> bytes:
    """Render a figure to PNG bytes (write them with an atomic file write)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_run(run_dir: Any, path: Any) -> None:
    """Write a PNG of a training run: LR used vs expected (per group) above, train/val loss below.

    Restart events from the run store are marked; the file is written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal import runs
    from cosanneal.io import atomic_write_bytes

    run = runs.open(run_dir)
    try:
        names = set(run.scalar_names())
        fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.6), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax_lr, ax_loss = fig.subplots(2, 1, sharex=True)
        for k, group in enumerate(run.groups("lr") if "lr" in names else []):
            steps, lr = run.scalar("lr", group)
            ax_lr.plot(steps, lr, color=f"C{k}", lw=1.4, label=f"lr group {group}")
            if "lr_expected" in names and group in run.groups("lr_expected"):
                e_steps, expected = run.scalar("lr_expected", group)
                ax_lr.plot(e_steps, expected, color="black", lw=0.8, ls=":", label=f"expected {group}")
        for j, event in enumerate(run.events("restart")):
            for ax in (ax_lr, ax_loss):
                ax.axvline(event["step"], color="tab:red", ls="--", lw=0.7, alpha=0.6,
                           label="restart" if j == 0 and ax is ax_lr else None)  # fmt: skip
        ax_lr.set_ylabel("learning rate")
        ax_lr.legend(loc="best", fontsize="small")
        if "loss" in names:
            steps, loss = run.scalar("loss")
            ax_loss.plot(steps, loss, color="C0", lw=0.8, alpha=0.7, label="train loss")
        if "val_loss" in names:
            steps, loss = run.scalar("val_loss")
            ax_loss.plot(steps, loss, "o-", color="C3", ms=3, lw=1.2, label="val loss")
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("optimizer update")
        ax_loss.set_ylabel("loss")
        ax_loss.legend(loc="best", fontsize="small")
        for ax in (ax_lr, ax_loss):
            ax.grid(True, alpha=0.3)
        atomic_write_bytes(path, png_bytes(fig))
    finally:
        run.close()
