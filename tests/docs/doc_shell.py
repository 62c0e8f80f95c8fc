"""The shell commands a page of the docs shows, and running them as a reader would.

The convention (documented in docs/index.md, "Commands in the docs are tested"):

* Fenced blocks whose info string is ``bash``, ``sh`` or ``shell`` are scripts: every line is a command,
  except blank lines and lines that are only a comment; a line ending in ``\\`` continues on the next.
* In a ``console`` block only the lines after a ``$ `` prompt are commands (continued by a trailing
  ``\\``, the next line with or without a ``> `` prompt); every other line is output and is not checked.
* Every other block (``python``, ``toml``, a bare fence, ...) is never run.
* A command must exit 0, unless the page announces another code: a trailing comment that starts with
  ``exit N`` on the command's own line (``cosanneal lint ... # exit 1: the last cycle is cut short``), or
  the marker ``<!-- docs-test: exit N -->`` on the line right before the block (every command of the
  block, unless its own comment says otherwise).
* ``<!-- docs-test: skip (reason) -->`` right before a block keeps it from running; the reason is
  required (a placeholder such as ``<RUN_ID>``, a command CI runs anyway, a server that is not there).
* A marker that is malformed, unknown, or not followed by a block that would run is an error, so a typo
  never turns a test off.

Each command runs in order as ``bash -c COMMAND`` from the root of a fresh copy of the repository's
tracked files (so files a command writes are there for the next one, but ``cd`` and variables are not
carried over), with the virtual environment's ``bin`` first on ``PATH``, ``.venv`` in the copy
linked to that environment, and one torch thread per command (``OMP_NUM_THREADS=1`` unless set).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Info strings of the fenced blocks whose commands run.
SCRIPT_LANGS = frozenset({"bash", "sh", "shell"})
CONSOLE_LANGS = frozenset({"console"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)[^`]*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test\s*:(?P<body>.*?)-->\s*$")
_MARKER_START = re.compile(r"<!--\s*docs-test\b")
_SKIP = re.compile(r"^skip\s*\((?P<reason>.*)\)$", re.DOTALL)
_EXIT = re.compile(r"^exit\s+(?P<code>\d+)$")
_EXIT_COMMENT = re.compile(r"(?:^|\s)#\s*exit\s+(?P<code>\d+)\b")


class DocSyntaxError(ValueError):
    """A docs-test marker that is malformed, unknown, or marks no block that would run."""


@dataclass(frozen=True)
class Command:
    """One command of a page: where it is, its text as bash gets it, and the exit code announced."""

    path: str
    line: int
    text: str
    expect: int = 0

    @property
    def where(self) -> str:
        """``path:line`` of the command's first line."""
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Block:
    """A fenced block that the convention runs (unless ``skip`` holds the reason it does not)."""

    path: str
    line: int
    lang: str
    commands: tuple[Command, ...]
    skip: str | None = None


@dataclass(frozen=True)
class Marker:
    """A parsed ``<!-- docs-test: ... -->`` line."""

    line: int
    skip: str | None = None
    exit: int | None = None


def parse_marker(body: str, where: str, line: int) -> Marker:
    """The marker ``<!-- docs-test: BODY -->``: ``skip (reason)`` or ``exit N``.

    Raises:
        DocSyntaxError: an unknown directive, a skip without a reason.
    """
    body = " ".join(body.split())
    if m := _SKIP.match(body):
        reason = m["reason"].strip()
        if not reason:
            raise DocSyntaxError(
                f"{where}:{line}: 'docs-test: skip ()' needs a reason inside the parentheses"
            )
        return Marker(line, skip=reason)
    if body == "skip" or body.startswith("skip "):
        raise DocSyntaxError(f"{where}:{line}: write the reason as 'docs-test: skip (reason)', got {body!r}")
    if m := _EXIT.match(body):
        return Marker(line, exit=int(m["code"]))
    raise DocSyntaxError(
        f"{where}:{line}: unknown docs-test marker {body!r}; use 'skip (reason)' or 'exit N'"
    )


def _expected(text: str, default: int) -> int:
    m = _EXIT_COMMENT.search(text)
    return int(m["code"]) if m else default


