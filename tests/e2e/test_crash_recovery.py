"""Crashes leave nothing half-done: ``mlx train`` killed with a real SIGKILL at chosen points
of its checkpoint writes (lm and rl), then run again.

* killed while writing a checkpoint: the resume removes the half-written temporary
  directory and ends bit-identical to a run that never stopped;
* killed between the best and the last checkpoint of one step: the resume writes the last
  one the schedule names (it did not, and the run ended without its final ckpt_last_*);
* killed while writing its first checkpoint: nothing to resume, so the next ``mlx train``
  marks the run crashed (summary.json and index.json), says so in one line, and starts anew.

Each kill comes from a hook installed in the subprocess before ``mlx`` runs
(:func:`e2e_helpers.kill_hook`): the process SIGKILLs itself, with no chance to clean up.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import (
    index_runs,
    kill_hook,
    leftovers,
    make_workspace,
    read_json,
    run_dirs,
    run_mlx,
    run_mlx_killed,
    write_config,
)

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge

pytestmark = pytest.mark.e2e

LM_CKPT = "mlharness.lm.checkpoints"
RL_CKPT = "mlharness.rl.checkpoints"
# checkpoint.json is the last file written into a checkpoint's temporary directory: killed
# right before it, the directory holds the weights and trainer.pt, and no checkpoint.json.
LM_META_WRITE = f"{LM_CKPT}.atomic_write_json"
RL_META_WRITE = f"{RL_CKPT}.atomic_write_json"


def _crashed_line(run: Path) -> str:
    return (
        f"Warning: Run {run} was left running by a process that is gone and cannot be resumed "
        "(no complete checkpoint): marked crashed; starting a new run."
    )


def _index_status(ws: Path, run: Path) -> str:
    rel = run.relative_to(ws / "runs").as_posix()
    (entry,) = [e for e in index_runs(ws) if e["run_dir"] == rel]
    return str(entry["status"])


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# ----------------------------------------------------------------------------- lm


@dataclass
class LMReference:
    ws: Path  # prepared data and tiny.toml
    run: Path  # a run of tiny.toml that never stopped


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory: pytest.TempPathFactory) -> LMReference:
    """20 iterations: last checkpoints at 0, 5, 10, 15, 20; evaluations (best) at 10 and 20."""
    ws = make_workspace(tmp_path_factory.mktemp("lm") / "ws")
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    config = deep_merge(
        TINY_LM, {"kind": "lm", "prepare": {"preparer": "text", "input": "corpus.txt"}}
    )
    write_config(ws / "tiny.toml", config)
    run_mlx(["prepare", "tiny", "--config", "tiny.toml"], workspace=ws, check=0)
    run_mlx(["train", "tiny", "--config", "tiny.toml"], workspace=ws, check=0)
    (run,) = run_dirs(ws, "tiny")
    assert "ckpt_best_00000020" in " ".join(_checkpoints(run))  # improves at the end
    return LMReference(ws, run)


@pytest.fixture
def lm_ws(ws: Path, lm_reference: LMReference) -> Path:
    """A workspace with the reference's config and prepared data, and no run yet."""
    shutil.copy(lm_reference.ws / "tiny.toml", ws)
    shutil.copytree(lm_reference.ws / "data", ws / "data")
    return ws


def _train_lm(ws: Path) -> Any:
    return run_mlx(["train", "tiny", "--config", "tiny.toml"], workspace=ws, check=0)


def _kill_lm(ws: Path, hook: str) -> Path:
    run_mlx_killed(["train", "tiny", "--config", "tiny.toml"], workspace=ws, hook=hook)
    (run,) = run_dirs(ws, "tiny")
    return run


def _same_weights(a: Path, b: Path) -> None:
    from mlharness.lm import checkpoints as ckpt

    wa, wb = ckpt.load_weights(a), ckpt.load_weights(b)
    assert wa.keys() == wb.keys()
    assert [k for k in wa if not wa[k].equal(wb[k])] == []


