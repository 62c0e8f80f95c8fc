"""The docs test's extractor and runner (tests/docs/doc_shell.py): blocks, markers, exit codes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from doc_shell import Command, DocSyntaxError, commands_to_run, extract, reader_env, run_commands


def _page(text: str) -> str:
    return textwrap.dedent(text).replace("'''", "```")


def test_bash_sh_and_console_blocks_give_their_commands_in_order() -> None:
    page = _page(
        """\
        # Title

        '''bash
        echo one     # a comment
        # a line that is only a comment

        cosanneal plan --steps 90ep \\
            --cycles 3
        '''

        '''python
        print("never run")
        '''

        '''console
        $ echo two
        two
        $ printf '%s\\n' a \\
        > b
        a
        b
        '''

        - in a list:

          '''sh
          echo three
          '''
        """
    )
    blocks = extract(page, "page.md")
    assert [b.lang for b in blocks] == ["bash", "console", "sh"]
    assert [(c.line, c.text) for c in commands_to_run(blocks)] == [
        (4, "echo one     # a comment"),
        (7, "cosanneal plan --steps 90ep \\\n    --cycles 3"),
        (16, "echo two"),
        (18, "printf '%s\\n' a \\\nb"),
        (27, "echo three"),
    ]
    assert all(c.expect == 0 for c in commands_to_run(blocks))


def test_skip_needs_a_reason_and_skips_only_the_next_block() -> None:
    page = _page(
        """\
        <!-- docs-test: skip (needs a real <RUN_ID>) -->
        '''bash
        cosanneal verify mlflow:<RUN_ID>
        '''

        '''bash
        echo runs
        '''
        """
    )
    blocks = extract(page, "p.md")
    assert blocks[0].skip == "needs a real <RUN_ID>"
    assert blocks[1].skip is None
    assert [c.text for c in commands_to_run(blocks)] == ["echo runs"]
    for bad in (
        "<!-- docs-test: skip -->",
        "<!-- docs-test: skip () -->",
        "<!-- docs-test: skip because -->",
    ):
        with pytest.raises(DocSyntaxError, match="reason"):
            extract(f"{bad}\n```bash\necho x\n```\n", "p.md")


def test_exit_codes_are_announced_by_a_marker_or_the_commands_own_comment() -> None:
    page = _page(
        """\
        <!-- docs-test: exit 2 -->
        '''console
        $ cosanneal show bad.toml
        error: ...
        $ cosanneal show good.toml   # exit 0: this one works
        '''

        '''bash
        cosanneal lint sgdr.toml --steps 2500    # exit 1: last cycle cut short
        cosanneal lint sgdr.toml --steps 3000
        '''
        """
    )
    assert [c.expect for c in commands_to_run(extract(page, "p.md"))] == [2, 0, 1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- docs-test: exit one -->\n```bash\ntrue\n```\n", "unknown docs-test marker"),
        ("<!-- docs-test: skpi (typo) -->\n```bash\ntrue\n```\n", "unknown docs-test marker"),
        ("<!-- docs-test: exit 1 -->\n```python\nx = 1\n```\n", "never runs"),
        ("<!-- docs-test: exit 1 -->\nSome prose.\n```bash\ntrue\n```\n", "right before a fenced block"),
        ("text\n<!-- docs-test: exit 1 -->\n", "right before a fenced block"),
        (
            "<!-- docs-test: exit 1 -->\n<!-- docs-test: exit 2 -->\n```bash\ntrue\n```\n",
            "one docs-test marker",
        ),
        ("<!-- docs-test: exit 1 --> and more\n```bash\ntrue\n```\n", "alone on its line"),
    ],
)
def test_a_marker_that_is_wrong_or_marks_nothing_is_an_error(text: str, message: str) -> None:
    with pytest.raises(DocSyntaxError, match=message):
        extract(text, "p.md")


def test_a_marker_quoted_in_prose_or_shown_in_a_block_is_not_a_marker() -> None:
    page = "Write `<!-- docs-test: skip (reason) -->` before it.\n\n```markdown\n<!-- docs-test: exit 9 -->\n```\n"
    assert extract(page, "p.md") == []


def _cmd(text: str, expect: int = 0, line: int = 1) -> Command:
    return Command("p.md", line, text, expect)


def test_the_runner_stops_at_a_failing_command_and_names_it(tmp_path: Path) -> None:
    commands = [_cmd("echo made > made.txt"), _cmd("cat made.txt && false", line=7), _cmd("touch never")]
    outcome = run_commands(commands, tmp_path, reader_env())
    assert outcome.failure is not None
    assert outcome.failure.startswith("p.md:7: `cat made.txt && false` exited 1, the page announces 0")
    assert "made" in outcome.failure  # the command's stdout tail
    assert (tmp_path / "made.txt").exists()
    assert not (tmp_path / "never").exists()
    assert [c.line for c, _ in outcome.seconds] == [1, 7]


def test_the_runner_honours_announced_exit_codes_both_ways(tmp_path: Path) -> None:
    env = reader_env()
    assert run_commands([_cmd("exit 3", expect=3), _cmd("true")], tmp_path, env).failure is None
    wrong = run_commands([_cmd("true", expect=1)], tmp_path, env).failure
    assert wrong is not None and "exited 0, the page announces 1" in wrong


def test_the_runner_fails_a_deprecated_spelling_and_a_hanging_command(tmp_path: Path) -> None:
    env = reader_env()
    old = run_commands([_cmd("echo 'warning: --total is deprecated; use --steps' >&2")], tmp_path, env)
    assert old.failure is not None and "deprecation warning" in old.failure
    slow = run_commands([_cmd("sleep 5")], tmp_path, env, timeout=0.5)
    assert slow.failure is not None and "ran past" in slow.failure


def test_a_page_is_run_end_to_end_with_the_venv_on_path(tmp_path: Path) -> None:
    page = _page(
        """\
        '''bash
        python -c "import sys; print(sys.prefix)" > prefix.txt
        cosanneal --help > /dev/null
        '''
        <!-- docs-test: exit 2 -->
        '''console
        $ cosanneal no-such-command
        '''
        <!-- docs-test: skip (would fail) -->
        '''bash
        false
        '''
        """
    )
    outcome = run_commands(commands_to_run(extract(page, "p.md")), tmp_path, reader_env())
    assert outcome.failure is None
    assert (tmp_path / "prefix.txt").read_text().strip() == sys.prefix
