"""TensorBoard sink: real TensorBoard event files, written from the run store's writer thread.

Writes the event file itself (no torch, no extra thread): each flushed batch becomes one TensorBoard
``Event`` per step holding all of that step's scalars, encoded by :mod:`cosanneal.sinks.tfevents` in one
``struct`` call per event and appended to the file in one write per batch. All of it runs on the run
store's writer thread, so the sink adds no work to the training thread. The file is named as
TensorBoard's own writers name theirs (``events.out.tfevents.<time>.<host>.<pid>.<n>``) and starts with
the ``brain.Event:2`` version record.
Each sink instance (one per process) first writes a ``SessionLog.START`` at its first step, so when a
resumed run repeats steps TensorBoard drops the older values (the last write wins, as in the run store).

Tags (run-store name -> TensorBoard tag):

=====================  ==========================
``lr`` group ``i``      ``lr/group_<i>``
``lr_expected`` ``i``   ``lr_expected/group_<i>``
``momentum`` ``i``      ``momentum/group_<i>``
``loss``                ``loss/train``
``val_loss``            ``loss/val``
``val_<m>``             ``val/<m>``
``grad_norm``           ``train/grad_norm``
``nonfinite``           ``train/nonfinite``
``step_time``           ``perf/step_time_s``
``samples_per_s``       ``perf/samples_per_s``
``cycle``               ``schedule/cycle``
``phase``               ``schedule/phase``
anything else           the name (``/group_<i>`` appended when it has a group)
events                  text summary ``events/<kind>`` (the payload as JSON)
=====================  ==========================
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from cosanneal.runtime.runstore import EventRow, ScalarRow
from cosanneal.sinks.tfevents import ScalarEncoder, record

_FILE_IDS = itertools.count()  # tells apart the event files one process opens within a second

_FIXED = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "grad_norm": "train/grad_norm",
    "nonfinite": "train/nonfinite",
    "step_time": "perf/step_time_s",
    "samples_per_s": "perf/samples_per_s",
    "cycle": "schedule/cycle",
    "phase": "schedule/phase",
}


def tag(name: str, group: int | None = None) -> str:
    """The TensorBoard tag of a run-store scalar (see the module table).

    Example:
        >>> tag("lr", 0), tag("loss"), tag("val_loss"), tag("val_acc"), tag("custom", 2)
        ('lr/group_0', 'loss/train', 'loss/val', 'val/acc', 'custom/group_2')
    """
    if group is None:
        if name in _FIXED:
            return _FIXED[name]
        if name.startswith("val_"):
            return f"val/{name[4:]}"
        return name
    return f"{name}/group_{group}"


class TensorBoardSink:
    """Writes every flushed batch of a run store to TensorBoard event files in ``log_dir``.

    Args:
        log_dir: Directory of the event files (created if missing), conventionally ``run_dir/tb``.

    Raises:
        ImportError: ``tensorboard`` is not installed (``pip install tensorboard``).

    Example:
        >>> import tempfile
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = tempfile.mkdtemp()
        >>> with RunStore(d, sinks=[TensorBoardSink(d + "/tb")]) as store:
        ...     store.log_scalar(0, "lr", 0.1, group=0)
        >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        >>> acc = EventAccumulator(d + "/tb"); _ = acc.Reload()
        >>> [(e.step, round(e.value, 6)) for e in acc.Scalars("lr/group_0")]
        [(0, 0.1)]
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TensorBoardSink needs tensorboard: pip install tensorboard") from exc
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._event_pb2 = event_pb2
        self._summary_pb2 = summary_pb2
        self._encoder = ScalarEncoder()
        self._tags: dict[tuple[str, int | None], str] = {}
        self._started = False
        self._purge_from: int | None = None
        self._text_meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
        )
        now = time.time()
        self.path = self.log_dir / (
            f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}"
        )
        self._file: BinaryIO | None = open(self.path, "ab", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        version = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
        self._file.write(record(version.SerializeToString()))
        self._file.flush()

    def _tag(self, name: str, group: int | None) -> str:
        key = (name, group)
        t = self._tags.get(key)
        if t is None:
            t = self._tags[key] = tag(name, group)
        return t

    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Write one batch: one TensorBoard ``Event`` per step, plus one text event per event."""
        if self._file is None:
            raise ValueError(f"TensorBoardSink for {self.log_dir} is closed")
        chunks: list[bytes] = []
        if not self._started and (scalars or events):
            # A resumed run starts again from its checkpoint step: a SessionLog START there makes
            # TensorBoard drop the older rows at steps >= it, so the last write wins, as in the run store.
            event_pb2 = self._event_pb2
            first = min([r.step for r in scalars] + [e.step for e in events])
            if self._purge_from is not None:  # told by the run store where the resumed run starts
                first = self._purge_from
            wall = (scalars[0].wall if scalars else events[0].wall) - 1e-6
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            chunks.append(
                record(event_pb2.Event(wall_time=wall, step=first, session_log=start).SerializeToString())
            )
            self._started = True
        # step -> (wall time of its first row, tags, values); rows come grouped by step, so the dict is
        # looked up once per step (and still merges a step that comes back later in the batch)
        by_step: dict[int, tuple[float, list[str], list[float]]] = {}
        known = self._tags
        current = -1
        entry: tuple[float, list[str], list[float]] = (0.0, [], [])
        for step, name, group, value, wall in scalars:
            if step != current:
                current = step
                entry = by_step.setdefault(step, (wall, [], []))
            t = known.get((name, group))
            entry[1].append(t if t is not None else self._tag(name, group))
            entry[2].append(value)
        encode = self._encoder.event
        chunks.extend(record(encode(w, step, t, v)) for step, (w, t, v) in by_step.items())
        chunks.extend(record(self._text_event(ev)) for ev in events)
        self._file.write(b"".join(chunks))
        self._file.flush()  # one write call per batch: a live TensorBoard sees each flush

    def rewind(self, step: int) -> None:
        """A run resumed from the checkpoint at ``step`` updates: TensorBoard drops the older rows past it.

        The START marker goes at ``step + 1``: the evaluation at ``step`` (the checkpoint's own, which
        the resumed run does not repeat) stays visible; the one per-update row at index ``step`` that a
        killed run may have written is written again with the same value.
        """
        if not self._started:
            self._purge_from = step + 1

    def _text_event(self, ev: EventRow) -> bytes:
        summary_pb2 = self._summary_pb2
        tensor = _string_tensor(json.dumps(ev.payload, sort_keys=True))
        value = summary_pb2.Summary.Value(tag=f"events/{ev.kind}", metadata=self._text_meta, tensor=tensor)
        summary = summary_pb2.Summary(value=[value])
        return bytes(
            self._event_pb2.Event(wall_time=ev.wall, step=ev.step, summary=summary).SerializeToString()
        )

    def flush(self) -> None:
        """Hand what was written to the operating system (:meth:`write` already does, once per batch)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _string_tensor(text: str) -> object:
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[text.encode("utf-8")],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
    )
