"""``mlx run-experiment``: runs, lists, config errors, overrides, path safety, determinism."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from e2e_helpers import (
    Mlx,
    Trained,
    classification,
    error_lines,
    index_runs,
    read_json,
    regression,
    run_dirs,
    single_run_dir,
    snapshot,
    write_config,
)

# ----------------------------------------------------------------------------- success


def test_run_writes_a_complete_run_directory(trained_session: Trained) -> None:
    """The session's regression run (JSON, through the ``mlx`` script) left every file."""
    ws, run = trained_session.workspace, trained_session.regression_run
    out = trained_session.regression_result.stdout
    assert f"Run directory: {run}" in out
    assert "Final metrics:" in out

    config = read_json(run / "config.json")
    assert config["name"] == "e2e-regression"
    assert config["training"]["epochs"] == 4
    assert config["_run"]["seeds"]["training"] == 3

    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 4
    assert set(summary["final_metrics"]) >= {"loss", "mse", "r2", "val_mse", "val_r2"}

    metrics = read_json(run / "metrics" / "metrics.json")
    assert [m["epoch"] for m in metrics["metrics"]] == [1, 2, 3, 4]
    lines = (run / "metrics" / "metrics.ndjson").read_text().splitlines()
    assert [json.loads(line) for line in lines] == metrics["metrics"]
    assert (run / "metrics" / "metrics.md").read_text().startswith("# Metrics: e2e-regression")
    assert (run / "metrics" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_epoch_2", "checkpoint_epoch_4", "checkpoint_final"]
    assert (run / "checkpoints" / "checkpoint_final" / "model.json").is_file()
    assert (run / "logs" / "console.log").read_text().strip()
    assert list((run / "logs" / "tb").glob("events*"))

    [entry] = [e for e in index_runs(ws) if e["experiment"] == "e2e-regression"]
    assert entry["status"] == "completed"
    assert ws / "runs" / entry["run_dir"] == run
    assert entry["timestamp"] == run.name
    assert "created_at" in entry


def test_run_files_follow_the_umask(trained_session: Trained) -> None:
    """Results are shared files: with umask 022 they are rw-r--r--, like metrics.ndjson."""
    run = trained_session.regression_run
    expected = 0o666 & ~0o022
    files = ["metrics/metrics.ndjson", "config.json", "summary.json", "metrics/metrics.json"]
    modes = {name: oct(stat.S_IMODE((run / name).stat().st_mode)) for name in files}
    assert modes == dict.fromkeys(files, oct(expected))


def test_toml_config_runs(mlx: Mlx, ws: Path) -> None:
    """JSON and YAML runs are the session's; this is the third format."""
    write_config(ws / "tiny.toml", regression(training={"epochs": 2}))
    result = mlx("run-experiment", "--config", "tiny.toml", check=0)
    run = single_run_dir(ws, "e2e-regression")
    assert f"Run directory: {run}" in result.stdout
    assert read_json(run / "summary.json")["status"] == "completed"
    assert read_json(run / "config.json")["training"]["epochs"] == 2


def test_yml_extension_is_yaml(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.yml", regression())
    result = mlx("run-experiment", "--dry-run", "--config", "c.yml", check=0)
    assert "Validation: OK (e2e-regression)" in result.stdout


# ----------------------------------------------------------------------------- lists


def test_list_config_runs_each_in_order(mlx: Mlx, ws: Path) -> None:
    experiments = [
        regression(name="first", training={"epochs": 2}),
        classification(name="second", training={"epochs": 2}),
    ]
    write_config(ws / "multi.json", experiments)
    result = mlx("run-experiment", "--config", "multi.json", check=0)
    assert result.stdout.index("=== Experiment 1/2: first ===") < result.stdout.index(
        "=== Experiment 2/2: second ==="
    )
    entries = index_runs(ws)
    assert [e["experiment"] for e in entries] == ["first", "second"]
    assert [e["status"] for e in entries] == ["completed", "completed"]
    for name in ("first", "second"):
        assert read_json(single_run_dir(ws, name) / "summary.json")["status"] == "completed"


def test_list_stops_at_first_runtime_failure(mlx: Mlx, ws: Path) -> None:
    (ws / "data.csv").write_text("a,b,y\n1,2,3\n4,oops,5\n6,7,8\n7,8,9\n", encoding="utf-8")
    experiments = [
        regression(name="first", training={"epochs": 1}),
        {
            "name": "second",
            "dataset": {"name": "csv", "path": "data.csv", "params": {"target": "y"}},
            "model": {"name": "linear_regression"},
            "output": {"directory": "runs"},
        },
        regression(name="third", training={"epochs": 1}),
    ]
    write_config(ws / "multi.yaml", experiments)
    result = mlx("run-experiment", "--config", "multi.yaml", check=1)
    assert "=== Experiment 2/3: second ===" in result.stdout
    assert "Experiment 3/3" not in result.stdout
    [message] = error_lines(result.stderr)
    assert "Non-numeric value 'oops'" in message and "line 3" in message
    assert [(e["experiment"], e["status"]) for e in index_runs(ws)] == [("first", "completed")]
    assert read_json(single_run_dir(ws, "first") / "summary.json")["status"] == "completed"
    assert run_dirs(ws, "third") == []


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"output": {"directory": "../outside"}}, "outside the workspace"),
        (
            {"dataset": {"name": "csv", "path": "missing.csv", "params": {"target": "y"}}},
            "CSV file not found",
        ),
        ({"name": None}, "experiment 2 of 2: Missing required field: 'name'"),
    ],
    ids=["output-outside-workspace", "missing-csv", "invalid"],
)
def test_list_is_checked_before_the_first_experiment_runs(
    mlx: Mlx, ws: Path, second: dict, message: str
) -> None:
    bad = regression(**{"name": "second", **second})
    if bad["name"] is None:
        del bad["name"]
    write_config(ws / "multi.json", [regression(name="first"), bad])
    before = snapshot(ws)
    result = mlx("run-experiment", "--config", "multi.json", check=1)
    assert message in result.stderr
    assert "Experiment 1/2" not in result.stdout
    assert snapshot(ws) == before, "nothing may run when a later experiment is invalid"
    assert not (ws.parent / "outside").exists()


