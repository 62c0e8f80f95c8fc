"""The exactness matrix: {own loop, accelerate, Lightning, HF Trainer} x {1, 2 processes} x {accumulation 1, 4}
x {AMP overflow off, on}, with a real SIGKILL and a resume in the hardest sub-case of every cell.

Each cell launches ``matrix_worker.py`` (under ``torch.distributed.run`` with gloo for 2 processes)
until every sub-case is done: the first launch runs the sub-cases and is killed in the last one, the
next resumes it. Checked, on every rank and for every sub-case:

* at every update that really ran, the LR the optimizer used (an optimizer step pre-hook, which the
  framework's AMP skip never reaches) equals ``schedule(k)``, ``k`` the number of real updates before
  it, derived from the attempt index and the poisoned attempts only: max |dLR| = 0, bit for bit;
* no poisoned attempt updated, every other attempt did, each exactly once except the ones redone
  after the kill (whose LRs equal the first time's);
* the run store (rank 0) holds exactly one ``lr`` row per real update, indices ``0 .. n-1`` with no
  hole and no duplicate, each with ``lr == lr_expected == schedule(k)``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from blobs import free_port
from matrix_worker import ATTEMPTS, KILLED, POISONED, SUBCASES, schedule

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CELLS = {"own": ["own", "accelerate"], "lightning": ["lightning"], "hf": ["hf"]}


def launch(frameworks: list[str], processes: int, out: Path) -> subprocess.CompletedProcess[str]:
    script = [str(HERE / "matrix_worker.py"), str(out), ",".join(frameworks)]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--monitor-interval", "0.2", *script,
        ]  # fmt: skip
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), "HF_HOME": str(out / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
    }  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=out)


def run_cell(frameworks: list[str], processes: int, out: Path) -> int:
    """Launch until every sub-case is done; return the number of launches that were killed."""
    for kills in range(len(frameworks) + 1):
        proc = launch(frameworks, processes, out)
        if proc.returncode == 0:
            return kills
        killed = sorted(out.glob("*/killed-rank*"))
        assert len(killed) == processes * (kills + 1), proc.stdout[-2000:] + proc.stderr[-6000:]
    raise AssertionError(f"{frameworks}: not done after {len(frameworks) + 1} launches")


def real_index(attempt: int) -> int:
    return attempt - sum(1 for p in POISONED if p < attempt)


def check_subcase(run_dir: Path, processes: int, amp: bool, killed: bool) -> dict[str, object]:
    s = schedule()
    poisoned = set(POISONED) if amp else set()
    real = [a for a in range(ATTEMPTS) if a not in poisoned]
    worst = 0.0
    for r in range(processes):
        assert (run_dir / f"done-rank{r}").exists()
        lines = [json.loads(x) for x in (run_dir / f"truth-rank{r}.jsonl").read_text().splitlines()]
        seen: dict[int, float] = {}
        for entry in lines:
            attempt, lr = entry["attempt"], entry["lr"]
            assert attempt not in poisoned, f"{run_dir.name} rank {r}: poisoned attempt {attempt} updated"
            want = s(real_index(attempt) if amp else attempt)
            worst = max(worst, abs(lr - want))
            assert lr == want, f"{run_dir.name} rank {r}: attempt {attempt} used {lr!r}, closed form {want!r}"
            assert seen.setdefault(attempt, lr) == lr
        assert sorted(seen) == real, f"{run_dir.name} rank {r}: updated attempts {sorted(seen)}"
        if not killed:
            assert len(lines) == len(real), f"{run_dir.name} rank {r}: an update ran twice without a kill"
        else:
            assert len(lines) > len(real), f"{run_dir.name} rank {r}: nothing was redone after the kill"
    with sqlite3.connect(run_dir / "run.db") as db:
        rows = {
            name: db.execute(
                "SELECT step, value FROM scalars WHERE name = ? AND grp = 0 ORDER BY step, rowid", (name,)
            ).fetchall()
            for name in ("lr", "lr_expected")
        }
    n = len(real)
    for name, found in rows.items():
        steps = [step for step, _ in found]
        assert steps == list(range(n)), f"{run_dir.name}: {name} rows at {steps} (hole or duplicate)"
        assert [v for _, v in found] == [s(k) for k in range(n)], f"{run_dir.name}: {name} != closed form"
    return {"updates": n, "max_dlr": worst}


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS))
def test_every_real_update_uses_the_closed_form_and_a_killed_run_resumes_exactly(
    cell: str, processes: int, tmp_path: Path
) -> None:
    if cell == "lightning":
        pytest.importorskip("pytorch_lightning")
    if cell in ("hf", "own"):
        pytest.importorskip("accelerate")
    frameworks = CELLS[cell]
    kills = run_cell(frameworks, processes, tmp_path)
    assert kills == len(frameworks)
    for framework in frameworks:
        for acc, amp in SUBCASES:
            run_dir = tmp_path / f"{framework}-acc{acc}-amp{int(amp)}"
            result = check_subcase(run_dir, processes, amp, (acc, amp) == KILLED)
            assert result["max_dlr"] == 0.0
