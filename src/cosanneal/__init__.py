"""cosanneal: exact cosine-annealing learning-rate schedules and safe training jobs that use them."""

from cosanneal.errors import CosannealError, ScheduleError, SchedulerUsageError, SpecError, StateError
from cosanneal.schedules import Cosine, CycleInfo, Schedule, from_dict

__version__ = "0.1.0"

__all__ = [
    "CosannealError",
    "Cosine",
    "CycleInfo",
    "Schedule",
    "ScheduleError",
    "SchedulerUsageError",
    "SpecError",
    "StateError",
    "__version__",
    "from_dict",
]
