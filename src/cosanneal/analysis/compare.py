r"""Compare schedules on one task: train every schedule with every seed, then tabulate and plot.

Every (schedule, seed) pair is one training run in ``<out>/<label>/seed-<s>`` (label = the spec file's
stem), trained by :func:`cosanneal.jobs.compare.run_compare`. This module holds what needs no training:
the table is computed from the run stores only (:func:`cosanneal.runs.open`), so it can be recomputed at
any time with :func:`summarize` (and written with :func:`write_summary`):

* final and best value of the metric per run; mean, sample standard deviation ``s`` (``ddof = 1``)
  and the half-width of the 95% confidence interval of the mean over the ``n`` seeds, Student's t:
  :math:`t_{0.975,\,n-1}\, s / \sqrt n` (:func:`mean_ci`), printed ``mean ± half-width``;
* ``p vs best``: the two-sided p-value of Welch's t-test (unequal variances) between a schedule's final
  values and those of the schedule with the best mean final value (:func:`welch_p`); ``p < 0.05`` is
  marked ``*``;
* rows of averaged weights (SWA, ``label+swa``): the stable-phase checkpoints of a run averaged
  (:mod:`cosanneal.analysis.ensemble`, :func:`~cosanneal.analysis.ensemble.stable_phase_steps`) and
  evaluated, read from ``swa.json`` in the run directory (:func:`cosanneal.jobs.compare.run_compare`
  writes it); their final and best are that one evaluation;
* steps to target: the update count of the first evaluation where the metric reaches ``target``
  (``>=`` for a maximised metric, ``<=`` for a minimised one); seconds to target: the training time
  up to it, ``sum(step_time)`` over those updates (evaluation excluded); averaged over the seeds
  that reached it (``reached`` counts them);
* cost: updates and wall seconds of the run (run store wall-clock span).

An entry is a schedule spec file; it may also hold an ``[optimizer]`` table (with the schedule under
``[schedule]``), whose keys replace the base config's for that entry (:func:`load_entries`): this is
how schedule-free AdamW (``name = "adamw_schedulefree"``) is compared with scheduled AdamW.

Example:
    >>> mean_std([0.9, 0.92, 0.94])
    (0.92, 0.02)
    >>> round(mean_ci([0.9, 0.92, 0.94])[1], 4)  # t(0.975, 2) = 4.3027; 4.3027 * 0.02 / sqrt(3)
    0.0497
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
    "SWA_SUFFIX",
    "CompareEntry",
    "CompareSettings",
    "RunStats",
    "ScheduleStats",
    "first_reaching",
    "load_entries",
    "load_schedules",
    "mean_ci",
    "markdown_table",
    "mean_std",
    "plot_lr_curves",
    "plot_val_curves",
    "run_dir_of",
    "entry_of",
    "run_stats",
    "summarize",
    "swa_path",
    "swa_stats",
    "welch_p",
    "write_summary",
]

Mode = Literal["min", "max"]
#: The label of the averaged-weights row of a schedule: ``wsd+swa``.
SWA_SUFFIX = "+swa"


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
        swa: labels whose runs also get a row of their averaged stable-phase checkpoints (``label+swa``).
        swa_every: updates between the checkpoints averaged (``None``: 1/40 of the run, at least 1).
        swa_window: the fraction of the stable phase averaged, its end (0.5: the second half).
    """

    out_dir: Path
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    metric: str = "val_acc"
    mode: Mode | None = None
    target: float | None = None
    swa: tuple[str, ...] = ()
    swa_every: int | None = None
    swa_window: float = 0.5

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("--seeds: must be >= 1, got 0")
        if self.swa_every is not None and (isinstance(self.swa_every, bool) or self.swa_every < 1):
            raise ConfigError(f"--swa-every: must be an integer >= 1, got {self.swa_every!r}")
        if not 0.0 < self.swa_window <= 1.0:
            raise ConfigError(f"--swa-window: must be in (0, 1], got {self.swa_window!r}")
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
    """One row of the table: a schedule's figures over its seeds.

    Means; ``*_std`` the sample std; ``*_ci`` the half-width of the 95% Student-t interval of the mean
    (NaN for one seed); ``p_vs_best`` Welch's two-sided p-value against the row with the best mean final
    value (``None`` for that row, NaN when undefined: one seed, or no spread in either).
    """

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
    final_ci: float = math.nan
    best_ci: float = math.nan
    p_vs_best: float | None = None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; 0 for a single value), rounded to 12 digits.

    Example:
        >>> mean_std([1.0])
        (1.0, 0.0)
    """
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return round(float(arr.mean()), 12), round(std, 12)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    r"""Mean and the half-width of its ``level`` Student-t confidence interval, :math:`t_{(1+level)/2,\,n-1}\, s/\sqrt n`.

    ``s`` is the sample standard deviation (``ddof = 1``); one value has no interval (NaN).

    Example:
        >>> [round(v, 4) for v in mean_ci([2.0, 4.0])]  # t(0.975, 1) = 12.7062; s = sqrt(2)
        [3.0, 12.7062]
        >>> mean_ci([1.0])
        (1.0, nan)
    """
    from scipy import stats  # type: ignore[import-untyped]

    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return float(arr.mean()), math.nan
    half = float(stats.t.ppf(0.5 + level / 2.0, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return float(arr.mean()), half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) that ``a`` and ``b`` share a mean.

    NaN when it is undefined (fewer than two values in one, or no spread in either).

    Example:
        >>> round(welch_p([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]), 5)
        0.00026
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2 or (x.std() == 0.0 and y.std() == 0.0):
        return math.nan
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


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


@dataclasses.dataclass(frozen=True)
class CompareEntry:
    """One compared entry: a schedule, and the ``[optimizer]`` keys it changes (none: the config's).

    Example:
        >>> e = CompareEntry({"kind": "constant", "lr": 0.01}, {"name": "adamw_schedulefree"})
        >>> e.apply({"optimizer": {"name": "adamw", "weight_decay": 0.1}})["optimizer"]
        {'name': 'adamw_schedulefree', 'weight_decay': 0.1}
    """

    schedule: dict[str, Any]
    optimizer: dict[str, Any] = dataclasses.field(default_factory=dict)

    def apply(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with this entry's schedule, and its optimizer keys over the config's ``[optimizer]``."""
        out = {**dict(config), "schedule": dict(self.schedule)}
        if self.optimizer:
            out["optimizer"] = {**dict(config.get("optimizer") or {}), **self.optimizer}
        return out


def load_entries(paths: Sequence[str | Path]) -> dict[str, CompareEntry]:
    """Read spec files into ``{label: CompareEntry}`` (label = file stem, must be unique).

    A file is a schedule spec (``kind = ...``), or a ``[schedule]`` table with an optional
    ``[optimizer]`` table of the keys that entry changes (``name = "adamw_schedulefree"``, ``betas``,
    ...); other tables are refused, so a typo is not silently ignored.

    Raises:
        ConfigError: an unreadable spec, an invalid schedule, an ``[optimizer]`` that is not a table,
            another table, or two files with the same stem.
    """
    from cosanneal.schedules import from_dict
    from cosanneal.schedules.spec import read_mapping, read_spec

    if not paths:
        raise ConfigError("--schedules: give one or more schedule spec files")
    out: dict[str, CompareEntry] = {}
    for path in paths:
        label = Path(path).stem
        if label in out:
            raise ConfigError(
                f"--schedules: two specs are named {label!r}; rename one (labels are file stems)"
            )
        try:
            spec = read_spec(path)
            from_dict(spec)
            data = read_mapping(path)
        except CosannealError as exc:
            raise ConfigError(f"--schedules {path}: {exc}") from exc
        optimizer: Any = {}
        if "kind" not in data:
            optimizer = data.get("optimizer", {})
            if not isinstance(optimizer, Mapping):
                raise ConfigError(
                    f"--schedules {path}: optimizer must be a table of [optimizer] keys, got {optimizer!r}"
                )
            extra = sorted(set(data) - {"schedule", "optimizer"})
            if extra:
                raise ConfigError(
                    f"--schedules {path}: {extra[0]!r} is not a key of a compared entry; it holds only "
                    "[schedule] and, optionally, [optimizer]"
                )
        out[label] = CompareEntry(spec, dict(optimizer))
    return out


def load_schedules(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Read schedule spec files into ``{label: schedule dict}`` (:func:`load_entries`' schedules).

    Raises:
        ConfigError: an unreadable spec, an invalid schedule, or two files with the same stem.
    """
    return {label: entry.schedule for label, entry in load_entries(paths).items()}


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
        final_ci=mean_ci([s.final for s in stats])[1],
        best_ci=mean_ci([s.best for s in stats])[1],
    )


def _with_p_values(rows: list[ScheduleStats], per_run: Sequence[RunStats], mode: Mode) -> list[ScheduleStats]:
    """Each row's Welch p-value against the row with the best mean final value (that row: ``None``)."""
    finals = {r.label: [s.final for s in per_run if s.label == r.label] for r in rows}
    pick = max if mode == "max" else min
    best = pick(rows, key=lambda r: r.final_mean).label
    return [
        dataclasses.replace(r, p_vs_best=None if r.label == best else welch_p(finals[r.label], finals[best]))
        for r in rows
    ]


def swa_path(run_dir: str | Path) -> Path:
    """Where a run's averaged-weights result lives: ``<run>/swa.json``."""
    return Path(run_dir) / "swa.json"


def swa_stats(run: RunStats, metric: str) -> RunStats:
    """The SWA row's figures of one run: its ``swa.json`` evaluation as both final and best.

    Raises:
        ConfigError: the run has no ``swa.json``, or it lacks ``metric``.
    """
    import json

    path = swa_path(run.run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"--swa {run.label}: {path} is missing; run the comparison with --swa {run.label} to average it"
        ) from None
    metrics = data.get("metrics") or {}
    if metric not in metrics:
        raise ConfigError(
            f"--metric: the averaged model of {run.run_dir} reports {', '.join(sorted(metrics))}"
        )
    value = float(metrics[metric])
    return dataclasses.replace(
        run,
        label=run.label + SWA_SUFFIX,
        final=value,
        best=value,
        steps_to_target=None,
        seconds_to_target=None,
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
    unknown = [label for label in settings.swa if label not in labels]
    if unknown:
        raise ConfigError(
            f"--swa: no schedule is labelled {unknown[0]!r}; the labels are {', '.join(labels)}"
        )
    order: list[str] = []
    for label in labels:
        order += [label, label + SWA_SUFFIX] if label in settings.swa else [label]
    per_run += [swa_stats(r, settings.metric) for r in list(per_run) if r.label in settings.swa]
    rows = [_row(label, [r for r in per_run if r.label == label]) for label in order]
    return _with_p_values(rows, per_run, settings.resolved_mode), per_run


def entry_of(value: Mapping[str, Any] | CompareEntry) -> CompareEntry:
    """A :class:`CompareEntry` as it is, a plain schedule dict as an entry with the config's optimizer."""
    return value if isinstance(value, CompareEntry) else CompareEntry(dict(value))


def write_summary(
    schedules: Mapping[str, Mapping[str, Any] | CompareEntry], settings: CompareSettings
) -> tuple[list[ScheduleStats], list[RunStats]]:
    """:func:`summarize` the runs of a comparison, then write its table, JSON summary and plots.

    Writes ``summary.json``, ``summary.md``, ``lr_curves.png`` and ``val_curves.png`` into
    ``settings.out_dir`` (all atomically). The runs are trained by :func:`cosanneal.jobs.compare.run_compare`.

    Args:
        schedules: ``{label: schedule dict or CompareEntry}`` (:func:`load_entries`), every one already
            run for every seed.
        settings: seeds, metric, target, output directory, SWA rows.
    """
    from cosanneal.io import atomic_write_json, atomic_write_text

    entries = {label: entry_of(value) for label, value in schedules.items()}
    rows, per_run = summarize(list(schedules), settings)
    out = Path(settings.out_dir)
    atomic_write_json(
        out / "summary.json",
        {
            "metric": settings.metric,
            "mode": settings.resolved_mode,
            "target": settings.target,
            "seeds": list(settings.seeds),
            "confidence": 0.95,
            "schedules": {label: e.schedule for label, e in entries.items()},
            "optimizers": {label: e.optimizer for label, e in entries.items() if e.optimizer},
            "swa": {"labels": list(settings.swa), "every": settings.swa_every, "window": settings.swa_window},
            "rows": [dataclasses.asdict(r) for r in rows],
            "runs": [{**dataclasses.asdict(r), "run_dir": str(r.run_dir)} for r in per_run],
        },
    )
    atomic_write_text(out / "summary.md", markdown_table(rows, settings))
    plot_lr_curves(out, list(schedules), settings.seeds[0], out / "lr_curves.png")
    plot_val_curves(out, list(schedules), settings, out / "val_curves.png")
    return rows, per_run


def _pm(mean: float, half: float) -> str:
    return f"{mean:.4f} (1 seed)" if math.isnan(half) else f"{mean:.4f} ± {half:.4f}"


def _p(value: float | None) -> str:
    if value is None:
        return "best"
    if math.isnan(value):
        return "-"
    return f"{value:.3f}{' *' if value < 0.05 else ''}" if value >= 0.001 else "<0.001 *"


def table_cells(row: ScheduleStats, settings: CompareSettings) -> list[str]:
    """The cells of one table row, as printed by the CLI and written to ``summary.md``."""
    cells = [row.label, _pm(row.final_mean, row.final_ci), _p(row.p_vs_best), _pm(row.best_mean, row.best_ci)]
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
    head = ["schedule", f"final {m} (mean ± 95% CI)", "p vs best", f"best {m} (mean ± 95% CI)"]
    if settings.target is not None:
        head += [f"steps to {m} {'>=' if settings.resolved_mode == 'max' else '<='} {settings.target:g}",
                 "train s to target"]  # fmt: skip
    return [*head, "steps", "wall s"]


def markdown_table(rows: Sequence[ScheduleStats], settings: CompareSettings) -> str:
    """The comparison as a Markdown table (mean ± the 95% confidence half-width over the seeds).

    Example:
        >>> s = CompareSettings(Path("."), seeds=(0, 1, 2), metric="val_acc")
        >>> r = ScheduleStats("cosine", 3, 0.9, 0.01, 0.95, 0.01, 0, None, None, 100, 2.0, 0.0248, 0.0248, 0.01)
        >>> print(markdown_table([r], s).splitlines()[2])
        | cosine | 0.9000 ± 0.0248 | 0.010 * | 0.9500 ± 0.0248 | 100 | 2.0 |
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
