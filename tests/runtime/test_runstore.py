"""Run store and reader: round trips, buffering, crash safety with real processes and SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import runs
from cosanneal.runtime.runstore import DB_NAME, SCHEMA_VERSION, EventRow, RunStore, ScalarRow, run_params


def child(code: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    """Start a Python child process running ``code`` (dedented) with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def count_rows(d: Path) -> int:
    path = d / DB_NAME
    if not path.exists():
        return 0
    with runs.open(d) as run:
        return int(run.summary()["scalar_rows"])


class Recorder:
    """A sink that remembers what it got and on which thread."""

    def __init__(self) -> None:
        self.scalars: list[ScalarRow] = []
        self.events: list[EventRow] = []
        self.threads: set[str] = set()
        self.flushes = 0
        self.closed = False

    def write(self, scalars: Any, events: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.scalars.extend(scalars)
        self.events.extend(events)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class ThreadSpy:
    """A tensor stand-in whose ``.item()`` records the thread it runs on (a host-device sync point)."""

    def __init__(self, value: float, seen: list[str]) -> None:
        self.value, self.seen = value, seen

    def item(self) -> float:
        self.seen.append(threading.current_thread().name)
        return self.value


# ---- round trip -------------------------------------------------------------------------------
def test_round_trip_params_scalars_events(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from cosanneal import Cosine

    sched = Cosine(0.1, cycle_steps=10)
    with RunStore(tmp_path) as store:
        store.log_params(run_params({"epochs": 2, "opt": {"name": "sgd"}}, schedule=sched, seed=5))
        for step in (2, 0, 1):  # logged out of order: the reader sorts by step
            store.log_scalars(step, {"lr": 0.1 * (step + 1)}, group=0)
            store.log_scalars(step, {"lr": 0.01 * (step + 1)}, group=1)
        w = torch.tensor(2.5, requires_grad=True)
        store.log_scalar(0, "loss", w * 2)  # a tensor that needs grad
        store.log_scalar(1, "loss", np.float32(0.25))
        store.log_scalar(2, "loss", float("nan"))
        store.log_scalar(3, "loss", math.inf)
        store.log_event(4, "checkpoint_saved", path=tmp_path / "ck", seconds=torch.tensor(0.5), n=np.int64(3))
    run = runs.open(tmp_path / DB_NAME)
    params = run.params
    assert params["config"] == {"epochs": 2, "opt": {"name": "sgd"}}
    assert params["seed"] == 5
    assert params["schedule"] == sched.to_dict()
    assert params["schedule_fingerprint"] == sched.fingerprint()
    assert params["env"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert params["env"]["torch"] == torch.__version__
    assert run.scalar_names() == ["loss", "lr"]
    assert run.groups("lr") == [0, 1] and run.groups("loss") == []
    steps, values = run.scalar("lr", group=1)
    assert steps.dtype == np.int64 and values.dtype == np.float64
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(values, [0.01, 0.02, 0.03], rtol=0, atol=1e-15)
    _, loss = run.scalar("loss")
    assert loss[:2].tolist() == [5.0, 0.25] and math.isnan(loss[2]) and loss[3] == math.inf
    (event,) = run.events()
    assert event == {
        "step": 4,
        "kind": "checkpoint_saved",
        "wall": event["wall"],
        "path": str(tmp_path / "ck"),
        "seconds": 0.5,
        "n": 3,
    }
    assert run.events("restart") == []
    summary = run.summary()
    assert (summary["first_step"], summary["last_step"]) == (0, 4)
    assert summary["scalar_rows"] == 10 and summary["event_count"] == 1
    assert summary["events_by_kind"] == {"checkpoint_saved": 1}
    assert summary["sessions"] == 1 and summary["wall_seconds"] >= 0
    assert summary["schema_version"] == SCHEMA_VERSION


def test_reader_errors_name_what_exists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run store"):
        runs.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()  # the read-only reader never creates anything
    with RunStore(tmp_path) as store:
        store.log_scalar(0, "lr", 0.1, group=0)
        store.log_scalar(0, "loss", 1.0)
    run = runs.open(tmp_path)
    with pytest.raises(KeyError, match=r"no scalar 'acc'.*logged: loss, lr"):
        run.scalar("acc")
    with pytest.raises(KeyError, match=r"per param group; pass group= one of \[0\]"):
        run.scalar("lr")
    with pytest.raises(KeyError, match="has no group 3"):
        run.scalar("lr", group=3)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        run._conn.execute("DELETE FROM scalars")
    assert count_rows(tmp_path) == 2


def test_newer_schema_is_refused_by_writer_and_reader(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="schema version 2; this cosanneal writes version 1"):
        RunStore(tmp_path)
    with pytest.raises(ValueError, match="schema version 2; this cosanneal reads up to 1"):
        runs.open(tmp_path)


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_rows must be an int >= 1, got 0"):
        RunStore(tmp_path, flush_rows=0)
    with pytest.raises(ValueError, match="synchronous must be"):
        RunStore(tmp_path, synchronous="OFF")
    with pytest.raises(ValueError, match="run_dir must be a directory path"):
        RunStore(None)


# ---- buffering and threads -------------------------------------------------------------------
def test_values_convert_on_the_writer_thread_not_the_caller(tmp_path: Path) -> None:
    seen: list[str] = []
    store = RunStore(tmp_path, flush_rows=5, flush_seconds=0)
    for step in range(5):
        store.log_scalar(step, "loss", ThreadSpy(step / 2, seen))
    wait_for(lambda: count_rows(tmp_path) == 5)  # flush_rows wakes the writer thread: no flush() call
    assert seen and set(seen) == {store._thread.name}  # type: ignore[union-attr]
    assert runs.open(tmp_path).scalar("loss")[1].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    store.close()


def test_timer_flushes_without_reaching_flush_rows(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0.02)
    store.log_scalar(0, "x", 1.0)
    store.log_event(0, "resumed", from_step=0)
    wait_for(lambda: count_rows(tmp_path) == 1)
    assert runs.open(tmp_path).events()[0]["from_step"] == 0
    store.close()


def test_rows_wait_in_memory_until_a_flush(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0)
    store.log_scalars(0, {"a": 1.0, "b": 2.0})
    assert store.pending == 2 and count_rows(tmp_path) == 0
    store.flush()
    assert store.pending == 0 and count_rows(tmp_path) == 2
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.log_params({"late": 1})


def test_sinks_get_the_same_converted_batches_off_the_caller_thread(tmp_path: Path) -> None:
    sink = Recorder()
    with RunStore(tmp_path, flush_rows=4, flush_seconds=0, sinks=[sink]) as store:
        for step in range(8):
            store.log_scalar(step, "lr", np.float64(step), group=1)
        store.log_event(7, "run_finished", steps=8)
        wait_for(lambda: len(sink.scalars) >= 4)
    assert any(t.startswith("cosanneal-runstore") for t in sink.threads)
    assert [(r.step, r.name, r.group, r.value) for r in sink.scalars] == [
        (s, "lr", 1, float(s)) for s in range(8)
    ]
    assert all(type(r.value) is float for r in sink.scalars)
    assert [(e.step, e.kind, e.payload) for e in sink.events] == [(7, "run_finished", {"steps": 8})]
    assert sink.flushes >= 1 and sink.closed


def test_a_failing_sink_does_not_lose_rows(tmp_path: Path) -> None:
    class Broken(Recorder):
        def write(self, scalars: Any, events: Any) -> None:
            raise OSError("disk on fire")

    store = RunStore(tmp_path, flush_seconds=0, sinks=[Broken()])
    store.log_scalar(0, "x", 1.0)
    with pytest.warns(UserWarning, match="sink Broken failed: disk on fire"):
        store.flush()
    store.close()
    assert count_rows(tmp_path) == 1


def test_flush_reentered_from_the_flushing_thread_returns(tmp_path: Path) -> None:
    class Reenter(Recorder):
        def write(self, scalars: Any, events: Any) -> None:
            super().write(scalars, events)
            store.flush()  # as a signal handler interrupting a flush would: must not deadlock

    store = RunStore(tmp_path, flush_seconds=0, sinks=[Reenter()])
    store.log_scalar(0, "x", 1.0)
    store.flush()
    store.log_scalar(1, "x", 2.0)
    store.close()
    assert runs.open(tmp_path).scalar("x")[0].tolist() == [0, 1]


def test_context_manager_flushes_on_exception(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), RunStore(tmp_path, flush_rows=10**9, flush_seconds=0) as store:
        store.log_scalar(0, "loss", 1.0)
        1 / 0  # noqa: B018
    assert count_rows(tmp_path) == 1


def test_disabled_store_is_a_noop(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "rank1", enabled=False)
    store.log_params({"a": 1})
    store.log_scalar(0, "x", 1.0)
    store.log_scalars(0, {"y": 2.0})
    store.log_event(0, "restart")
    store.add_sink(Recorder())
    store.flush()
    store.close()
    assert store.pending == 0 and not (tmp_path / "rank1").exists()
    assert repr(RunStore.disabled()) == "RunStore(disabled)"


def test_reader_holding_a_snapshot_does_not_block_the_writer(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_seconds=0)
    store.log_scalar(0, "x", 1.0)
    store.flush()
    run = runs.open(tmp_path)
    run._conn.execute("BEGIN")
    assert run._conn.execute("SELECT COUNT(*) FROM scalars").fetchone()[0] == 1  # snapshot taken
    for step in range(1, 100):
        store.log_scalar(step, "x", float(step))
    store.flush()  # commits although a reader holds an open read transaction
    assert run._conn.execute("SELECT COUNT(*) FROM scalars").fetchone()[0] == 1  # still its snapshot
    run._conn.execute("COMMIT")
    assert len(run.scalar("x")[0]) == 100  # a new query sees the new rows
    store.close()


# ---- resumed runs: last write wins -------------------------------------------------------------
@settings(max_examples=25)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.floats(-1e6, 1e6)), min_size=1, max_size=20),
        min_size=1,
        max_size=3,
    )
)
def test_last_write_wins_across_sessions(tmp_path_factory: pytest.TempPathFactory, sessions: Any) -> None:
    d = tmp_path_factory.mktemp("run")
    expected: dict[int, float] = {}
    for rows in sessions:
        with RunStore(d, flush_rows=7, flush_seconds=0) as store:
            for step, value in rows:
                store.log_scalar(step, "loss", value)
                expected[step] = value
    steps, values = runs.open(d).scalar("loss")
    assert steps.tolist() == sorted(expected)
    assert values.tolist() == [expected[s] for s in sorted(expected)]
    assert runs.open(d).summary()["sessions"] == len(sessions)


