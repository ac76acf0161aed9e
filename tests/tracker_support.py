"""Reading what the trackers wrote: an MLflow store through MlflowClient, W&B offline runs.

A new MLflow SQLite store runs ~60 schema migrations (seconds); the tests migrate one empty
store once and copy it to where a run looks for its default store, ``<output_dir>/mlflow.db``.
W&B offline runs keep their records in ``run-<id>.wandb``: a LevelDB-style log of protobuf
``Record`` messages (wandb's own format; its Python reader was dropped from the package), read
here with wandb's protobuf definitions.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768  # LevelDB log blocks
HEADER = 7  # ":W&B", magic 0xBEE1, version; then each chunk has crc32, length, type


def migrated_store(directory: Path) -> Path:
    """An empty, fully migrated MLflow SQLite store in ``directory``."""
    from mlflow.tracking import MlflowClient

    from mlharness.runs.trackers import sqlite_uri

    path = directory / "mlflow.db"
    MlflowClient(sqlite_uri(path)).search_experiments()
    return path


def place_store(template: Path, output_dir: Path) -> str:
    """Copy the migrated store to ``output_dir/mlflow.db``; its tracking URI."""
    from mlharness.runs.trackers import sqlite_uri

    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, output_dir / "mlflow.db")
    return sqlite_uri(output_dir / "mlflow.db")


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of one offline W&B run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_offline_runs(run_dir: Path) -> list[Path]:
    """The run's W&B offline directories, oldest first."""
    return sorted((run_dir / "logs" / "wandb").glob("offline-run-*"))


def wandb_run(offline_dir: Path) -> tuple[Any, list[dict[str, str]]]:
    """The run record (id, project, name, group, tags) and each history row as key -> JSON."""
    (path,) = offline_dir.glob("run-*.wandb")
    run, history = None, []
    for record in wandb_records(path):
        which = record.WhichOneof("record_type")
        if which == "run":
            run = record.run
        elif which == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): item.value_json
                    for item in record.history.item
                }
            )
    assert run is not None, f"no run record in {path}"
    return run, history
