"""Compare schedules on one task: train every schedule with every seed, then tabulate and plot.

Every (schedule, seed) pair is one training run in ``<out>/<label>/seed-<s>`` (label = the spec file's
stem), trained by :func:`cosanneal.jobs.compare.run_compare`. This module holds what needs no training:
the table is computed from the run stores only (:func:`cosanneal.runs.open`), so it can be recomputed at
any time with :func:`summarize` (and written with :func:`write_summary`):

* final and best value of the metric per run; mean and sample standard deviation (``ddof = 1``) over
  seeds, ``mean ± std``;
* steps to target: the update count of the first evaluation where the metric reaches ``target``
  (``>=`` for a maximised metric, ``<=`` for a minimised one); seconds to target: the training time
  up to it, ``sum(step_time)`` over those updates (evaluation excluded); averaged over the seeds
  that reached it (``reached`` counts them);
* cost: updates and wall seconds of the run (run store wall-clock span).

Example:
    >>> mean_std([0.9, 0.92, 0.94])
    (0.92, 0.02)
    >>> first_reaching([10, 20, 30], [0.5, 0.96, 0.97], 0.95, "max")
    1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cosanneal.errors import ConfigError, CosannealError

__all__ = [
    "CompareSettings",
    "RunStats",
    "ScheduleStats",
    "first_reaching",
    "load_schedules",
    "markdown_table",
    "mean_std",
    "plot_lr_curves",
    "plot_val_curves",
    "run_dir_of",
    "run_stats",
    "summarize",
    "write_summary",
]

Mode = Literal["min", "max"]


@dataclasses.dataclass(frozen=True)
class CompareSettings:
    """How a comparison runs.

    Attributes:
        out_dir: run directories, the summary and the plots go here.
        seeds: the seeds every schedule is trained with.
        metric: the validation metric compared (``val_acc`` or ``val_loss``).
        mode: ``max`` or ``min``; default: ``min`` for a metric named like a loss or an error
            (:data:`cosanneal.runs.MINIMISED` suffixes: ``val_loss``, ``val_ppl``, ``val_err``, ...), else ``max``.
        target: the metric value whose first crossing is timed; ``None``: not timed.
    """

    out_dir: Path
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    metric: str = "val_acc"
    mode: Mode | None = None
    target: float | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("--seeds: must be >= 1, got 0")
        if self.mode not in (None, "min", "max"):
            raise ConfigError(f"--mode: must be min or max, got {self.mode!r}")
        if self.target is not None and not math.isfinite(self.target):
            raise ConfigError(f"--target: must be a finite number, got {self.target!r}")

    @property
    def resolved_mode(self) -> Mode:
        """The mode given, or the metric's natural one."""
        if self.mode is not None:
            return self.mode
        from cosanneal.runs import lower_is_better

        return "min" if lower_is_better(self.metric) else "max"


@dataclasses.dataclass(frozen=True)
class RunStats:
    """The figures of one (schedule, seed) run, read from its run store."""

    label: str
    seed: int
    run_dir: Path
    final: float
    best: float
    steps: int
    wall_seconds: float
    steps_to_target: int | None
    seconds_to_target: float | None


@dataclasses.dataclass(frozen=True)
class ScheduleStats:
    """One row of the table: a schedule's figures over its seeds (means; ``*_std`` sample std)."""

    label: str
    runs: int
    final_mean: float
    final_std: float
    best_mean: float
    best_std: float
    reached: int
    steps_to_target: float | None
    seconds_to_target: float | None
    steps: float
    wall_seconds: float


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; 0 for a single value), rounded to 12 digits.

    Example:
        >>> mean_std([1.0])
        (1.0, 0.0)
    """
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return round(float(arr.mean()), 12), round(std, 12)


def first_reaching(steps: Sequence[int], values: Sequence[float], target: float, mode: Mode) -> int | None:
    """Index of the first value at or beyond ``target`` (``>=`` for ``max``, ``<=`` for ``min``), or None.

    Example:
        >>> first_reaching([5, 10], [0.4, 0.3], 0.2, "min") is None
        True
    """
    for i, value in enumerate(values):
        if (value >= target) if mode == "max" else (value <= target):
            return i
    return None


def load_schedules(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Read schedule spec files into ``{label: schedule dict}`` (label = file stem, must be unique).

    Raises:
        ConfigError: an unreadable spec, an invalid schedule, or two files with the same stem.
    """
    from cosanneal.schedules import from_dict
    from cosanneal.schedules.spec import read_spec

    if not paths:
        raise ConfigError("--schedules: give one or more schedule spec files")
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        label = Path(path).stem
        if label in out:
            raise ConfigError(
                f"--schedules: two specs are named {label!r}; rename one (labels are file stems)"
            )
        try:
            spec = read_spec(path)
            from_dict(spec)
        except CosannealError as exc:
            raise ConfigError(f"--schedules {path}: {exc}") from exc
        out[label] = spec
    return out


