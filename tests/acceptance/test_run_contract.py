"""One run of each kind, as a user makes it, held to the policies every run keeps.

A tabular run, an lm run (prepare, train, sample) and a GRPO run from that lm run are made
once, through the real ``mlx``, in a Python whose audit hook refuses every internet socket
and writes down who asked. The tests then check, against those runs: the run layout
DESIGN.md promises, the checkpoint retention of each kind, that nothing tried the network,
that the runs are recorded in the index with their final status, and the resume guarantee:
a run of any kind killed with SIGKILL finishes, by the same command, with the weights of
the run that never stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from e2e_helpers import (
    CLASSIFICATION,
    kill_hook,
    make_workspace,
    read_json,
    run_mlx,
    run_mlx_killed,
    write_config,
)

# sitecustomize runs first in every Python the runs start (torchrun workers and sandbox
# runners too). The audit hook sees every socket connect, sendto and name lookup, whatever
# library asks; AF_UNIX paths are strings, internet addresses are tuples.
NO_NETWORK = """\
import os, sys, traceback
_LOG = os.environ["MLX_NETWORK_LOG"]
def _no_network(event, args):
    if event in ("socket.connect", "socket.sendto") and isinstance(args[1], tuple) or (
        event == "socket.getaddrinfo"
    ):
        with open(_LOG, "a") as log:
            log.write(f"{event} {args[1] if event != 'socket.getaddrinfo' else args[0]!r} "
                      f"from {traceback.format_stack(limit=6)}\\n")
        raise OSError(101, "the network is off in this test")
sys.addaudithook(_no_network)
"""
TINY_ARITHMETIC = {
    "kind": "lm",
    "name": "arith",
    "prepare": {"preparer": "arithmetic", "arithmetic": {"num_examples": 600, "max_operand": 9}},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
    "train": {
        "max_iters": 12,
        "batch_size": 4,
        "warmup_iters": 2,
        "eval_interval": 4,
        "eval_iters": 2,
        "log_interval": 4,
        "device": "cpu",
        "num_threads": 1,
        "checkpointing": {"interval": 2, "keep": {"last": 2, "best": 1}},
    },
    "sample": {"num_samples": 1, "max_new_tokens": 8, "device": "cpu", "start": "1+2="},
}
TINY_GRPO = {
    "name": "grpo",
    "model": {"model_path": "runs/arith"},
    "data": {"train_path": "data/arith/grpo_train.jsonl", "max_prompt_len": 8, "max_gen_len": 4},
    "trainer": {
        "num_training_steps": 4,
        "ppo_batch_size": 2,
        "num_rollout_samples": 2,
        "device": "cpu",
        "num_threads": 1,
        "eval_num_prompts": 2,
    },
    "rewards": [{"name": "exact_match", "weight": 1.0}],
    "monitoring": {"log_samples_every": 2, "max_logged_samples": 2},
    "checkpointing": {"save_every": 1, "keep_last_n": 2},
}


@dataclass
class World:
    ws: Path
    network_log: Path
    env: dict[str, str]

    def run(self, kind: str) -> Path:
        """The one run directory of ``kind``'s experiment."""
        experiment = {"tabular": CLASSIFICATION["name"], "lm": "arith", "rl": "grpo"}[kind]
        (run,) = (self.ws / "runs" / experiment).iterdir()
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    ws = make_workspace(tmp_path_factory.mktemp("acceptance") / "ws")
    guard = ws.parent / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK, encoding="utf-8")
    log = ws.parent / "network.log"
    env = {"PYTHONPATH": str(guard), "MLX_NETWORK_LOG": str(log)}
    write_config(ws / "tabular.json", CLASSIFICATION)
    write_config(ws / "lm.json", TINY_ARITHMETIC)
    write_config(ws / "grpo.json", TINY_GRPO)
    for argv in (
        ["run-experiment", "--config", "tabular.json"],
        ["prepare", "arith", "--config", "lm.json"],
        ["train", "arith", "--config", "lm.json"],
        ["sample", "arith", "--config", "lm.json"],
        ["train", "--config", "grpo.json"],
    ):
        run_mlx(argv, workspace=ws, check=0, env=env)
    return World(ws, log, env)


