"""How a process that ran collectives ends: exit handlers run, streams flush, Python's shutdown is skipped.

torch 2.13's gloo worker threads can free a collective's work after the interpreter's shutdown has
begun and abort the process (``terminate called without an active exception``); a ``cosanneal``
command that joined a ``torchrun`` group therefore leaves through
:func:`cosanneal.runtime.distributed.exit_process`. These tests run real interpreters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SGDR = REPO / "examples" / "schedules" / "sgdr.toml"

# a module-global object whose finaliser runs only in the interpreter's own shutdown, never in atexit
_PRELUDE = """
import atexit, sys
from pathlib import Path
marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("atexit ran"))
class Finaliser:
    def __del__(self):
        sys.__stderr__.write("interpreter shutdown ran\\n")
keep = Finaliser()
"""


def _python(code: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "marker"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_PRELUDE) + textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    return done, marker


def test_exit_process_runs_the_exit_handlers_flushes_and_keeps_the_status(tmp_path: Path) -> None:
    done, marker = _python(
        """
        from cosanneal.runtime import distributed
        sys.stdout.write("no newline, still buffered")
        distributed.exit_process(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3
    assert done.stdout == "no newline, still buffered"
    assert marker.read_text() == "atexit ran"
    assert "interpreter shutdown ran" not in done.stderr


def test_without_a_process_group_the_cli_ends_through_the_interpreter(tmp_path: Path) -> None:
    done, marker = _python(
        f"""
        from cosanneal.cli import main
        main(["show", {str(SGDR)!r}, "--steps", "20"])
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "atexit ran"
    assert "interpreter shutdown ran" in done.stderr


@pytest.mark.parametrize(
    ("argv", "status", "stderr"),
    [
        (["show", str(SGDR), "--steps", "20"], 0, ""),
        (["show", "no-such-file.toml", "--steps", "20"], 2, "error: "),
        (["show", "--no-such-option"], 2, "No such option"),
    ],
)
def test_a_command_that_joined_a_group_keeps_its_status_and_skips_the_shutdown(
    tmp_path: Path, argv: list[str], status: int, stderr: str
) -> None:
    """The status of success, a one-line refusal and a usage error all come through ``os._exit``."""
    done, marker = _python(
        f"""
        from cosanneal.runtime import distributed
        distributed._joined = True  # what init_from_env records once torchrun's group is joined
        from cosanneal.cli import main
        main({argv!r})
        """,
        tmp_path,
    )
    assert done.returncode == status, done.stderr
    assert marker.read_text() == "atexit ran"
    assert "interpreter shutdown ran" not in done.stderr
    assert stderr in done.stderr
    if status == 0:
        assert done.stdout.strip()  # the command's output was flushed before os._exit