WRITER = """
    import sys
    from cosanneal.runtime.runstore import RunStore
    d, lo, hi, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    store = RunStore(d, flush_rows=100, flush_seconds=0.01)
    store.log_params({"tag": tag})
    for step in range(lo, hi):
        store.log_scalar(step, "x", tag * 100000 + step)
        if step % 250 == 0:
            store.log_event(step, "checkpoint_saved", at=step)
    # no close(): the atexit hook must flush the rest
"""


def test_two_processes_append_to_the_same_run_one_after_the_other(tmp_path: Path) -> None:
    for lo, hi, tag in ((0, 1000, 1), (600, 1500, 2)):  # the second resumes from step 600
        p = child(WRITER, str(tmp_path), str(lo), str(hi), str(tag))
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    run = runs.open(tmp_path)
    steps, values = run.scalar("x")
    assert steps.tolist() == list(range(1500))
    assert values.tolist() == [100000 + s if s < 600 else 200000 + s for s in range(1500)]
    assert run.params == {"tag": 2.0}
    assert run.summary()["sessions"] == 2
    assert [e["step"] for e in run.events("checkpoint_saved")] == [0, 250, 500, 750, 750, 1000, 1250]


def test_four_processes_write_four_run_stores_at_once(tmp_path: Path) -> None:
    procs = [child(WRITER, str(tmp_path / f"run{i}"), "0", "3000", str(i + 1)) for i in range(4)]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    for i in range(4):
        with runs.open(tmp_path / f"run{i}") as run:
            steps, values = run.scalar("x")
            assert steps.tolist() == list(range(3000))
            assert values.tolist() == [(i + 1) * 100000 + s for s in range(3000)]
            assert run._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_processes_writing_the_same_run_at_once_lose_nothing(tmp_path: Path) -> None:
    procs = [child(WRITER, str(tmp_path), str(lo), str(lo + 2000), "1") for lo in (0, 2000)]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    assert runs.open(tmp_path).scalar("x")[0].tolist() == list(range(4000))


