"""docs/getting-started.md shows the scripts of examples/getting_started/ as they are, and they work.

The page's commands run in test_doc_commands.py; here: the snippets are the files, a stopped and
resumed run ends bit for bit where an uninterrupted one does, its LR trace is the closed form with
every update once, and the state loads back both ways. Also the README's own-loop snippet runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from doc_shell import reader_env

from cosanneal import Cosine, runs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "getting_started"
PAGE = ROOT / "docs" / "getting-started.md"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SCHEDULE = Cosine(peak_lr=0.2, warmup_steps=20, cycle_steps=60, cycle_mult=2, max_cycles=2, min_ratio=0.01)


def _python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in _PYTHON_BLOCK.finditer(text)]


def test_the_page_shows_each_script_as_it_is() -> None:
    shown = {}
    for block in _python_blocks(PAGE.read_text(encoding="utf-8")):
        first = block.splitlines()[0]
        m = re.match(r"# (examples/getting_started/\w+\.py):", first)
        assert m, f"a python block of getting-started.md does not name its file: {first!r}"
        shown[m.group(1)] = block
    assert sorted(shown) == sorted(f"examples/getting_started/{p.name}" for p in EXAMPLES.glob("*.py"))
    for rel, block in shown.items():
        assert block == (ROOT / rel).read_text(encoding="utf-8"), f"{rel} differs from the page"


def _run(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=reader_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        from toy_job import build  # type: ignore[import-not-found]

        model, optimizer, _, scheduler, *_ = build()
    finally:
        sys.path.remove(str(EXAMPLES))
    from cosanneal.runtime import Checkpoints

    loaded = Checkpoints(run_dir / "checkpoints").load_latest(model, optimizer, scheduler)
    assert loaded is not None and loaded.step == scheduler.last_epoch == 200
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_stopped_and_resumed_run_is_the_uninterrupted_one_and_loads_back(tmp_path: Path) -> None:
    train = str(EXAMPLES / "train.py")
    assert "200 of 200 updates" in _run(train, "whole", cwd=tmp_path)
    assert "120 of 200 updates" in _run(train, "resumed", "120", cwd=tmp_path)
    assert "200 of 200 updates" in _run(train, "resumed", cwd=tmp_path)

    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "resumed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name

    run = runs.open(tmp_path / "resumed")
    try:
        steps, lr = run.scalar("lr", 0)
        assert steps.tolist() == list(range(200))  # every update once across the stop
        np.testing.assert_array_equal(lr, SCHEDULE(steps))
        assert run.params["schedule"] == SCHEDULE.to_dict()
        assert [e["step"] for e in run.events("run_finished")] == [200]
        saved = sorted({e["step"] for e in run.events("checkpoint_saved")})
        assert saved == [80, 120, 200]  # the cycle end, the stop, the end
        assert len(run.scalar("val_loss")[1]) == 3
    finally:
        run.close()

    out = _run(str(EXAMPLES / "load.py"), "resumed", cwd=tmp_path)
    final_lr = float(SCHEDULE(200))
    assert f"loaded step-200: 200 updates done, next lr {final_lr:.6g}" in out
    assert f"plain load: step 200, lr {final_lr:.6g}" in out
    assert (tmp_path / "resumed" / "plain.pt").exists()


def test_the_readme_loop_snippet_runs_and_loads_its_state_back(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in _python_blocks(readme) if "load_state_dict" in b]
    script = tmp_path / "readme_loop.py"
    script.write_text(snippet + "\nprint('ok', scheduler.last_epoch, optimizer.param_groups[0]['lr'])\n")
    out = _run(str(script), cwd=tmp_path)
    expected = Cosine(
        peak_lr=0.1, warmup_steps=500, cycle_steps=2_000, cycle_mult=2, peak_decay=0.7, min_ratio=0.01,
        max_cycles=3,
    )(100)  # fmt: skip
    assert out.split() == ["ok", "100", repr(float(expected))]
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["scheduler"]["step"] == 100 and state["scheduler"]["version"] == 1
