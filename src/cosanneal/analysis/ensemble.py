r"""Snapshot ensembles: average the cycle-end snapshots of an SGDR run and compare with single models.

A run trained with warm restarts and ``checkpoint.keep_cycle_ends = true`` keeps the checkpoint taken at
the last update of every cycle (the LR's low point just before a restart).
:func:`cosanneal.jobs.ensemble.evaluate_ensemble` rebuilds the run's model and validation data from the
config stored in its run store; :func:`evaluate_snapshots` (here) loads each kept snapshot into such a
model and evaluates on the validation set:

* every snapshot alone, and the **best single snapshot** among them (lowest NLL; a tie goes to the
  later snapshot);
* the **ensemble**: the average of the snapshots' softmax probabilities,
  :math:`\bar p(y \mid x) = \frac1K \sum_k \mathrm{softmax}(f_k(x))_y` (Huang et al. 2017, "Snapshot
  Ensembles: Train 1, get M for free");
* the **final** model (the newest checkpoint) and, when the run kept one, the **best checkpoint**
  (``best/``, by the run's ``checkpoint.best_metric``).

Each is reported with its accuracy (argmax of the probabilities equals the label) and its negative
log-likelihood :math:`-\frac1N \sum_i \log \bar p(y_i \mid x_i)`, probabilities computed in float64 and
clipped below at the smallest normal float64 before the log.

**Weight averaging** (SWA, Izmailov et al. 2018; checkpoint averaging of a constant-LR phase, Hägele
et al. 2024) averages parameters, not predictions: :func:`stable_phase_steps` picks the checkpoints a
WSD or constant run took at its peak LR, :func:`average_weights` averages them,
:math:`\bar w = \frac1K \sum_k w_k`, and :func:`cosanneal.jobs.ensemble.evaluate_average` scores the
averaged model with the run's own task (batch-norm statistics re-estimated at :math:`\bar w`).

A snapshot is taken at every restart, so a run with ``r`` restarts keeps ``r`` cycle-end snapshots,
named by the updates done when they were taken: the restart steps themselves. (The end of the last cycle is the end of the run: that checkpoint is the final
model, saved by the trainer's final save.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError

if TYPE_CHECKING:
    import torch

    from cosanneal.runtime.checkpoints import CheckpointInfo, Checkpoints
    from cosanneal.schedules import Schedule

__all__ = [
    "average_weights",
    "stable_phase_steps",
    "EnsembleError",
    "EnsembleResult",
    "Score",
    "SnapshotSet",
    "ensemble_scores",
    "evaluate_snapshots",
    "predict",
    "score",
    "select_snapshots",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_TINY = float(np.finfo(np.float64).tiny)


class EnsembleError(CosannealError, ValueError):
    """The run cannot be ensembled (no run store, no config, no cycle-end snapshots, a bad ``last``)."""


@dataclasses.dataclass(frozen=True)
class Score:
    """How one model (or the ensemble) does on the validation set.

    Attributes:
        label: ``"snapshot"``, ``"ensemble"``, ``"best snapshot"``, ``"final"`` or ``"best checkpoint"``.
        steps: the checkpoint step(s) it is made of (several for the ensemble).
        accuracy: fraction of validation samples whose most probable class is the label.
        nll: mean negative log-likelihood of the labels.
    """

    label: str
    steps: tuple[int, ...]
    accuracy: float
    nll: float


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """What :func:`evaluate_snapshots` (and so :func:`cosanneal.jobs.ensemble.evaluate_ensemble`) found.

    Attributes:
        run_dir: the run directory.
        snapshots: the steps of the snapshots used, oldest first.
        paths: their checkpoint directories.
        available: the steps of every cycle-end snapshot the run kept.
        members: every used snapshot's own score, in the order of ``snapshots``.
        ensemble: the averaged-probability ensemble of ``snapshots``.
        best_single: the member with the lowest NLL.
        final: the newest checkpoint of the run.
        best_checkpoint: the run's ``best/`` checkpoint, or ``None`` when it kept none.
        n_val: number of validation samples.
    """

    run_dir: Path
    snapshots: tuple[int, ...]
    paths: tuple[str, ...]
    available: tuple[int, ...]
    members: tuple[Score, ...]
    ensemble: Score
    best_single: Score
    final: Score
    best_checkpoint: Score | None
    n_val: int

    def rows(self) -> list[Score]:
        """Members, then ensemble, best single snapshot, final model and best checkpoint (the table)."""
        out = [*self.members, self.ensemble, self.best_single, self.final]
        if self.best_checkpoint is not None:
            out.append(self.best_checkpoint)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        out: dict[str, Any] = dataclasses.asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


# ---- scoring ------------------------------------------------------------------------------------
def score(label: str, steps: tuple[int, ...], probs: FloatArray, labels: IntArray) -> Score:
    r"""Accuracy and NLL of class probabilities ``probs`` (``N x C``) against ``labels`` (``N``).

    ``accuracy = mean(argmax_c probs[i, c] == labels[i])``;
    :math:`\mathrm{nll} = -\frac1N \sum_i \log \max(p_{i, y_i}, \text{tiny})`.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
        >>> s = score("x", (1,), p, np.array([0, 1, 1]))
        >>> round(s.accuracy, 4), round(s.nll, 4)
        (0.6667, 0.6067)
    """
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise EnsembleError(
            f"need N x C probabilities for N >= 1 labels, got {probs.shape} and {labels.shape}"
        )
    picked = probs[np.arange(len(labels)), labels]
    accuracy = float(np.mean(np.argmax(probs, axis=1) == labels))
    nll = float(-np.mean(np.log(np.maximum(picked, _TINY)))) + 0.0  # + 0.0: no "-0.0" for a perfect fit
    return Score(label, steps, accuracy, nll)


def ensemble_scores(
    member_probs: list[FloatArray], steps: list[int], labels: IntArray
) -> tuple[list[Score], Score, Score]:
    """Score each member, their averaged probabilities, and pick the best member (lowest NLL, later wins ties).

    Example:
        >>> a = np.array([[0.9, 0.1], [0.6, 0.4]])
        >>> b = np.array([[0.6, 0.4], [0.2, 0.8]])
        >>> members, ens, best = ensemble_scores([a, b], [9, 19], np.array([0, 1]))
        >>> [m.accuracy for m in members], ens.accuracy, best.steps
        ([0.5, 1.0], 1.0, (19,))
    """
    members = [score("snapshot", (s,), p, labels) for s, p in zip(steps, member_probs, strict=True)]
    mean = np.mean(np.stack(member_probs), axis=0)
    ens = score("ensemble", tuple(steps), mean, labels)
    best = min(reversed(members), key=lambda m: m.nll)
    return members, ens, dataclasses.replace(best, label="best snapshot")


# ---- the snapshots of a run ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SnapshotSet:
    """The checkpoints an ensemble evaluation reads (:func:`select_snapshots`).

    Attributes:
        available: every cycle-end snapshot the run kept, oldest first.
        used: the ones averaged (the last ``last`` of ``available``, or all of them).
        final: the newest checkpoint of the run.
        best: the run's ``best/`` checkpoint, or ``None`` when it kept none.
    """

    available: tuple[CheckpointInfo, ...]
    used: tuple[CheckpointInfo, ...]
    final: CheckpointInfo
    best: CheckpointInfo | None


def predict(model: torch.nn.Module, inputs: Sequence[torch.Tensor], device: torch.device) -> FloatArray:
    """Class probabilities (softmax in float64) of ``model`` in eval mode over ``inputs``, one row per sample."""
    import torch

    model.eval()
    parts = []
    with torch.no_grad():
        for x in inputs:
            logits = model(x.to(device))
            parts.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    return np.concatenate(parts).astype(np.float64, copy=False)


def _select(snaps: list[CheckpointInfo], last: int | None, run_dir: Path) -> list[CheckpointInfo]:
    if last is None:
        return snaps
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise EnsembleError(f"last must be an integer >= 1, got {last!r}")
    if last > len(snaps):
        raise EnsembleError(
            f"last={last}: {run_dir} kept only {len(snaps)} cycle-end snapshot"
            f"{'s' if len(snaps) != 1 else ''} (steps {', '.join(str(s.step) for s in snaps)}); use --last <= {len(snaps)}"
        )
    return snaps[-last:]


def select_snapshots(ckpts: Checkpoints, last: int | None, run_dir: Path) -> SnapshotSet:
    """The cycle-end snapshots to average (the last ``last``, default all), the final and the best checkpoint.

    Raises:
        EnsembleError: the run kept no cycle-end snapshot, or ``last`` is out of range.
    """
    available = ckpts.cycle_end_snapshots()
    if not available:
        raise EnsembleError(
            f"RUN: {run_dir} kept no cycle-end snapshots (they are kept with checkpoint.keep_cycle_ends = true "
            "in a run with warm restarts)"
        )
    used = _select(available, last, run_dir)
    final_info = ckpts.latest
    assert final_info is not None  # cycle-end snapshots are checkpoints
    return SnapshotSet(tuple(available), tuple(used), final_info, ckpts.best)


def evaluate_snapshots(
    run_dir: Path,
    ckpts: Checkpoints,
    chosen: SnapshotSet,
    make_model: Callable[[], torch.nn.Module],
    batches: Sequence[Sequence[torch.Tensor]],
    device: torch.device,
) -> EnsembleResult:
    """Score the snapshot ensemble of ``chosen`` against its members, the final and the best checkpoint.

    Every checkpoint is loaded (verified against its manifest) into a fresh ``make_model()`` on
    ``device`` and predicts the validation ``batches`` (``(inputs, labels, ...)`` each); a checkpoint used
    twice is predicted once. :func:`cosanneal.jobs.ensemble.evaluate_ensemble` builds the model and the
    batches from a run's config.

    Raises:
        CheckpointError: a checkpoint does not verify or does not fit the model.
    """
    inputs = [b[0] for b in batches]
    labels = np.concatenate([b[1].cpu().numpy() for b in batches]).astype(np.int64)
    cache: dict[int, FloatArray] = {}

    def probs(info: CheckpointInfo) -> FloatArray:
        if info.step not in cache:
            model = make_model()
            ckpts.load(info, model, restore_rng=False)
            cache[info.step] = predict(model, inputs, device)
        return cache[info.step]

    member_probs = [probs(info) for info in chosen.used]
    final_probs = probs(chosen.final)
    best_probs = None
    if chosen.best is not None:
        model = make_model()
        ckpts.load(chosen.best, model, restore_rng=False)
        best_probs = predict(model, inputs, device)
    steps = [info.step for info in chosen.used]
    members, ens, best_single = ensemble_scores(member_probs, steps, labels)
    return EnsembleResult(
        run_dir=run_dir,
        snapshots=tuple(steps),
        paths=tuple(info.path for info in chosen.used),
        available=tuple(info.step for info in chosen.available),
        members=tuple(members),
        ensemble=ens,
        best_single=best_single,
        final=score("final", (chosen.final.step,), final_probs, labels),
        best_checkpoint=None
        if chosen.best is None or best_probs is None
        else score("best checkpoint", (chosen.best.step,), best_probs, labels),
        n_val=len(labels),
    )


# ---- weight averaging ---------------------------------------------------------------------------
def stable_phase_steps(schedule: Schedule, steps: Sequence[int], window: float = 1.0) -> list[int]:
    """The checkpoint steps of a schedule's stable phase: those whose last update ran at the peak LR.

    A checkpoint named ``s`` holds the model after ``s`` updates; it is in the stable phase when update
    ``s - 1`` ran at ``schedule.peak`` (to 1e-12 relative): in a WSD run from the end of the warmup to
    the start of the decay, in a constant run every one. Of these ``n``, the last ``ceil(window * n)``
    are returned (``window = 0.5``: the second half of the phase), oldest first.

    Example:
        >>> from cosanneal.schedules import from_dict
        >>> wsd = from_dict({"kind": "wsd", "peak_lr": 1.0, "warmup_steps": 10, "stable_steps": 60, "decay_steps": 30})
        >>> stable_phase_steps(wsd, [10, 20, 40, 60, 70, 80, 100])
        [20, 40, 60, 70]
        >>> stable_phase_steps(wsd, [10, 20, 40, 60, 70, 80, 100], window=0.5)
        [60, 70]
    """
    if not 0.0 < window <= 1.0:
        raise EnsembleError(f"window must be in (0, 1], got {window!r}")
    peak = float(schedule.peak)
    found = [s for s in sorted(steps) if s >= 1 and abs(float(schedule(s - 1)) - peak) <= 1e-12 * peak]
    return found[len(found) - math.ceil(window * len(found)) :] if found else []


def average_weights(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    r"""The element-wise mean of model state dicts, :math:`\bar w = \frac1K \sum_k w_k`.

    Floating-point tensors are summed in float64 and cast back to their dtype; other tensors (a batch
    norm's ``num_batches_tracked``) are taken from the last state.

    Raises:
        EnsembleError: no states, or states with different keys or shapes.

    Example:
        >>> import torch
        >>> average_weights([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])["w"]
        tensor([2., 4.])
    """
    import torch

    if not states:
        raise EnsembleError("no checkpoints to average")
    keys = list(states[-1])
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [state[key] for state in states if key in state]
        if len(tensors) != len(states) or any(t.shape != tensors[0].shape for t in tensors):
            raise EnsembleError(f"the checkpoints do not share {key!r} (a different model in the run?)")
        last = tensors[-1]
        if last.is_floating_point():
            total = torch.zeros(last.shape, dtype=torch.float64, device=last.device)
            for t in tensors:
                total += t.to(torch.float64)
            out[key] = (total / len(tensors)).to(last.dtype)
        else:
            out[key] = last.clone()
    return out
