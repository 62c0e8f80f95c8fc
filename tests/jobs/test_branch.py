"""``cosanneal branch`` on real training: cooldowns from a WSD run's checkpoints, exactly.

The parent is the blobs job on a warmup-stable-decay schedule (10 warmup, 130 stable, 20 decay, 160
updates, a checkpoint every 10 kept). Branches at 40 and 80 with ``--cooldown 0.2`` train 10 and 20
updates of linear cooldown: each branch's LR trace is the parent's up to the branch step and the
cooldown's closed form after it, bit for bit; ``verify`` passes, the branch names its parent, a
second run of the command reuses it, an interrupted one resumes, bad input writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from blobs import blobs_config, events, last_weights, lr_trace
from blobs import run_cli as cli

from cosanneal import from_dict, runs
from cosanneal.analysis.branches import BRANCH_FILE, find_branches, read_branch
from cosanneal.jobs import trainer as trainer_module
from cosanneal.jobs.branch import branch, cooldown_steps
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.replan import REQUEST, run_plan
from cosanneal.jobs.trainer import Trainer
from cosanneal.schedules.replan import replan

WSD = {
    "kind": "wsd", "peak_lr": 0.2, "warmup_steps": 10, "stable_steps": 130, "decay_steps": 20,
    "min_lr_ratio": 0.01,
}  # fmt: skip
SCHEDULE = from_dict(WSD)


def cooled(at: int, length: int, shape: str = "linear") -> Any:
    """The closed form a branch at ``at`` follows: the parent's schedule, then the cooldown."""
    return replan(SCHEDULE, at=at, total=at + length, mode="cooldown", cooldown_steps=length, shape=shape)


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("branch") / "wsd"
    cfg = config_from_dict(blobs_config(schedule=WSD, checkpoint__keep_last=20))
    assert Trainer(cfg, run_dir, progress=False, log=lambda _: None).run().status == "finished"
    return run_dir


@pytest.fixture(scope="module")
def branched(parent: Path) -> Path:
    code, out, err = cli("branch", parent, "--at", "40,80", "--cooldown", "0.2")
    assert code == 0, out + err
    assert out.count(": trained") == 2
    return parent


def test_the_cooldown_length_is_updates_or_the_branchs_own_fraction() -> None:
    assert [cooldown_steps(d, 0.2) for d in (40, 80, 120)] == [10, 20, 30]  # d = 0.8 T
    assert cooldown_steps(40, "25") == 25 and cooldown_steps(30, "0.5") == 30


def test_each_branch_is_the_parent_then_the_cooldown_closed_form_bit_for_bit(branched: Path) -> None:
    _, parent_lr = lr_trace(branched)
    for at, length in ((40, 10), (80, 20)):
        run_dir = branched.parent / f"wsd-branch-{at}"
        steps, lr = lr_trace(run_dir)
        assert steps.tolist() == list(range(at + length))
        np.testing.assert_array_equal(lr[:at], parent_lr[:at])
        np.testing.assert_array_equal(lr, cooled(at, length)(steps))
        floor = float(SCHEDULE(160))
        t = steps[at:] - at
        np.testing.assert_allclose(lr[at:], floor + (0.2 - floor) * (1 - t / length), rtol=1e-12)
        (event,) = events(run_dir, "schedule_replanned")  # continuous at the switch
        assert event["step"] == at and event["jump"] == 0.0 and event["lr_before"] == parent_lr[at]
        with runs.open(run_dir) as run:
            np.testing.assert_array_equal(run.scalar("lr_expected", 0)[1], lr)


def test_a_branch_verifies_names_its_parent_and_is_a_replanned_run(branched: Path) -> None:
    with runs.open(branched) as run:
        fingerprint = run.params["schedule_fingerprint"]
    for at, length in ((40, 10), (80, 20)):
        run_dir = branched.parent / f"wsd-branch-{at}"
        code, out, err = cli("verify", run_dir)
        assert code == 0 and "MATCH" in out, out + err
        link = json.loads((run_dir / BRANCH_FILE).read_text())
        assert link["parent"] == "../wsd" and link["parent_fingerprint"] == fingerprint
        assert (link["at"], link["cooldown"], link["total"], link["shape"]) == (
            at,
            length,
            at + length,
            "linear",
        )
        with runs.open(run_dir) as run:
            params = run.params
        assert (
            params["branch"] == link
            and from_dict(params["schedule"]) == SCHEDULE
            and params["total_steps"] == 160
        )
        assert params["steps_per_epoch"] == 20 and params["config"]["schedule"]["kind"] == "wsd"
        plan = run_plan(run_dir)
        assert plan.finished and plan.total == at + length and plan.schedule == cooled(at, length)
        assert not (run_dir / REQUEST).exists()
    assert [(b.at, b.cooldown, b.fraction) for b in find_branches(branched)] == [(40, 10, 0.2), (80, 20, 0.2)]


