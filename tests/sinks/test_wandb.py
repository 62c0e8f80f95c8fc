"""W&B sink: real ``wandb`` in offline mode, its ``.wandb`` run files read back record by record.

No network: ``WANDB_MODE=offline``, every W&B directory in a temporary folder, and Python's
``socket.connect`` refuses anything but a Unix socket (what ``wandb`` uses to talk to its local
``wandb-core`` service process). The run files are read with the transaction-log layout W&B writes
(the LevelDB log format behind a 7-byte ``:W&B`` header) and ``wandb.proto``'s ``Record`` messages.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blobs import BLOBS, blobs_config

from cosanneal import ConfigError, from_dict, runs
from cosanneal.jobs.config import config_from_dict
from cosanneal.jobs.sink_factories import build_sinks, resolve_factories
from cosanneal.jobs.trainer import Trainer
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.sinks.wandb import RUN_ID_FILE, WandbMissingError, WandbSink, WandbSinkWarning, metric_key

needs_wandb = pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None,
    reason="wandb is not installed (pip install 'cosanneal[wandb]')",
)

# 640 samples / 32 = 20 updates per epoch; 3 epochs = 60 updates: warmup 10, restart at 40
EPOCHS, TOTAL, PREEMPT_AT = 3, 60, 20
SCHEDULE = from_dict(BLOBS["schedule"]).bind(total_steps=TOTAL, steps_per_epoch=20)


# ---- offline, no network --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Offline W&B with every directory under tmp, and no socket but Unix ones."""
    root = tmp_path_factory.mktemp("wandb-home")
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def local_only(sock: socket.socket, address: Any) -> None:
        if sock.family != socket.AF_UNIX:
            raise OSError(f"the W&B tests refuse network connections (to {address!r})")

    def guarded(sock: socket.socket, address: Any) -> None:
        local_only(sock, address)
        connect(sock, address)

    def guarded_ex(sock: socket.socket, address: Any) -> int:
        local_only(sock, address)
        return connect_ex(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                         ("WANDB_DATA_DIR", "data")):  # fmt: skip
            mp.setenv(var, str(root / sub))
        for var in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
            mp.delenv(var, raising=False)
        mp.setattr(socket.socket, "connect", guarded)
        mp.setattr(socket.socket, "connect_ex", guarded_ex)
        yield root


def test_the_guard_refuses_network_sockets(offline: Path) -> None:
    with pytest.raises(OSError, match="refuse network"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


# ---- reading a .wandb run file ---------------------------------------------------------------------


def _records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file: 32 KiB blocks of chunks ``crc32 | length | type | data``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00", data[:7]  # ident, magic 0xBEE1, version 0
    out, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            break
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos}"
        pos += 7 + length
        parts += chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def _of(records: list[Any], kind: str) -> list[Any]:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _items(items: Any) -> dict[str, Any]:
    """History, summary or config items as a dict; a nested key (a logged dict, a table) nests."""
    out: dict[str, Any] = {}
    for item in items:
        *parents, last = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = json.loads(item.value_json)
    return out


def _history(records: list[Any]) -> list[dict[str, Any]]:
    return [_items(h.item) for h in _of(records, "history")]


