"""lm on two torchrun "nodes" on loopback (c10d rendezvous, one process each), each in a
workspace of its own with its own output directory, as machines without a shared file
system: the whole job SIGKILLed mid-run left the run on the node holding rank 0 only; resuming
without copying it is refused in one sentence on both nodes, with nothing written; with the
run directory copied to the other node's output directory (docs/lm.md), the job resumes and
ends bit-identical to a job that never stopped.

The model is the tiny GPT of ``lm_support`` for 10 iterations of 2 micro-batches, a last
checkpoint every 5; each launch is a few seconds of start-up and a second of training.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import (
    hooked_command,
    kill_hook,
    read_json,
    run_dirs,
    torchrun,
    two_nodes,
)
from test_lm_torchrun import TRAIN, last_weights, losses, prepared_workspace

pytestmark = pytest.mark.e2e

# Every process kills itself as the save at iteration 10 begins (lifecycle.rng_state is
# called twice a save under torchrun: saves at 0 and 5 made calls 1-4): the job dies with
# ckpt_last_00000005 complete, and nothing of iteration 10 written.
KILLED_AT_10 = kill_hook("mlharness.runs.lifecycle.rng_state", "n == 5", before=True)


def test_per_node_output_directories_resume_after_a_copy(tmp_path: Path) -> None:
    ws = [prepared_workspace(tmp_path / "node0"), tmp_path / "node1"]
    shutil.copytree(ws[0], ws[1])  # the prepared data copied to the other machine
    reference = torchrun(ws[0], *TRAIN, timeout=120)  # one node, two processes, no kill
    assert reference.returncode == 0, reference.stdout + reference.stderr
    (ref_run,) = run_dirs(ws[0], "tiny")

    script = ws[0] / "killed.py"
    script.write_text(hooked_command(KILLED_AT_10, [])[2], encoding="utf-8")
    killed = two_nodes(ws, *TRAIN, timeout=120, program=[str(script)])
    assert all(r.returncode != 0 for r in killed), [r.stdout + r.stderr for r in killed]
    assert "exitcode  : -9" in killed[0].stderr  # torchrun's report: the worker was SIGKILLed
    new = [run for run in run_dirs(ws[0], "tiny") if run != ref_run] + run_dirs(ws[1], "tiny")
    assert len(new) == 1 and new[0].is_relative_to(ws[0]), new  # rank 0's node wrote it
    (run,) = new
    assert read_json(run / "summary.json")["status"] == "running"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt_last_00000000",
        "ckpt_last_00000005",
    ]
    assert not (ws[1] / "runs").exists()  # the other node wrote nothing

    resume = [a for a in TRAIN if a != "--fresh"]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    refused = two_nodes(ws, *resume, timeout=120)
    expected = f"Error: Cannot resume {run.name} of 'tiny' from ckpt_last_00000005: process 1 on "
    for result in refused:
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
        assert "copy the run directory there" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing written
    assert not (ws[1] / "runs").exists()

    copy = ws[1] / "runs" / "tiny" / run.name  # the same place under node 1's output directory
    shutil.copytree(run, copy)
    resumed = two_nodes(ws, *resume, timeout=120)
    assert [r.returncode for r in resumed] == [0, 0], [r.stdout + r.stderr for r in resumed]
    assert f"Resumed from {run}/checkpoints/ckpt_last_00000005" in resumed[0].stdout
    assert read_json(run / "summary.json")["status"] == "completed"
    assert read_json(copy / "summary.json")["status"] == "running"  # rank 0 alone writes
    assert losses(run) == losses(ref_run)
    a, b = last_weights(ref_run), last_weights(run)
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)  # type: ignore[attr-defined]