def run_stats(
    run_dir: str | Path, label: str, seed: int, metric: str, mode: Mode, target: float | None
) -> RunStats:
    """The figures of one run, read from its store with :func:`cosanneal.runs.open`.

    Raises:
        ConfigError: the run never evaluated ``metric``.
    """
    from cosanneal import runs

    with runs.open(run_dir) as run:
        try:
            steps, values = run.scalar(metric)
        except KeyError as exc:
            raise ConfigError(f"--metric: {exc.args[0]}") from exc
        lr_steps, _ = run.scalar("lr", run.groups("lr")[0])
        step_steps, step_times = run.scalar("step_time")
        wall = run.summary()["wall_seconds"] or 0.0
    finite = values[np.isfinite(values)]
    best = (float(finite.max()) if mode == "max" else float(finite.min())) if finite.size else math.nan
    hit = None if target is None else first_reaching(steps.tolist(), values.tolist(), target, mode)
    steps_to = None if hit is None else int(steps[hit])
    seconds_to = None if steps_to is None else float(step_times[step_steps < steps_to].sum())
    return RunStats(
        label=label,
        seed=seed,
        run_dir=Path(run_dir),
        final=float(values[-1]),
        best=best,
        steps=int(lr_steps[-1]) + 1,
        wall_seconds=float(wall),
        steps_to_target=steps_to,
        seconds_to_target=seconds_to,
    )


def _row(label: str, stats: Sequence[RunStats]) -> ScheduleStats:
    final_mean, final_std = mean_std([s.final for s in stats])
    best_mean, best_std = mean_std([s.best for s in stats])
    reached = [s for s in stats if s.steps_to_target is not None]
    return ScheduleStats(
        label=label,
        runs=len(stats),
        final_mean=final_mean,
        final_std=final_std,
        best_mean=best_mean,
        best_std=best_std,
        reached=len(reached),
        steps_to_target=float(np.mean([s.steps_to_target for s in reached])) if reached else None,
        seconds_to_target=float(np.mean([s.seconds_to_target for s in reached])) if reached else None,
        steps=float(np.mean([s.steps for s in stats])),
        wall_seconds=float(np.mean([s.wall_seconds for s in stats])),
    )


def run_dir_of(out_dir: str | Path, label: str, seed: int) -> Path:
    """Where the run of ``label`` with ``seed`` lives: ``<out>/<label>/seed-<seed>``."""
    return Path(out_dir) / label / f"seed-{seed}"


def summarize(labels: Sequence[str], settings: CompareSettings) -> tuple[list[ScheduleStats], list[RunStats]]:
    """Read every run of a comparison back from its store; one :class:`ScheduleStats` per label."""
    per_run = [
        run_stats(
            run_dir_of(settings.out_dir, label, seed),
            label,
            seed,
            settings.metric,
            settings.resolved_mode,
            settings.target,
        )
        for label in labels
        for seed in settings.seeds
    ]
    rows = [_row(label, [r for r in per_run if r.label == label]) for label in labels]
    return rows, per_run