def test_empty_list(mlx: Mlx, ws: Path) -> None:
    (ws / "empty.json").write_text("[]")
    result = mlx("run-experiment", "--config", "empty.json", check=1)
    assert error_lines(result.stderr) == [
        "Error: empty.json holds an empty list: add at least one experiment."
    ]


# ----------------------------------------------------------------------------- config errors


def test_config_not_found(mlx: Mlx) -> None:
    result = mlx("run-experiment", "--config", "missing.json", check=1)
    assert result.stderr.splitlines() == [
        "Error: Configuration file not found: missing.json",
        "Please provide a valid config file path.",
    ]


def test_unsupported_extension(mlx: Mlx, ws: Path) -> None:
    (ws / "config.txt").write_text("name: x\n")
    result = mlx("run-experiment", "--config", "config.txt", check=1)
    assert "Unsupported configuration file extension '.txt'" in result.stderr
    assert "Use a .json, .yaml, .yml or .toml file." in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad.json",
            '{\n  "name": "x",\n  "dataset": {"name": "synthetic_regression"},,\n}\n',
            "Error: Invalid JSON in bad.json at line 3, column 47:",
        ),
        (
            "bad.yaml",
            "name: x\ndataset:\n  name: synthetic: regression\n",
            "Error: Invalid YAML in bad.yaml at line 3, column 18: mapping values are not allowed",
        ),
        (
            "bad.toml",
            'name = "x"\n\n[dataset\nname = "synthetic_regression"\n',
            "Error: Invalid TOML in bad.toml at line 3, column 9:",
        ),
    ],
    ids=["json", "yaml", "toml"],
)
def test_invalid_syntax_names_the_line(
    mlx: Mlx, ws: Path, name: str, text: str, expected: str
) -> None:
    (ws / name).write_text(text)
    result = mlx("run-experiment", "--config", name, check=1)
    [message] = error_lines(result.stderr)
    assert message.startswith(expected), message
    assert message.endswith("Fix the syntax and try again.")


