"""TensorBoard sink: real TensorBoard event files, written from the run store's writer thread.

Uses tensorboard's own event-file writer (no torch needed); each flushed batch becomes one TensorBoard
``Event`` per step holding all of that step's scalars, so the sink adds no work to the training thread.
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

import json
import os
from collections.abc import Sequence
from pathlib import Path

from cosanneal.runtime.runstore import EventRow, ScalarRow

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
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TensorBoardSink needs tensorboard: pip install tensorboard") from exc
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._event_pb2 = event_pb2
        self._summary_pb2 = summary_pb2
        # flush_secs is large: the run store's flushes drive ours.
        self._writer = EventFileWriter(str(self.log_dir), max_queue_size=1000, flush_secs=3600)
        self._tags: dict[tuple[str, int | None], str] = {}
        self._started = False
        self._text_meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
        )

    def _tag(self, name: str, group: int | None) -> str:
        key = (name, group)
        t = self._tags.get(key)
        if t is None:
            t = self._tags[key] = tag(name, group)
        return t

    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Write one batch: one TensorBoard ``Event`` per step, plus one text event per event."""
        summary_pb2, event_pb2 = self._summary_pb2, self._event_pb2
        if not self._started and (scalars or events):
            # A resumed run starts again from its checkpoint step: a SessionLog START there makes
            # TensorBoard drop the older rows at steps >= it, so the last write wins, as in the run store.
            first = min([r.step for r in scalars] + [e.step for e in events])
            wall = (scalars[0].wall if scalars else events[0].wall) - 1e-6
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._writer.add_event(event_pb2.Event(wall_time=wall, step=first, session_log=start))
            self._started = True
        by_step: dict[int, tuple[float, list[object]]] = {}
        for row in scalars:
            entry = by_step.get(row.step)
            if entry is None:
                entry = by_step[row.step] = (row.wall, [])
            entry[1].append(
                summary_pb2.Summary.Value(tag=self._tag(row.name, row.group), simple_value=row.value)
            )
        for step, (wall, values) in by_step.items():
            summary = summary_pb2.Summary(value=values)
            self._writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))
        for ev in events:
            text = json.dumps(ev.payload, sort_keys=True)
            tensor = _string_tensor(text)
            value = summary_pb2.Summary.Value(
                tag=f"events/{ev.kind}", metadata=self._text_meta, tensor=tensor
            )
            self._writer.add_event(
                event_pb2.Event(wall_time=ev.wall, step=ev.step, summary=summary_pb2.Summary(value=[value]))
            )

    def flush(self) -> None:
        """Write queued events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def _string_tensor(text: str) -> object:
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[text.encode("utf-8")],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
    )