def test_a_second_run_reuses_finished_branches(branched: Path) -> None:
    db = branched.parent / "wsd-branch-40" / "run.db"
    before = db.stat().st_mtime_ns
    code, out, err = cli("branch", branched, "--at", "40,80", "--cooldown", "0.2")
    assert code == 0 and out.count("reused") == 2, out + err
    assert db.stat().st_mtime_ns == before


def own_copy(parent: Path, tmp_path: Path) -> Path:
    """A copy of the parent, so the branches a test adds are not the module parent's."""
    shutil.copytree(parent, tmp_path / "wsd")
    return tmp_path / "wsd"


def test_an_interrupted_branch_resumes_to_the_same_weights(
    parent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = own_copy(parent, tmp_path)
    whole = branch(parent, at=120, cooldown=30, shape="cosine", out=tmp_path / "whole", log=lambda _: None)
    assert [r.status for r in whole] == ["trained"]

    class Preempted(Trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            def stop_at_140(updates: int, _m: dict[str, float], _e: bool) -> bool:
                if updates == 140:
                    os.kill(os.getpid(), signal.SIGTERM)  # checkpoints at the next boundary and stops
                return False

            super().__init__(*args, **{**kwargs, "on_eval": stop_at_140})

    monkeypatch.setattr(trainer_module, "Trainer", Preempted)
    (first,) = branch(parent, at=120, cooldown=30, shape="cosine", out=tmp_path / "cut", log=lambda _: None)
    assert first.status == "preempted" and first.exit_code == 143
    monkeypatch.setattr(trainer_module, "Trainer", Trainer)
    (again,) = branch(parent, at=120, cooldown=30, shape="cosine", out=tmp_path / "cut", log=lambda _: None)
    assert again.status == "trained" and again.train is not None and again.train.steps == 150
    ref, got = whole[0].run_dir, again.run_dir
    steps, lr = lr_trace(got)
    np.testing.assert_array_equal(lr, cooled(120, 30, "cosine")(steps))
    np.testing.assert_array_equal(lr, lr_trace(ref)[1])
    a, b = last_weights(ref), last_weights(got)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["step"] for e in events(got, "schedule_replanned")] == [120]
    assert [b.run_dir.parent.name for b in find_branches(parent)] == ["cut", "whole"]  # from branches.json


def test_bad_input_is_one_line_exit_2_and_nothing_written(branched: Path, tmp_path: Path) -> None:
    root = branched.parent
    listing = sorted(p.name for p in root.iterdir())
    registry = (branched / "branches.json").read_text()
    for args, message in [
        (("--at", "45", "--cooldown", "0.2"), "--at: update 45 has no checkpoint"),
        (("--at", "4e1", "--cooldown", "0.2"), "--at: '4e1' is not an update count"),
        (("--at", "100", "--cooldown", "soon"), "--cooldown: 'soon' is not a length"),
        (("--at", "100", "--cooldown", "2.5"), "--cooldown"),
        (("--at", "100", "--cooldown", "0.001"), "pass a larger fraction"),
        (("--at", "100", "--cooldown", "20", "--floor", "1"), "pass --floor 0.2 or less"),
        (("--at", "100", "--cooldown", "20", "--shape", "steep"), "--shape must be one of"),
        (("--at", "40", "--cooldown", "30"), "--out: "),  # another cooldown where a branch is
    ]:
        code, _out, err = cli("branch", branched, *args)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert sorted(p.name for p in root.iterdir()) == listing
    code, _, err = cli("branch", branched, "--at", "45", "--cooldown", "0.2")
    assert "pick one of 10, 20, 30, 40, 50, 60, ..., 140, 150, 160" in err
    code, _, err = cli("branch", tmp_path / "nowhere", "--at", "40", "--cooldown", "0.2")
    assert code == 2 and "RUN:" in err and "not a run directory" in err
    assert not list(tmp_path.iterdir())
    assert (branched / "branches.json").read_text() == registry


def test_the_dry_run_plans_and_writes_nothing(branched: Path, tmp_path: Path) -> None:
    code, out, err = cli(
        "branch", branched, "--at", "100,120", "--cooldown", "0.25", "--out", tmp_path / "b", "--dry-run"
    )
    assert code == 0, err
    assert "branch at 100: 33-update linear cooldown" in out and "dry run: nothing written" in out
    assert not (tmp_path / "b").exists()


def test_plot_overlays_parent_and_branches(branched: Path, tmp_path: Path) -> None:
    from cosanneal.analysis.branches import branches_figure

    fig = branches_figure(branched)
    ax_lr, _ax_loss = fig.axes
    labels = [line.get_label() for line in ax_lr.get_lines()]
    assert labels[:3] == ["wsd (parent)", "branch at 40: 10 linear", "branch at 80: 20 linear"]
    png = tmp_path / "b.png"
    code, _out, err = cli("branch", branched, "--at", "40", "--cooldown", "0.2", "--plot", png)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG", err
    assert read_branch(branched) is None


@pytest.mark.slow
def test_workers_train_branches_in_parallel_processes(parent: Path, tmp_path: Path) -> None:
    parent = own_copy(parent, tmp_path)
    results = branch(parent, at=[60, 100], cooldown=0.2, out=tmp_path / "b", workers=2, log=lambda _: None)
    assert [r.status for r in results] == ["trained", "trained"]
    for r, (at, length) in zip(results, ((60, 15), (100, 25)), strict=True):
        steps, lr = lr_trace(r.run_dir)
        np.testing.assert_array_equal(lr, cooled(at, length)(steps))


def test_plan_reads_the_branches_and_a_cosine_run_of_a_branchs_length(branched: Path, tmp_path: Path) -> None:
    cosine = tmp_path / "cos-100"
    cfg = blobs_config(
        epochs=5, schedule={"kind": "cosine", "peak_lr": 0.2, "warmup_steps": 10, "cycle_steps": 90}
    )
    assert Trainer(config_from_dict(cfg), cosine, progress=False, log=lambda _: None).run().steps == 100
    code, out, err = cli("plan", "--branches", branched, "--cosine", cosine)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("100 "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:5] == ["100", "80", "20 (0.2)", "20", "100"] and cells[6] != "-"
    assert "stable run + 2 branches: 110 updates" in out and "2 separate cosine runs: 150 updates" in out
    code, _, err = cli("plan", "--branches", branched, "--cosine", branched)
    assert code == 2 and "--cosine: a run of 160 updates matches no branch" in err


def test_the_report_overlays_the_parent_and_its_branches(branched: Path, tmp_path: Path) -> None:
    import re

    page = tmp_path / "report.html"
    code, out, err = cli("report", branched, "-o", page)
    assert code == 0, err
    names = [line.split(":")[0] for line in out.splitlines() if ": finished" in line]
    assert names == ["wsd", "wsd-branch-40", "wsd-branch-80"]
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page.read_text(), re.S
    )
    assert found is not None
    doc = json.loads(found.group(1))
    lr = [s for c in doc["charts"] for p in c["panels"] if p["id"].startswith("lr-") for s in p["series"]]
    by_run = {s["run"]: s for s in lr if s["label"].endswith(" lr")}
    assert sorted(by_run) == [0, 1, 2]
    assert by_run[2]["x"][-1] == 99 and by_run[2]["y"][-1] == cooled(80, 20)(99)  # the branch's own cooldown
    replans = [
        v["x"]
        for c in doc["charts"]
        for p in c["panels"]
        for v in p.get("vlines", [])
        if "replan" in v["label"]
    ]
    assert sorted(set(replans)) == [40, 80]
    code, out, _ = cli("report", branched, "-o", tmp_path / "alone.html", "--no-branches")
    assert code == 0 and out.count(": finished") == 1