def test_missing_required_field(mlx: Mlx, ws: Path) -> None:
    data = regression()
    del data["name"]
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--config", "c.json", check=1)
    assert result.stderr.splitlines() == [
        "Error: Configuration validation failed:",
        "  - Missing required field: 'name'",
    ]


def test_every_problem_is_listed(mlx: Mlx, ws: Path) -> None:
    data = regression(training={"epochs": -1, "learning_rate": 0})
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--config", "c.json", check=1)
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: Configuration validation failed:"
    assert any(ln.startswith("  - ") and "training.epochs" in ln for ln in lines)
    assert any(ln.startswith("  - ") and "training.learning_rate" in ln for ln in lines)


def test_unknown_dataset(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", regression(dataset={"name": "my_dataset", "params": {}}))
    result = mlx("run-experiment", "--config", "c.json", check=1)
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: Configuration validation failed:"
    assert lines[1].startswith(
        "  - Unknown dataset 'my_dataset'. Currently supported: "
        "synthetic_regression, synthetic_classification"
    )


def test_not_yet_supported_dataset(mlx: Mlx, ws: Path) -> None:
    dataset = "mnist"
    write_config(ws / "c.yaml", regression(dataset={"name": dataset, "params": {}}))
    result = mlx("run-experiment", "--dry-run", "--config", "c.yaml", check=1)
    assert f"Dataset '{dataset}' is not yet supported." in result.stderr
    assert "Currently supported: synthetic_regression, synthetic_classification" in result.stderr


def test_model_that_does_not_fit_the_dataset(mlx: Mlx, ws: Path) -> None:
    data = classification(model={"params": {"layer_sizes": [5, 8, 3]}})
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--config", "c.json", check=1)
    assert "layer_sizes starts with 5 but the dataset has 4 features" in result.stderr


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            regression(model={"params": {"l2_regularization": -1}}),
            "Invalid value for 'model.params.l2_regularization': Input should be greater than "
            "or equal to 0 (got -1)",
        ),
        (
            classification(model={"params": {"activation": "gelu"}}),
            "Invalid value for 'model.params.activation': Input should be 'relu', 'tanh' or "
            "'sigmoid' (got 'gelu')",
        ),
        (
            classification(model={"params": {"layer_sizes": [4, 8, 1]}}),
            "model.params: output_activation 'softmax' needs at least 2 outputs, but "
            "layer_sizes ends in 1. Use 'sigmoid' for binary classification, or make the last "
            "layer size the number of classes.",
        ),
    ],
)
def test_a_bad_model_value_is_one_schema_error(
    mlx: Mlx, ws: Path, data: dict[str, object], problem: str
) -> None:
    # The schema is the one place these rules live: no second, differently worded error
    # from the model's constructor.
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--dry-run", "--config", "c.json", check=1)
    assert result.stderr.splitlines() == [
        "Error: Configuration validation failed:",
        f"  - {problem}",
    ]


def test_unknown_key_warns_and_exits_0(mlx: Mlx, ws: Path) -> None:
    data = regression()
    data["trainig"] = {"epochs": 3}
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--dry-run", "--config", "c.json", check=0)
    assert (
        "Warning: Unknown configuration key 'trainig' (did you mean 'training'?)." in result.stderr
    )
    assert "Validation: OK, 1 warning (e2e-regression)" in result.stdout  # not a plain OK
    assert "Dry run: 1 experiment(s) valid, 1 warning; nothing was written." in result.stdout
    assert "Error" not in result.stderr


def test_unknown_nested_key_warns_in_dry_run(mlx: Mlx, ws: Path) -> None:
    data = regression()
    data["training"]["learning_rat"] = 0.1
    write_config(ws / "c.yaml", data)
    result = mlx("run-experiment", "--dry-run", "--config", "c.yaml", check=0)
    assert (
        "Unknown configuration key 'learning_rat' in 'training' (did you mean 'learning_rate'?)"
        in result.stderr
    )


