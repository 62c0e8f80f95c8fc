"""Peer-exact presets, ``cosanneal.compat``; implemented in :mod:`cosanneal.schedules.compat`."""

from cosanneal.schedules.compat import *  # noqa: F403
from cosanneal.schedules.compat import __all__ as __all__
