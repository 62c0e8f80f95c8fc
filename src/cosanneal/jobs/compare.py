"""Compare schedules on one task by training them: every schedule with every seed, one Trainer run each.

Every (schedule, seed) pair is one :class:`~cosanneal.jobs.trainer.Trainer` run in
``<out>/<label>/seed-<s>`` (label = the spec file's stem); the table and plots are then computed from
the run stores alone by :mod:`cosanneal.analysis.compare` (:func:`~cosanneal.analysis.compare.write_summary`).

A run whose directory already holds a finished run of the same config is reused, so an interrupted
comparison resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cosanneal.analysis.compare import CompareSettings, RunStats, ScheduleStats, run_dir_of, write_summary

__all__ = ["run_compare"]

Log = Callable[[str], None]


def _finished_same(run_dir: Path, config: Mapping[str, Any]) -> bool:
    from cosanneal import runs

    try:
        with runs.open(run_dir) as run:
            return bool(run.events("run_finished")) and run.params.get("config") == dict(config)
    except (FileNotFoundError, ValueError):
        return False


def run_compare(
    config: Mapping[str, Any],
    schedules: Mapping[str, Mapping[str, Any]],
    settings: CompareSettings,
    *,
    log: Log | None = None,
) -> tuple[list[ScheduleStats], list[RunStats]]:
    """Train every schedule with every seed (sequentially), then summarize and plot.

    Writes ``summary.json``, ``summary.md``, ``lr_curves.png`` and ``val_curves.png`` into
    ``settings.out_dir`` (all atomically, :func:`cosanneal.analysis.compare.write_summary`).

    Args:
        config: the base training config as a mapping; its ``schedule``, ``seed`` and ``name`` are replaced.
        schedules: ``{label: schedule dict}`` (:func:`cosanneal.analysis.compare.load_schedules`).
        settings: seeds, metric, target, output directory.
        log: where one-line progress messages go (default: ``print``).
    """
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.trainer import Trainer

    say: Log = log or print
    jobs = []
    for label, spec in schedules.items():
        for seed in settings.seeds:
            data = {**dict(config), "schedule": dict(spec), "seed": seed, "name": f"{label}-seed{seed}"}
            jobs.append((label, seed, config_from_dict(data)))  # every config is checked before training
    for i, (label, seed, cfg) in enumerate(jobs, 1):
        run_dir = run_dir_of(settings.out_dir, label, seed)
        if _finished_same(run_dir, cfg.to_dict()):
            say(f"[{i}/{len(jobs)}] {label} seed {seed}: finished before, reused")
            continue
        result = Trainer(cfg, run_dir, fresh=True, progress=False, log=lambda _m: None).run()
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.final_metrics.items()))
        say(
            f"[{i}/{len(jobs)}] {label} seed {seed}: {result.status}, {metrics} ({result.wall_seconds:.1f} s)"
        )
    return write_summary(schedules, settings)