def test_atexit_flushes_after_an_uncaught_exception(tmp_path: Path) -> None:
    code = """
        import sys
        from cosanneal.runtime.runstore import RunStore
        store = RunStore(sys.argv[1], flush_rows=10**9, flush_seconds=0)
        store.log_scalar(0, "loss", 1.5)
        store.log_event(0, "run_failed", error="boom")
        raise SystemExit("crash")
    """
    p = child(code, str(tmp_path))
    assert p.wait(60) == 1
    run = runs.open(tmp_path)
    assert run.scalar("loss")[1].tolist() == [1.5] and run.events()[0]["error"] == "boom"


# ---- kill -9 -----------------------------------------------------------------------------------
KILLED = """
    import sys
    from cosanneal.runtime.runstore import RunStore
    store = RunStore(sys.argv[1], flush_rows=2000, flush_seconds=0.005)
    step = 0
    while True:
        for _ in range(500):
            store.log_scalar(step, "x", step * 0.5)
            store.log_scalar(step, "y", -step, group=step % 3)
            step += 1
        store.flush()
        print(step, flush=True)
"""


def test_sigkill_loses_at_most_the_last_flush_window_and_never_corrupts(tmp_path: Path) -> None:
    p = child(KILLED, str(tmp_path))
    assert p.stdout is not None
    flushed = [int(p.stdout.readline()) for _ in range(8)]  # 8 blocking flushes returned
    run = runs.open(tmp_path)
    seen_live = run.summary()["scalar_rows"]  # a reader in another process reads while the run writes
    assert seen_live >= 2 * flushed[0]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    assert p.returncode == -signal.SIGKILL
    run = runs.open(tmp_path)
    assert run._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    steps, values = run.scalar("x")
    n = len(steps)
    assert n >= flushed[-1]  # everything flushed before the kill is there
    assert steps.tolist() == list(range(n))  # a prefix of what was written, no hole
    assert values.tolist() == [s * 0.5 for s in range(n)]
    ys = sorted(
        (int(s), float(v)) for g in run.groups("y") for s, v in zip(*run.scalar("y", group=g), strict=True)
    )
    assert abs(len(ys) - n) <= 1 and ys == [(s, -float(s)) for s in range(len(ys))]
    # and the file can be appended to after the crash
    with RunStore(tmp_path) as store:
        store.log_scalar(n, "x", n * 0.5)
    assert runs.open(tmp_path).scalar("x")[0][-1] == n


