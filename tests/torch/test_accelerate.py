"""accelerate with real processes: every update that really ran used the closed form of the updates done.

accelerate's ``AcceleratedScheduler`` calls ``scheduler.step()`` once per process at every update
(``split_batches=False``), not at all during gradient accumulation, and not after an update its
GradScaler skipped. Each case runs under ``accelerate launch`` with 1, 2 and 4 CPU processes
(gloo); ``accelerate_worker.py`` is one rank.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("accelerate")

from accelerate_worker import GRID, POISONED, UPDATES, schedule
from blobs import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def launch(script: Path, processes: int, *args: str, home: Path, timeout: float = 300) -> str:
    """Run ``script`` under ``accelerate launch`` with ``processes`` CPU processes; return its output.

    ``python -m accelerate.commands.launch`` is the ``accelerate launch`` command (the console script
    also imports timm, which is installed here without torchvision). More than one CPU process is
    accelerate's multi-process launcher (torchrun, gloo): ``--multi_gpu`` with no GPU present.
    """
    mode = ["--cpu"] if processes == 1 else ["--multi_gpu", "--main_process_port", str(free_port())]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *mode,
        "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(script), *args,
    ]  # fmt: skip
    # HF_HOME in a fresh folder: no accelerate config file of the machine's user is read
    env = {**os.environ, "HF_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def ranks(out: Path, processes: int) -> list[list[dict[str, Any]]]:
    files = sorted(out.glob("rank*.json"))
    assert [f.name for f in files] == [f"rank{r}.json" for r in range(processes)]
    return [json.loads(f.read_text()) for f in files]


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_every_real_update_uses_the_closed_form_on_every_rank(processes: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    launch(HERE / "accelerate_worker.py", processes, str(out), home=tmp_path)
    s = schedule()
    real = UPDATES - len(POISONED)
    expected = [s(k) for k in range(real)]
    for rank, results in enumerate(ranks(out, processes)):
        assert [{k: r[k] for k in cfg} for r, cfg in zip(results, GRID, strict=True)] == GRID
        for r in results:
            where = f"rank {rank}, {processes} processes, {r}"
            assert r["num_processes"] == processes
            # the injected inf gradients went through accelerate's own skip detection
            assert r["skipped"] == [u in POISONED for u in range(len(r["skipped"]))], where
            if r["count"] != "manual" and r["prepare_scheduler"]:
                assert r["error"] is not None and "\n" not in r["error"], where
                assert "accelerate" in r["error"] and "count='manual'" in r["error"], where
                continue
            assert r["error"] is None and len(r["skipped"]) == UPDATES, where
            # max |dLR| = 0: the LR of the k-th real update is schedule(k), bit for bit
            assert r["used"] == expected, where
            assert r["t"] == real and r["last_lr"] == s(real), where
            assert not [w for w in r["warnings"] if "cosanneal" in w], where


def test_example_accelerate_loop_runs_exactly_on_two_processes(tmp_path: Path) -> None:
    script = ROOT / "examples" / "accelerate_loop.py"
    assert len(script.read_text().splitlines()) < 60
    out = launch(script, 2, "--updates", "12", "--accumulation", "2", home=tmp_path)
    # the two ranks write to one pipe, so a line can run into the next rank's ("= 0.0rank 1/2: ..."):
    # "0.0" must end the number, not the line
    lines = re.findall(
        r"rank (\d)/2: 12 updates, t = 12, last loss [\d.]+, max \|dLR\| = 0\.0(?![\d.e])", out
    )
    assert sorted(lines) == ["0", "1"], out[-2000:]
