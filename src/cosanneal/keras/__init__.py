"""Keras 3 adapter: any cosanneal schedule as a ``keras.optimizers.schedules.LearningRateSchedule``.

Importing this package registers :class:`LearningRateSchedule` for Keras serialisation, so import it
before ``keras.saving.load_model`` of a model saved with one.

Example:
    >>> from cosanneal import Cosine
    >>> from cosanneal.keras import LearningRateSchedule
    >>> lr = LearningRateSchedule(Cosine(peak_lr=0.1, cycle_steps=100))
    >>> round(float(lr(50)), 6)
    0.05
"""

from cosanneal.keras.schedule import LearningRateSchedule

__all__ = ["LearningRateSchedule"]
