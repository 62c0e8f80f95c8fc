"""``build_report``: one self-contained HTML report of one or more runs, plus its charts as PNG files.

The report reads each run store (:func:`cosanneal.runs.open`), puts a header per run (config, schedule
fingerprint, summary) and six charts with every run overlaid in its own colour: the LR (used vs
``lr_expected``, restarts and phases marked; one panel per schedule shape), training and validation
loss (log scale), gradient norm, non-finite values, checkpoints (best marked) and throughput. The
charts are interactive (zoom, hover, log and normalised-LR toggles, update/epoch axis, EMA smoothing),
drawn by the page's own inline script from inline JSON, with the PNGs as the print and no-script view.
See ``docs/report.md`` for how to read and use it.

Files written (each atomically; the HTML last, so a reader never sees a page without its charts):

* ``OUTPUT`` (e.g. ``report.html``): the page, one offline file (script, data and PNGs inline);
* ``<OUTPUT stem>_files/<chart>.png``: the same charts as PNG files, for slides and tickets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from cosanneal.analysis.report_data import RunData, RunSummary, load_run
from cosanneal.analysis.report_figures import CHARTS, color, render_charts
from cosanneal.analysis.report_html import render_html
from cosanneal.analysis.report_series import DEFAULT_MAX_POINTS, DEFAULT_SMOOTHING, chart_data
from cosanneal.errors import CosannealError
from cosanneal.io import atomic_write_bytes, atomic_write_text
from cosanneal.runtime.runstore import resolve_db

__all__ = ["ReportError", "ReportInfo", "build_report", "run_names"]


class ReportError(CosannealError, ValueError):
    """A report cannot be built from what it was given (no run store at a path, no run at all)."""


@dataclasses.dataclass(frozen=True)
class ReportInfo:
    """What :func:`build_report` wrote and the numbers it put in the headers.

    Attributes:
        html: the HTML file.
        pngs: chart key (``lr``, ``loss``, ``grad_norm``, ``nonfinite``, ``checkpoints``, ``throughput``)
            -> the PNG file.
        runs: the header numbers of each run, in the order given.
    """

    html: Path
    pngs: dict[str, Path]
    runs: list[RunSummary]


def run_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Labels for runs: the directory name, with parent directories added until the labels are unique.

    Example:
        >>> run_names(["runs/a", "runs/b"]), run_names(["x/run", "y/run"])
        (['a', 'b'], ['x/run', 'y/run'])
    """
    dirs = [Path(p).parent if Path(p).suffix == ".db" else Path(p) for p in paths]
    parts = [d.resolve().parts for d in dirs]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{name} #{i + 1}" for i, name in enumerate(names)]


def _files_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}_files")


def build_report(
    runs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    title: str | None = None,
    smoothing: float = DEFAULT_SMOOTHING,
    max_points: int = DEFAULT_MAX_POINTS,
) -> ReportInfo:
    """Write the HTML report of ``runs`` to ``output`` and its PNG charts to ``<stem>_files/``.

    Throughput in the header is ``sum(samples_per_s * step_time) / sum(step_time)``: samples processed
    per second of update time (``docs/report.md`` defines every header number).

    Args:
        runs: run directories (or ``run.db`` files); several are overlaid, one colour each.
        output: the HTML file to write (its parent directory is created).
        title: the page title; default ``cosanneal report: <run names>``.
        smoothing: the EMA weight ``w`` in ``[0, 1)`` of the smoothed loss, gradient-norm and
            throughput curves: fixed in the PNGs, the initial value of the page's slider. ``0``: raw.
        max_points: the most points of a series the page's JSON keeps (a longer one keeps each
            bucket's first, minimum, maximum and non-finite points, all exact store values).

    Returns:
        The files written and the header numbers of each run.

    Raises:
        ReportError: no run given, no run store at one of the paths, or ``smoothing`` or
            ``max_points`` out of range.

    Example:
        >>> import tempfile, pathlib
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with RunStore(d / "demo") as s:
        ...     for t in range(20):
        ...         s.log_scalars(t, {"lr": 0.1 * (1 - t / 20), "lr_expected": 0.1 * (1 - t / 20)}, group=0)
        ...         s.log_scalars(t, {"loss": 1.0 / (t + 1)})
        ...     s.log_event(20, "run_finished", updates=20)
        >>> info = build_report([d / "demo"], d / "report.html")
        >>> info.runs[0].status, info.runs[0].updates, sorted(info.pngs)[:2], info.html.name
        ('finished', 20, ['checkpoints', 'grad_norm'], 'report.html')
    """
    if not runs:
        raise ReportError("runs: give at least one run directory")
    if not (isinstance(smoothing, int | float) and 0.0 <= smoothing < 1.0):
        raise ReportError(f"smoothing: {smoothing!r} is not an EMA weight in [0, 1) (0: no smoothing)")
    if not (isinstance(max_points, int) and max_points >= 16):
        raise ReportError(f"max_points: {max_points!r} is not an integer >= 16")
    for path in runs:
        if not resolve_db(path).is_file():
            raise ReportError(
                f"run {os.fspath(path)!r}: no run store there (expected a directory holding run.db)"
            )
    names = run_names(runs)
    data: list[RunData] = [load_run(path, name) for path, name in zip(runs, names, strict=True)]
    charts = render_charts(data, smoothing=float(smoothing))
    series = chart_data(
        data,
        colors=[color(k) for k in range(len(data))],
        titles={key: chart_title for key, chart_title, _ in CHARTS},
        smoothing=float(smoothing),
        max_points=max_points,
    )
    out = Path(output)
    files_dir = _files_dir(out)
    pngs: dict[str, Path] = {}
    for chart in charts:
        pngs[chart.key] = files_dir / f"{chart.key}.png"
        atomic_write_bytes(pngs[chart.key], chart.png)
    shown = [f"{files_dir.name}/{pngs[c.key].name}" for c in charts]
    page = render_html(
        data, charts, shown, title=title or f"cosanneal report: {', '.join(names)}", series=series
    )
    atomic_write_text(out, page)
    return ReportInfo(out, pngs, [d.summary for d in data])
