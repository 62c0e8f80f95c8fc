"""Measure a training config's step time for the budget planner (``cosanneal plan --measure CONFIG``).

:func:`measure_step_seconds` builds the config's model, data and optimizer as the trainer builds them and
times real optimizer steps; the planning itself (cycles that end at the budget, wall time, cost, the
checkpoint interval) is :func:`cosanneal.analysis.plan.plan`, which takes the step time as a number.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING

from cosanneal.errors import ScheduleError

if TYPE_CHECKING:
    from cosanneal.jobs.config import TrainConfig

__all__ = ["StepTiming", "measure_step_seconds"]


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """Timed optimizer steps of a config.

    Attributes:
        step_seconds: the median of the timed steps.
        samples: every timed step, in seconds.
        steps_per_epoch: whole batches per epoch of the config's training set.
        device: the device the steps ran on.
    """

    step_seconds: float
    samples: tuple[float, ...]
    steps_per_epoch: int
    device: str


def measure_step_seconds(config: TrainConfig, *, steps: int = 20, warmup_steps: int = 3) -> StepTiming:
    """Time ``steps`` real optimizer steps (forward, backward, update) of a training config.

    The model, data and optimizer are built as :class:`~cosanneal.jobs.trainer.Trainer` builds
    them; ``warmup_steps`` untimed steps come first (allocations, kernel selection), then each step is
    timed alone (synchronising the GPU) and the median is returned. Nothing is written anywhere.

    Raises:
        ConfigError: the config's model or data cannot be built.
        ScheduleError: ``steps`` < 1.
    """
    import time

    import torch
    from torch.nn import functional

    from cosanneal.jobs.builders import build_model, pick_device, training_batches
    from cosanneal.jobs.optimizers import build_optimizer

    if steps < 1 or warmup_steps < 0:
        raise ScheduleError(f"measure needs steps >= 1 and warmup_steps >= 0, got {steps}, {warmup_steps}")
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    batches, _ = training_batches(config.data, config.batch_size, config.seed)
    per_epoch = batches.batches_per_epoch
    model = build_model(config.model).to(device)
    model.train()
    optimizer = build_optimizer(model, config.optimizer, 1e-3)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    samples: list[float] = []
    for k in range(warmup_steps + steps):
        x, y = batches.batch(k // per_epoch, k % per_epoch)
        sync()
        t0 = time.perf_counter()
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        sync()
        if k >= warmup_steps:
            samples.append(time.perf_counter() - t0)
    return StepTiming(statistics.median(samples), tuple(samples), per_epoch, str(device))