def test_a_value_that_is_not_a_number_is_stored_as_nan_and_the_batch_survives(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_seconds=0)
    store.log_scalar(0, "loss", np.array([1.0, 2.0]))  # not a scalar
    store.log_scalar(0, "acc", 0.5)
    with pytest.warns(UserWarning, match="scalar 'loss' value .* is not a number"):
        store.flush()
    store.close()
    run = runs.open(tmp_path)
    assert math.isnan(run.scalar("loss")[1][0]) and run.scalar("acc")[1].tolist() == [0.5]


@pytest.mark.parametrize("n", [1, 255, 256, 257, 512, 2 * 256 + 7])
def test_batches_of_any_size_are_stored_whole_and_in_order(tmp_path: Path, n: int) -> None:
    """Rows go in as multi-row INSERTs of 256: chunk edges lose, repeat or reorder nothing."""
    with RunStore(tmp_path, flush_seconds=0) as store:
        for step in range(n):
            store.log_rows(step, [("a", None, step * 0.5), ("b", 1, float(-step))])
    run = runs.open(tmp_path)
    try:
        steps, values = run.scalar("a")
        assert steps.tolist() == list(range(n)) and values.tolist() == [s * 0.5 for s in range(n)]
        assert run.scalar("b", group=1)[1].tolist() == [float(-s) for s in range(n)]
        assert run.summary()["scalar_rows"] == 2 * n
    finally:
        run.close()


