"""Snapshot ensembles and weight averages of a trained run: its model and data rebuilt from the stored config.

:func:`evaluate_ensemble` reads the training config from a run's store, builds the model and the
validation batches exactly as the trainer does, and hands them to
:func:`cosanneal.analysis.ensemble.evaluate_snapshots`, which averages the run's cycle-end snapshots
and scores them (formulas in :mod:`cosanneal.analysis.ensemble`).

:func:`evaluate_average` averages the weights of the checkpoints of a run's stable phase (SWA) and
evaluates the averaged model with the run's own task, as the trainer evaluates.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cosanneal.analysis.ensemble import EnsembleError, EnsembleResult, evaluate_snapshots, select_snapshots
from cosanneal.errors import ConfigError

if TYPE_CHECKING:
    from cosanneal.jobs.config import TrainConfig
    from cosanneal.runtime.checkpoints import Checkpoints

__all__ = ["AverageResult", "evaluate_average", "evaluate_ensemble"]


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


@dataclasses.dataclass(frozen=True)
class AverageResult:
    """An averaged model's evaluation (:func:`evaluate_average`).

    Attributes:
        run_dir: the run directory.
        steps: the checkpoint steps averaged, oldest first.
        metrics: the task's evaluation of the averaged weights, ``val_<name>`` as the trainer records them.
    """

    run_dir: Path
    steps: tuple[int, ...]
    metrics: dict[str, float]


def evaluate_average(
    run_dir: str | os.PathLike[str], window: float = 1.0, *, device: str = "auto"
) -> AverageResult:
    r"""Average the weights of a run's stable-phase checkpoints and evaluate that model with the run's task.

    The checkpoints are those whose last update ran at the schedule's peak LR, the last ``window``
    fraction of them (:func:`~cosanneal.analysis.ensemble.stable_phase_steps`); their weights are
    averaged, :math:`\bar w = \frac1K \sum_k w_k` (:func:`~cosanneal.analysis.ensemble.average_weights`),
    the batch-norm statistics re-estimated at :math:`\bar w` over the first training batches
    (:func:`~cosanneal.jobs.optimizer_modes.recalibrate_norms`), and the model evaluated on the
    validation set in eval mode. The caller's RNG state is left as it was.

    Raises:
        EnsembleError: no run store or config, no checkpoints, or none in the stable phase (the run
            needs periodic checkpoints, ``checkpoint.every_steps``, kept with a large ``keep_last``).
        CheckpointError: a checkpoint does not verify or does not fit the model.
    """
    import torch

    from cosanneal import runs
    from cosanneal.analysis.ensemble import average_weights, stable_phase_steps
    from cosanneal.jobs.builders import build_data, build_model, pick_device
    from cosanneal.jobs.loading import eval_batches
    from cosanneal.jobs.optimizer_modes import CALIBRATION_BATCHES, recalibrate_norms
    from cosanneal.jobs.tasks import build_task, check_metrics, to_device
    from cosanneal.schedules import from_dict

    root = Path(run_dir)
    cfg = _config(root)
    with runs.open(root) as run:
        params = run.params
    schedule = from_dict(params["schedule"]).bind(
        total_steps=params.get("total_steps"), steps_per_epoch=params.get("steps_per_epoch")
    )
    ckpts = _open_checkpoints(root, cfg)
    try:
        infos = {info.step: info for info in ckpts.list()}
        chosen = stable_phase_steps(schedule, list(infos), window)
        if not chosen:
            raise EnsembleError(
                f"RUN: {root} kept no checkpoint of its stable phase (steps {sorted(infos)}); train it with "
                "checkpoint.every_steps and a keep_last that keeps them"
            )
        dev = pick_device(device)
        with torch.random.fork_rng(devices=[]):
            states = []
            for step in chosen:
                model = build_model(cfg.model)
                ckpts.load(infos[step], model, restore_rng=False)
                states.append(model.state_dict())
            model = build_model(cfg.model).to(dev)
            model.load_state_dict(average_weights(states))
            task = build_task(cfg.task)
            train_set, val_set = build_data(cfg.data)
            calibration = eval_batches(train_set, cfg.eval.batch_size, seed=cfg.seed)
            recalibrate_norms(
                model,
                (to_device(b, dev) for b in itertools.islice(calibration, CALIBRATION_BATCHES)),
                task.training_step,
            )
            model.eval()
            batches = (to_device(b, dev) for b in eval_batches(val_set, cfg.eval.batch_size, seed=cfg.seed))
            with torch.no_grad():
                metrics = check_metrics(task.evaluate(model, batches))
    finally:
        ckpts.close()
    return AverageResult(root, tuple(chosen), {f"val_{k}": float(v) for k, v in metrics.items()})
