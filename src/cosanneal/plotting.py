"""Draw learning-rate curves to PNG with matplotlib (imported only when a plot is drawn).

The figure is built with matplotlib's object API and the Agg canvas, so no global pyplot state or
display is involved. Each schedule is one line; its restarts are dashed vertical lines in the same
colour; the first schedule's warmup and hold phases are shaded.

A training run (:func:`run_figure`, written to ``lr_loss.png`` by :func:`plot_run`) is drawn from its run
store: the LR used and expected per distinct curve, momentum / beta1 on a second axis when it was annealed,
restarts and resumes marked, train and validation loss below; the title names the run and its schedule.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosanneal.schedules.base import FloatArray, Schedule
from cosanneal.schedules.lint import timeline

__all__ = [
    "DPI",
    "FIGSIZE",
    "Curve",
    "curve",
    "plot_curves",
    "plot_run",
    "png_bytes",
    "run_figure",
    "run_title",
    "schedule_summary",
]

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


def schedule_summary(schedule: Schedule, total_steps: int | None = None) -> str:
    """A short description of a schedule: its kind, its cycles within ``total_steps`` and its peak.

    The cycles are counted from the schedule's restarts before ``total_steps`` (not shown for a single
    decay); ``(x2)`` is a ``cycle_mult`` other than 1.

    Example:
        >>> from cosanneal import Constant, Cosine
        >>> schedule_summary(Cosine(0.1, cycle_steps=10, cycle_mult=2, max_cycles=3), 70)
        'cosine, 3 cycles (x2), peak 0.1'
        >>> schedule_summary(Cosine(0.1, cycle_steps=100), 100), schedule_summary(Constant(0.01))
        ('cosine, peak 0.1', 'constant, peak 0.01')
    """
    kind = str(schedule.to_dict().get("kind", type(schedule).__name__.lower()))
    parts = [kind]
    if total_steps:
        cycles = len(schedule.restarts(total_steps)) + 1
        if cycles > 1:
            mult = getattr(schedule, "cycle_mult", None)
            parts.append(
                f"{cycles} cycles" + (f" (x{mult:g})" if isinstance(mult, (int, float)) and mult != 1 else "")
            )
    return ", ".join([*parts, f"peak {schedule.peak:.4g}"])


def run_title(params: Mapping[str, Any], default_name: str) -> str:
    """``"<run name> — <schedule summary>"`` from a run's params (``config.name``, ``schedule``, ``total_steps``).

    Without a schedule in the params (or one this cosanneal cannot read) the title is the name alone.

    Example:
        >>> from cosanneal import Cosine
        >>> sched = Cosine(0.1, cycle_steps=10, cycle_mult=2, max_cycles=3)
        >>> run_title({"config": {"name": "digits-sgdr"}, "schedule": sched.to_dict(), "total_steps": 70}, "x")
        'digits-sgdr — cosine, 3 cycles (x2), peak 0.1'
        >>> run_title({}, "runs/x")
        'runs/x'
    """
    from cosanneal.errors import CosannealError
    from cosanneal.schedules import from_dict

    config = params.get("config")
    name = config.get("name") if isinstance(config, Mapping) else None
    name = str(name) if name else default_name
    spec = params.get("schedule")
    if not isinstance(spec, Mapping):
        return name
    total = params.get("total_steps")
    try:
        summary = schedule_summary(from_dict(spec), int(total) if isinstance(total, (int, float)) else None)
    except (CosannealError, ValueError, TypeError, KeyError):
        summary = str(spec.get("kind", "unknown schedule"))
    return f"{name} — {summary}"


def _distinct(run: Any, name: str) -> list[tuple[list[int], Any, Any]]:
    """The per-group series ``name`` as ``(groups, steps, values)``, groups with identical curves merged."""
    curves: dict[tuple[bytes, bytes], tuple[list[int], Any, Any]] = {}
    for group in run.groups(name):
        steps, values = run.scalar(name, group)
        key = (steps.tobytes(), np.nan_to_num(values, nan=np.inf).tobytes())
        if key in curves:
            curves[key][0].append(group)
        else:
            curves[key] = ([group], steps, values)
    return list(curves.values())


def _label(what: str, groups: list[int], n_groups: int) -> str:
    """``"lr"`` for a one-group run, else ``"lr (group 1)"`` / ``"lr (groups 0, 2)"``."""
    if n_groups <= 1:
        return what
    return f"{what} (group{'s' if len(groups) > 1 else ''} {', '.join(map(str, groups))})"


def _mark(axes: Sequence[Any], steps: Sequence[int], label: str, **style: Any) -> None:
    """A vertical line at every step on every axis (``gid = label``); one legend entry, on the first axis."""
    for j, step in enumerate(steps):
        for ax in axes:
            ax.axvline(step, gid=label, label=label if j == 0 and ax is axes[0] else None, **style)


def run_figure(run_dir: str | Path) -> Any:
    """The figure of a training run, from its run store (what :func:`plot_run` writes).

    Above: the LR used (one line and one legend entry per distinct curve: param groups that share a curve
    share a line) and the LR the schedule expected (dotted); momentum / beta1 on a second y axis when it
    was annealed (a ``momentum`` series that changes); the restarts (dashed, ``gid="restart"``) and the
    updates where the run was resumed (dash-dot, ``gid="resumed"``, from the ``resumed`` events). Below:
    train and validation loss. The title is :func:`run_title`.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas; ``fig.axes`` is ``[lr, loss]``, then the
        momentum axis when there is one.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal import runs

    with runs.open(run_dir) as run:
        names = set(run.scalar_names())
        fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.6), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax_lr, ax_loss = fig.subplots(2, 1, sharex=True)
        ax_lr.set_title(run_title(run.params, Path(run_dir).name))
        lrs = _distinct(run, "lr") if "lr" in names else []
        n_groups = sum(len(groups) for groups, _, _ in lrs)
        for k, (groups, steps, lr) in enumerate(lrs):
            ax_lr.plot(steps, lr, color=f"C{k}", lw=1.4, label=_label("lr", groups, n_groups))
        for groups, steps, expected in _distinct(run, "lr_expected") if "lr_expected" in names else []:
            ax_lr.plot(
                steps, expected, color="black", lw=0.8, ls=":", label=_label("expected", groups, n_groups)
            )
        restarts = sorted({int(e["step"]) for e in run.events("restart")})
        _mark([ax_lr, ax_loss], restarts, "restart", color="tab:red", ls="--", lw=0.7, alpha=0.6)
        resumes = sorted({int(e["step"]) for e in run.events("resumed")})
        _mark([ax_lr, ax_loss], resumes, "resumed", color="tab:purple", ls="-.", lw=1.2, alpha=0.8)
        ax_lr.set_ylabel("learning rate")
        handles, labels = ax_lr.get_legend_handles_labels()
        momenta = _distinct(run, "momentum") if "momentum" in names else []
        annealed = [m for m in momenta if np.nanmax(m[2]) > np.nanmin(m[2])]
        if annealed:
            ax_m = ax_lr.twinx()
            for k, (groups, steps, momentum) in enumerate(annealed):
                ax_m.plot(steps, momentum, color=f"C{len(lrs) + k}", lw=1.0, ls="--", alpha=0.8,
                          label=_label("momentum", groups, n_groups))  # fmt: skip
            ax_m.set_ylabel("momentum / beta1")
            more_handles, more_labels = ax_m.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        if handles:
            ax_lr.legend(handles, labels, loc="best", fontsize="small")
        if "loss" in names:
            steps, loss = run.scalar("loss")
            ax_loss.plot(steps, loss, color="C0", lw=0.8, alpha=0.7, label="train loss")
        if "val_loss" in names:
            steps, loss = run.scalar("val_loss")
            ax_loss.plot(steps, loss, "o-", color="C3", ms=3, lw=1.2, label="val loss")
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("optimizer update")
        ax_loss.set_ylabel("loss")
        if ax_loss.get_legend_handles_labels()[0]:
            ax_loss.legend(loc="best", fontsize="small")
        for ax in (ax_lr, ax_loss):
            ax.grid(True, alpha=0.3)
    return fig


def plot_run(run_dir: Any, path: Any) -> None:
    """Write :func:`run_figure` of a training run to a PNG at ``path``, atomically.

    ``lr_loss.png`` of ``cosanneal train``: LR used vs expected per distinct curve, momentum when annealed,
    restarts and resumes marked above; train and val loss below.
    """
    from cosanneal.io import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(run_figure(run_dir)))
