"""A griffe extension for the API reference: a Google ``Example:`` section is rendered as ``Examples:``.

The project's docstrings (DESIGN.md, "Conventions") put their doctests under ``Example:``, which
griffe's Google parser reads as an admonition of prose, so ``>>>`` lines would render as quoted text.
This extension renames the section heading in the docstring text griffe parses (the source files and
what ``pytest --doctest-modules`` runs are untouched), so the doctests render as Python examples.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename every ``Example:`` section heading to ``Examples:`` once an object is loaded."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the heading in ``obj``'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\g<indent>Examples:", obj.docstring.value)
