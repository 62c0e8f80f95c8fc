"""Compare schedules on one task by training them: every schedule with every seed, one Trainer run each.

Every (entry, seed) pair is one :class:`~cosanneal.jobs.trainer.Trainer` run in
``<out>/<label>/seed-<s>`` (label = the spec file's stem; an entry is a schedule, and optionally the
``[optimizer]`` keys it changes, :class:`~cosanneal.analysis.compare.CompareEntry`); the table and
plots are then computed from the run stores alone by :mod:`cosanneal.analysis.compare`
(:func:`~cosanneal.analysis.compare.write_summary`).

Every config is built and checked before anything trains: an unknown optimizer, a schedule-free
optimizer without the ``schedulefree`` package or with a decaying schedule, a ``--swa`` label that is
not compared: one :class:`~cosanneal.errors.ConfigError` line, nothing written.

The runs of a ``settings.swa`` label keep a checkpoint every ``swa_every`` updates (default: 1/40 of
the run); once a run has finished, the last ``swa_window`` of its stable-phase checkpoints are averaged
and evaluated (:func:`cosanneal.jobs.ensemble.evaluate_average`) into ``<run>/swa.json``, the
``label+swa`` row of the table.

A run whose directory already holds a finished run of the same config is reused (and its ``swa.json``
when it was averaged the same way), so an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cosanneal.analysis.compare import (
    CompareEntry,
    CompareSettings,
    RunStats,
    ScheduleStats,
    entry_of,
    run_dir_of,
    swa_path,
    write_summary,
)
from cosanneal.errors import ConfigError

__all__ = ["run_compare"]

Log = Callable[[str], None]


def _finished_same(run_dir: Path, config: Mapping[str, Any]) -> bool:
    from cosanneal import runs

    try:
        with runs.open(run_dir) as run:
            return bool(run.events("run_finished")) and run.params.get("config") == dict(config)
    except (FileNotFoundError, ValueError):
        return False


def _checked(label: str, data: dict[str, Any], swa_every: int | None, swa: bool) -> Any:
    """The entry's config, validated; a schedule-free or SWA entry is bound (data built) to check it."""
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.optimizers import optimizer_class
    from cosanneal.jobs.preview import bind_run, schedule_free

    try:
        cfg = config_from_dict(data)
        optimizer_class(cfg.optimizer.name)
        if not (swa or schedule_free(cfg.optimizer.name)):
            return cfg
        _, total, _ = bind_run(cfg)  # the schedule-free schedule check, and the run's length
        if not swa:
            return cfg
        every = swa_every or max(1, total // 40)
        checkpoint = {**dict(data.get("checkpoint") or {}), "enabled": True, "every_steps": every,
                      "keep_last": math.ceil(total / every) + 2}  # fmt: skip
        return config_from_dict({**data, "checkpoint": checkpoint})
    except ConfigError as exc:
        raise ConfigError(f"--schedules {label}: {exc}") from None


def _average(run_dir: Path, window: float, reused: bool) -> dict[str, Any]:
    """The run's stable-phase average, evaluated (``swa.json``; reused when made with this window)."""
    from cosanneal.io import atomic_write_json
    from cosanneal.jobs.ensemble import evaluate_average

    path = swa_path(run_dir)
    if reused and path.exists():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.get("window") == window:
            return data
    result = evaluate_average(run_dir, window)
    data = {"window": window, "steps": list(result.steps), "metrics": result.metrics}
    atomic_write_json(path, data)
    return data


def run_compare(
    config: Mapping[str, Any],
    schedules: Mapping[str, Mapping[str, Any] | CompareEntry],
    settings: CompareSettings,
    *,
    log: Log | None = None,
) -> tuple[list[ScheduleStats], list[RunStats]]:
    """Train every entry with every seed (sequentially), then summarize and plot.

    Writes ``summary.json``, ``summary.md``, ``lr_curves.png`` and ``val_curves.png`` into
    ``settings.out_dir`` (all atomically, :func:`cosanneal.analysis.compare.write_summary`).

    Args:
        config: the base training config as a mapping; its ``schedule``, ``seed`` and ``name`` are
            replaced, and its ``[optimizer]`` keys by an entry's own.
        schedules: ``{label: schedule dict or CompareEntry}`` (:func:`cosanneal.analysis.compare.load_entries`).
        settings: seeds, metric, target, output directory, the labels averaged (SWA).
        log: where one-line progress messages go (default: ``print``).

    Raises:
        ConfigError: an entry's config does not build (unknown optimizer, schedule-free without its
            package or with a decaying schedule, ...), or a ``settings.swa`` label is not compared;
            raised before any training, nothing written.
    """
    from cosanneal.jobs.trainer import Trainer

    say: Log = log or print
    entries = {label: entry_of(value) for label, value in schedules.items()}
    unknown = [label for label in settings.swa if label not in entries]
    if unknown:
        raise ConfigError(
            f"--swa: no schedule is labelled {unknown[0]!r}; the labels are {', '.join(entries)}"
        )
    jobs = []
    for label, entry in entries.items():
        for seed in settings.seeds:
            data = {**entry.apply(config), "seed": seed, "name": f"{label}-seed{seed}"}
            cfg = _checked(label, data, settings.swa_every, label in settings.swa)
            jobs.append((label, seed, cfg))  # every config is checked before training
    for i, (label, seed, cfg) in enumerate(jobs, 1):
        run_dir = run_dir_of(settings.out_dir, label, seed)
        reused = _finished_same(run_dir, cfg.to_dict())
        if reused:
            say(f"[{i}/{len(jobs)}] {label} seed {seed}: finished before, reused")
        else:
            result = Trainer(cfg, run_dir, fresh=True, progress=False, log=lambda _m: None).run()
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.final_metrics.items()))
            say(
                f"[{i}/{len(jobs)}] {label} seed {seed}: {result.status}, {metrics} ({result.wall_seconds:.1f} s)"
            )
        if label in settings.swa:
            avg = _average(run_dir, settings.swa_window, reused)
            value = avg["metrics"].get(settings.metric, math.nan)
            say(
                f"    {label} seed {seed}: averaged {len(avg['steps'])} checkpoints, {settings.metric}={value:.4f}"
            )
    return write_summary(entries, settings)
