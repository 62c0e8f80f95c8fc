"""Framework integrations: what cosanneal's trainer gives its jobs, for Lightning and the Hugging Face Trainer.

``cosanneal.integrations.lightning`` (needs ``pytorch-lightning``) and ``cosanneal.integrations.hf``
(needs ``transformers`` and ``accelerate``) are imported on their own, so this package imports
neither framework. See ``docs/integrations.md``.
"""

from cosanneal.integrations._common import IntegrationError, as_schedule

__all__ = ["IntegrationError", "as_schedule"]
