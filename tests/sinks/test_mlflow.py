"""MLflow sink: a real MLflow tracking store (SQLite, and the local directory store), read back with MlflowClient."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blobs import BLOBS
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow)")
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import cosanneal
from cosanneal import Cosine, runs
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.sinks.mlflow import (
    MAX_PARAM_VALUE,
    RUN_ID_FILE,
    MLflowSink,
    MLflowSinkWarning,
    flatten_params,
    metric_key,
)

SCHED = Cosine(0.1, warmup_steps=2, cycle_steps=6, max_cycles=None)  # restarts at 8, 14, 20
STEPS = 24
LONG = "x" * (MAX_PARAM_VALUE + 50)
PARAMS = {
    "config": {"name": "unit", "optimizer": {"name": "sgd", "betas": [0.9, 0.99]}, "amp": None, "note": LONG},
    "schedule": SCHED.to_dict(),
}


class Store:
    """One tracking store shared by a module's tests (creating an MLflow database takes seconds)."""

    def __init__(self, uri: str, root: Path) -> None:
        self.uri, self.root = uri, root
        self.client = MlflowClient(tracking_uri=uri)
        self._n = 0

    def sink(self, run_dir: Path, **kwargs: Any) -> MLflowSink:
        self._n += 1
        kwargs.setdefault("experiment", f"exp{self._n}")
        return MLflowSink(self.uri, run_dir=run_dir, artifact_location=str(self.root / "artifacts"), **kwargs)

    def history(self, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """A metric's (steps, values); a step logged twice (the trainer's final evaluation) counts once."""
        metrics = sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        last = {m.step: m.value for m in metrics}
        return np.array(list(last)), np.array(list(last.values()))

    def raw_steps(self, run_id: str, key: str) -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(run_id, key))

    def artifacts(self, run_id: str, path: str | None = None) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for info in self.client.list_artifacts(run_id, path):
            if info.is_dir:
                out.update(self.artifacts(run_id, info.path))
            else:
                out[info.path] = Path(self.client.download_artifacts(run_id, info.path, str(self.root)))
        return out


