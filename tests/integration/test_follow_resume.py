"""``lifecycle.follow_resume`` in a real 2-process gloo group, each process with an output
directory of its own (machines without a shared file system): each resumes from its own copy
of rank 0's run, and where the copies disagree both stop with the same one sentence.

The processes are forked (``torch.multiprocessing``, a file rendezvous), which costs a
fraction of a second instead of torchrun's launch; the e2e test of the same behaviour
through ``mlx`` is ``tests/e2e/test_torchrun_per_node_output.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.errors import CheckpointError  # noqa: E402
from mlharness.runs import lifecycle  # noqa: E402
from mlharness.runs.checkpoints import newest_checkpoint  # noqa: E402
from mlharness.runs.device import Dist  # noqa: E402

RUN = "20261205_010203"


def make_run(output: Path, status: str = "failed") -> Path:
    run = output / "tiny" / RUN
    (run / "checkpoints" / "ckpt_last_00000005").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": status}), encoding="utf-8")
    return run


def follow(rank: int, root: str, fresh: bool) -> None:
    """One process: rank 0 offers its own run (if it has one), everyone follows; the outcome
    is written to ``root/result_<rank>.json``."""
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    output = Path(root) / f"node{rank}" / "runs"
    parent = output / "tiny"
    found = None
    if rank == 0 and parent.is_dir():
        run = parent / RUN
        info = newest_checkpoint(run)
        found = (run, info) if info else None
    try:
        got = lifecycle.follow_resume(found, output, "tiny", Dist(rank, rank, 2), fresh=fresh)
        result: dict[str, Any] = {"checkpoint": None if got is None else str(got[1].path)}
    except CheckpointError as exc:
        result = {"error": str(exc)}
    finally:
        tdist.destroy_process_group()
    (Path(root) / f"result_{rank}.json").write_text(json.dumps(result), encoding="utf-8")


def run_both(root: Path, fresh: bool = False) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    (root / "store").unlink(missing_ok=True)
    # fork: the children start with torch imported (spawn's fresh interpreters take seconds)
    mp.start_processes(follow, args=(str(root), fresh), nprocs=2, start_method="fork")
    return [json.loads((root / f"result_{r}.json").read_text()) for r in (0, 1)]


def test_each_process_resumes_from_its_own_copy(tmp_path: Path) -> None:
    make_run(tmp_path / "node0" / "runs")
    copy = make_run(tmp_path / "node1" / "runs")
    results = run_both(tmp_path)
    assert results[0]["checkpoint"] == str(
        tmp_path / "node0" / "runs" / "tiny" / RUN / "checkpoints" / "ckpt_last_00000005"
    )
    assert results[1]["checkpoint"] == str(copy / "checkpoints" / "ckpt_last_00000005")


def test_a_process_without_the_copy_stops_both(tmp_path: Path) -> None:
    make_run(tmp_path / "node0" / "runs")
    results = run_both(tmp_path)
    assert results[0] == results[1]
    message = results[0]["error"]
    assert message.startswith(f"Cannot resume {RUN} of 'tiny' from ckpt_last_00000005: process 1")
    assert "copy the run directory there" in message and message.count(".") <= 2


def test_an_unfinished_run_only_another_process_holds_stops_both(tmp_path: Path) -> None:
    make_run(tmp_path / "node1" / "runs", status="interrupted")
    results = run_both(tmp_path)
    assert results[0] == results[1]
    assert results[0]["error"].startswith(
        "Rank 0 found no unfinished run of 'tiny' in its output directory, but process 1 on "
    )
    assert f"has {RUN} in its own" in results[0]["error"]
    # --fresh starts a new run on purpose; a completed run is nothing to resume.
    assert run_both(tmp_path, fresh=True) == [{"checkpoint": None}] * 2
    (tmp_path / "node1" / "runs" / "tiny" / RUN / "summary.json").write_text(
        json.dumps({"status": "completed"}), encoding="utf-8"
    )
    assert run_both(tmp_path) == [{"checkpoint": None}] * 2
