"""Built-in example models and offline data sets, used by the demo, the tests and the benchmarks."""

from cosanneal.zoo.data import DATASETS, load_dataset
from cosanneal.zoo.models import MODELS, build_model

__all__ = ["DATASETS", "MODELS", "build_model", "load_dataset"]
