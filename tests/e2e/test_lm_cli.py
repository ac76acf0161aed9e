"""The lm commands end to end: prepare, train, sample, loop, run-experiment, kill and resume,
each through a real subprocess (torchrun: test_lm_torchrun.py)."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, base_env, command

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_toml(path: Path, data: dict[str, Any], prefix: str = "") -> None:
    """A small TOML writer for nested tables of scalars (enough for these configs)."""
    lines: list[str] = []

    def table(name: str, node: dict[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        if name:
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in node.items():
            if isinstance(v, dict):
                table(f"{name}.{k}" if name else k, v)

    table(prefix, data)
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture
def lm_ws(ws: Path) -> Path:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    config = deep_merge(
        TINY_LM, {"kind": "lm", "prepare": {"preparer": "text", "input": "corpus.txt"}}
    )
    write_toml(ws / "tiny.toml", config)
    return ws


def _runs(ws: Path, name: str = "tiny") -> list[Path]:
    return sorted(p for p in (ws / "runs" / name).iterdir() if p.is_dir())


def test_prepare_train_sample(mlx: Mlx, lm_ws: Path) -> None:
    out = mlx("prepare", "tiny", "--config", "tiny.toml", check=0).stdout
    assert "Prepared" in out and (lm_ws / "data" / "tiny" / "meta.json").is_file()
    out = mlx("train", "tiny", "--config", "tiny.toml", check=0).stdout
    assert "Training completed at iteration 20" in out
    out = mlx(
        "sample",
        "tiny",
        "--config",
        "tiny.toml",
        "--num-samples",
        "1",
        "--max-new-tokens",
        "15",
        "--seed",
        "7",
        check=0,
    ).stdout
    assert "--- sample 1/1 ---" in out and "Samples written:" in out
    (run,) = _runs(lm_ws)
    assert list((run / "samples").glob("*.txt"))
    # mlx eval knows the run is an lm run (it was read as a tabular config before).
    out = mlx("eval", "--run-dir", run, check=0).stdout
    assert "| val |" in out and "| train |" in out and "Written:" in out
    assert list((run / "eval").glob("ckpt_*.json"))


def test_loop_skips_prepare_when_current_and_run_experiment_takes_lm(mlx: Mlx, lm_ws: Path) -> None:
    first = mlx("loop", "tiny", "--config", "tiny.toml", check=0).stdout
    assert "Prepared" in first and "--- sample 2/2 ---" in first
    second = mlx("loop", "tiny", "--config", "tiny.toml", check=0).stdout
    assert "is current; prepare skipped" in second
    # run-experiment has no EXPERIMENT argument: the config names itself.
    (lm_ws / "named.toml").write_text('name = "tiny"\n' + (lm_ws / "tiny.toml").read_text())
    out = mlx("run-experiment", "--config", "named.toml", check=0).stdout
    assert "Training completed" in out
    assert len(_runs(lm_ws)) == 3
    dry = mlx("run-experiment", "--config", "named.toml", "--dry-run", check=0).stdout
    assert "Train a GPT (2 layers" in dry


def test_train_without_prepared_data_fails_with_a_message(mlx: Mlx, lm_ws: Path) -> None:
    result = mlx("train", "tiny", "--config", "tiny.toml", check=1)
    assert result.stderr.startswith("Error: ")
    assert "mlx prepare" in result.stderr


def test_compile_without_a_cpp_compiler_fails_with_a_message(mlx: Mlx, lm_ws: Path) -> None:
    result = mlx(
        "train",
        "tiny",
        "--config",
        "tiny.toml",
        "--set",
        "train.compile=true",
        env={"CXX": "no-such-c++-compiler"},
        check=1,
    )
    assert result.stderr.startswith("Error: train.compile needs a C++ compiler")
    assert "set train.compile = false" in result.stderr and "Traceback" not in result.stderr


def test_prepare_without_input_names_the_file(mlx: Mlx, ws: Path) -> None:
    result = mlx("prepare", "bundestag_char", check=1)
    assert "input.txt" in result.stderr and "--input" in result.stderr


def test_experiment_name_mismatch_is_an_error(mlx: Mlx, lm_ws: Path) -> None:
    (lm_ws / "named.toml").write_text('name = "other"\n' + (lm_ws / "tiny.toml").read_text())
    result = mlx("train", "tiny", "--config", "named.toml", check=1)
    assert "The config names experiment 'other' but the command says 'tiny'" in result.stderr


@pytest.mark.parametrize(
    "variant",
    [
        ["model.dropout=0.1"],  # dropout draws from the RNG that is checkpointed
        ["train.num_threads=2"],  # no dropout: the batch is split across two threads
    ],
    ids=["dropout", "thread-shards"],
)
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(
    mlx: Mlx, lm_ws: Path, variant: list[str]
) -> None:
    from mlharness.lm import checkpoints as ckpt

    settings = [
        *itertools.chain.from_iterable(("--set", v) for v in variant),
        "--set",
        "train.max_iters=300",
        "--set",
        "train.log_interval=1",
        "--set",
        "train.eval_interval=50",
        "--set",
        "train.checkpointing.interval=10",
    ]
    mlx("prepare", "tiny", "--config", "tiny.toml", check=0)
    mlx("train", "tiny", "--config", "tiny.toml", *settings, check=0)
    (reference,) = _runs(lm_ws)

    kill_at = random.Random().randint(30, 250)
    proc = subprocess.Popen(
        command("module", ["train", "tiny", "--config", "tiny.toml", "--fresh", *settings]),
        cwd=lm_ws,
        env=base_env(lm_ws),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reached = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        runs = [r for r in _runs(lm_ws) if r != reference]
        ndjson = runs[0] / "metrics" / "metrics.ndjson" if runs else None
        if ndjson is not None and ndjson.is_file():
            text = ndjson.read_text()
            # Only whole lines: the trainer may be halfway through appending the last one.
            lines = text[: text.rfind("\n") + 1].splitlines()
            reached = json.loads(lines[-1])["iter"] if lines else 0
            if reached >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}"
    (killed,) = [r for r in _runs(lm_ws) if r != reference]
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"

    out = mlx("train", "tiny", "--config", "tiny.toml", *settings, check=0).stdout
    assert f"Resumed from {killed}" in out, f"killed at {reached}"
    final_a = ckpt.load_weights(reference / "checkpoints" / "ckpt_last_00000300")
    final_b = ckpt.load_weights(killed / "checkpoints" / "ckpt_last_00000300")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert final_a[key].equal(final_b[key]), f"{key} differs (killed at step {reached})"