def test_the_guard_catches_a_connection(world: World, tmp_path: Path) -> None:
    """The audit hook is really in place in the runs' Python: a connect is refused and logged."""
    code = (
        "import socket\ntry:\n    socket.socket().connect(('127.0.0.1', 9))\n"
        "except OSError as e:\n    print(e)"
    )
    env = {**os.environ, **world.env, "MLX_NETWORK_LOG": str(tmp_path / "log")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "the network is off" in out.stdout
    assert "socket.connect ('127.0.0.1', 9)" in (tmp_path / "log").read_text()


def test_no_run_of_any_kind_touches_the_network(world: World) -> None:
    attempts = world.network_log.read_text() if world.network_log.exists() else ""
    assert attempts == "", f"a normal run asked for the network:\n{attempts}"


@pytest.mark.parametrize("kind", ["tabular", "lm", "rl"])
def test_every_kind_leaves_the_same_run_layout(world: World, kind: str) -> None:
    run = world.run(kind)
    for name in (
        "config.json",
        "summary.json",
        "metrics/metrics.json",
        "metrics/metrics.ndjson",
        "metrics/metrics.md",
        "metrics/curves.png",
    ):
        assert (run / name).is_file(), f"{kind} run has no {name}"
    assert any((run / "logs" / "tb").iterdir()), f"{kind} run has no TensorBoard events"
    assert any((run / "checkpoints").iterdir()), f"{kind} run has no checkpoint"
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["kind"] == kind
    provenance = read_json(run / "config.json")["_run"]
    assert provenance["kind"] == kind and "seeds" in provenance
    if kind != "tabular":
        assert any((run / "samples").iterdir()), f"{kind} run has no samples"


def test_every_run_is_in_the_index_with_its_outcome(world: World) -> None:
    entries = read_json(world.ws / "runs" / "index.json")["runs"]
    by_kind = {entry["kind"]: entry for entry in entries}
    assert sorted(by_kind) == ["lm", "rl", "tabular"]
    for kind, entry in by_kind.items():
        assert entry["status"] == "completed", entry
        assert (world.ws / "runs" / entry["run_dir"]).resolve() == world.run(kind).resolve()


def test_tabular_keeps_every_periodic_checkpoint_and_the_final_one(world: World) -> None:
    names = sorted(p.name for p in (world.run("tabular") / "checkpoints").iterdir())
    # epochs 4, checkpoint_frequency 2 (seed 000's names)
    assert names == ["checkpoint_epoch_2", "checkpoint_epoch_4", "checkpoint_final"]


def test_lm_keeps_the_last_two_and_the_best(world: World) -> None:
    names = sorted(p.name for p in (world.run("lm") / "checkpoints").iterdir())
    last = [n for n in names if n.startswith("ckpt_last_")]
    best = [n for n in names if n.startswith("ckpt_best_")]
    assert last == ["ckpt_last_00000010", "ckpt_last_00000012"], names
    assert len(best) == 1 and "_val_loss_" in best[0], names
    assert set(names) == set(last) | set(best), f"leftovers beside checkpoints: {names}"


def test_rl_keeps_the_last_two(world: World) -> None:
    names = sorted(p.name for p in (world.run("rl") / "checkpoints").iterdir())
    last = [n for n in names if n.startswith("ckpt_last_")]
    assert last == ["ckpt_last_00000003", "ckpt_last_00000004"], names
    assert all(n.startswith(("ckpt_last_", "ckpt_best_")) for n in names), names


def test_samples_and_metrics_are_plain_readable_files(world: World) -> None:
    lm = world.run("lm")
    for line in (lm / "metrics" / "metrics.ndjson").read_text().splitlines():
        assert "iter" in json.loads(line)
    assert "|" in (lm / "metrics" / "metrics.md").read_text()  # a Markdown table


# ----------------------------------------------------------------------------- resume

EVERY_EPOCH = "import mlharness.tabular.loop as _loop\n_loop.RESUME_INTERVAL_S = 0.0\n"
# (command, the call whose second return is the kill, the final checkpoint to compare)
KILLED = {
    "tabular": (
        ["run-experiment", "--config", "tabular.json"],
        "mlharness.tabular.resume.write_state",
        "checkpoint_final",
    ),
    "lm": (
        ["train", "arith", "--config", "lm.json"],
        "mlharness.lm.checkpoints.save_checkpoint",
        "ckpt_last_00000012",
    ),
    "rl": (
        ["train", "--config", "grpo.json"],
        "mlharness.rl.checkpoints.save",
        "ckpt_last_00000004",
    ),
}


def _tensors(checkpoint: Path) -> dict[str, Any]:
    """Every array a checkpoint holds, by file and name (NumPy or safetensors)."""
    import numpy as np
    from safetensors.numpy import load_file

    arrays: dict[str, Any] = {}
    for path in sorted(checkpoint.iterdir()):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays.update({f"{path.name}:{k}": data[k] for k in data.files})
        elif path.suffix == ".safetensors":
            arrays.update({f"{path.name}:{k}": v for k, v in load_file(path).items()})
    return arrays


@pytest.mark.parametrize("kind", ["tabular", "lm", "rl"])
def test_a_killed_run_of_any_kind_resumes_to_the_same_weights(world: World, kind: str) -> None:
    """The resume guarantee: SIGKILL after the second saved state, then the same command
    finishes the same run directory with the weights of the run that never stopped."""
    argv, call, final = KILLED[kind]
    reference = world.run(kind)
    hook = (EVERY_EPOCH if kind == "tabular" else "") + kill_hook(call, "n == 2")
    run_mlx_killed([*argv, "--fresh"], workspace=world.ws, hook=hook)
    (killed,) = [r for r in reference.parent.iterdir() if r != reference]
    assert read_json(killed / "summary.json")["status"] == "running"

    out = run_mlx(argv, workspace=world.ws, check=0).stdout
    assert str(killed) in out, f"the same command did not resume {killed}:\n{out}"
    assert read_json(killed / "summary.json")["status"] == "completed"
    expected, got = (
        _tensors(reference / "checkpoints" / final),
        _tensors(killed / "checkpoints" / final),
    )
    assert expected and expected.keys() == got.keys()
    for name, array in expected.items():
        assert (array == got[name]).all(), f"{kind}: {name} differs after the resume"
