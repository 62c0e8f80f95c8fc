"""Exception types that users of cosanneal can catch.

Every error a user can cause carries a one-line message naming the field, the value received and
what is allowed, so a CLI can print it as is and exit 2.
"""

from __future__ import annotations


class CosannealError(Exception):
    """Base class of every error cosanneal raises on purpose."""


class ScheduleError(CosannealError, ValueError):
    """A schedule's configuration or a step given to it is invalid.

    Example:
        >>> from cosanneal import Cosine
        >>> Cosine(peak_lr=0.1, cycle_steps=0)
        Traceback (most recent call last):
        ...
        cosanneal.errors.ScheduleError: cycle_steps must be > 0, got 0
    """


class SpecError(CosannealError, ValueError):
    """A schedule spec file or a ``--set key=value`` pair cannot be read or is invalid."""


class StateError(CosannealError, ValueError):
    """A saved scheduler state cannot be loaded into the scheduler it is given to."""


class SchedulerUsageError(CosannealError, RuntimeError):
    """A scheduler is used in a way that would silently corrupt the schedule (e.g. a double step)."""


class ConfigError(CosannealError, ValueError):
    """A training config (file or ``--set`` override) is invalid; the message names the key and the fix."""


class RunIOError(CosannealError, OSError):
    """A run's files cannot be written: the disk is full, the run directory is read-only or vanished.

    Not bad input: the CLI prints its one line and exits with :attr:`exit_code` (74, ``EX_IOERR`` of
    ``sysexits.h``). The message names the device, what was kept (the last good checkpoint, the run
    store's rows up to it) and how to resume.
    """

    exit_code = 74