def test_unknown_key_with_strict_fails(mlx: Mlx, ws: Path) -> None:
    data = regression()
    data["trainig"] = {"epochs": 3}
    write_config(ws / "c.json", data)
    before = snapshot(ws)
    result = mlx("run-experiment", "--strict", "--config", "c.json", check=1)
    assert result.stderr.splitlines()[-2:] == [
        "Error: Configuration validation failed:",
        "  - Unknown configuration key 'trainig' (did you mean 'training'?).",
    ]
    assert snapshot(ws) == before


# ----------------------------------------------------------------------------- overrides


def test_set_overrides_the_file(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", regression())
    mlx("run-experiment", "-c", "c.json", "--set", "training.epochs=3", check=0)
    run = single_run_dir(ws, "e2e-regression")
    assert len(read_json(run / "metrics" / "metrics.json")["metrics"]) == 3
    assert len((run / "metrics" / "metrics.ndjson").read_text().splitlines()) == 3
    assert read_json(run / "config.json")["training"]["epochs"] == 3


def test_mlx_overrides_env_and_save_logs_false(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", regression())
    env = {"MLX_OVERRIDES": json.dumps({"training": {"epochs": 2}, "output": {"save_logs": False}})}
    mlx("run-experiment", "-c", "c.json", check=0, env=env)
    run = single_run_dir(ws, "e2e-regression")
    assert len(read_json(run / "metrics" / "metrics.json")["metrics"]) == 2
    assert not (run / "logs" / "console.log").exists()  # output.save_logs: false
    assert list((run / "logs" / "tb").glob("events*"))  # TensorBoard is separate


def test_set_wins_over_mlx_overrides(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", regression())
    env = {"MLX_OVERRIDES": '{"training": {"epochs": 7, "batch_size": 8}}'}
    args = ["run-experiment", "--dry-run", "-c", "c.json", "--set", "training.epochs=5"]
    result = mlx(*args, env=env, check=0)
    assert "3. Training: 5 epochs, batch size 8," in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--set", "training.epochs=abc"],
            {},
            "  - Invalid value for 'training.epochs': Input should be a valid integer",
        ),
        (["--set", "trainingepochs"], {}, "Error: Invalid override 'trainingepochs'."),
        ([], {"MLX_OVERRIDES": "{bad"}, "Error: MLX_OVERRIDES is not valid JSON"),
        ([], {"MLX_OVERRIDES": "[1]"}, "Error: MLX_OVERRIDES must be a JSON object, got list."),
    ],
    ids=["set-bad-value", "set-no-equals", "env-bad-json", "env-not-object"],
)
def test_bad_overrides(
    mlx: Mlx, ws: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    write_config(ws / "c.json", regression())
    result = mlx("run-experiment", "--dry-run", "-c", "c.json", *args, env=env, check=1)
    assert message in result.stderr


# ----------------------------------------------------------------------------- output directory


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_output_directory_outside_workspace(mlx: Mlx, ws: Path, where: str) -> None:
    outside = ws.parent / "outside"
    directory = "../outside" if where == "relative" else str(outside)
    write_config(ws / "c.json", regression(output={"directory": directory}))
    before = snapshot(ws)
    result = mlx("run-experiment", "--config", "c.json", check=1)
    [message] = error_lines(result.stderr)
    assert f"Output directory '{directory}' resolves to {outside}" in message
    assert "outside the workspace" in message
    assert not outside.exists()
    assert snapshot(ws) == before
    if where == "relative":
        dry = mlx("run-experiment", "--dry-run", "--config", "c.json", check=1)
        assert "outside the workspace" in dry.stderr


def permissions_enforced(tmp: Path) -> bool:
    """False for root (or CAP_DAC_OVERRIDE), which writes into a read-only directory anyway."""
    probe = tmp / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").mkdir()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
    return False


def test_output_directory_permission_denied(mlx: Mlx, ws: Path, tmp_path: Path) -> None:
    if not permissions_enforced(tmp_path):
        pytest.skip("running as root: directory permissions are not enforced")
    (ws / "runs").mkdir()
    (ws / "runs").chmod(0o500)
    try:
        write_config(ws / "c.json", regression())
        result = mlx("run-experiment", "--config", "c.json", check=1)
    finally:
        (ws / "runs").chmod(0o700)
    [message] = error_lines(result.stderr)
    assert message.startswith("Error: Permission denied: '")
    assert "runs" in message
    assert list((ws / "runs").iterdir()) == []


def test_output_path_blocked_by_a_file(mlx: Mlx, ws: Path) -> None:
    """A file where the experiment's directory should go: an error message, no traceback."""
    (ws / "runs").mkdir()
    (ws / "runs" / "e2e-regression").write_text("not a directory")
    write_config(ws / "c.json", regression())
    result = mlx("run-experiment", "--config", "c.json", check=1)
    [message] = error_lines(result.stderr)
    assert "e2e-regression" in message


def test_output_directory_that_is_a_file(mlx: Mlx, ws: Path) -> None:
    (ws / "results").write_text("a file, not a directory")
    write_config(ws / "c.json", regression(output={"directory": "results"}))
    result = mlx("run-experiment", "--config", "c.json", check=1)
    assert f"Error: '{ws / 'results'}' is not a directory: runs need a directory there." in (
        result.stderr
    )


def test_missing_csv_names_the_right_field(mlx: Mlx, ws: Path) -> None:
    data = regression(dataset={"name": "csv", "path": "missing.csv", "params": {"target": "y"}})
    write_config(ws / "c.json", data)
    result = mlx("run-experiment", "--config", "c.json", check=1)
    assert "CSV file not found" in result.stderr
    assert "dataset.params.path" not in result.stderr


# ----------------------------------------------------------------------------- dry run


def test_dry_run_prints_config_plan_and_validation_and_writes_nothing(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "c.json", regression())
    before = snapshot(ws)
    result = mlx("run-experiment", "--dry-run", "--config", "c.json", check=0)
    out = result.stdout
    assert "Configuration (c.json):" in out
    shown = json.loads(out[out.index("{") : out.index("\nPlan:")])
    assert shown["name"] == "e2e-regression" and shown["training"]["epochs"] == 4
    assert "Plan:\n  1. Dataset: synthetic_regression (regression, 4 features)" in out
    assert "  3. Training: 4 epochs, batch size 32, sgd lr=0.05, seed 3" in out
    assert f"  4. Output: {ws / 'runs' / 'e2e-regression'}/<timestamp>/" in out
    assert "Validation: OK (e2e-regression)" in out
    assert out.rstrip().endswith("Dry run: 1 experiment(s) valid; nothing was written.")
    assert snapshot(ws) == before
    assert not (ws / "runs").exists()


def test_dry_run_of_a_list(mlx: Mlx, ws: Path) -> None:
    write_config(ws / "m.json", [regression(name="a"), classification(name="b")])
    result = mlx("run-experiment", "--dry-run", "--config", "m.json", check=0)
    assert "[1/2] Configuration (m.json):" in result.stdout
    assert "[2/2] Configuration (m.json):" in result.stdout
    assert "Dry run: 2 experiment(s) valid; nothing was written." in result.stdout
    assert not (ws / "runs").exists()


# ----------------------------------------------------------------------------- determinism


def test_same_config_twice_gives_identical_metrics(
    mlx: Mlx, ws: Path, trained_session: Trained
) -> None:
    """Rerun the session's classification config (MLP, shuffling) in a new workspace."""
    config = trained_session.workspace / "classification.yaml"
    (ws / config.name).write_bytes(config.read_bytes())
    mlx("run-experiment", "-c", config.name, check=0)
    first = trained_session.classification_run
    second = single_run_dir(ws, "e2e-classification")
    for name in ("metrics.json", "metrics.ndjson"):
        a = (first / "metrics" / name).read_bytes()
        b = (second / "metrics" / name).read_bytes()
        assert a == b, f"{name} differs between two runs of the same config"
