"""``cosanneal.runtime`` imports its names on first use: reading a run store does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cosanneal.runtime as runtime


def test_every_public_name_resolves_to_its_module() -> None:
    for name in runtime.__all__:
        value = getattr(runtime, name)
        assert value.__module__.startswith("cosanneal.runtime."), name
    assert sorted(runtime.__all__) == sorted(runtime._WHERE)
    assert set(runtime.__all__) <= set(dir(runtime))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = runtime.Nope  # type: ignore[attr-defined]


def test_reading_a_run_store_does_not_import_torch() -> None:
    code = (
        "import sys; import cosanneal.runs, cosanneal.runtime.runstore, cosanneal.analysis.verify; "
        "from cosanneal.runtime import RunStore; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