def _run_files(run_dir: Path) -> list[Path]:
    """The run's ``.wandb`` files, one per session, in the order the sessions started."""
    files = [p for p in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")]

    def started(path: Path) -> tuple[int, int]:
        run = _of(_records(path), "run")[0]
        return run.start_time.seconds, run.start_time.nanos

    return sorted(files, key=started)


def _trace(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``key`` per update; an update logged twice (trained again after a resume) keeps its last value."""
    last: dict[int, float] = {}
    for row in rows:
        if key in row:
            last[int(row["update"])] = row[key]
    ordered = sorted(last)
    return ordered, [last[u] for u in ordered]


def _store(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    run = runs.open(run_dir)
    try:
        out = {}
        for name in run.scalar_names():
            for group in run.groups(name) or [None]:
                steps, values = run.scalar(name, group)
                out[metric_key(name, group)] = (steps.tolist(), values.tolist())
        return out
    finally:
        run.close()


# ---- a real training job, preempted and resumed ----------------------------------------------------


def _preempt_at(updates: int) -> Any:
    def on_eval(at: int, metrics: dict[str, float], cycle_end: bool) -> bool:
        if at == updates:
            assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            signal.raise_signal(signal.SIGUSR1)  # the trainer's Preemption handler: save and stop
        return False

    return on_eval


@pytest.fixture(scope="module")
def job(offline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``telemetry.sinks = ["wandb"]``: 60 updates, preempted at 20 (SIGUSR1), resumed to the end."""
    run_dir = tmp_path_factory.mktemp("job") / "wb-run"
    sinks = [{"entry": "wandb", "options": {"project": "cosanneal-tests", "tags": ["ci", "blobs"]}}]
    cfg = config_from_dict(blobs_config(epochs=EPOCHS, telemetry__sinks=sinks))
    first = Trainer(cfg, run_dir, progress=False, log=lambda _: None, on_eval=_preempt_at(PREEMPT_AT)).run()
    assert first.status == "preempted" and first.steps == PREEMPT_AT
    second = Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    assert second.status == "finished" and second.steps == TOTAL
    return run_dir


@needs_wandb
def test_a_preempted_and_resumed_job_is_one_wandb_run(job: Path) -> None:
    files = _run_files(job)
    assert len(files) == 2  # offline: one directory per session, the same run id
    run_id = (job / RUN_ID_FILE).read_text().strip()
    for path in files:
        run = _of(_records(path), "run")[0]
        assert run.run_id == run_id and run.project == "cosanneal-tests"
        assert run.display_name == "wb-run" and list(run.tags) == ["ci", "blobs"]
    first, second = (_records(p) for p in files)
    assert _of(first, "exit")[0].exit_code == 138  # SIGUSR1: 128 + 10
    assert _of(first, "preempting")  # run.mark_preempting()
    assert _of(second, "exit")[0].exit_code == 0 and not _of(second, "preempting")


@needs_wandb
def test_the_lr_trace_per_update_equals_the_run_store(job: Path) -> None:
    store = _store(job)
    first, second = (_history(_records(p)) for p in _run_files(job))
    steps, lr = store["lr/group_0"]
    assert steps == list(range(TOTAL))
    np.testing.assert_allclose(lr, SCHEDULE(np.arange(TOTAL)), rtol=1e-12, atol=0)
    # what a server receives from both sessions, and the newest session alone (its history replayed)
    for rows in (first + second, second):
        for key in ("lr/group_0", "lr_expected/group_0", "loss", "grad_norm", "val_loss", "val_acc", "cycle"):
            assert _trace(rows, key) == store[key], key
    assert _trace(first, "lr/group_0") == (steps[:PREEMPT_AT], lr[:PREEMPT_AT])
    assert all(isinstance(r["update"], int) for r in first + second)


@needs_wandb
def test_events_are_running_counts_and_a_table(job: Path) -> None:
    rows = _history(_records(_run_files(job)[-1]))
    assert _trace(rows, "events/restart") == ([40], [1])
    assert _trace(rows, "events/resumed") == ([PREEMPT_AT], [1])
    assert _trace(rows, "events/preempted") == ([PREEMPT_AT], [1])
    assert _trace(rows, "events/run_finished") == ([TOTAL], [1])
    saved = _trace(rows, "events/checkpoint_saved")
    assert saved[1] == list(range(1, len(saved[1]) + 1)) and saved[0][-1] == TOTAL
    (final,) = [r for r in rows if "events" in r]
    assert final["update"] == TOTAL and final["events"]["_type"] == "table-file"
    table = json.loads((_run_files(job)[-1].parent / "files" / final["events"]["path"]).read_text())
    assert table["columns"] == ["update", "kind", "wall", "payload"]
    run = runs.open(job)
    try:
        expected = run.events()
    finally:
        run.close()
    assert [(u, k) for u, k, _, _ in table["data"]] == [(e["step"], e["kind"]) for e in expected]
    resumed = next(json.loads(p) for _, k, _, p in table["data"] if k == "resumed")
    assert resumed["from_step"] == PREEMPT_AT


@needs_wandb
def test_the_config_holds_the_schedule_and_the_lr_plot_is_an_image(job: Path) -> None:
    records = _records(_run_files(job)[-1])
    config: dict[str, Any] = {}
    for update in [_of(records, "run")[0].config, *_of(records, "config")]:
        config.update(_items(update.update))
    assert config["schedule"] == SCHEDULE.to_dict()
    assert config["schedule_fingerprint"] == SCHEDULE.fingerprint()
    assert config["config"]["telemetry"]["sinks"][0]["entry"] == "wandb"
    assert config["config"]["optimizer"]["name"] == "sgd"
    assert config["cosanneal"]["run_dir"] == str(job.resolve())
    (plot,) = [r["lr_loss"] for r in _history(records) if "lr_loss" in r]
    assert plot["_type"] == "image-file" and plot["format"] == "png"
    png = _run_files(job)[-1].parent / "files" / plot["path"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = _records(_run_files(job)[0])
    assert not [h for h in _history(first) if "lr_loss" in h]  # a preempted session draws no plot


# ---- updates trained again after a resume (a kill after the last checkpoint) -----------------------


def _train(tel: Telemetry, steps: range) -> None:
    for t in steps:
        tel.on_update(t, [SCHEDULE(t), SCHEDULE(t) / 10], loss=3.0 - t / 10, grad_norm=1.0, samples=8)


@needs_wandb
def test_updates_trained_again_after_a_resume_are_logged_again(offline: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunStore(run_dir, flush_seconds=0) as store:  # killed after update 9; its last checkpoint at 6
        _train(Telemetry(store, schedule=SCHEDULE, sinks=[WandbSink(run_dir=run_dir)]), range(10))
    sink = WandbSink(run_dir=run_dir)
    with RunStore(run_dir, flush_seconds=0) as store:
        tel = Telemetry(store, schedule=SCHEDULE, sinks=[sink])
        tel.resume(6)
        _train(tel, range(6, 14))
    first, second = (_history(_records(p)) for p in _run_files(run_dir))
    assert sink.resumed and sink.run_id == (run_dir / RUN_ID_FILE).read_text().strip()
    # nothing dropped: W&B's own step only grows, the update number goes back to 6
    assert [r["update"] for r in first if "lr/group_1" in r] == list(range(10))
    assert [r["update"] for r in second if "lr/group_1" in r] == [*range(6), *range(6, 14)]
    both = first + second
    assert [r["update"] for r in both if "lr/group_1" in r] == [*range(10), *range(14)]
    assert [r["_step"] for r in second] == list(range(len(second)))
    store_trace = _store(run_dir)
    assert store_trace["lr/group_1"][0] == list(range(14))
    for rows in (both, second):
        for key in ("lr/group_0", "lr/group_1", "loss", "grad_norm"):
            assert _trace(rows, key) == store_trace[key], key


@needs_wandb
def test_a_disabled_run_logs_nothing_and_keeps_no_id(offline: Path, tmp_path: Path) -> None:
    sink = WandbSink(mode="disabled", run_dir=tmp_path)
    with RunStore(tmp_path, flush_seconds=0) as store:
        _train(Telemetry(store, schedule=SCHEDULE, sinks=[sink]), range(3))
    assert sink.run_id is None and not (tmp_path / RUN_ID_FILE).exists()
    assert not list(tmp_path.glob("wandb/offline-run-*"))


@needs_wandb
def test_a_run_wandb_cannot_open_warns_and_training_goes_on(offline: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.warns(
        WandbSinkWarning, match=r"could not open a W&B run \(FileExistsError: .*W&B logging is off$"
    ):
        sink = WandbSink(run_dir=tmp_path, dir=tmp_path / "not-a-dir")
    with RunStore(tmp_path, flush_seconds=0) as store:
        _train(Telemetry(store, schedule=SCHEDULE, sinks=[sink]), range(3))
    assert _store(tmp_path)["lr/group_0"][0] == [0, 1, 2] and not (tmp_path / RUN_ID_FILE).exists()
    assert repr(sink) == "WandbSink(run_id=None, off)"


# ---- config errors and a missing package -----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"projekt": "x"}, r"unknown option 'projekt'; options are project, entity, name, mode, dir, tags"),
        ({"tags": "ci"}, r"tags must be a list of strings, got 'ci'"),
        pytest.param({"mode": "dryrun"}, r"mode must be one of online, offline, disabled, got 'dryrun'$", marks=needs_wandb),
        pytest.param({"settings": {"no_such": 1}}, r"settings: 1 validation error for Settings no_such ", marks=needs_wandb),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_config_errors(
    options: dict[str, Any], message: str, tmp_path: Path
) -> None:
    cfg = config_from_dict(blobs_config(telemetry__sinks=[{"entry": "wandb", "options": options}]))
    schedule = from_dict(BLOBS["schedule"])
    with pytest.raises(
        ConfigError, match=r"^telemetry.sinks\[0\]: wandb failed: ValueError: " + message
    ) as info:
        build_sinks(resolve_factories(cfg), cfg, tmp_path, schedule)
    assert "\n" not in str(info.value)


def test_without_wandb_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(WandbMissingError, match=r"^WandbSink needs wandb: pip install 'cosanneal\[wandb\]'$"):
        WandbSink(run_dir=tmp_path)
    cfg = config_from_dict(blobs_config(telemetry__sinks=["wandb"]))
    with pytest.raises(ConfigError) as info:
        build_sinks(resolve_factories(cfg), cfg, tmp_path, from_dict(BLOBS["schedule"]))
    assert str(info.value) == (
        "telemetry.sinks[0]: wandb failed: WandbMissingError: WandbSink needs wandb: pip install 'cosanneal[wandb]'"
    )
