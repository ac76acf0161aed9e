"""TensorBoard scalars without torch or TensorFlow: the event-file writer of the
``tensorboard`` package, used by every engine for ``<run>/logs/tb``."""

from __future__ import annotations

import math
import os
import time
from typing import Any


class ScalarWriter:
    """Append scalar summaries to a TensorBoard event file in ``logdir``.

    Non-finite values are skipped: TensorBoard draws them as gaps anyway, and the JSON
    metrics already record them as null.
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2: Any = event_pb2
        self._summary_pb2: Any = summary_pb2
        self._writer = EventFileWriter(str(logdir), flush_secs=10)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        if not math.isfinite(value):
            return
        summary = self._summary_pb2.Summary(
            value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=value)]
        )
        self._writer.add_event(
            self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )

    def add_scalars(self, values: dict[str, Any], step: int) -> None:
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.add_scalar(tag, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
