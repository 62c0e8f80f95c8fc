"""Optuna sweeps over a training config: every trial one :class:`~cosanneal.jobs.trainer.Trainer` run.

The study (search space, pruning at the schedule's restarts, workers, budget, storage) is
:mod:`cosanneal.tune.sweep`; this module checks the config and the space against the training config and
runs each trial's config through the Trainer, in ``<runs_dir>/<study>/trial-<n>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from cosanneal.errors import ConfigError, CosannealError
from cosanneal.jobs.config import config_from_dict
from cosanneal.tune.sweep import (
    EvalHook,
    Log,
    ParamSpec,
    ResumableRunTrial,
    SweepResult,
    SweepSettings,
    TrialOutcome,
    apply_params,
    run_study,
)

__all__ = ["check_space", "run_sweep", "trainer_trial"]


def check_space(config: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> None:
    """Fail fast on a space key the config does not accept (checked with each key's first value).

    Raises:
        ConfigError: ``space "<key>": <what the config or schedule said>``.
    """
    from cosanneal.schedules import from_dict

    for key, spec in space.items():
        dist = spec.distribution
        sample = dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low  # type: ignore[attr-defined]
        try:
            cfg = config_from_dict(apply_params(config, {key: spec.value(sample)}))
            from_dict(cfg.schedule)
        except CosannealError as exc:
            raise ConfigError(f'space "{key}": {exc}') from exc


def trainer_trial(config: dict[str, Any]) -> ResumableRunTrial:
    """A trial's job (:data:`cosanneal.tune.sweep.TrialJob`): the config checked now, a Trainer run later.

    The job takes ``resume=True`` (a :class:`~cosanneal.tune.sweep.ResumableRunTrial`): a retry of a
    dead worker's trial then continues that trial's run from its last good checkpoint (``fresh=False``);
    with no committed checkpoint there yet it starts over in the same directory, the old run moved
    aside. A new trial always trains fresh.

    Raises:
        ConfigError: the trial's config does not load (the trial fails, the sweep goes on).
    """
    cfg = config_from_dict(config)

    def run(run_dir: Path, log: Log, on_eval: EvalHook, *, resume: bool = False) -> TrialOutcome:
        from cosanneal.jobs.trainer import Trainer

        fresh = not (resume and _has_checkpoint(run_dir))
        return Trainer(cfg, run_dir, fresh=fresh, progress=False, log=log, on_eval=on_eval).run()

    return run


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a committed checkpoint to resume from."""
    from cosanneal.runtime.checkpoints import Checkpoints

    directory = run_dir / "checkpoints"
    return directory.is_dir() and Checkpoints(directory).latest is not None


def run_sweep(
    config: Mapping[str, Any],
    space: Mapping[str, ParamSpec],
    settings: SweepSettings,
    *,
    log: Log | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> SweepResult:
    """Run (or join, or resume) a sweep until ``settings.trials`` trials are done or the budget is spent.

    Done means exactly ``settings.trials`` trials COMPLETE or PRUNED, all workers together, and none
    RUNNING: a dead worker's trial is failed once its heartbeat is older than the grace period and its
    retry runs before the sweep reports done (see :func:`cosanneal.tune.sweep.run_study`).

    Args:
        config: the base training config as a mapping (e.g. ``TrainConfig.to_dict()``).
        space: the parsed search space (:func:`cosanneal.tune.sweep.load_space`).
        settings: the study, storage, pruner, budget.
        log: where one-line progress messages go (default: ``print``).
        pruner: an Optuna pruner to use instead of ``settings.pruner``.
        sampler: an Optuna sampler to use instead of TPE (e.g. ``GridSampler`` for a grid).

    Raises:
        ConfigError: a space key the config does not accept, or a bad storage URL.
    """
    base = dict(config)
    config_from_dict(base)
    check_space(base, space)
    return run_study(base, space, settings, trainer_trial, log=log, pruner=pruner, sampler=sampler)