def test_lm_killed_while_writing_a_checkpoint_resumes_without_its_leftovers(
    lm_ws: Path, lm_reference: LMReference
) -> None:
    # Writes: last_0, last_5, best_10, last_10: killed inside the fourth.
    run = _kill_lm(lm_ws, kill_hook(LM_META_WRITE, "n == 4", before=True))
    (temp,) = leftovers(run)
    assert temp.startswith("checkpoints/.ckpt_last_00000010.") and temp.endswith(".tmp")
    assert read_json(run / "summary.json")["status"] == "running"

    out = _train_lm(lm_ws).stdout
    assert f"Resumed from {run / 'checkpoints'}/ckpt_best_00000010_val_loss_" in out
    assert leftovers(run) == []
    assert read_json(run / "summary.json")["status"] == "completed"
    assert _index_status(lm_ws, run) == "completed"
    assert _checkpoints(run) == _checkpoints(lm_reference.run)
    for name in ("ckpt_last_00000015", "ckpt_last_00000020"):
        _same_weights(run / "checkpoints" / name, lm_reference.run / "checkpoints" / name)


def test_lm_killed_between_the_best_and_the_last_checkpoint_of_the_final_step(
    lm_ws: Path, lm_reference: LMReference
) -> None:
    after_final_best = "kwargs['kind'] == 'best' and kwargs['iteration'] == 20"
    run = _kill_lm(lm_ws, kill_hook(f"{LM_CKPT}.save_checkpoint", after_final_best))
    names = _checkpoints(run)
    assert "ckpt_last_00000020" not in names and "ckpt_last_00000015" in names

    out = _train_lm(lm_ws).stdout
    assert "Resumed from" in out and "ckpt_best_00000020" in out
    assert "Training completed at iteration 20: val loss" in out
    assert _checkpoints(run) == _checkpoints(lm_reference.run)
    last = "checkpoints/ckpt_last_00000020"
    _same_weights(run / last, lm_reference.run / last)
    summary, reference = (
        read_json(run / "summary.json"),
        read_json(lm_reference.run / "summary.json"),
    )
    assert summary["status"] == "completed"
    assert summary["final_metrics"]["val_loss"] == reference["final_metrics"]["val_loss"]


def test_lm_killed_after_only_its_initial_checkpoint_says_it_starts_over(
    lm_ws: Path, lm_reference: LMReference
) -> None:
    run = _kill_lm(lm_ws, kill_hook(f"{LM_CKPT}.save_checkpoint", "n == 1"))
    assert _checkpoints(run) == ["ckpt_last_00000000"]

    out = _train_lm(lm_ws).stdout
    assert (
        f"Resuming from {run / 'checkpoints' / 'ckpt_last_00000000'} at iteration 0: the run "
        "stopped before it saved a trained checkpoint, so its training starts from the "
        "beginning (in the same run directory)." in out
    )
    assert run_dirs(lm_ws, "tiny") == [run]
    last = "checkpoints/ckpt_last_00000020"
    _same_weights(run / last, lm_reference.run / last)


def test_lm_killed_while_writing_its_first_checkpoint_is_marked_crashed(lm_ws: Path) -> None:
    dead = _kill_lm(lm_ws, kill_hook(LM_META_WRITE, "n == 1", before=True))
    (temp,) = leftovers(dead)
    assert temp.startswith("checkpoints/.ckpt_last_00000000.")
    assert not any(n.startswith("ckpt_") for n in _checkpoints(dead))
    assert read_json(dead / "summary.json")["status"] == "running"
    assert _index_status(lm_ws, dead) == "running"

    result = _train_lm(lm_ws)
    assert [line for line in result.stderr.splitlines() if "crashed" in line] == [
        _crashed_line(dead)
    ]
    assert "Resumed from" not in result.stdout
    dead_summary = read_json(dead / "summary.json")
    assert dead_summary["status"] == "crashed" and "is gone" in dead_summary["error"]
    assert _index_status(lm_ws, dead) == "crashed"
    assert leftovers(dead) == []
    (new,) = [r for r in run_dirs(lm_ws, "tiny") if r != dead]
    assert read_json(new / "summary.json")["status"] == "completed"

    # Said once: the crashed run is settled, the next start neither resumes nor mentions it.
    again = run_mlx(
        ["train", "tiny", "--config", "tiny.toml", "--fresh", "--set", "train.max_iters=1"],
        workspace=lm_ws,
        check=0,
    )
    assert "crashed" not in again.stderr


# ----------------------------------------------------------------------------- rl


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from mlharness.rl.tiny_models import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("rl") / "tiny_gpt2", n_layer=2, n_embd=32, n_head=2, seed=0
    )


