"""Peer-exact presets: the peers' learning-rate curves as cosanneal schedules.

Constructors that reproduce PyTorch, timm, Hugging Face, optax, Keras and Composer learning-rate
curves under the peers' own parameter names.

Within each peer's horizon the values agree with the real library to 1e-12 relative (1e-15 absolute
near zero); past it, where a peer climbs back up, the preset holds its floor. See ``docs/compat.md``.
"""

from cosanneal.schedules.compat.composer_presets import (
    composer_cosine_with_warmup,
)
from cosanneal.schedules.compat.hf_presets import (
    HfCosineCycles,
    hf_cosine_with_hard_restarts,
    hf_cosine_with_min_lr,
    hf_cosine_with_warmup,
    hf_wsd,
)
from cosanneal.schedules.compat.keras_presets import (
    keras_cosine_decay,
    keras_cosine_decay_restarts,
)
from cosanneal.schedules.compat.optax_presets import (
    OptaxCosine,
    optax_sgdr,
    optax_warmup_cosine_decay,
)
from cosanneal.schedules.compat.timm_presets import (
    timm_cosine,
)
from cosanneal.schedules.compat.torch_presets import (
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
