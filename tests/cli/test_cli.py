"""The ``cosanneal`` command line, run as a real process (``python -m cosanneal``)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosanneal import Cosine
from cosanneal.cli import main
from cosanneal.commands.options import DType
from cosanneal.schedules.lint import DTYPES
from cosanneal.schedules.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "schedules"
SGDR = str(EXAMPLES / "sgdr.toml")
WARMUP_COSINE = str(EXAMPLES / "warmup_cosine.toml")


def process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process, the way a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"COLUMNS": "120", "PATH": "", "PYTHONIOENCODING": "utf-8"},
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``cosanneal.cli.main`` in this process (same code path as the console script, faster)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess(list(args), int(code or 0), out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(ROOT)


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ---- show ---------------------------------------------------------------------------------------
def test_show_sgdr_prints_cycles_and_clean_lint() -> None:
    result = process("show", SGDR, "--steps", "3000")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sgdr.toml: cosine, 3000 steps" in out
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")
    ]
    assert rows == [
        ["warmup", "0", "200", "200", "0.1", "0", "100%"],
        ["0", "200", "600", "400", "0.1", "0.0001", "100%"],
        ["1", "600", "1400", "800", "0.07", "0.0001", "100%"],
        ["2", "1400", "3000", "1600", "0.049", "0.0001", "100%"],
    ]
    assert "restarts: 600, 1400" in out and "lint: no warnings" in out


def test_show_defaults_to_the_schedule_end_and_reports_lint() -> None:
    result = cli(
        "show", "--set", "kind=cosine", "--set", "peak_lr=0.1", "--set", "cycle_steps=400", "--steps", "700"
    )
    assert result.returncode == 0
    assert "│ hold   │   400 │ 700 │    300 │" in result.stdout.replace("│ hold  ", "│ hold   ")
    assert "lint: CA008" in result.stdout and "lint: CA009" in result.stdout
    default = cli("show", SGDR)
    assert default.returncode == 0 and "cosine, 3000 steps" in default.stdout


def test_show_other_kinds() -> None:
    result = cli("show", str(EXAMPLES / "wsd.toml"))
    assert result.returncode == 0, result.stderr
    assert "wsd, 3000 steps" in result.stdout and "warmup" in result.stdout


# ---- lint ---------------------------------------------------------------------------------------
def test_lint_exit_codes() -> None:
    clean = cli("lint", SGDR, "--steps", "3000")
    assert (clean.returncode, clean.stdout) == (0, "no warnings for 3000 steps\n")
    cut = cli("lint", SGDR, "--steps", "2500")
    assert cut.returncode == 1
    lines = cut.stdout.splitlines()
    assert lines[0].startswith("CA002 restart 2 at step 1400") and lines[-1] == "1 warning for 2500 steps"


def test_lint_dtype() -> None:
    # AMP keeps fp32 master weights: the example's floor is fine under fp16 and bf16 autocast
    assert cli("lint", SGDR, "--steps", "3000", "--dtype", "fp16").returncode == 0
    assert cli("lint", SGDR, "--steps", "3000", "--dtype", "bf16").returncode == 0
    # weights updated in half precision lose the small updates near the floor
    result = cli("lint", SGDR, "--steps", "3000", "--dtype", "pure-bf16")
    assert result.returncode == 1 and result.stdout.startswith("CA007"), result.stdout


def test_lint_epochs_need_steps_per_epoch() -> None:
    spec = str(EXAMPLES / "train_config.yaml")
    assert_user_error(cli("lint", spec), "warmup_steps='5ep' is in epochs; pass --steps-per-epoch N")
    result = cli("lint", spec, "--steps-per-epoch", "100")
    assert result.returncode == 1 and result.stdout.startswith("CA006")


def test_dtype_choices_match_the_lint_table() -> None:
    assert [d.value for d in DType] == list(DTYPES)


# ---- trace --------------------------------------------------------------------------------------
def test_trace_csv_equals_the_schedule() -> None:
    result = process("trace", SGDR, "--steps", "3000")
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    s = load_spec(SGDR)
    assert len(rows) == 3000 and list(rows[0]) == ["step", "lr", "phase", "cycle"]
    np.testing.assert_array_equal([float(r["lr"]) for r in rows], s(np.arange(3000)))
    assert [int(r["step"]) for r in rows] == list(range(3000))
    for t in (0, 199, 200, 599, 600, 1400, 2999):
        assert (rows[t]["phase"], int(rows[t]["cycle"])) == (s.phase(t), s.cycle(t).index)


def test_trace_json_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    result = cli("trace", WARMUP_COSINE, "--steps", "1000", "--format", "json", "-o", str(out))
    assert result.returncode == 0 and result.stdout == ""
    data = json.loads(out.read_text())
    s = load_spec(WARMUP_COSINE).bind(total_steps=1000)
    np.testing.assert_array_equal(data["lr"], s(np.arange(1000)))
    assert data["step"] == list(range(1000)) and data["phase"][49:51] == ["warmup", "anneal"]
    assert data["schedule"]["warmup_steps"] == 50 and data["fingerprint"] == s.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]  # no temporary file left behind


def test_trace_other_kinds_have_step_and_lr() -> None:
    result = cli("trace", str(EXAMPLES / "one_cycle.toml"), "--steps", "50")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["step", "lr"]
    np.testing.assert_array_equal(
        [float(r["lr"]) for r in rows], load_spec(EXAMPLES / "one_cycle.toml")(np.arange(50))
    )


def test_trace_from_set_only_without_a_file() -> None:
    result = cli(
        "trace",
        "--set",
        "kind=cosine",
        "--set",
        "peak_lr=1",
        "--set",
        "cycle_steps=4",
        "--set",
        "warmup_steps=2",
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[1:] == [
        "0,0.0,warmup,0",
        "1,0.5,warmup,0",
        "2,1.0,anneal,0",
        f"3,{Cosine(1.0, warmup_steps=2, cycle_steps=4)(3)!r},anneal,0",
        "4,0.5,anneal,0",
        f"5,{Cosine(1.0, warmup_steps=2, cycle_steps=4)(5)!r},anneal,0",
    ]


# ---- plot ---------------------------------------------------------------------------------------
def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(matplotlib.image.imread(str(path)))


def test_plot_readme_demo(tmp_path: Path) -> None:
    out = tmp_path / "sgdr.png"
    result = process("plot", SGDR, "--steps", "3000", "--vs", WARMUP_COSINE, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out} (2 schedules, 3000 steps)\n"
    image = read_png(out)
    assert image.shape == (540, 1200, 4)
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50 and rgb.std() > 0.05  # drawn, not blank
    blue = (np.abs(rgb - np.array([0.12, 0.47, 0.71])) < 0.05).all(axis=1).sum()
    orange = (np.abs(rgb - np.array([1.0, 0.5, 0.05])) < 0.05).all(axis=1).sum()
    assert blue > 500 and orange > 500  # both curves (C0 blue, C1 orange) are on the image
    assert [p.name for p in tmp_path.iterdir()] == ["sgdr.png"]


def test_plot_log_scale_with_zero_lr(tmp_path: Path) -> None:
    out = tmp_path / "log.png"
    result = cli(
        "plot",
        "--set",
        "kind=cosine",
        "--set",
        "peak_lr=0.1",
        "--set",
        "cycle_steps=100",
        "--steps",
        "150",
        "--log-y",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert read_png(out).shape == (540, 1200, 4)


def test_plot_replaces_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "lr.png"
    out.write_bytes(b"old")
    assert cli("plot", SGDR, "-o", str(out)).returncode == 0
    assert read_png(out).shape == (540, 1200, 4)


# ---- bad input: exit 2, one line, no traceback --------------------------------------------------
def test_missing_spec_file() -> None:
    assert_user_error(process("show", "nope.toml"), "nope.toml: cannot read the file")


def test_bad_toml(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('kind = "cosine"\npeak_lr = = 1\n')
    assert_user_error(process("lint", str(spec), "--steps", "10"), "invalid TOML", "line 2")


def test_bad_value_from_set() -> None:
    assert_user_error(
        cli("show", SGDR, "--set", "cycle_mult=-1"), "sgdr.toml: cycle_mult must be > 0, got -1"
    )


def test_endless_schedule_needs_steps() -> None:
    assert_user_error(cli("show", str(EXAMPLES / "sgdr_endless.json")), "never ends", "pass --steps N")


def test_fraction_durations_need_steps() -> None:
    assert_user_error(
        cli("trace", WARMUP_COSINE), "warmup_steps='0.05dur' is a fraction of the run; pass --steps N"
    )


def test_no_spec_at_all() -> None:
    assert_user_error(cli("show"), "give a spec file")


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_user_error(cli("plot", SGDR, "-o", str(blocker / "lr.png")), "cannot write")
    assert_user_error(cli("trace", SGDR, "-o", str(blocker / "t.csv")), "cannot write")


def test_output_directories_are_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir" / "lr.png"
    assert cli("plot", SGDR, "-o", str(out)).returncode == 0
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "args", [["lint", SGDR, "--steps", "0"], ["lint", SGDR, "--dtype", "int8"], ["frobnicate"]]
)
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    result = process(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "cosanneal"
    result = subprocess.run([str(script), "lint", SGDR], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "no warnings for 3000 steps\n")


# ---- train: option handling ---------------------------------------------------------------------
class _ProbeStopError(Exception):
    """Raised by the probe trainer instead of training, carrying what it would have shown."""


@pytest.mark.parametrize(
    ("config_progress", "flags", "shown"),
    [
        (False, [], False),  # the config decides when no flag is given
        (True, [], True),
        (False, ["--progress"], True),  # a flag given on the command line wins
        (True, ["--no-progress"], False),
    ],
)
def test_train_progress_flag_defaults_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_progress: bool, flags: list[str], shown: bool
) -> None:
    from cosanneal.jobs import trainer

    class Probe(trainer.Trainer):
        def run(self) -> trainer.TrainResult:
            raise _ProbeStopError(self.show_progress)

    monkeypatch.setattr(trainer, "Trainer", Probe)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"[telemetry]\nprogress = {str(config_progress).lower()}\n")
    with pytest.raises(_ProbeStopError) as stopped:
        main(["train", str(cfg), "--run-dir", str(tmp_path / "run"), *flags])
    assert stopped.value.args == (shown,)


def test_version_prints_the_package_version() -> None:
    import subprocess
    import sys

    from cosanneal import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"cosanneal {__version__}"
