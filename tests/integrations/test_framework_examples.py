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


def test_a_lightning_run_has_snapshots_to_ensemble_and_the_cli_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pytorch_lightning")
    import subprocess

    import torch

    from cosanneal.analysis.ensemble import ensemble_scores
    from cosanneal.runtime import Checkpoints

    run_dir = tmp_path / "run"
    run_example("lightning_fit.py", str(run_dir), "--steps", "60", capsys=capsys)
    proc = subprocess.run(
        [sys.executable, "-m", "cosanneal", "ensemble", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "recorded by the lightning integration" in proc.stderr, (
        proc.stderr
    )

    # docs/ensemble.md, "Runs from other frameworks", with the example's own model and data
    class Classifier(torch.nn.Module):  # the example's module: the same parameter names
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))

    model = Classifier()
    torch.manual_seed(0)  # the example's validation data
    x = torch.randn(512, 8)[448:]
    y = x[:, :3].argmax(dim=1)
    ck = Checkpoints(run_dir / "checkpoints", best=None)
    snapshots = ck.cycle_end_snapshots()
    assert [info.step for info in snapshots] == [25]  # the restart of warmup 5 + a cycle of 20
    probs = []
    for info in snapshots:
        ck.load(info, model, restore_rng=False)
        model.eval()
        with torch.no_grad():
            probs.append(torch.softmax(model.net(x), dim=1).numpy())
    members, ensemble, best = ensemble_scores(probs, [info.step for info in snapshots], y.numpy())
    assert best.steps == (25,) and 0.0 <= ensemble.accuracy <= 1.0 and ensemble.nll == members[0].nll
