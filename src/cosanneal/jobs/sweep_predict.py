"""A sweep's schedule candidates ranked by a loss law before any is trained (docs/predict.md).

:func:`prescreen` draws ``candidates`` points of a sweep's search space (``schedule.*`` keys only: a
loss law predicts schedules, not models or optimizers), binds each candidate's schedule to the config's
run exactly as the trainer will (:func:`cosanneal.jobs.preview.bind_schedule`, the data built once),
predicts its final loss with a fitted law (:func:`cosanneal.analysis.predict.rank`) and keeps the best
``keep``. :func:`enqueue` queues them as the first trials of an Optuna study, so ``cosanneal sweep``
trains the predicted best first and its pruner judges the rest.

``cosanneal sweep --predict-from RUN --prescreen N --keep K`` does this before its workers start;
from Python::

    law = fit([trace_from_run("runs/cosine"), trace_from_run("runs/wsd")])
    best = prescreen(config, load_space("space.toml"), law, candidates=64, keep=8)
    enqueue(study, best)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cosanneal.analysis.predict import FittedLaw, PredictError, Prediction, rank

if TYPE_CHECKING:
    import optuna

    from cosanneal.tune.sweep import ParamSpec

__all__ = ["Screened", "enqueue", "prescreen", "sample_params"]


@dataclasses.dataclass(frozen=True)
class Screened:
    """One candidate that passed the pre-screen.

    Attributes:
        params: the sampled value of every searched key, as a trial's params (``enqueue_trial``).
        prediction: the law's prediction for the candidate's schedule (its ``name`` is ``candidate-<i>``).
    """

    params: dict[str, Any]
    prediction: Prediction


def sample_params(space: Mapping[str, ParamSpec], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` points of the search space drawn uniformly (log-uniformly where ``log``), reproducibly.

    Example:
        >>> from cosanneal.tune.sweep import parse_space
        >>> space = parse_space({"schedule.peak_lr": {"low": 1e-3, "high": 1e-1, "log": True},
        ...                      "schedule.cycle_mult": {"choices": [1, 2]}})
        >>> points = sample_params(space, 3, seed=1)
        >>> len(points), all(1e-3 <= p["schedule.peak_lr"] <= 1e-1 for p in points)
        (3, True)
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        point: dict[str, Any] = {}
        for key, spec in space.items():
            dist = spec.distribution
            if isinstance(dist, CategoricalDistribution):
                point[key] = dist.choices[int(rng.integers(len(dist.choices)))]
                continue
            if not isinstance(dist, (FloatDistribution, IntDistribution)):  # pragma: no cover
                raise TypeError(f"unsupported distribution {dist!r}")
            low, high = float(dist.low), float(dist.high)
            x = math.exp(rng.uniform(math.log(low), math.log(high))) if dist.log else rng.uniform(low, high)
            if dist.step is not None:
                x = low + round((x - low) / dist.step) * dist.step
            x = min(max(x, low), high)
            point[key] = round(x) if isinstance(dist, IntDistribution) else float(x)
        out.append(point)
    return out


def prescreen(
    config: Mapping[str, Any],
    space: Mapping[str, ParamSpec],
    law: FittedLaw,
    *,
    candidates: int = 64,
    keep: int = 8,
    seed: int = 0,
) -> list[Screened]:
    """The ``keep`` candidates of ``candidates`` drawn from ``space`` with the lowest predicted loss.

    Args:
        config: the sweep's training config (a mapping, as the sweep reads it).
        space: its search space (:func:`cosanneal.tune.sweep.parse_space`); ``schedule.*`` keys only.
        law: a law fitted to runs of the same job (:func:`cosanneal.analysis.predict.fit`).
        candidates: how many points to draw.
        keep: how many to keep, best first.
        seed: the draw's seed.

    Raises:
        PredictError: a searched key outside ``schedule``.
        ConfigError: the config, its data or a candidate's schedule is invalid (one line).
    """
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.preview import bind_schedule, run_length, run_shape
    from cosanneal.tune.sweep import apply_params

    outside = [key for key in space if not key.startswith("schedule.")]
    if outside:
        raise PredictError(
            f"space key {outside[0]!r} is not a schedule.* key; a loss law predicts schedules only: "
            "pre-screen a space of schedule keys"
        )
    base = config_from_dict(dict(config))
    shape = run_shape(base)  # the data, built once: a schedule-only change keeps the run's shape
    total = run_length(base, shape)
    points = sample_params(space, candidates, seed)
    schedules = {}
    for i, point in enumerate(points):
        values = {key: space[key].value(v) for key, v in point.items()}
        cfg = config_from_dict(apply_params(config, values))
        schedules[f"candidate-{i}"] = bind_schedule(cfg, total, shape)
    best = rank(law, schedules, total, keep=keep)
    return [Screened(points[int(p.name.rsplit("-", 1)[1])], p) for p in best]


def enqueue(study: optuna.Study, screened: Sequence[Screened]) -> None:
    """Queue the candidates as the study's next trials, best first (``optuna.Study.enqueue_trial``)."""
    for s in screened:
        study.enqueue_trial(s.params)
