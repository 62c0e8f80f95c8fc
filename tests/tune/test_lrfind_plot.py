"""The lr-find picture draws the curves the suggestion is read from, and the suggestion on them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cosanneal.tune.lrfind import LRFindResult, ema, lr_find, suggest, trend
from cosanneal.tune.lrfind_plot import plot_lr_find, suggestion_curves


def _by_gid(ax: Any, gid: str) -> Any:
    (line,) = [x for x in ax.lines if x.get_gid() == gid]
    return line


@pytest.fixture(scope="module")
def result() -> LRFindResult:
    """A real range test on a linear regression: it falls, bottoms out and diverges."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]

    def loss(m: torch.nn.Module, b: Any) -> torch.Tensor:
        return torch.nn.functional.mse_loss(m(b[0]).squeeze(1), b[1])

    res = lr_find(
        torch.nn.Linear(4, 1), lambda p: torch.optim.SGD(p, lr=0.1), batches, loss, min_lr=1e-4, max_lr=10.0
    )
    assert res.suggestion is not None and res.diverged_at is not None
    return res


def test_the_lines_are_the_results_arrays(result: LRFindResult) -> None:
    fig = plot_lr_find(result, "lr-find demo")
    ax, ax_slope = fig.axes
    assert ax.get_title() == "lr-find demo" and ax.get_xscale() == "log"
    for gid, values in (
        ("loss", result.losses),
        ("smoothed", result.smoothed),
        ("trend", trend(result.losses)),
    ):
        line = _by_gid(ax, gid)
        np.testing.assert_array_equal(line.get_xdata(), result.lrs)
        np.testing.assert_array_equal(line.get_ydata(), values)
    slope = _by_gid(ax_slope, "slope")
    np.testing.assert_array_equal(slope.get_xdata(), result.lrs)
    np.testing.assert_array_equal(slope.get_ydata(), np.gradient(trend(result.losses), np.log(result.lrs)))
    assert _by_gid(ax, "diverged").get_xdata()[0] == result.diverged_at


def test_the_suggestion_is_marked_on_the_trend(result: LRFindResult) -> None:
    s = result.suggestion
    assert s is not None
    fig = plot_lr_find(result, "t")
    ax, ax_slope = fig.axes
    t = trend(result.losses)
    log_lr = np.log(result.lrs)
    for gid, lr in (
        ("peak", s.peak_lr),
        ("floor", s.min_lr),
        ("steepest", s.steepest_lr),
        ("lowest", s.min_loss_lr),
    ):
        mark = _by_gid(ax, gid)
        assert mark.get_xdata().tolist() == [lr]
        assert mark.get_ydata()[0] == pytest.approx(np.interp(np.log(lr), log_lr, t), rel=1e-12)
    # the steepest descent is the slope's minimum before the lowest trend, as suggest() reads it
    i_min = int(np.argmin(t))
    steep = _by_gid(ax_slope, "steepest")
    assert (
        steep.get_xdata()[0]
        == s.steepest_lr
        == result.lrs[int(np.argmin(_by_gid(ax_slope, "slope").get_ydata()[: i_min + 1]))]
    )
    assert _by_gid(ax, "lowest").get_ydata()[0] == pytest.approx(t.min())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == [
        "loss",
        "smoothed loss (EMA: the divergence stop)",
        "trend (the suggestion is read from it)",
    ]
    assert f"suggested peak {s.peak_lr:.4g}" in labels and f"suggested floor {s.min_lr:.4g}" in labels
    assert labels[-1] == "slope d trend / d log lr"


def test_curves_match_suggest_and_a_flat_sweep_has_no_marks() -> None:
    lrs = np.geomspace(1e-4, 1.0, 41)
    losses = 1.0 / (1.0 + (lrs / 1e-2) ** 2) + (lrs / 0.3) ** 4
    s = suggest(lrs, losses)
    assert s is not None
    c = suggestion_curves(LRFindResult(lrs, losses, ema(losses), s, None))
    assert c.lrs[c.i_min] == s.min_loss_lr
    assert c.lrs[int(np.argmin(c.slope[: c.i_min + 1]))] == s.steepest_lr
    flat = np.ones(10)
    fig = plot_lr_find(LRFindResult(lrs[:10], flat, flat, None, None), "flat")
    gids = {line.get_gid() for ax in fig.axes for line in ax.lines}
    assert {"loss", "smoothed", "trend", "slope"} <= gids and not gids & {
        "peak",
        "floor",
        "steepest",
        "diverged",
    }