def write_summary(
    schedules: Mapping[str, Mapping[str, Any]], settings: CompareSettings
) -> tuple[list[ScheduleStats], list[RunStats]]:
    """:func:`summarize` the runs of a comparison, then write its table, JSON summary and plots.

    Writes ``summary.json``, ``summary.md``, ``lr_curves.png`` and ``val_curves.png`` into
    ``settings.out_dir`` (all atomically). The runs are trained by :func:`cosanneal.jobs.compare.run_compare`.

    Args:
        schedules: ``{label: schedule dict}`` (:func:`load_schedules`), every one already run for every seed.
        settings: seeds, metric, target, output directory.
    """
    from cosanneal.io import atomic_write_json, atomic_write_text

    rows, per_run = summarize(list(schedules), settings)
    out = Path(settings.out_dir)
    atomic_write_json(
        out / "summary.json",
        {
            "metric": settings.metric,
            "mode": settings.resolved_mode,
            "target": settings.target,
            "seeds": list(settings.seeds),
            "schedules": {label: dict(spec) for label, spec in schedules.items()},
            "rows": [dataclasses.asdict(r) for r in rows],
            "runs": [{**dataclasses.asdict(r), "run_dir": str(r.run_dir)} for r in per_run],
        },
    )
    atomic_write_text(out / "summary.md", markdown_table(rows, settings))
    plot_lr_curves(out, list(schedules), settings.seeds[0], out / "lr_curves.png")
    plot_val_curves(out, list(schedules), settings, out / "val_curves.png")
    return rows, per_run


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def table_cells(row: ScheduleStats, settings: CompareSettings) -> list[str]:
    """The cells of one table row, as printed by the CLI and written to ``summary.md``."""
    cells = [row.label, _pm(row.final_mean, row.final_std), _pm(row.best_mean, row.best_std)]
    if settings.target is not None:
        if row.steps_to_target is None:
            cells += [f"not reached (0/{row.runs})", "-"]
        else:
            cells += [
                f"{row.steps_to_target:.0f} ({row.reached}/{row.runs})",
                f"{row.seconds_to_target:.2f}",
            ]
    cells += [f"{row.steps:.0f}", f"{row.wall_seconds:.1f}"]
    return cells


def table_header(settings: CompareSettings) -> list[str]:
    """Column titles matching :func:`table_cells`."""
    m = settings.metric
    head = ["schedule", f"final {m}", f"best {m}"]
    if settings.target is not None:
        head += [f"steps to {m} {'>=' if settings.resolved_mode == 'max' else '<='} {settings.target:g}",
                 "train s to target"]  # fmt: skip
    return [*head, "steps", "wall s"]


def markdown_table(rows: Sequence[ScheduleStats], settings: CompareSettings) -> str:
    """The comparison as a Markdown table (mean ± sample std over the seeds).

    Example:
        >>> s = CompareSettings(Path("."), seeds=(0,), metric="val_acc")
        >>> r = ScheduleStats("cosine", 1, 0.9, 0.0, 0.95, 0.0, 0, None, None, 100, 2.0)
        >>> print(markdown_table([r], s).splitlines()[2])
        | cosine | 0.9000 ± 0.0000 | 0.9500 ± 0.0000 | 100 | 2.0 |
    """
    head = table_header(settings)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(table_cells(r, settings)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_lr_curves(out_dir: Path, labels: Sequence[str], seed: int, path: Path) -> None:
    """Write a PNG of the LR every schedule used (group 0 of its ``seed`` run), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal import runs
    from cosanneal.io import atomic_save

    fig = Figure(figsize=(10.0, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, label in enumerate(labels):
        with runs.open(run_dir_of(out_dir, label, seed)) as run:
            steps, lr = run.scalar("lr", run.groups("lr")[0])
        ax.plot(steps, lr, lw=1.3, color=f"C{k % 10}", label=label)
    ax.set(xlabel="update", ylabel="learning rate", title="LR curves")
    ax.legend(fontsize="small", ncols=2)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_val_curves(out_dir: Path, labels: Sequence[str], settings: CompareSettings, path: Path) -> None:
    """Write a PNG of the validation metric per schedule: mean over seeds with a ± std band, atomically.

    Seeds are aligned on the evaluation steps they share.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal import runs
    from cosanneal.io import atomic_save

    fig = Figure(figsize=(10.0, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, label in enumerate(labels):
        series = []
        for seed in settings.seeds:
            with runs.open(run_dir_of(out_dir, label, seed)) as run:
                series.append(run.scalar(settings.metric))
        common = series[0][0]
        for steps, _ in series[1:]:
            common = np.intersect1d(common, steps)
        stack = np.stack([values[np.isin(steps, common)] for steps, values in series])
        mean = stack.mean(axis=0)
        std = stack.std(axis=0, ddof=1) if len(series) > 1 else np.zeros_like(mean)
        color = f"C{k % 10}"
        ax.plot(common, mean, color=color, lw=1.3, label=label)
        ax.fill_between(common, mean - std, mean + std, color=color, alpha=0.18, lw=0)
    if settings.target is not None:
        ax.axhline(settings.target, color="black", ls=":", lw=0.8, label=f"target {settings.target:g}")
    ax.set(xlabel="update", ylabel=settings.metric,
           title=f"{settings.metric}: mean ± std over {len(settings.seeds)} seeds")  # fmt: skip
    ax.legend(fontsize="small", ncols=2)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
