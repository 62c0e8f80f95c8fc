"""The ``cosanneal`` command line: a thin typer app; each command lives in its own module.

The commands are registered here, explicitly and in the order ``--help`` lists them, from
:mod:`cosanneal.commands` (one module per command, :data:`COMMANDS`). Shared options and their one
spelling per notion are in :mod:`cosanneal.commands.options`.

Exit codes: 0 success, 1 ``lint`` found problems (``train``: the non-finite guard stopped the run), 2
bad input (one ``error:`` line on stderr, no traceback), 74 the run's files cannot be written (disk
full, read-only or vanished run directory; one ``error:`` line naming the device and what was kept),
143/130 ``train`` was preempted by SIGTERM/SIGINT and saved a checkpoint.

Shell completion: ``cosanneal --install-completion`` (bash, zsh, fish, PowerShell).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from cosanneal.commands import (
    branch,
    compare,
    demo,
    ensemble,
    lint,
    lrfind,
    plan,
    plot,
    predict,
    replan,
    report,
    show,
    sweep,
    trace,
    train,
    verify,
)
from cosanneal.errors import CosannealError

__all__ = ["COMMANDS", "app", "main"]

HELP = """Exact cosine-annealing LR schedules: preview, check and trace them, train with them, verify and
report the runs.

\b
  cosanneal demo                                    # train, interrupt, resume, verify the GPT demo
  cosanneal show examples/schedules/sgdr.toml --steps 3000
  cosanneal train src/cosanneal/zoo/configs/digits_sgdr.toml --dry-run
  cosanneal report runs/demo -o report.html
"""

app = typer.Typer(
    name="cosanneal",
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is printed as written: [schedule] stays, flags show as flags
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: The command modules, in ``--help`` order: schedules first, then training, then the tools on runs.
COMMANDS = (
    show,
    plot,
    lint,
    trace,
    plan,
    train,
    demo,
    replan,
    branch,
    lrfind,
    compare,
    predict,
    sweep,
    verify,
    report,
    ensemble,
)


def _print_version(value: bool) -> None:
    if value:
        from cosanneal import __version__

        typer.echo(f"cosanneal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Exact cosine-annealing LR schedules: preview, check and trace them before you train."""


for _module in COMMANDS:
    _module.register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; a cosanneal error prints ``error: <one line>`` to stderr and exits 2.

    A command that joined a ``torchrun`` process group (``train`` under ``torchrun``) ends through
    :func:`~cosanneal.runtime.distributed.exit_process`, so torch's gloo teardown race cannot turn a
    finished job's exit status into an abort.
    """
    try:
        app(args=list(argv) if argv is not None else None, prog_name="cosanneal")
        code: int | str | None = 0
    except CosannealError as exc:
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        sys.stderr.write(f"error: {message}\n")
        code = getattr(exc, "exit_code", 2)
    except SystemExit as exc:
        code = exc.code
    _end_a_distributed_process(code)
    raise SystemExit(code) from None


def _end_a_distributed_process(code: int | str | None) -> None:
    """``os._exit`` with the command's status if it ran collectives; otherwise nothing (returns)."""
    distributed = sys.modules.get("cosanneal.runtime.distributed")  # imported only by such commands
    if distributed is None or not distributed.joined_a_group():
        return
    if isinstance(code, str):  # SystemExit("message") prints the message and exits 1
        sys.stderr.write(code + "\n")
        code = 1
    distributed.exit_process(0 if code is None else code)
