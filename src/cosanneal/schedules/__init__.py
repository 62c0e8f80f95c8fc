"""Pure learning-rate schedules: step -> lr, numpy only, no I/O and no torch.

Every schedule is an immutable value whose LR at step ``t`` depends only on its configuration and
``t``; that is what makes resume exact and traces verifiable. Importing this package registers every
kind (``cosine``, the baselines, ``join``, ``onecycle``, ``rebatch``, ``replan``, ``wsd`` and the peer-specific kinds of
``cosanneal.compat``) with :func:`from_dict`.
"""

from cosanneal.schedules import baselines, compat, join, onecycle, rebatch, replan, wsd  # noqa: F401  (register kinds)
from cosanneal.schedules.base import CycleInfo, Schedule, from_dict, kinds, register
from cosanneal.schedules.baselines import Constant, Cyclic, Exponential, Linear, MultiStep, Polynomial, Step
from cosanneal.schedules.cosine import Cosine
from cosanneal.schedules.join import Join
from cosanneal.schedules.lint import LintWarning, lint
from cosanneal.schedules.onecycle import OneCycle
from cosanneal.schedules.rebatch import Rebatch
from cosanneal.schedules.spec import load_spec
from cosanneal.schedules.wsd import WarmupStableDecay

__all__ = [
    "Constant",
    "Cosine",
    "CycleInfo",
    "Cyclic",
    "Exponential",
    "Join",
    "Linear",
    "LintWarning",
    "MultiStep",
    "OneCycle",
    "Polynomial",
    "Rebatch",
    "Schedule",
    "Step",
    "WarmupStableDecay",
    "from_dict",
    "kinds",
    "lint",
    "load_spec",
    "register",
]