# ---- resuming, durability, failures -----------------------------------------------------------------
def test_discard_after_keeps_the_state_at_the_step_and_drops_the_rest(tmp_path: Path) -> None:
    with RunStore(tmp_path, flush_seconds=0) as store:
        for t in range(8):
            store.log_scalar(t, "lr", 0.1 * t, group=0)
        store.log_scalars(4, {"val_loss": 0.5})
        store.log_scalars(6, {"val_loss": 0.4})
        store.log_event(4, "checkpoint_saved", path="checkpoints/step-000000004")
        store.log_event(4, "restart", cycle=1)  # an update-indexed event at the step: recorded again
        store.log_event(6, "checkpoint_saved", path="checkpoints/step-000000006")
        deleted = store.discard_after(4, keep_events_at={"checkpoint_saved"})
        assert deleted == (5, 2)  # lr 4..7 and val_loss 6; restart at 4 and the checkpoint at 6
        store.log_scalar(4, "lr", 0.4, group=0)
    run = runs.open(tmp_path)
    try:
        assert run.scalar("lr", 0)[0].tolist() == [0, 1, 2, 3, 4]
        assert run.scalar("val_loss")[0].tolist() == [4]
        assert [(e["step"], e["kind"]) for e in run.events()] == [(4, "checkpoint_saved")]
    finally:
        run.close()


def test_discard_after_judges_queued_rows_too(tmp_path: Path) -> None:
    store = RunStore(tmp_path, flush_rows=10**9, flush_seconds=0)
    for t in range(5):
        store.log_scalar(t, "loss", 1.0)
    assert store.pending == 5
    assert store.discard_after(2) == (3, 0)
    store.close()
    assert runs.open(tmp_path).scalar("loss")[0].tolist() == [0, 1]


def test_durable_flush_refuses_a_deleted_store(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run", flush_seconds=0)
    store.log_scalar(0, "loss", 1.0)
    store.flush(durable=True)  # fine while the file is there
    for name in os.listdir(tmp_path / "run"):
        os.unlink(tmp_path / "run" / name)
    store.log_scalar(1, "loss", 1.0)
    with pytest.raises(FileNotFoundError, match="deleted or replaced while the run was writing it"):
        store.flush(durable=True)
    with pytest.raises(FileNotFoundError):
        store.close()  # the close says so too; it still releases the handle and the thread


def test_a_failed_commit_raises_its_own_error_not_the_rollbacks(tmp_path: Path) -> None:
    """SQLite rolls back by itself on some errors; the store must not hide them behind a failed ROLLBACK."""
    from cosanneal.runtime import runstore

    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER)")

    class Full(sqlite3.OperationalError):
        pass

    with pytest.raises(Full, match="database or disk is full"), runstore._transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise Full("database or disk is full")
    assert not conn.in_transaction
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
