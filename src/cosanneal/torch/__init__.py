"""PyTorch adapter: an LRScheduler whose LR is a pure function of the update counter."""

from cosanneal.torch.scheduler import Scheduler, StepIgnoredWarning

__all__ = ["Scheduler", "StepIgnoredWarning"]
