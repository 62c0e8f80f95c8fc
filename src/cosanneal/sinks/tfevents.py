"""TensorBoard event files written directly: TFRecord framing and the few protobuf messages a sink needs.

An event file is a sequence of records, each framed as (little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xA282EAD8  (mod 2**32)``, ``c = crc32c(x)``
(Castagnoli polynomial). ``data`` is a serialised ``tensorboard.Event``. The scalar events a training run
writes by the thousand are encoded here by hand, in one :mod:`struct` call per event, with every tag's
bytes precomputed; the fields used are::

    Event:   wall_time = 1 (double), step = 2 (int64 varint), summary = 5 (message)
    Summary: value = 1 (repeated message)
    Value:   tag = 1 (string), simple_value = 2 (float32)

The bytes are identical to ``event_pb2.Event(...).SerializeToString()`` for the same event (tested), so
every TensorBoard reader loads them. CRC-32C comes from ``google-crc32c`` (C, hardware-accelerated; part
of the ``runtime`` extra) and falls back to tensorboard's pure-Python implementation, about 200x slower.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

_MASK = 0xFFFFFFFF
_DELTA = 0xA282EAD8


def _crc32c_function() -> tuple[Callable[[bytes], int], str]:
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value, "google-crc32c"
    except ImportError:
        pass
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as slow

    return slow, "python"


crc32c, CRC32C_IMPLEMENTATION = _crc32c_function()


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum of ``data``: CRC-32C rotated right by 15 bits plus ``0xA282EAD8`` (mod 2^32).

    Example:
        >>> hex(masked_crc32c(b""))
        '0xa282ead8'
        >>> hex(masked_crc32c(b"123456789"))  # crc32c("123456789") = 0xe3069283, the check value
        '0xc78ab0e5'
    """
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + _DELTA) & _MASK


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (length, its checksum, data, data checksum).

    Example:
        >>> r = record(b"abc")
        >>> len(r), r[:8] == (3).to_bytes(8, "little"), r[12:15]
        (19, True, b'abc')
    """
    length = _U64.pack(len(data))
    return length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data))


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of an int64 (a negative value takes ten bytes, as protobuf writes it).

    Example:
        >>> varint(1).hex(), varint(300).hex(), len(varint(-1))
        ('01', 'ac02', 10)
    """
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_MAX_LAYOUTS = 1024  # distinct tag sequences remembered; more (unusual) and the cache starts over


def _as_f32(value: float) -> float:
    """``value`` unless float32 overflows on it, then +-inf (what protobuf stores in a float field)."""
    try:
        _F32.pack(value)
    except (OverflowError, struct.error):
        return math.copysign(math.inf, value)
    return value


class ScalarEncoder:
    """Encodes ``(wall_time, step, [(tag, value), ...])`` as the bytes of one TensorBoard scalar ``Event``.

    Tags are encoded once and a :class:`struct.Struct` is built once per distinct tag sequence, so an
    event of a run's usual scalars is a single ``pack`` call.

    Example:
        >>> from tensorboard.compat.proto import event_pb2
        >>> data = ScalarEncoder().event(12.5, 3, ["lr/group_0", "loss/train"], [0.1, 2.0])
        >>> e = event_pb2.Event.FromString(data)
        >>> e.step, e.wall_time, [(v.tag, round(v.simple_value, 6)) for v in e.summary.value]
        (3, 12.5, [('lr/group_0', 0.1), ('loss/train', 2.0)])
    """

    def __init__(self) -> None:
        self._prefix: dict[str, bytes] = {}
        self._layouts: dict[tuple[str, ...], tuple[struct.Struct, list[bytes]]] = {}

    def _value_prefix(self, tag: str) -> bytes:
        prefix = self._prefix.get(tag)
        if prefix is None:
            raw = tag.encode("utf-8")
            body = b"\x0a" + varint(len(raw)) + raw + b"\x15"  # tag field, then the simple_value key
            prefix = self._prefix[tag] = b"\x0a" + varint(len(body) + 4) + body
        return prefix

    def _layout(self, tags: tuple[str, ...]) -> tuple[struct.Struct, list[bytes]]:
        layout = self._layouts.get(tags)
        if layout is None:
            prefixes = [self._value_prefix(t) for t in tags]
            fmt = "<" + "".join(f"{len(p)}sf" for p in prefixes)
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[tags] = (struct.Struct(fmt), prefixes)
        return layout

    def summary(self, tags: Sequence[str], values: Sequence[float]) -> bytes:
        """The serialised ``Summary`` holding one ``simple_value`` per tag."""
        packer, prefixes = self._layout(tuple(tags))
        args: list[bytes | float] = [x for pair in zip(prefixes, values, strict=True) for x in pair]
        try:
            return packer.pack(*args)
        except (OverflowError, struct.error):  # a finite value beyond float32: protobuf stores +-inf
            args = [x for pair in zip(prefixes, map(_as_f32, values), strict=True) for x in pair]
            return packer.pack(*args)

    def event(self, wall_time: float, step: int, tags: Sequence[str], values: Sequence[float]) -> bytes:
        """The serialised ``Event(wall_time, step, summary)``.

        As protobuf (proto3) does, a zero ``step`` and a ``+0.0`` wall time are left out of the bytes.
        """
        summary = self.summary(tags, values)
        head = (
            b"" if wall_time == 0.0 and math.copysign(1.0, wall_time) > 0 else b"\x09" + _F64.pack(wall_time)
        )
        if step:
            head += b"\x10" + varint(step)
        return head + b"\x2a" + varint(len(summary)) + summary
