"""TensorBoard scalars written straight to an event file, for ``<run>/logs/tb``.

An event file is a sequence of TFRecord frames, each holding one ``Event`` protobuf; a
scalar event needs five fields. Encoding them here, instead of going through the
``tensorboard`` package's writer, spares every run the import of tensorboard and protobuf
(about 7 MB of memory) and the writer's background thread, which on a 2-core machine took
CPU from the training step it woke up next to (about 2 ms of a 40 ms step). Reading the
files needs nothing special: TensorBoard itself does that, and the tests read them with
its ``EventAccumulator``.

Writes are buffered and flushed every ``flush_secs`` and on close, as TensorBoard's own
writer does; the NDJSON metrics next to them are the run's durable record.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import IO, Any


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset ("masked")."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: negatives as two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(
    wall_time: float,
    step: int = 0,
    *,
    scalars: dict[str, float] | None = None,
    file_version: str | None = None,
) -> bytes:
    """``Event{wall_time=1, step=2, file_version=3, summary=5{value=1{tag=1, simple_value=2}}}``."""
    event = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        event += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        event += _bytes_field(5, summary)
    return event


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its checksum, the data, the data's checksum."""
    header = struct.pack("<Q", len(record))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + record
        + struct.pack("<I", masked_crc32c(record))
    )


class ScalarWriter:
    """Append scalar summaries to a new TensorBoard event file in ``logdir``.

    Non-finite values are skipped: TensorBoard draws them as gaps anyway, and the JSON
    metrics already record them as null.
    """

    def __init__(self, logdir: str | os.PathLike[str], flush_secs: float = 10.0) -> None:
        directory = Path(logdir)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # TensorBoard's naming: it reads every file whose name holds "tfevents".
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self.path = directory / name
        self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - kept open
        self._flush_secs = flush_secs
        self._flushed = now
        self._file.write(frame(encode_event(now, file_version="brain.Event:2")))
        self.flush()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.add_scalars({tag: value}, step)

    def add_scalars(self, values: dict[str, Any], step: int) -> None:
        """One event holding every finite number of ``values`` (bools are not scalars)."""
        scalars = {
            tag: float(value)
            for tag, value in values.items()
            if isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if not scalars or self._file is None:
            return
        now = time.time()
        self._file.write(frame(encode_event(now, int(step), scalars=scalars)))
        if now - self._flushed >= self._flush_secs:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._flushed = time.time()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
