"""The CLI as a newcomer meets it: one spelling per notion, examples in every --help, previews of a
training config, ``train --dry-run``, shell completion, tables that fit, config errors before torch."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

from cosanneal import runs
from cosanneal.cli import COMMANDS, app, main
from cosanneal.commands.tables import print_table

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "src" / "cosanneal" / "zoo" / "configs" / "digits_sgdr.toml"
SGDR = ROOT / "examples" / "schedules" / "sgdr.toml"
GROUP: Any = typer.main.get_command(app)  # typer's own click (typer._click), duck-typed here
NAMES = sorted(GROUP.commands)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``cosanneal.cli.main`` in this process, output captured."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess([str(a) for a in args], int(code or 0), out.getvalue(), err.getvalue())


def process(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script's code path in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )


@pytest.fixture(autouse=True)
def _columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(ROOT)


# ---- help -------------------------------------------------------------------------------------------
def test_every_command_is_registered_once_in_the_listed_order() -> None:
    assert len(COMMANDS) == len(NAMES) == 16
    listed = cli("--help").stdout
    order = [listed.index(f"\n  {name} ") for name in GROUP.commands]
    assert order == sorted(order)
    assert list(GROUP.commands)[:4] == ["show", "plot", "lint", "trace"]


def _example_lines(name: str) -> list[str]:
    text = cli(name, "--help").stdout
    assert "Examples:" in text, name
    block = text.split("Examples:", 1)[1]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    return [line.split("   #", 1)[0].strip() for line in lines]


@pytest.mark.parametrize("name", NAMES)
def test_every_help_has_examples_that_parse(name: str) -> None:
    lines = _example_lines(name)
    assert lines, name
    for line in lines:
        words = shlex.split(line)
        if words[0] == "torchrun":
            words = words[words.index("cosanneal") :]
        assert words[0] == "cosanneal" and words[1] == name, line
        command = GROUP.commands[name]
        with command.make_context(name, words[2:], parent=GROUP.make_context("cosanneal", [name])) as ctx:
            assert ctx.params is not None  # every option and choice in the example exists


@pytest.mark.parametrize("name", NAMES)
def test_help_renders_flags_as_flags_and_keeps_brackets(name: str) -> None:
    text = cli(name, "--help").stdout
    assert "<bool>" not in text and "--help" in text
    assert "\x1b[" not in text  # plain text, nothing for a pipe to strip


def test_square_brackets_in_help_are_not_eaten() -> None:
    assert "[schedule] table" in cli("lr-find", "--help").stdout
    assert "[schedule] TOML" in " ".join(cli("plan", "--help").stdout.split())


@pytest.mark.parametrize(
    ("name", "option", "choices"),
    [
        ("sweep", "--pruner", "<median|hyperband|sha|none>"),
        ("sweep", "--direction", "<minimize|maximize>"),
        ("sweep", "--objective", "<final|best>"),
        ("compare", "--mode", "<max|min>"),
        ("ensemble", "--device", "<auto|cpu|cuda>"),
        ("demo", "--example", "<gpt|digits>"),
        ("trace", "--format", "<csv|json>"),
    ],
)
def test_choice_options_show_and_check_their_choices(name: str, option: str, choices: str) -> None:
    text = cli(name, "--help").stdout
    assert f"{option} {choices}" in text
    bad = cli(name, *(["x.toml"] if name != "demo" else []), option, "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr


def test_version() -> None:
    from cosanneal import __version__

    assert cli("--version").stdout == f"cosanneal {__version__}\n"


def test_shell_completion_of_commands_choices_and_metrics(tmp_path: Path) -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {"_COSANNEAL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        return process(cwd=tmp_path, env=env).stdout.split()

    assert complete("cosanneal sh", 1) == ["show"]
    assert complete("cosanneal sweep --pruner ", 3) == ["median", "hyperband", "sha", "none"]
    assert complete("cosanneal compare --metric val_p", 3) == ["val_ppl"]
    # the script for a named shell, whatever shell runs the command (CI runs it under sh)
    for shell, line in [("bash", "complete_bash"), ("zsh", "complete_zsh"), ("fish", "complete_fish")]:
        script = process(cwd=tmp_path, env={"_COSANNEAL_COMPLETE": f"source_{shell}"})
        assert script.returncode == 0 and f"_COSANNEAL_COMPLETE={line}" in script.stdout, (shell, script)


# ---- one spelling, the old ones deprecated -------------------------------------------------------------
def test_plan_total_is_steps_with_a_warning() -> None:
    new = cli("plan", "--steps", "1000", "--cycles", "2")
    old = cli("plan", "--total", "1000", "--cycles", "2")
    assert new.returncode == old.returncode == 0
    assert old.stdout == new.stdout and new.stderr == ""
    assert (
        old.stderr == "warning: --total is deprecated and will be removed in the next release; use --steps\n"
    )
    both = cli("plan", "--total", "1000", "--steps", "1000")
    assert both.returncode == 2
    assert both.stderr == "error: --total is the old spelling of --steps; give --steps only\n"
    missing = cli("plan", "--cycles", "2")
    assert missing.returncode == 2 and missing.stderr.startswith("error: plan needs the budget: --steps N")


def test_verify_total_steps_is_steps_with_a_warning(tmp_path: Path) -> None:
    trace = cli("trace", SGDR, "--steps", "3000", "-o", tmp_path / "lr.csv")
    assert trace.returncode == 0
    args = [tmp_path / "lr.csv", "--schedule", SGDR, "--set", "cycle_steps=0.25dur"]
    new = cli("verify", *args, "--steps", "3000")
    old = cli("verify", *args, "--total-steps", "3000")
    assert old.stdout == new.stdout and old.returncode == new.returncode
    assert "warning: --total-steps is deprecated" in old.stderr and "deprecated" not in new.stderr


@pytest.mark.parametrize(
    ("argv", "old", "new"),
    [
        (["compare", "missing.toml", "--schedules", "a.toml", "--out", "x"], "--out", "--output"),
        (["sweep", "missing.toml", "--space", "s.toml", "--runs-dir", "x"], "--runs-dir", "--output"),
        (["lr-find", "missing.toml", "--steps", "30"], "--steps", "--sweep-steps"),
    ],
)
def test_old_spellings_warn_and_still_reach_the_command(argv: list[str], old: str, new: str) -> None:
    out = cli(*argv)
    assert out.stderr.splitlines()[0] == (
        f"warning: {old} is deprecated and will be removed in the next release; use {new}"
    )
    assert out.returncode == 2 and "missing.toml" in out.stderr.splitlines()[1]  # the command ran on
    both = cli(*argv, new, argv[-1])
    assert both.returncode == 2 and f"{old} is the old spelling of {new}" in both.stderr


# ---- a training config previewed ---------------------------------------------------------------------
def _train_digits(run_dir: Path, *sets: str) -> None:
    args = ["train", DIGITS, "--run-dir", run_dir, "--no-progress"]
    for s in sets:
        args += ["--set", s]
    done = process(*args, cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr


def test_trace_of_a_training_config_is_the_lr_the_trainer_used(tmp_path: Path) -> None:
    sets = ["epochs=3"]
    _train_digits(tmp_path / "run", *sets)
    run = runs.open(tmp_path / "run")
    steps, values = run.scalar("lr", group=0)
    run.close()
    used = values.tolist()
    assert steps.tolist() == list(range(len(used)))
    traced = cli("trace", DIGITS, "--format", "json", *(f"--set={s}" for s in sets))
    assert traced.returncode == 0, traced.stderr
    payload = json.loads(traced.stdout)
    assert len(payload["lr"]) == len(used) == 66  # 3 epochs x 22 updates (1437 samples // 64)
    assert payload["lr"] == used
    shown = cli("show", DIGITS, *(f"--set={s}" for s in sets))
    assert "digits_sgdr.toml: cosine, 66 steps (22 per epoch)" in shown.stdout
    capped = cli("lint", DIGITS, "--steps", "40")
    assert capped.stdout.endswith("for 40 steps\n")


def test_preview_of_a_users_config_from_another_directory(tmp_path: Path) -> None:
    config = ROOT / "examples" / "train" / "shifted_digits.toml"
    out = process("show", config, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "shifted_digits.toml:" in out.stdout and "steps" in out.stdout
    err = process("show", config, "--steps-per-epoch", "10", cwd=tmp_path)
    assert err.returncode == 2
    assert err.stderr.endswith("drop --steps-per-epoch\n") and "Traceback" not in err.stderr


def test_plot_overlays_a_training_config_and_a_spec(tmp_path: Path) -> None:
    out = cli("plot", DIGITS, "--vs", SGDR, "-o", tmp_path / "vs.png")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"wrote {tmp_path / 'vs.png'} (2 schedules, 3000 steps)\n"
    assert (tmp_path / "vs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_dry_run_prints_the_cycle_table_and_writes_nothing(tmp_path: Path) -> None:
    out = process("train", DIGITS, "--dry-run", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "digits-sgdr: 36 epochs x 22 updates, batch 64 x 1 process(es)" in out.stdout
    assert "digits_sgdr.toml: cosine, 792 steps (22 per epoch)" in out.stdout
    assert "restarts: 132, 352" in out.stdout and "lint: no warnings" in out.stdout
    assert out.stdout.rstrip().endswith("dry run: nothing was trained or written")
    assert list(tmp_path.iterdir()) == []


def test_config_errors_come_before_torch_is_imported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DIGITS.read_text() + "\n[model.options]\nwidthh = 3\n")
    code = (
        "import sys\nfrom cosanneal.cli import main\n"
        f"try:\n    main(['train', {str(bad)!r}])\nexcept SystemExit as e:\n    print(e.code)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr.startswith("error: model.options.widthh: unknown option of model 'cnn'")


# ---- tables -------------------------------------------------------------------------------------------
def test_a_table_too_wide_for_the_terminal_becomes_records() -> None:
    header = ["trial", "value", *(f"param_{k}" for k in range(8)), "steps"]
    rows = [[str(t), f"0.{t}", *("0.001234" for _ in range(8)), "800"] for t in range(3)]
    wide = Console(file=io.StringIO(), width=200)
    print_table(wide, "best", header, rows)
    lines = wide.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert max(len(line) for line in lines) <= 200 and sum("0.001234" in line for line in lines) == 3
    narrow = Console(file=io.StringIO(), width=60)
    print_table(narrow, "best", header, rows)
    text = narrow.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line) for line in text.splitlines()) <= 60
    assert text.count("param_7") == 3 and text.count("0.001234") == 24 and "…" not in text
