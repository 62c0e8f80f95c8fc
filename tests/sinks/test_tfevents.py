"""Hand-encoded TensorBoard events: byte-identical to protobuf's own encoding, readable by TensorBoard."""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

from cosanneal.runtime.runstore import RunStore
from cosanneal.sinks import tfevents
from cosanneal.sinks.tensorboard import TensorBoardSink
from cosanneal.sinks.tfevents import ScalarEncoder, masked_crc32c, record, varint

TAGS = st.text(min_size=1, max_size=40)
VALUES = st.floats(allow_nan=False, width=64) | st.sampled_from([math.nan, 3.5e38, -1e39, 1e-46, -0.0])
STEPS = st.integers(min_value=0, max_value=2**63 - 1)
WALLS = st.floats(min_value=0, max_value=4e9) | st.just(0.0)


def reference(wall: float, step: int, tags: list[str], values: list[float]) -> bytes:
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in zip(tags, values, strict=True)]
    )
    return bytes(event_pb2.Event(wall_time=wall, step=step, summary=summary).SerializeToString())


@settings(max_examples=300, deadline=None)
@given(WALLS, STEPS, st.lists(st.tuples(TAGS, VALUES), min_size=1, max_size=12))
def test_scalar_event_bytes_equal_protobufs(wall: float, step: int, pairs: list[tuple[str, float]]) -> None:
    tags, values = [t for t, _ in pairs], [v for _, v in pairs]
    ours = ScalarEncoder().event(wall, step, tags, values)
    assert ours == reference(wall, step, tags, values)


def test_encoder_reuses_its_layout_and_stays_exact() -> None:
    enc = ScalarEncoder()
    tags = ["lr/group_0", "loss/train", "perf/step_time_s"]
    for step in range(50):
        values = [0.1 / (step + 1), 3.0 - step, 1e-3 * step]
        assert enc.event(1.7e9 + step, step, tags, values) == reference(1.7e9 + step, step, tags, values)
    assert len(enc._layouts) == 1


def test_overflowing_values_become_infinity_as_in_protobuf() -> None:
    data = ScalarEncoder().event(1.0, 5, ["a", "b", "c"], [1e39, -1e300, 2.0])
    values = [v.simple_value for v in event_pb2.Event.FromString(data).summary.value]
    assert values == [math.inf, -math.inf, 2.0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_masked_crc32c_matches_tensorboard(data: bytes) -> None:
    assert masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_fallback_crc_without_google_crc32c(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import fails
    crc, name = tfevents._crc32c_function()
    assert name == "python"
    assert crc(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_varint_matches_protobuf() -> None:
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        event = event_pb2.Event(step=n).SerializeToString()
        assert event == (b"\x10" + varint(n) if n else b"")


def test_records_read_back_with_tensorboards_loader(tmp_path: Path) -> None:
    payloads = [ScalarEncoder().event(10.0 + i, i, ["x"], [float(i)]) for i in range(5)] + [b""]
    path = tmp_path / "events.out.tfevents.test"
    path.write_bytes(b"".join(record(p) for p in payloads))
    assert list(RawEventFileLoader(str(path)).Load()) == payloads
    header = record(b"abc")[:12]
    assert struct.unpack("<QI", header) == (3, masked_crc32c(struct.pack("<Q", 3)))


def test_sink_file_is_a_tensorboard_event_file(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path / "tb")
    with RunStore(tmp_path, flush_seconds=0, sinks=[sink]) as store:
        store.log_scalars(3, {"loss": 0.5, "huge": 1e39})
    assert sink.path.name.startswith("events.out.tfevents.") and sink.path.parent == tmp_path / "tb"
    first = next(iter(RawEventFileLoader(str(sink.path)).Load()))
    assert event_pb2.Event.FromString(first).file_version == "brain.Event:2"
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(3, 0.5)]
    assert [e.value for e in acc.Scalars("huge")] == [math.inf]
    sink.close()  # idempotent after the store closed it
    with pytest.raises(ValueError, match="closed"):
        sink.write([], [])


def test_two_sinks_in_one_process_write_two_files(tmp_path: Path) -> None:
    a, b = TensorBoardSink(tmp_path), TensorBoardSink(tmp_path)
    assert a.path != b.path
    a.close()
    b.close()


def test_each_flush_is_visible_to_a_live_reader(tmp_path: Path) -> None:
    with RunStore(tmp_path, flush_seconds=0, sinks=[TensorBoardSink(tmp_path / "tb")]) as store:
        for step in range(3):
            store.log_scalar(step, "loss", 1.0 / (step + 1))
        store._flush_once()  # what the writer thread does: no explicit sink flush
        acc = EventAccumulator(str(tmp_path / "tb"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss/train")] == [0, 1, 2]
