"""examples/lightning_fit.py and examples/hf_trainer.py run as written, twice: the second run resumes.

They run in this process (runpy, with their command line set), so the framework is imported once.
"""

from __future__ import annotations

import re
import runpy
import sqlite3
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    finally:
        sys.argv = argv
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "module", "first", "second"),
    [("lightning_fit.py", "pytorch_lightning", 30, 60), ("hf_trainer.py", "transformers", 20, 40)],
)
def test_example_runs_and_resumes_with_an_exact_trace(
    name: str, module: str, first: int, second: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(module)
    if module == "transformers":
        pytest.importorskip("accelerate")
    script = (ROOT / "examples" / name).read_text()
    assert len(script.splitlines()) < 75
    run_dir = str(tmp_path / "run")
    out = run_example(name, run_dir, "--steps", str(first), capsys=capsys)
    assert re.search(rf"done: {first} updates, max \|dLR\| = 0\.0, run in ", out), out[-2000:]
    out = run_example(name, run_dir, "--steps", str(second), capsys=capsys)
    assert re.search(rf"done: {second} updates, max \|dLR\| = 0\.0, run in ", out), out[-2000:]
    with sqlite3.connect(Path(run_dir) / "run.db") as db:
        steps = [
            s
            for (s,) in db.execute("SELECT step FROM scalars WHERE name='lr' AND grp=0 ORDER BY step, rowid")
        ]
        resumed = db.execute("SELECT COUNT(*) FROM events WHERE kind='resumed'").fetchone()[0]
        restarts = [s for (s,) in db.execute("SELECT step FROM events WHERE kind='restart' ORDER BY step")]
    assert steps == list(range(second)) and resumed == 1
    # each example shows a warm restart inside its first run, recorded once across the resume
    assert len(restarts) == 1 and 0 < restarts[0] < first, restarts
