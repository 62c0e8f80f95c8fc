"""Peer-exact presets: the peers' learning-rate curves as cosanneal schedules.

Constructors that reproduce PyTorch, timm, Hugging Face, optax, Keras and Composer learning-rate
curves under the peers' own parameter names.

Within each peer's horizon the values agree with the real library to 1e-12 relative (1e-15 absolute
near zero); past it, where a peer climbs back up, the preset holds its floor. See ``docs/compat.md``.
"""

from cosanneal.schedules.compat import (
    composer_presets,
    hf_presets,
    keras_presets,
    optax_presets,
    timm_presets,
    torch_presets,
)
from cosanneal.schedules.compat.composer_presets import *  # noqa: F403
from cosanneal.schedules.compat.hf_presets import *  # noqa: F403
from cosanneal.schedules.compat.keras_presets import *  # noqa: F403
from cosanneal.schedules.compat.optax_presets import *  # noqa: F403
from cosanneal.schedules.compat.timm_presets import *  # noqa: F403
from cosanneal.schedules.compat.torch_presets import *  # noqa: F403

__all__ = sorted(
    {
        *composer_presets.__all__,
        *hf_presets.__all__,
        *keras_presets.__all__,
        *optax_presets.__all__,
        *timm_presets.__all__,
        *torch_presets.__all__,
    }
)
