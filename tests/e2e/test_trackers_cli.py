"""output.trackers through the real ``mlx``, on the tabular kind: MLflow and W&B read back as
their users read them, the command printed to open the MLflow store, the error a missing
package gives, and a run that names neither never importing them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from e2e_helpers import Mlx, base_env, error_lines, regression, single_run_dir, write_config

from tracker_support import place_store, wandb_offline_runs, wandb_run


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """W&B's settings and cache inside the test; no key, so nothing could go online."""
    home = tmp_path / "wandb-home"
    return {
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_SILENT": "true",
        "WANDB_API_KEY": "",
        "HOME": str(home),
    }


def test_tabular_run_logs_to_mlflow_and_wandb_with_its_sweep_tags(
    ws: Path, mlx: Mlx, tmp_path: Path, mlflow_store: Path
) -> None:
    output = {
        "directory": "runs",
        "trackers": ["tensorboard", "mlflow", "wandb"],
        "mlflow_log_checkpoint": True,
        "wandb_mode": "offline",
    }
    write_config(ws / "c.yaml", regression(output=output))
    uri = place_store(mlflow_store, ws / "runs")
    env = {**wandb_env(tmp_path), "MLX_SWEEP": "lr-search", "MLX_SWEEP_TRIAL": "3"}
    result = mlx("run-experiment", "--config", "c.yaml", check=0, env=env)
    printed = result.stdout + result.stderr
    assert f"MLflow: mlflow ui --backend-store-uri {uri}" in printed
    run_dir = single_run_dir(ws, "e2e-regression")
    assert f"W&B: offline run in {run_dir / 'logs' / 'wandb'}" in printed
    assert list((run_dir / "logs" / "tb").glob("events.out.tfevents.*"))

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e-regression").experiment_id])
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert (tags["kind"], tags["experiment"]) == ("tabular", "e2e-regression")
    assert (tags["sweep"], tags["trial"], tags["run_dir"]) == ("lr-search", "3", str(run_dir))
    params = run.data.params
    assert params["training.learning_rate"] == "0.05" and params["output.trackers"] == json.dumps(
        output["trackers"]
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3, 4]
    final = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["final_metrics"]
    assert run.data.metrics["val_loss"] == pytest.approx(final["val_loss"])
    stored = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert stored == {"checkpoints/checkpoint_final"}

    (offline,) = wandb_offline_runs(run_dir)
    wb, history = wandb_run(offline)
    assert (wb.project, wb.run_group) == ("mlharness", "lr-search")
    assert set(wb.tags) == {"tabular", "sweep:lr-search", "trial:3"}
    assert [json.loads(h["epoch"]) for h in history if "val_loss" in h] == [1, 2, 3, 4]


# Runs mlharness.cli.main(argv) with mlflow and wandb made unimportable, and reports whether
# anything reached for them: a run that names neither must not even look them up.
BLOCKED = r"""
import importlib.abc, json, sys

attempted = []

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mlflow", "wandb"):
            attempted.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Block())
from mlharness.cli import main

try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("ATTEMPTED " + json.dumps(sorted(set(attempted))), file=sys.stderr)
sys.exit(code or 0)
"""


def run_blocked(ws: Path, config: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, "run-experiment", "--config", config],
        cwd=ws,
        env=base_env(ws),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("ATTEMPTED ")]
    return result, json.loads(line.removeprefix("ATTEMPTED "))


def test_a_run_without_mlflow_or_wandb_never_imports_them(ws: Path) -> None:
    write_config(ws / "c.yaml", regression())
    result, attempted = run_blocked(ws, "c.yaml")
    assert result.returncode == 0, result.stderr
    assert attempted == []
    assert list((single_run_dir(ws, "e2e-regression") / "logs" / "tb").iterdir())


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_whose_package_is_missing_is_refused_before_the_run(
    ws: Path, tracker: str
) -> None:
    write_config(ws / "c.yaml", regression(output={"directory": "runs", "trackers": [tracker]}))
    result, _ = run_blocked(ws, "c.yaml")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"Error: output.trackers names {tracker}, but {tracker} is not installed: pip install "
        f'"mlharness[track]", or remove {tracker} from output.trackers.'
    ]
    assert not (ws / "runs").exists()
