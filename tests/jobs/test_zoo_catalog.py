"""The torch-free catalog config loading checks options with is the builders' own signatures."""

from __future__ import annotations

import inspect

import pytest

from cosanneal.errors import ConfigError
from cosanneal.zoo import catalog
from cosanneal.zoo.data import DATASETS
from cosanneal.zoo.models import MODELS


def test_catalog_options_are_the_builders_parameters() -> None:
    assert {n: tuple(inspect.signature(f).parameters) for n, f in MODELS.items()} == catalog.MODEL_OPTIONS
    assert {n: tuple(inspect.signature(f).parameters) for n, f in DATASETS.items()} == catalog.DATA_OPTIONS
    for options, checks in (
        (catalog.MODEL_OPTIONS, catalog.MODEL_CHECKS),
        (catalog.DATA_OPTIONS, catalog.DATA_CHECKS),
    ):
        assert {o for names in options.values() for o in names} == set(checks)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"widthh": 3},
            "model.options.widthh: unknown option of model 'gpt'; allowed: layers, heads, width, block, dropout",
        ),
        ({"heads": 0}, "model.options.heads: must be an integer >= 1, got 0"),
    ],
)
def test_catalog_names_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        catalog.check_model_options("gpt", options)
    assert str(info.value) == message
