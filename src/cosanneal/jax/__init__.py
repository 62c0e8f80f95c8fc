"""JAX/optax adapter: any cosanneal schedule as an optax schedule (``count -> lr``), jit- and vmap-able.

Example:
    >>> from cosanneal import Cosine
    >>> from cosanneal.jax import OptaxSchedule
    >>> lr = OptaxSchedule(Cosine(peak_lr=0.1, cycle_steps=100))
    >>> round(float(lr(50)), 6)
    0.05
"""

from cosanneal.jax.schedule import OptaxSchedule

__all__ = ["OptaxSchedule"]