def _join_continued(lines: Sequence[tuple[int, str]], console: bool) -> list[tuple[int, str]]:
    """Commands as ``(first line number, text)``; a trailing backslash continues a command."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, list[str]] | None = None
    for number, raw in lines:
        if pending is not None:
            text = raw[2:] if console and raw.startswith("> ") else raw
            pending[1].append(text)
            if not text.rstrip().endswith("\\"):
                commands.append((pending[0], "\n".join(pending[1])))
                pending = None
            continue
        if console:
            if not raw.startswith("$ "):
                continue  # output
            text = raw[2:]
        else:
            text = raw
            if not text.strip() or text.lstrip().startswith("#"):
                continue
        if text.rstrip().endswith("\\"):
            pending = (number, [text])
        else:
            commands.append((number, text))
    if pending is not None:
        commands.append((pending[0], "\n".join(pending[1])))
    return commands


def extract(text: str, path: str) -> list[Block]:
    """Every fenced block of a page that the convention runs, in order, with its commands.

    Raises:
        DocSyntaxError: a marker that is malformed or unknown, or that is not right before a block that
            would run.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: Marker | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _MARKER.match(line):
            if marker is not None:
                raise DocSyntaxError(f"{path}:{marker.line}: one docs-test marker per block")
            marker = parse_marker(m["body"], path, i + 1)
            i += 1
            continue
        if line.lstrip().startswith("<!--") and _MARKER_START.search(line):
            raise DocSyntaxError(
                f"{path}:{i + 1}: a docs-test marker must be alone on its line: {line.strip()!r}"
            )
        fence = _FENCE.match(line)
        if fence is None:
            if marker is not None and line.strip():
                raise DocSyntaxError(
                    f"{path}:{marker.line}: the docs-test marker must be right before a fenced block"
                )
            i += 1
            continue
        indent, token, lang = fence["indent"], fence["fence"], fence["info"].lower()
        start = i + 1
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(token[0] * len(token)) and set(closing) == {token[0]}:
                break
            raw = lines[i]
            body.append((i + 1, raw[len(indent) :] if raw.startswith(indent) else raw.lstrip()))
            i += 1
        i += 1  # past the closing fence
        runs = lang in SCRIPT_LANGS or lang in CONSOLE_LANGS
        if not runs:
            if marker is not None:
                raise DocSyntaxError(
                    f"{path}:{marker.line}: the docs-test marker is before a {lang or 'plain'!s} block, "
                    "which never runs; only bash, sh, shell and console blocks do"
                )
            continue
        default = marker.exit if marker is not None and marker.exit is not None else 0
        commands = tuple(
            Command(path, number, cmd, _expected(cmd, default))
            for number, cmd in _join_continued(body, lang in CONSOLE_LANGS)
        )
        blocks.append(Block(path, start, lang, commands, skip=marker.skip if marker else None))
        marker = None
    if marker is not None:
        raise DocSyntaxError(
            f"{path}:{marker.line}: the docs-test marker must be right before a fenced block"
        )
    return blocks


def commands_to_run(blocks: Iterable[Block]) -> list[Command]:
    """The commands of the blocks that are not skipped, in page order."""
    return [cmd for block in blocks if block.skip is None for cmd in block.commands]


@dataclass
class Outcome:
    """What running a page's commands gave: each command's seconds, and the first failure."""

    seconds: list[tuple[Command, float]] = field(default_factory=list)
    failure: str | None = None


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_commands(
    commands: Sequence[Command], cwd: Path, env: Mapping[str, str], *, timeout: float = 300.0
) -> Outcome:
    """Run the commands in order with ``bash -c`` in ``cwd``; stop at the first unannounced exit code.

    A command whose exit code is not the one the page announces (0 unless announced), that runs past
    ``timeout`` seconds, or that prints a deprecation warning on stderr (the page uses an old spelling)
    is a failure, described with its place in the page and the tail of its output.
    """
    outcome = Outcome()
    for cmd in commands:
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                ["bash", "-c", cmd.text],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            outcome.failure = f"{cmd.where}: `{cmd.text}` ran past {timeout:.0f} s"
            return outcome
        outcome.seconds.append((cmd, time.perf_counter() - began))
        deprecated = [ln for ln in proc.stderr.splitlines() if "deprecat" in ln.lower()]
        if proc.returncode != cmd.expect or deprecated:
            why = (
                f"exited {proc.returncode}, the page announces {cmd.expect}"
                if proc.returncode != cmd.expect
                else f"prints a deprecation warning ({deprecated[0].strip()}): use the current spelling"
            )
            outcome.failure = (
                f"{cmd.where}: `{cmd.text}` {why}\n--- stdout (tail)\n{_tail(proc.stdout)}"
                f"\n--- stderr (tail)\n{_tail(proc.stderr)}"
            )
            return outcome
    return outcome


def tracked_files(root: Path) -> list[str]:
    """The repository's tracked files (``git ls-files``) that exist in the work tree."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, text=True
    ).stdout
    return [p for p in out.split("\0") if p and os.path.lexists(root / p)]


def fresh_copy(root: Path, dest: Path) -> Path:
    """Copy the tracked files of ``root`` into ``dest`` and link ``dest/.venv`` to the running venv."""
    for rel in tracked_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target, follow_symlinks=False)
    venv = dest / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    return dest


def reader_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a reader whose venv is active: its ``bin`` first on ``PATH``."""
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["VIRTUAL_ENV"] = sys.prefix
    env["MPLBACKEND"] = "Agg"
    # one torch/BLAS thread per command: pytest-xdist runs pages side by side on few cores, and the
    # docs' jobs are small enough that more threads only contend
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)
    return env
