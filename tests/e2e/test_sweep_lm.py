"""``mlx sweep`` over an lm experiment: a tiny GPT, two trials, the median pruner fed
from the runs' val_loss records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, read_json, write_config

from lm_support import TINY_LM, corpus_text
from mlharness.config import deep_merge

pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")


def test_lm_sweep_prunes_the_worse_trial(mlx: Mlx, ws: Path) -> None:
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    base = deep_merge(
        TINY_LM,
        {"kind": "lm", "name": "tiny", "prepare": {"preparer": "text", "input": "corpus.txt"}},
    )
    # Long enough that the pruner's signal lands well before the too-small trial's end, even
    # on a loaded machine (20 iterations once finished inside one 0.2 s look at the trials).
    base["train"].update(eval_interval=5, min_lr=1e-8, max_iters=400)
    base["train"]["checkpointing"] = {"interval": 100}
    base["sweep"] = {
        "metric": "val_loss",
        "sampler": "grid",
        "seed": 1,
        # The good learning rate first (this seed's grid order), then one too small to learn:
        # the median pruner, from one finished trial on, stops it at its first evaluation.
        "params": {"train.learning_rate": {"choices": [3e-3, 1e-7]}},
        "pruner": "median",
        "pruner_options": {"n_startup_trials": 1, "n_warmup_steps": 1},
    }
    config = write_config(ws / "tiny.yaml", base)
    mlx("prepare", "--config", config, check=0)

    out = mlx("sweep", "-c", config, check=0).stdout
    url = f"sqlite:///{ws / 'runs' / 'sweeps' / 'tiny' / 'study.db'}"
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.params["train.learning_rate"] for t in trials] == [3e-3, 1e-7], out
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], out
    assert all(t.intermediate_values for t in trials)
    pruned = Path(trials[1].user_attrs["run_dir"])
    summary = read_json(pruned / "summary.json")
    assert summary["status"] == "interrupted", summary
    assert read_json(pruned / "config.json")["_run"]["sweep"] == "tiny"
