"""Every shell command that README.md and docs/*.md show runs as written (convention: doc_shell.py).

One test per page, each in a fresh copy of the repository's tracked files, so pytest-xdist spreads
the pages over its workers and no page depends on what another page wrote.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_shell import commands_to_run, extract, fresh_copy, reader_env, run_commands

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_RUNS = re.compile(r"^\s*(`{3,}|~{3,})\s*(bash|sh|shell|console)\b|<!--\s*docs-test", re.MULTILINE)


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


#: The pages with a block that runs (or a marker); every page's markers are checked below.
RUNNABLE = [page for page in PAGES if _RUNS.search(page.read_text(encoding="utf-8"))]


def test_the_pages_are_found_and_their_markers_parse() -> None:
    assert ROOT / "README.md" in RUNNABLE
    assert any(page.name == "getting-started.md" for page in RUNNABLE)
    for page in PAGES:
        extract(page.read_text(encoding="utf-8"), _rel(page))  # raises on a malformed marker


@pytest.mark.parametrize("page", RUNNABLE, ids=_rel)
def test_every_command_of_the_page_runs_as_shown(page: Path, tmp_path: Path) -> None:
    blocks = extract(page.read_text(encoding="utf-8"), _rel(page))
    commands = commands_to_run(blocks)
    if not commands:
        skipped = "; ".join(f"{b.path}:{b.line} ({b.skip})" for b in blocks if b.skip)
        pytest.skip(f"every block of the page is marked skip: {skipped}")
    repo = fresh_copy(ROOT, tmp_path / "repo")
    outcome = run_commands(commands, repo, reader_env())
    for cmd, seconds in sorted(outcome.seconds, key=lambda cs: -cs[1])[:5]:  # shown by pytest -rP
        print(f"{seconds:6.1f} s  {cmd.where}  {cmd.text.splitlines()[0][:90]}")
    assert outcome.failure is None, outcome.failure
