"""cosanneal: exact cosine-annealing learning-rate schedules and safe training jobs that use them.

The schedule core (this namespace) needs numpy only; ``cosanneal.torch`` holds the PyTorch scheduler,
``cosanneal.compat`` the peer-exact presets, ``cosanneal.runtime`` the training-job runtime.
"""

from cosanneal.errors import (
    ConfigError,
    CosannealError,
    ScheduleError,
    SchedulerUsageError,
    SpecError,
    StateError,
)
from cosanneal.schedules import (
    Constant,
    Cosine,
    CycleInfo,
    Cyclic,
    Exponential,
    Join,
    Linear,
    LintWarning,
    MultiStep,
    OneCycle,
    Polynomial,
    Schedule,
    Step,
    WarmupStableDecay,
    from_dict,
    lint,
    load_spec,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Constant",
    "CosannealError",
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
    "Schedule",
    "ScheduleError",
    "SchedulerUsageError",
    "SpecError",
    "StateError",
    "Step",
    "WarmupStableDecay",
    "__version__",
    "from_dict",
    "lint",
    "load_spec",
]
