"""A mkdocs hook: links from a page to the repository's own files outside ``docs/`` keep working.

The pages link to ``../examples/custom_loop.py`` or ``../benchmarks/RESULTS.md`` so that they read
right in the repository. On the built site such a link points to the file in the repository (under
``repo_url``, when mkdocs.yml sets one) or, without ``repo_url``, becomes its text in code type. A link
to a file that does not exist is left alone, so ``mkdocs build --strict`` still fails on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>\.\./[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Rewrite the links of ``page`` that leave ``docs/`` for another file of the repository."""
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = docs_dir.parent
    here = (docs_dir / page.file.src_path).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def rewrite(m: re.Match[str]) -> str:
        target = (here / m["target"]).resolve()
        if not target.is_relative_to(repo) or target.is_relative_to(docs_dir) or not target.exists():
            return m[0]
        rel = target.relative_to(repo).as_posix()
        if repo_url:
            return f"[{m['text']}]({repo_url}/blob/main/{rel}{m['anchor'] or ''})"
        text = m["text"].strip("`")
        return f"`{text}`" if text == rel or text.endswith(Path(rel).name) else f"{m['text']} (`{rel}`)"

    return _LINK.sub(rewrite, markdown)
