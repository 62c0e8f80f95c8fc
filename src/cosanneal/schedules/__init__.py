"""Pure learning-rate schedules: step -> lr, numpy only, no I/O and no torch.

Every schedule is an immutable value whose LR at step ``t`` depends only on its configuration and
``t``; that is what makes resume exact and traces verifiable.
"""

from cosanneal.schedules import baselines, join, onecycle, wsd  # noqa: F401  (registers their kinds)
from cosanneal.schedules.base import CycleInfo, Schedule, from_dict, kinds, register
from cosanneal.schedules.cosine import Cosine

__all__ = ["Cosine", "CycleInfo", "Schedule", "from_dict", "kinds", "register"]
