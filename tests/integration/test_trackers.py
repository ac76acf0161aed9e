"""MLflow and W&B for lm and GRPO runs: what each tracker holds, read back the way a user's
tools read it (MlflowClient; the offline W&B run files), and a resumed run continuing the
same tracker runs. The tabular kind is tested through the real ``mlx`` in
tests/e2e/test_trackers_cli.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from mlflow.tracking import MlflowClient

from mlharness.rl.tiny_models import build_tiny_model
from rl_support import arithmetic_rows, rl_config, write_jsonl
from tracker_support import (
    place_store,
    wandb_offline_runs,
    wandb_run,
)

BOTH = {"trackers": ["mlflow", "wandb"], "wandb_mode": "offline", "wandb_project": "tests"}


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B's settings, cache and key stay inside the test; nothing reaches a server."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def interrupted(run_dir: Path) -> None:
    """Mark a finished run interrupted, so the next train resumes it from its checkpoint."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**summary, "status": "interrupted"}), encoding="utf-8")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def test_lm_run_and_its_resume_log_to_one_mlflow_run_and_one_wandb_id(
    tiny_lm: Callable[..., Any], mlflow_store: Path
) -> None:
    from mlharness.lm.trainer import train

    config = tiny_lm({"train": {"max_iters": 10}, "output": BOTH})
    uri = place_store(mlflow_store, config.output_dir)
    first = train(config, progress=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == first.run_dir.name
    assert run.data.tags["kind"] == "lm" and run.data.tags["experiment"] == "tiny"
    assert run.data.tags["run_dir"] == str(first.run_dir.resolve())
    params = run.data.params
    assert params["model.n_layer"] == "2" and params["train.max_iters"] == "10"
    assert params["seeds.train"] == str(config.train.seed)
    assert steps(client, run.info.run_id, "loss") == [5, 10]
    assert steps(client, run.info.run_id, "val_loss") == [10]
    assert {"config.json", "summary.json", "metrics"} <= artifacts(client, run.info.run_id)
    assert artifacts(client, run.info.run_id, "metrics") == {
        "metrics/metrics.md",
        "metrics/curves.png",
    }

    interrupted(first.run_dir)
    second = train(tiny_lm({"train": {"max_iters": 15}, "output": BOTH}), progress=False)
    assert second.run_dir == first.run_dir and second.resumed_from is not None
    (again,) = client.search_runs([run.info.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "loss") == [5, 10, 15]

    offline = wandb_offline_runs(first.run_dir)
    assert len(offline) == 2  # W&B writes each process's part apart; sync joins them by id
    (run1, history1), (run2, history2) = wandb_run(offline[0]), wandb_run(offline[1])
    assert run1.run_id == run2.run_id and run1.project == run2.project == "tests"
    assert run1.display_name == f"tiny/{first.run_dir.name}"
    assert [json.loads(h["iter"]) for h in history1 if "loss" in h] == [5, 10]
    assert [json.loads(h["iter"]) for h in history2 if "loss" in h] == [15]
    state = json.loads((first.run_dir / "trackers.json").read_text(encoding="utf-8"))
    assert state["wandb"]["id"] == run1.run_id and state["mlflow"]["run_id"] == run.info.run_id


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("hf") / "gpt2", arch="gpt2")


def test_grpo_logs_metrics_and_completions_tables_and_resumes_both_runs(
    workspace: Path, tiny_gpt2: Path, mlflow_store: Path
) -> None:
    from mlharness.rl.trainer import GRPOTrainer

    prompts = write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))
    overrides = {"output": BOTH, "monitoring": {"log_samples_every": 2}}
    config = rl_config(workspace, tiny_gpt2, prompts, overrides)
    uri = place_store(mlflow_store, config.output_dir)
    trainer = GRPOTrainer(config, progress=False)
    trainer.fit()
    run_dir = trainer.run_dir
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("grpo").experiment_id])
    run_id = run.info.run_id
    assert run.data.tags["kind"] == "rl" and run.data.params["trainer.num_training_steps"] == "2"
    assert run.data.params["rewards"].startswith('[{"name": "numeric_match"')
    assert steps(client, run_id, "reward") == [1, 2]
    assert steps(client, run_id, "rewards/char_share") == [1, 2]
    assert artifacts(client, run_id, "tables") == {"tables/completions_00000002.json"}

    offline = wandb_offline_runs(run_dir)
    (table,) = (offline[0] / "files" / "media" / "table").glob("completions_*.table.json")
    logged = json.loads(table.read_text(encoding="utf-8"))
    assert {"prompt", "completion", "reward", "rewards.numeric_match", "rewards.char_share"} <= set(
        logged["columns"]
    )
    assert len(logged["data"]) == 3  # monitoring.max_logged_samples

    interrupted(run_dir)
    config = rl_config(
        workspace, tiny_gpt2, prompts, {**overrides, "trainer": {"num_training_steps": 3}}
    )
    resumed = GRPOTrainer(config, progress=False)
    resumed.fit()
    assert resumed.run_dir == run_dir
    (again,) = client.search_runs([run.info.experiment_id])
    assert again.info.run_id == run_id and steps(client, run_id, "reward") == [1, 2, 3]
    first, second = (wandb_run(d) for d in wandb_offline_runs(run_dir))
    assert first[0].run_id == second[0].run_id
    assert [json.loads(h["step"]) for h in second[1] if "reward" in h] == [3]


def test_an_mlflow_store_that_cannot_be_opened_fails_the_run_in_one_sentence(
    workspace: Path,
) -> None:
    from mlharness.errors import ConfigError
    from mlharness.runs import lifecycle
    from mlharness.runs.trackers import TrackerSettings

    settings = TrackerSettings(trackers=["tensorboard", "mlflow"], mlflow_uri="bogus://nowhere")
    with pytest.raises(ConfigError) as caught:
        lifecycle.open_run("e", workspace / "runs", "tabular", config={}, trackers=settings)
    message = str(caught.value)
    assert message.startswith("MLflow could not open bogus://nowhere (")
    assert message.endswith(
        "): set output.mlflow_uri to a tracking URI it can reach, or remove mlflow from "
        "output.trackers."
    )
    (run_dir,) = (workspace / "runs" / "e").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "failed" and summary["error"].startswith("ConfigError: MLflow")