def _rl_ws(ws: Path, model: Path, **overrides: Any) -> Path:
    """Two GRPO steps of 2 prompts x 2 completions; every checkpoint kept."""
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(3)]
    (ws / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    val = [{"prompt": f"{a}+5=", "completion": str(a + 5)} for a in range(2)]
    (ws / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val), "utf-8")
    config = {
        "kind": "rl",
        "name": "tiny_grpo",
        "trainer": {
            "num_training_steps": 2,
            "ppo_batch_size": 2,
            "num_rollout_samples": 2,
            "eval_num_prompts": 2,
            "seed": 7,
            "device": "cpu",
            "num_threads": 1,
        },
        "model": {"model_path": str(model)},
        "data": {"train_path": "prompts.jsonl", "max_prompt_len": 8, "max_gen_len": 4},
        "rewards": [{"name": "exact_match", "weight": 1.0}],
        "monitoring": {"log_samples_every": 0},
        "checkpointing": {"save_every": 1, "keep_last_n": 5},
    }
    write_config(ws / "grpo.yaml", deep_merge(config, overrides))
    return ws


def _kill_rl(ws: Path, hook: str) -> Path:
    run_mlx_killed(["train", "--config", "grpo.yaml"], workspace=ws, hook=hook)
    (run,) = run_dirs(ws, "tiny_grpo")
    return run


def _train_rl(ws: Path, *settings: str) -> Any:
    return run_mlx(["train", "--config", "grpo.yaml", *settings], workspace=ws, check=0)


def test_rl_killed_while_writing_a_checkpoint_resumes_without_its_leftovers(
    ws: Path, tiny_policy: Path
) -> None:
    _rl_ws(ws, tiny_policy)
    # Writes: last_0, last_1: killed inside the second.
    run = _kill_rl(ws, kill_hook(RL_META_WRITE, "n == 2", before=True))
    (temp,) = leftovers(run)
    assert temp.startswith("checkpoints/.ckpt_last_00000001.") and temp.endswith(".tmp")

    out = _train_rl(ws).stdout
    assert f"Resumed from {run / 'checkpoints' / 'ckpt_last_00000000'}" in out
    assert (
        f"Resuming from {run / 'checkpoints' / 'ckpt_last_00000000'} at step 0: the run stopped "
        "before it saved a trained checkpoint, so its training starts from the beginning (in "
        "the same run directory)." in out
    )
    assert "GRPO completed at step 2" in out
    assert leftovers(run) == []
    assert _checkpoints(run) == ["ckpt_last_00000000", "ckpt_last_00000001", "ckpt_last_00000002"]
    assert _index_status(ws, run) == "completed"


def test_rl_killed_between_the_best_and_the_last_checkpoint_of_a_step(
    ws: Path, tiny_policy: Path
) -> None:
    # With validation prompts, step 0 writes the baseline best, then the first last.
    _rl_ws(ws, tiny_policy, data={"val_path": "val.jsonl"})
    after_first_best = "kwargs['kind'] == 'best' and kwargs['step'] == 0"
    run = _kill_rl(ws, kill_hook(f"{RL_CKPT}.save", after_first_best))
    (best,) = _checkpoints(run)
    assert best.startswith("ckpt_best_00000000_")

    out = _train_rl(ws).stdout
    assert f"Resumed from {run / 'checkpoints' / best}" in out
    assert "GRPO completed at step 2" in out
    last = [n for n in _checkpoints(run) if n.startswith("ckpt_last_")]
    assert last == ["ckpt_last_00000000", "ckpt_last_00000001", "ckpt_last_00000002"]


def test_rl_killed_while_writing_its_first_checkpoint_is_marked_crashed(
    ws: Path, tiny_policy: Path
) -> None:
    _rl_ws(ws, tiny_policy)
    dead = _kill_rl(ws, kill_hook(RL_META_WRITE, "n == 1", before=True))
    (temp,) = leftovers(dead)
    assert temp.startswith("checkpoints/.ckpt_last_00000000.")
    assert not any(n.startswith("ckpt_") for n in _checkpoints(dead))
    assert read_json(dead / "summary.json")["status"] == "running"
    assert _index_status(ws, dead) == "running"

    result = _train_rl(ws, "--set", "trainer.num_training_steps=1")
    assert [line for line in result.stderr.splitlines() if "crashed" in line] == [
        _crashed_line(dead)
    ]
    assert "Resumed from" not in result.stdout
    assert read_json(dead / "summary.json")["status"] == "crashed"
    assert _index_status(ws, dead) == "crashed"
    assert leftovers(dead) == []
    (new,) = [r for r in run_dirs(ws, "tiny_grpo") if r != dead]
    assert read_json(new / "summary.json")["status"] == "completed"
