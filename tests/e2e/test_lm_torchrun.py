"""lm training under ``torchrun`` on the CPU (gloo, DistributedDataParallel), through the
real ``mlx train``: two processes on one node train as one process with the same global
batch, and two "nodes" on loopback, one process each, train as the two processes on one node.

The model is the tiny GPT of ``lm_support`` (2 layers, 32 wide) for 10 iterations of 2
micro-batches; each launch is a few seconds of start-up and a few of training.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import make_workspace, run_dirs, run_mlx, torchrun, two_nodes, write_config

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge

pytestmark = pytest.mark.e2e

SETTINGS = [
    "--set",
    "train.grad_accum_steps=2",
    "--set",
    "train.max_iters=10",
    "--set",
    "train.log_interval=1",
    "--fresh",
]
TRAIN = ["train", "tiny", "--config", "tiny.toml", *SETTINGS]


def prepared_workspace(path: Path) -> Path:
    """A workspace with the tiny config and its prepared data (a machine of its own)."""
    ws = make_workspace(path)
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    config = deep_merge(
        TINY_LM, {"kind": "lm", "prepare": {"preparer": "text", "input": "corpus.txt"}}
    )
    write_config(ws / "tiny.toml", config)
    run_mlx(["prepare", "tiny", "--config", "tiny.toml"], workspace=ws, check=0)
    return ws


@pytest.fixture(scope="module")
def lm_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_workspace(tmp_path_factory.mktemp("lm_ddp") / "ws")


@pytest.fixture(scope="module")
def ddp_runs(lm_ws: Path) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """(one process's run, two processes' run, the torchrun result)."""
    run_mlx(TRAIN, workspace=lm_ws, check=0)
    result = torchrun(lm_ws, *TRAIN, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    single, double = run_dirs(lm_ws, "tiny")
    return single, double, result


def losses(run: Path) -> list[float]:
    lines = (run / "metrics" / "metrics.ndjson").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def last_weights(run: Path) -> dict[str, object]:
    from mlharness.lm import checkpoints as ckpt

    return ckpt.load_weights(run / "checkpoints" / "ckpt_last_00000010")


def test_two_process_ddp_matches_one_process(
    ddp_runs: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    single, double, result = ddp_runs
    # Only rank 0 reports, as only it writes: the run it writes, as it starts and at the end.
    assert result.stdout.count("Run directory:") == 2, result.stdout
    assert result.stdout.count(f"Run directory: {double}") == 2
    assert len(losses(double)) == 10
    assert losses(double) == pytest.approx(losses(single), rel=1e-4)
    config = json.loads((double / "config.json").read_text())
    assert config["train"]["grad_accum_steps"] == 2


def test_two_nodes_on_loopback_train_as_one_node(
    lm_ws: Path, ddp_runs: tuple[Path, Path, subprocess.CompletedProcess[str]]
) -> None:
    """``--nnodes=2`` with c10d rendezvous, one process per "node", each node with its own
    workspace (its own prepared data and output directory, as machines without a shared
    file system): only the node that c10d made rank 0 writes a run, and it is the same run,
    bit for bit, as two processes on one node."""
    other = prepared_workspace(lm_ws.parent / "node1")  # the other machine's disk
    before = run_dirs(lm_ws, "tiny")
    results = two_nodes([lm_ws, other], *TRAIN)
    assert [r.returncode for r in results] == [0, 0], [r.stdout + r.stderr for r in results]
    new = sorted(set(run_dirs(lm_ws, "tiny")) - set(before)) + run_dirs(other, "tiny")
    assert len(new) == 1, new
    (run,) = new
    writer = 0 if run.is_relative_to(lm_ws) else 1
    assert results[writer].stdout.count(f"Run directory: {run}") == 2
    assert "Run directory:" not in results[1 - writer].stdout
    if writer == 0:  # the other node wrote nothing under its output directory
        assert not (other / "runs").exists()
    assert losses(run) == losses(ddp_runs[1])
    a, b = last_weights(ddp_runs[1]), last_weights(run)
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)  # type: ignore[attr-defined]
