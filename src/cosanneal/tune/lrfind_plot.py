"""The picture of an LR range test: loss vs LR with the curve the suggestion is read from, and the suggestion on it.

:func:`cosanneal.tune.lrfind.suggest` reads the suggestion off a zero-lag *trend* of the raw losses (not the
EMA, which lags) and its steepest descent ``d trend / d log lr``. :func:`plot_lr_find` draws exactly those:

* the raw losses (faint) and the bias-corrected EMA (``result.smoothed``, what the divergence stop watches);
* the trend (bold), with the suggested peak and floor, the steepest descent and the lowest loss marked on it;
* the slope ``d trend / d log lr`` on a second y axis (framed on its part before the lowest loss, where
  its minimum, ``steepest_lr``, is marked);
* the LR where the sweep stopped for divergence.

Every line and marker carries a ``gid`` (``"loss"``, ``"smoothed"``, ``"trend"``, ``"slope"``, ``"peak"``,
``"floor"``, ``"steepest"``, ``"lowest"``, ``"diverged"``) so tests and users can find it. matplotlib and
torch are imported only when a figure is drawn.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from cosanneal.tune.lrfind import LRFindResult

__all__ = ["SuggestionCurves", "plot_lr_find", "suggestion_curves"]

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, eq=False)
class SuggestionCurves:
    """The curves :func:`~cosanneal.tune.lrfind.suggest` reads a range test's suggestion from.

    Attributes:
        lrs: the LRs with a finite loss.
        trend: :func:`~cosanneal.tune.lrfind.trend` of their losses.
        slope: ``d trend / d log lr`` (``np.gradient`` on the log-LR axis).
        i_min: index of the lowest trend; the steepest descent is searched in ``slope[: i_min + 1]``.
    """

    lrs: FloatArray
    trend: FloatArray
    slope: FloatArray
    i_min: int

    def at(self, lr: float) -> float:
        """The trend at ``lr``, interpolated on the log-LR axis (where the suggestion sits on the curve).

        Example:
            >>> c = SuggestionCurves(np.array([1e-3, 1e-1]), np.array([2.0, 1.0]), np.array([0.0, 0.0]), 1)
            >>> round(c.at(1e-2), 6)
            1.5
        """
        return float(np.interp(np.log(lr), np.log(self.lrs), self.trend))


def suggestion_curves(result: LRFindResult) -> SuggestionCurves:
    """The trend and its slope of a range test, as :func:`~cosanneal.tune.lrfind.suggest` computes them.

    Example:
        >>> from cosanneal.tune.lrfind import LRFindResult, ema, suggest
        >>> lrs = np.geomspace(1e-4, 1.0, 41)
        >>> losses = 1.0 / (1.0 + (lrs / 1e-2) ** 2) + (lrs / 0.3) ** 4
        >>> r = LRFindResult(lrs, losses, ema(losses), suggest(lrs, losses), None)
        >>> c = suggestion_curves(r)
        >>> bool(c.lrs[c.i_min] == r.suggestion.min_loss_lr)
        True
        >>> bool(c.lrs[int(np.argmin(c.slope[: c.i_min + 1]))] == r.suggestion.steepest_lr)
        True
    """
    from cosanneal.tune.lrfind import trend

    x = np.asarray(result.lrs, dtype=np.float64)
    y = np.asarray(result.losses, dtype=np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    t = trend(y)
    slope = np.gradient(t, np.log(x)) if len(x) > 1 else np.zeros_like(t)
    return SuggestionCurves(x, t, np.asarray(slope, dtype=np.float64), int(np.argmin(t)) if len(t) else 0)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def plot_lr_find(result: LRFindResult, title: str) -> Any:
    """A matplotlib Figure (Agg, no pyplot) of a range test: loss vs LR on a log x axis, the suggestion on its curve.

    ``fig.axes`` is ``[loss axis, slope axis]`` (the slope axis only when there are at least 2 points).
    See the module docstring for what is drawn.

    Example:
        >>> from cosanneal.tune.lrfind import LRFindResult, ema, suggest
        >>> lrs = np.geomspace(1e-4, 1.0, 41)
        >>> losses = 1.0 / (1.0 + (lrs / 1e-2) ** 2) + (lrs / 0.3) ** 4
        >>> fig = plot_lr_find(LRFindResult(lrs, losses, ema(losses), suggest(lrs, losses), None), "demo")
        >>> sorted(line.get_gid() for line in fig.axes[0].lines if line.get_gid())
        ['floor', 'loss', 'lowest', 'peak', 'smoothed', 'steepest', 'trend']
        >>> [line.get_gid() for line in fig.axes[1].lines if line.get_gid()]
        ['slope', 'steepest']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal.plotting import DPI, FIGSIZE

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = suggestion_curves(result)
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.25, lw=1, label="loss", gid="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", alpha=0.6, lw=1, ls="--", gid="smoothed",
            label="smoothed loss (EMA: the divergence stop)")  # fmt: skip
    ax.plot(curves.lrs, curves.trend, color="tab:blue", lw=2.2, gid="trend",
            label="trend (the suggestion is read from it)")  # fmt: skip
    s = result.suggestion
    if s is not None:
        marks = (
            ("peak", s.peak_lr, "o", "tab:green", 9, f"suggested peak {_fmt(s.peak_lr)}"),
            ("floor", s.min_lr, "v", "tab:green", 9, f"suggested floor {_fmt(s.min_lr)}"),
            ("steepest", s.steepest_lr, "x", "tab:orange", 8, f"steepest descent {_fmt(s.steepest_lr)}"),
            ("lowest", s.min_loss_lr, "s", "tab:gray", 7, f"lowest loss {_fmt(s.min_loss_lr)}"),
        )
        for gid, lr, marker, color, size, label in marks:
            ax.plot([lr], [curves.at(lr)], marker=marker, color=color, ms=size, ls="none", label=label,
                    gid=gid, zorder=5)  # fmt: skip
        ax.axvline(s.peak_lr, color="tab:green", lw=0.8, alpha=0.5)
        ax.axvline(s.min_lr, color="tab:green", lw=0.8, ls=":", alpha=0.5)
    if result.diverged_at is not None:
        ax.axvline(result.diverged_at, color="tab:red", ls="--", gid="diverged",
                   label=f"diverged {_fmt(result.diverged_at)}")  # fmt: skip
    if len(curves.trend):  # frame the falling part; the divergent tail may leave the top
        i_min = curves.i_min
        low = float(min(curves.trend[i_min], np.min(result.losses), np.min(result.smoothed)))
        high = float(max(np.max(curves.trend[: i_min + 1]), result.losses[0], result.smoothed[0]))
        span = max(high - low, 1e-12)
        ax.set_ylim(low - 0.05 * span, high + 0.3 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if len(curves.lrs) > 1:
        ax_slope = ax.twinx()
        ax_slope.plot(curves.lrs, curves.slope, color="tab:purple", lw=1, alpha=0.7, gid="slope",
                      label="slope d trend / d log lr")  # fmt: skip
        ax_slope.axhline(0.0, color="tab:purple", lw=0.5, alpha=0.3)
        if s is not None:
            i_steep = int(np.argmin(curves.slope[: curves.i_min + 1]))
            ax_slope.plot([curves.lrs[i_steep]], [curves.slope[i_steep]], marker="x", color="tab:orange",
                          ms=8, ls="none", gid="steepest")  # fmt: skip
        falling = curves.slope[: curves.i_min + 1]  # frame the part the steepest descent is read from
        low, high = float(min(falling.min(), 0.0)), float(max(falling.max(), 0.0))
        span = max(high - low, 1e-12)
        ax_slope.set_ylim(low - 0.05 * span, high + 0.5 * span)
        ax_slope.set_ylabel("slope of the trend (per e-fold of LR)")
        more_handles, more_labels = ax_slope.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best", fontsize="small")
    fig.tight_layout()
    return fig