@pytest.fixture(scope="module", params=["sqlite", "file"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "sqlite":
            uri = f"sqlite:///{root}/mlflow.db"
        else:
            mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this opt-in
            uri = f"file:{root}/mlruns"
        try:
            s = Store(uri, root)
            s.client.search_experiments()
        except MlflowException as exc:
            pytest.skip(f"this MLflow no longer supports the {request.param} tracking store: {exc}")
        yield s


def _train(store: RunStore, tel: Telemetry, steps: range, *, nan_at: int | None = None) -> None:
    for step in steps:
        lr = SCHED(step)
        loss = float("nan") if step == nan_at else 3.0 - step / 10
        tel.on_update(step, [lr, lr / 10], loss=loss, grad_norm=1.0 + step, samples=8, step_time=0.01)
        if step % 8 == 7:
            tel.on_eval(step + 1, {"loss": 2.0 - step / 20, "acc": step / 30})


@pytest.fixture(scope="module")
def logged(store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MLflowSink]:
    """A 24-step run with two param groups, restarts, a NaN loss, an artifact and a best checkpoint."""
    run_dir = tmp_path_factory.mktemp("run") / "unit-run"
    best = run_dir / "checkpoints" / "best" / "step-000000015"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"weights")
    (run_dir / "report.html").write_text("<html>report</html>")
    (run_dir / "lr_loss.png").write_bytes(b"stale plot of an earlier session")
    sink = store.sink(
        run_dir, params=PARAMS, tags={"schedule_fingerprint": SCHED.fingerprint()}, log_best_checkpoint=True
    )
    with RunStore(run_dir, flush_rows=16, flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[sink])
        _train(rs, tel, range(STEPS), nan_at=5)
        tel.event(STEPS, "run_finished", steps=STEPS, seconds=1.0)
    return run_dir, sink


def _store_series(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    run = runs.open(run_dir)
    try:
        out = {}
        for name in run.scalar_names():
            for group in run.groups(name) or [None]:
                out[metric_key(name, group)] = run.scalar(name, group)
        return out
    finally:
        run.close()


def test_params_are_flattened_with_dotted_keys_and_cut_to_mlflows_limit(
    store: Store, logged: tuple[Path, MLflowSink]
) -> None:
    _, sink = logged
    assert sink.run_id is not None
    params = store.client.get_run(sink.run_id).data.params
    assert params["config.name"] == "unit"
    assert params["config.optimizer.name"] == "sgd"
    assert params["config.optimizer.betas"] == "[0.9, 0.99]"
    assert params["config.amp"] == "null"
    assert params["schedule.kind"] == "cosine"
    assert float(params["schedule.peak_lr"]) == 0.1
    assert float(params["schedule.cycle_steps"]) == 6
    assert len(params["config.note"]) == MAX_PARAM_VALUE and params["config.note"].endswith("...")
    assert not any(isinstance(v, dict) for v in params.values())


def test_tags_hold_the_fingerprint_and_versions(store: Store, logged: tuple[Path, MLflowSink]) -> None:
    run_dir, sink = logged
    assert sink.run_id is not None
    tags = store.client.get_run(sink.run_id).data.tags
    assert tags["schedule_fingerprint"] == SCHED.fingerprint()
    assert tags["cosanneal.version"] == cosanneal.__version__
    assert tags["python.version"] == platform.python_version()
    assert tags["torch.version"] == importlib.metadata.version("torch")
    assert tags["mlflow.runName"] == "unit-run"
    assert tags["cosanneal.run_dir"] == str(run_dir.resolve())


def test_metric_histories_equal_the_run_store(store: Store, logged: tuple[Path, MLflowSink]) -> None:
    run_dir, sink = logged
    assert sink.run_id is not None
    expected = _store_series(run_dir)
    assert {
        "lr/group_0",
        "lr/group_1",
        "lr_expected/group_0",
        "loss",
        "val_loss",
        "val_acc",
        "grad_norm",
    } <= set(expected)
    for key, (steps, values) in expected.items():
        got_steps, got_values = store.history(sink.run_id, key)
        np.testing.assert_array_equal(got_steps, steps, err_msg=key)
        np.testing.assert_array_equal(got_values, values, err_msg=key)  # the NaN loss at step 5 included
    steps, lr = store.history(sink.run_id, "lr/group_1")
    np.testing.assert_allclose(lr, [SCHED(int(s)) / 10 for s in steps], rtol=0, atol=0)
    assert np.isnan(store.history(sink.run_id, "loss")[1][5])


def test_events_are_running_counts_and_a_jsonl_artifact(
    store: Store, logged: tuple[Path, MLflowSink]
) -> None:
    run_dir, sink = logged
    assert sink.run_id is not None
    steps, counts = store.history(sink.run_id, "events/restart")
    assert steps.tolist() == [8, 14, 20] and counts.tolist() == [1.0, 2.0, 3.0]
    files = store.artifacts(sink.run_id)
    lines = files["events.jsonl"].read_text().splitlines()
    run = runs.open(run_dir)
    try:
        assert [json.loads(line) for line in lines] == json.loads(json.dumps(run.events()))
    finally:
        run.close()
    assert [json.loads(line)["kind"] for line in lines] == ["restart"] * 3 + ["run_finished"]


def test_artifacts_and_finished_status(store: Store, logged: tuple[Path, MLflowSink]) -> None:
    run_dir, sink = logged
    assert sink.run_id is not None
    files = store.artifacts(sink.run_id)
    assert files["report.html"].read_text() == "<html>report</html>"
    assert files["lr_loss.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # rendered now, not the stale file
    assert files["checkpoints/best/step-000000015/model.safetensors"].read_bytes() == b"weights"
    run = store.client.get_run(sink.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert (run_dir / RUN_ID_FILE).read_text().strip() == sink.run_id


@pytest.mark.parametrize(("kind", "status"), [("run_failed", "FAILED"), ("preempted", "KILLED")])
def test_failed_and_preempted_runs_end_with_that_status(
    store: Store, tmp_path: Path, kind: str, status: str
) -> None:
    sink = store.sink(tmp_path / "run")
    with RunStore(tmp_path / "run", flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[sink])
        _train(rs, tel, range(4))
        tel.event(4, kind, error="boom", signal="SIGTERM", exit_code=143)
    assert sink.run_id is not None
    run = store.client.get_run(sink.run_id)
    assert run.info.status == status
    assert "checkpoints" not in {a.path for a in store.client.list_artifacts(sink.run_id)}  # not asked for


def test_a_resumed_run_reopens_the_same_mlflow_run(store: Store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = store.sink(run_dir, experiment="resume", params=PARAMS)
    with RunStore(run_dir, flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[first])
        _train(rs, tel, range(10))
        tel.event(10, "preempted", signal="SIGTERM", exit_code=143)
    assert first.run_id is not None
    assert store.client.get_run(first.run_id).info.status == "KILLED"

    second = store.sink(run_dir, experiment="resume", params={**PARAMS, "extra": 1})
    assert second.resumed and second.run_id == first.run_id
    assert store.client.get_run(first.run_id).info.status == "RUNNING"
    with RunStore(run_dir, flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[second])
        tel.event(10, "resumed", from_step=10, checkpoint="step-000000009")
        _train(rs, tel, range(10, STEPS))
        tel.event(STEPS, "preempted", signal="SIGTERM", exit_code=143)
        tel.event(STEPS, "run_finished", steps=STEPS, seconds=1.0)

    runs_in_exp = store.client.search_runs([store.client.get_experiment_by_name("resume").experiment_id])
    assert [r.info.run_id for r in runs_in_exp] == [first.run_id]
    run = runs_in_exp[0]
    assert run.info.status == "KILLED"  # the second session was preempted too
    assert run.data.params["extra"] == "1"  # a key the first session did not have
    steps, lr = store.history(first.run_id, "lr/group_0")
    assert steps.tolist() == list(range(STEPS))
    np.testing.assert_array_equal(lr, [SCHED(s) for s in range(STEPS)])
    steps, counts = store.history(first.run_id, "events/preempted")
    assert steps.tolist() == [10, STEPS] and counts.tolist() == [1.0, 2.0]  # counted across sessions
    kinds = [
        json.loads(x)["kind"] for x in store.artifacts(first.run_id)["events.jsonl"].read_text().splitlines()
    ]
    assert kinds.count("preempted") == 2 and kinds.count("resumed") == 1


def test_a_run_id_unknown_to_the_tracking_store_starts_a_new_run(store: Store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_ID_FILE).write_text("0123456789abcdef0123456789abcdef\n")
    sink = store.sink(run_dir)
    sink.close()
    assert not sink.resumed and sink.run_id != "0123456789abcdef0123456789abcdef"
    assert (run_dir / RUN_ID_FILE).read_text().strip() == sink.run_id


def test_an_unreachable_tracking_store_warns_and_training_goes_on(tmp_path: Path) -> None:
    with pytest.warns(MLflowSinkWarning, match="could not open an MLflow run"):
        sink = MLflowSink("nosuchscheme://nowhere", run_dir=tmp_path)
    with RunStore(tmp_path, flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[sink])
        _train(rs, tel, range(5))
    assert _store_series(tmp_path)["lr/group_0"][0].tolist() == [0, 1, 2, 3, 4]
    assert not (tmp_path / RUN_ID_FILE).exists()


def test_mlflow_failing_mid_run_warns_then_stops_calling_it(store: Store, tmp_path: Path) -> None:
    sink = store.sink(tmp_path / "run")
    assert sink.run_id is not None
    with RunStore(tmp_path / "run", flush_rows=1, flush_seconds=0) as rs:
        tel = Telemetry(rs, schedule=SCHED, sinks=[sink])
        _train(rs, tel, range(2))
        rs.flush()
        store.client.delete_run(sink.run_id)  # logging to a deleted run is refused by MLflow
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(2, 8):
                _train(rs, tel, range(step, step + 1))
                rs.flush()
    messages = [str(w.message) for w in caught if issubclass(w.category, MLflowSinkWarning)]
    assert len(messages) == 4 and "could not log metrics" in messages[0]
    assert "MLflow logging is off" in messages[-1]
    assert _store_series(tmp_path / "run")["lr/group_0"][0].tolist() == list(range(8))  # nothing lost


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
_key = st.text("abcdefgh_", min_size=1, max_size=4)
_tree = st.recursive(_leaf, lambda inner: st.dictionaries(_key, inner, min_size=1, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_key, _tree, max_size=4))
def test_flatten_params_keeps_every_leaf_once_under_its_path(tree: dict[str, Any]) -> None:
    flat = flatten_params(tree)

    def leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict) and (node or not path):
            for k, v in node.items():
                yield from leaves(v, f"{path}.{k}" if path else k)
        else:
            yield path, node

    expected = dict(leaves(tree, ""))
    assert flat.keys() == expected.keys()
    for key, value in expected.items():
        assert flat[key] == value if isinstance(value, str) else json.loads(flat[key]) == value


# ---- end to end: `cosanneal train` with telemetry.mlflow_tracking_uri -------------------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mlflow-train")
    return Store(f"sqlite:///{root}/mlflow.db", root)


def _train_cmd(tmp_path: Path, tracking: Store, experiment: str, *sets: str) -> list[str]:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(BLOBS))
    args = [sys.executable, "-m", "cosanneal", "train", str(cfg), "--run-dir", str(tmp_path / "run")]
    for s in (
        f"telemetry.mlflow_tracking_uri={tracking.uri}",
        f"telemetry.mlflow_experiment={experiment}",
        *sets,
    ):
        args += ["--set", s]
    return [*args, "--no-progress"]


def _only_run(tracking: Store, experiment: str) -> Any:
    exp = tracking.client.get_experiment_by_name(experiment)
    found = tracking.client.search_runs([exp.experiment_id])
    assert len(found) == 1
    return found[0]


def test_cosanneal_train_logs_to_mlflow(tracking: Store, tmp_path: Path) -> None:
    proc = subprocess.run(
        _train_cmd(tmp_path, tracking, "train"), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    run = _only_run(tracking, "train")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["config.optimizer.name"] == "sgd"
    assert float(run.data.params["schedule.peak_lr"]) == 0.2
    assert run.data.tags["schedule_fingerprint"] == cosanneal.from_dict(BLOBS["schedule"]).fingerprint()
    expected = _store_series(tmp_path / "run")
    for key in ("lr/group_0", "lr_expected/group_0", "loss", "val_loss", "val_acc", "grad_norm", "cycle"):
        steps, values = tracking.history(run.info.run_id, key)
        np.testing.assert_array_equal(steps, expected[key][0], err_msg=key)
        np.testing.assert_array_equal(values, expected[key][1], err_msg=key)
    assert len(expected["lr/group_0"][0]) == 160
    assert tracking.history(run.info.run_id, "events/restart")[0].tolist() == [40, 100]
    assert {"events.jsonl", "lr_loss.png"} <= set(tracking.artifacts(run.info.run_id))


def test_preempted_and_resumed_job_is_one_mlflow_run(tracking: Store, tmp_path: Path) -> None:
    cmd = _train_cmd(tmp_path, tracking, "preempt", "debug.sleep_per_step=0.02")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not _reached(run_dir, 50):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    first = _only_run(tracking, "preempt")
    assert first.info.status == "KILLED"

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    run = _only_run(tracking, "preempt")
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert tracking.raw_steps(run.info.run_id, "lr/group_0") == list(range(160))  # each update once, no gap
    _, lr = tracking.history(run.info.run_id, "lr/group_0")
    expected = cosanneal.from_dict(BLOBS["schedule"]).bind(total_steps=160, steps_per_epoch=20)
    np.testing.assert_allclose(lr, expected(np.arange(160)), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(lr, _store_series(run_dir)["lr/group_0"][1])
    assert tracking.history(run.info.run_id, "events/preempted")[1].tolist() == [1.0]
    assert tracking.history(run.info.run_id, "events/resumed")[1].tolist() == [1.0]


def _reached(run_dir: Path, step: int) -> bool:
    if not (run_dir / "run.db").exists():
        return False
    try:
        steps, _ = _store_series(run_dir)["lr/group_0"]
    except Exception:  # the database or the series may not exist yet
        return False
    return bool(len(steps)) and int(steps.max()) >= step
