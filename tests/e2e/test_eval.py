"""``mlx eval``: score a run's checkpoint on its own splits, write eval/<checkpoint>.json/.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import Mlx, Trained, error_lines, read_json, regression, snapshot, write_config


def test_eval_with_run_dir_only(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, check=0)
    out = result.stdout
    assert out.startswith("# Evaluation: e2e-regression")
    assert f"Checkpoint `checkpoint_final` of `{run}`" in out
    assert "## Validation split (40 samples)" in out
    assert "## Train split (160 samples)" in out
    for metric in ("mse", "rmse", "mae", "r2"):
        assert f"| {metric} | " in out

    report_path = trained.regression_run / "eval" / "checkpoint_final.json"
    assert f"Written: {run}/eval/checkpoint_final.json, {run}/eval/checkpoint_final.md" in out
    report = read_json(report_path)
    assert report["checkpoint"] == "checkpoint_final"
    assert report["splits"]["validation"]["n_samples"] == 40
    # The same model on the same split scores what training reported at the end.
    final = read_json(trained.regression_run / "summary.json")["final_metrics"]
    assert report["splits"]["validation"]["mse"] == pytest.approx(final["val_mse"], rel=1e-9)
    md = (trained.regression_run / "eval" / "checkpoint_final.md").read_text()
    assert md.startswith("# Evaluation: e2e-regression")


def test_eval_with_config(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--config", "regression.json", "--run-dir", run, check=0)
    assert "## Validation split (40 samples)" in result.stdout
    assert (trained.regression_run / "eval" / "checkpoint_final.json").is_file()


def test_eval_named_checkpoint(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, "--checkpoint", "checkpoint_epoch_2", check=0)
    assert "Checkpoint `checkpoint_epoch_2`" in result.stdout
    report = read_json(trained.regression_run / "eval" / "checkpoint_epoch_2.json")
    assert report["checkpoint"] == "checkpoint_epoch_2"
    assert (trained.regression_run / "eval" / "checkpoint_epoch_2.md").is_file()
    assert not (trained.regression_run / "eval" / "checkpoint_final.json").exists()


def test_eval_metrics_filter(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, "--metrics", "mse,r2", check=0)
    assert "| mse | " in result.stdout and "| r2 | " in result.stdout
    assert "| rmse | " not in result.stdout and "| mae | " not in result.stdout
    report = read_json(trained.regression_run / "eval" / "checkpoint_final.json")
    for split in ("validation", "train"):
        assert set(report["splits"][split]) == {"n_samples", "mse", "r2"}


def test_eval_unknown_metric(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, "--metrics", "mse,accuracy", check=1)
    assert error_lines(result.stderr) == [
        "Error: Unknown metric(s) accuracy for a regression model. Available: mse, rmse, mae, r2."
    ]
    assert not (trained.regression_run / "eval").exists()


def test_eval_classification_shows_confusion_matrix(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.classification_run)
    result = mlx("eval", "--run-dir", run, check=0)
    assert "| accuracy | " in result.stdout
    assert "Confusion matrix (rows: true class, columns: predicted):" in result.stdout
    assert "| **2** |" in result.stdout  # three classes: rows 0, 1, 2
    report = read_json(trained.classification_run / "eval" / "checkpoint_final.json")
    matrix = report["splits"]["validation"]["confusion_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert sum(map(sum, matrix)) == report["splits"]["validation"]["n_samples"]


def test_eval_dry_run_writes_nothing(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    before = snapshot(trained.workspace)
    result = mlx("eval", "--dry-run", "--run-dir", run, "--metrics", "mse", check=0)
    out = result.stdout
    assert f"Configuration source: {run}/config.json" in out
    assert f"Checkpoint to load: {run}/checkpoints/checkpoint_final (found)" in out
    assert "Steps:\n  1. Load checkpoint_final" in out
    assert "  3. Compute mse" in out
    assert "Dry run: nothing was evaluated or written." in out
    assert snapshot(trained.workspace) == before


def test_eval_dry_run_with_config_and_missing_checkpoint(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx(
        "eval", "--dry-run", "-c", "regression.json", "--run-dir", run,
        "--checkpoint", "checkpoint_epoch_9", check=0,
    )  # fmt: skip
    assert "Configuration source: regression.json" in result.stdout
    assert "checkpoint_epoch_9 (NOT FOUND)" in result.stdout


def test_eval_missing_run_dir(mlx: Mlx) -> None:
    result = mlx("eval", "--run-dir", "runs/experiment/20241122_143025", check=1)
    assert result.stderr.splitlines() == [
        "Error: Run directory not found: runs/experiment/20241122_143025"
    ]


def test_eval_missing_checkpoint_lists_available(mlx: Mlx, trained: Trained) -> None:
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, "--checkpoint", "checkpoint_epoch_40", check=1)
    [message] = error_lines(result.stderr)
    assert message.startswith("Error: Checkpoint 'checkpoint_epoch_40' not found in ")
    assert (
        "Available checkpoints: checkpoint_epoch_2, checkpoint_epoch_4, checkpoint_final. "
        "Pass one with --checkpoint." in message
    )


def test_eval_directory_without_config(mlx: Mlx, ws: Path) -> None:
    (ws / "not-a-run").mkdir()
    result = mlx("eval", "--run-dir", "not-a-run", check=1)
    assert error_lines(result.stderr) == [
        "Error: No config.json in not-a-run. Pass the experiment config with --config."
    ]


def test_eval_rejects_a_list_config(mlx: Mlx, trained: Trained) -> None:
    write_config(trained.workspace / "multi.json", [regression(), regression(name="b")])
    run = trained.rel(trained.regression_run)
    result = mlx("eval", "--run-dir", run, "--config", "multi.json", check=1)
    assert "multi.json holds a list of 2 experiments; this command takes one." in result.stderr
