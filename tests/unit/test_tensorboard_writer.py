"""The event-file writer: TFRecord framing and Event protobufs that TensorBoard reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlharness.runs import tensorboard as tb

pytestmark = pytest.mark.unit


def test_crc32c_matches_the_standard_check_value() -> None:
    crc = 0xFFFFFFFF
    for byte in b"123456789":
        crc = tb._CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    assert crc ^ 0xFFFFFFFF == 0xE3069283  # CRC-32C's published check value


def test_checksums_match_tensorboards_own() -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    for data in (b"", b"a", bytes(range(256)) * 3):
        assert tb.masked_crc32c(data) == masked_crc32c(data)


def test_events_decode_with_tensorboards_protobufs() -> None:
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event.FromString(
        tb.encode_event(12.5, 2**40, scalars={"train/loss": 0.25, "val/loss": -3.0})
    )
    assert event.wall_time == 12.5
    assert event.step == 2**40
    assert [(v.tag, v.simple_value) for v in event.summary.value] == [
        ("train/loss", 0.25),
        ("val/loss", -3.0),
    ]
    negative = event_pb2.Event.FromString(tb.encode_event(0.0, -7))
    assert negative.step == -7
    version = event_pb2.Event.FromString(tb.encode_event(1.0, file_version="brain.Event:2"))
    assert version.file_version == "brain.Event:2"


def test_writer_output_reads_back_and_skips_what_is_not_a_number(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = tb.ScalarWriter(tmp_path / "tb")
    writer.add_scalars({"a": 1.5, "b": float("nan"), "c": True, "d": "text", "e": 3}, step=1)
    writer.add_scalar("a", float("inf"), step=2)
    writer.add_scalar("a", 2.5, step=3)
    writer.close()
    writer.close()  # closing twice is harmless
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["a", "e"]
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(1, 1.5), (3, 2.5)]
    assert [(e.step, e.value) for e in acc.Scalars("e")] == [(1, 3.0)]


def test_metrics_do_not_import_tensorboard_or_protobuf(tmp_path: Path) -> None:
    """Writing a run's event file needs neither package (or the writer thread they bring)."""
    code = (
        "import sys, threading\n"
        "from mlharness.runs.metrics import MetricsWriter\n"
        f"w = MetricsWriter({str(tmp_path)!r}, 'exp', tensorboard_dir={str(tmp_path / 'tb')!r},"
        " plot=False)\n"
        "w.log({'epoch': 1, 'loss': 0.5})\n"
        "w.close()\n"
        "print(sorted(m for m in ('tensorboard', 'google.protobuf') if m in sys.modules),"
        " threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 1"
