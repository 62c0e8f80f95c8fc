"""Snapshot ensembles of a trained run: rebuild its model and validation data from the stored config.

:func:`evaluate_ensemble` reads the training config from a run's store, builds the model and the
validation batches exactly as the trainer does, and hands them to
:func:`cosanneal.analysis.ensemble.evaluate_snapshots`, which averages the run's cycle-end snapshots
and scores them (formulas in :mod:`cosanneal.analysis.ensemble`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cosanneal.analysis.ensemble import EnsembleError, EnsembleResult, evaluate_snapshots, select_snapshots
from cosanneal.errors import ConfigError

if TYPE_CHECKING:
    from cosanneal.jobs.config import TrainConfig
    from cosanneal.runtime.checkpoints import Checkpoints

__all__ = ["evaluate_ensemble"]


def _config(run_dir: Path) -> TrainConfig:
    from cosanneal import runs
    from cosanneal.jobs.config import config_from_dict

    try:
        run = runs.open(run_dir)
    except FileNotFoundError:
        raise EnsembleError(
            f"RUN: no run store in {run_dir} (expected a run directory holding run.db)"
        ) from None
    except ValueError as exc:
        raise EnsembleError(f"RUN: {exc}") from None
    try:
        params = run.params
    finally:
        run.close()
    data = params.get("config")
    if not isinstance(data, dict):
        raise EnsembleError(
            f"RUN: {run_dir} has no training config in its params; it was not written by `cosanneal train`"
        )
    framework = data.get("framework")
    if framework is not None:  # recorded by cosanneal.integrations: the model is the user's own code
        raise EnsembleError(
            f"RUN: {run_dir} was recorded by the {framework} integration, so there is no config to rebuild "
            "its model and data from; average its cycle-end snapshots in checkpoints/ with your own model "
            "(docs/ensemble.md, 'Runs from other frameworks')"
        )
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise EnsembleError(f"RUN: {run_dir}: its recorded training config no longer loads: {exc}") from None


def _open_checkpoints(run_dir: Path, cfg: TrainConfig) -> Checkpoints:
    from cosanneal.runtime.checkpoints import Checkpoints

    directory = run_dir / "checkpoints"
    if not directory.is_dir():
        raise EnsembleError(f"RUN: {run_dir} has no checkpoints/ directory; nothing to ensemble")
    ck = cfg.checkpoint
    return Checkpoints(directory, keep_last=ck.keep_last, best=(ck.best_metric, ck.best_mode))


def evaluate_ensemble(
    run_dir: str | os.PathLike[str], last: int | None = None, *, device: str = "auto"
) -> EnsembleResult:
    """Evaluate the snapshot ensemble of a run against its best single snapshot and its final model.

    The model and the validation data are rebuilt from the run's stored config
    (``runs.open(run).params["config"]``); every checkpoint is verified against its manifest when
    loaded. The caller's torch RNG state is left as it was. Formulas are in :mod:`cosanneal.analysis.ensemble`.

    Args:
        run_dir: a run directory written by ``cosanneal train`` (or :class:`~cosanneal.jobs.trainer.Trainer`).
        last: use only the last ``last`` cycle-end snapshots (default: all of them).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        The :class:`~cosanneal.analysis.ensemble.EnsembleResult`, naming exactly which snapshots were used.

    Raises:
        EnsembleError: no run store, no stored config, no checkpoints, no cycle-end snapshot, or
            ``last`` out of range.
        ConfigError: the stored config's model or data cannot be built here.
        CheckpointError: a checkpoint does not verify or does not fit the model.
    """
    import torch

    from cosanneal.jobs.builders import build_data, build_model, pick_device
    from cosanneal.jobs.data import EpochBatches

    root = Path(run_dir)
    cfg = _config(root)
    ckpts = _open_checkpoints(root, cfg)
    try:
        chosen = select_snapshots(ckpts, last, root)
        dev = pick_device(device)
        with torch.random.fork_rng(devices=[]):
            _, val_set = build_data(cfg.data)
            batches = list(EpochBatches(val_set, cfg.eval.batch_size).sequential(cfg.eval.batch_size))
            return evaluate_snapshots(
                root, ckpts, chosen, lambda: build_model(cfg.model).to(dev), batches, dev
            )
    finally:
        ckpts.close()
