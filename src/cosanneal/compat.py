"""Peer-exact presets, ``cosanneal.compat``; implemented in :mod:`cosanneal.schedules.compat`."""

from cosanneal.schedules.compat import (
    HfCosineCycles,
    OptaxCosine,
    composer_cosine_with_warmup,
    hf_cosine_with_hard_restarts,
    hf_cosine_with_min_lr,
    hf_cosine_with_warmup,
    hf_wsd,
    keras_cosine_decay,
    keras_cosine_decay_restarts,
    optax_sgdr,
    optax_warmup_cosine_decay,
    timm_cosine,
    torch_cosine_annealing_lr,
    torch_cosine_annealing_warm_restarts,
    torch_linear_warmup_cosine,
    torch_one_cycle_lr,
)

__all__ = [
    "HfCosineCycles",
    "OptaxCosine",
    "composer_cosine_with_warmup",
    "hf_cosine_with_hard_restarts",
    "hf_cosine_with_min_lr",
    "hf_cosine_with_warmup",
    "hf_wsd",
    "keras_cosine_decay",
    "keras_cosine_decay_restarts",
    "optax_sgdr",
    "optax_warmup_cosine_decay",
    "timm_cosine",
    "torch_cosine_annealing_lr",
    "torch_cosine_annealing_warm_restarts",
    "torch_linear_warmup_cosine",
    "torch_one_cycle_lr",
]
