"""Config files (JSON, YAML, TOML), overrides (MLX_OVERRIDES, --set) and workspace path safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlharness.config import (
    apply_overrides,
    deep_merge,
    ensure_within_workspace,
    load_config,
    load_raw,
    parse_set_items,
    read_config_file,
    resolve_path,
    workspace_root,
)
from mlharness.errors import ConfigError, PathSafetyError
from mlharness.tabular.config import ExperimentConfig

CONFIG = {
    "name": "exp",
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 50, "n_features": 3}},
    "model": {"name": "linear_regression"},
    "training": {"epochs": 5, "batch_size": 8, "learning_rate": 0.01},
}

YAML_TEXT = """\
name: exp
dataset:
  name: synthetic_regression
  params:
    n_samples: 50
    n_features: 3
model:
  name: linear_regression
training:
  epochs: 5
  batch_size: 8
  learning_rate: 0.01
"""

TOML_TEXT = """\
name = "exp"

[dataset]
name = "synthetic_regression"

[dataset.params]
n_samples = 50
n_features = 3

[model]
name = "linear_regression"

[training]
epochs = 5
batch_size = 8
learning_rate = 0.01
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- reading files


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("exp.json", json.dumps(CONFIG, indent=2)),
        ("exp.yaml", YAML_TEXT),
        ("exp.yml", YAML_TEXT),
        ("exp.toml", TOML_TEXT),
        ("EXP.JSON", json.dumps(CONFIG)),
    ],
)
def test_read_config_file_parses_every_format_to_the_same_data(
    workspace: Path, filename: str, text: str
) -> None:
    path = _write(workspace / filename, text)
    assert read_config_file(path) == CONFIG
    assert read_config_file(str(path)) == CONFIG


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        (
            "bad.json",
            '{"name": "exp",\n  "model": }\n',
            "Invalid JSON in bad.json at line 2, column 12: Expecting value. "
            "Fix the syntax and try again.",
        ),
        (
            "bad.yaml",
            "name: exp\nlayers: [1, 2\nmodel: mlp\n",
            "Invalid YAML in bad.yaml at line 3, column 6: expected ',' or ']', but got ':'. "
            "Fix the syntax and try again.",
        ),
        (
            "bad.yml",
            "name: exp\n\tmodel: mlp\n",
            "Invalid YAML in bad.yml at line 2, column 1: found character '\\t' that cannot "
            "start any token. Fix the syntax and try again.",
        ),
        (
            "bad.toml",
            'name = "exp"\nepochs = \n',
            "Invalid TOML in bad.toml at line 2, column 10: Invalid value. "
            "Fix the syntax and try again.",
        ),
        (
            "eof.toml",
            "layers = [1, 2\n",
            "Invalid TOML in eof.toml at line 2, column 1: Unclosed array. "
            "Fix the syntax and try again.",
        ),
        (
            "empty.json",
            "",
            "Invalid JSON in empty.json at line 1, column 1: Expecting value. "
            "Fix the syntax and try again.",
        ),
    ],
)
def test_syntax_errors_name_file_line_and_column(
    workspace: Path, filename: str, text: str, expected: str
) -> None:
    _write(workspace / filename, text)
    with pytest.raises(ConfigError) as info:
        read_config_file(filename)
    assert str(info.value) == expected


def test_missing_file_message(workspace: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config_file("my_config.json")
    assert str(info.value) == (
        "Configuration file not found: my_config.json\nPlease provide a valid config file path."
    )
    # A library caller can catch the built-in type too.
    assert isinstance(info.value, ValueError)


def test_a_directory_is_not_a_config_file(workspace: Path) -> None:
    (workspace / "configs.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        read_config_file("configs.yaml")
    assert str(info.value) == (
        "Configuration file not found: configs.yaml\nPlease provide a valid config file path."
    )


@pytest.mark.parametrize(
    ("filename", "suffix"), [("exp.txt", ".txt"), ("exp", ""), ("e.ini", ".ini")]
)
def test_unsupported_extension(workspace: Path, filename: str, suffix: str) -> None:
    _write(workspace / filename, "{}")
    with pytest.raises(ConfigError) as info:
        read_config_file(filename)
    assert str(info.value) == (
        f"Unsupported configuration file extension '{suffix}' for {filename}. "
        "Use a .json, .yaml, .yml or .toml file."
    )


def test_undecodable_file_message(workspace: Path) -> None:
    (workspace / "latin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError) as info:
        read_config_file("latin.json")
    assert str(info.value) == (
        "Cannot read configuration file latin.json: 'utf-8' codec can't decode byte 0xff in "
        "position 0: invalid start byte."
    )


# --------------------------------------------------------------------------- --set items


def test_parse_set_items_types_values_as_a_person_means_them() -> None:
    parsed = parse_set_items(
        [
            "training.epochs=5",
            "training.learning_rate=0.05",
            "training.params.weight_decay=1e-4",
            "training.shuffle=false",
            "output.save_checkpoints=true",
            "model.params.layer_sizes=[4, 8, 1]",
            "model.params.activation=tanh",
            "model.params.output_activation=null",
            "model.params.seed=007",
            "name=my-exp",
            "description=",
            "training.params={momentum: 0.9}",
        ]
    )
    assert parsed == {
        "training": {
            "epochs": 5,
            "learning_rate": 0.05,
            "params": {"weight_decay": 1e-4, "momentum": 0.9},
            "shuffle": False,
        },
        "output": {"save_checkpoints": True},
        "model": {
            "params": {
                "layer_sizes": [4, 8, 1],
                "activation": "tanh",
                "output_activation": None,
                "seed": 7,
            }
        },
        "name": "my-exp",
        "description": "",
    }
    assert type(parsed["training"]["epochs"]) is int
    assert type(parsed["training"]["learning_rate"]) is float
    assert type(parsed["training"]["params"]["weight_decay"]) is float
    assert type(parsed["training"]["shuffle"]) is bool


def test_parse_set_items_keeps_text_that_is_not_yaml_as_a_string() -> None:
    assert parse_set_items(["name=[oops", "x.y= spaced "]) == {
        "name": "[oops",
        "x": {"y": "spaced"},
    }


def test_parse_set_items_value_may_contain_equals() -> None:
    assert parse_set_items(["description=a=b"]) == {"description": "a=b"}


def test_parse_set_items_later_item_wins() -> None:
    assert parse_set_items(["training.epochs=5", "training.epochs=7"]) == {
        "training": {"epochs": 7}
    }


@pytest.mark.parametrize(
    "item", ["training.epochs", "=5", "training..epochs=5", ".epochs=1", "a.=1"]
)
def test_parse_set_items_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_set_items([item])
    assert str(info.value) == (
        f"Invalid override '{item}'. Use --set key.path=value, for example --set training.epochs=5 "
        "(tabular) or --set train.max_iters=100 (lm)."
    )


def test_parse_set_items_conflict_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_set_items(["training=5", "training.epochs=3"])
    assert str(info.value) == (
        "Override 'training.epochs=3' conflicts with another override of 'training'."
    )


# --------------------------------------------------------------------------- MLX_OVERRIDES


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3], "e": {"f": 1}}, "d": {"x": 1}})
    assert merged == {"a": {"b": 1, "c": [3], "e": {"f": 1}}, "d": {"x": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not modified


def test_mlx_overrides_deep_merges_into_the_file(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(workspace / "exp.json", json.dumps(CONFIG))
    monkeypatch.setenv(
        "MLX_OVERRIDES", json.dumps({"training": {"epochs": 9}, "output": {"directory": "out"}})
    )
    data = load_raw(path)
    assert data["training"] == {"epochs": 9, "batch_size": 8, "learning_rate": 0.01}
    assert data["output"] == {"directory": "out"}
    assert data["dataset"] == CONFIG["dataset"]


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_mlx_overrides_changes_nothing(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MLX_OVERRIDES", value)
    assert apply_overrides(CONFIG) == CONFIG


def test_mlx_overrides_invalid_json_message(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(workspace / "exp.json", json.dumps(CONFIG))
    monkeypatch.setenv("MLX_OVERRIDES", "{training: 5}")
    with pytest.raises(ConfigError) as info:
        load_raw(path)
    assert str(info.value) == (
        "MLX_OVERRIDES is not valid JSON (line 1, column 2: Expecting property name enclosed "
        "in double quotes). Set it to a JSON object, for example "
        """MLX_OVERRIDES='{"train": {"max_iters": 100}}'."""
    )


@pytest.mark.parametrize(
    ("value", "kind"), [("[1, 2]", "list"), ('"epochs"', "str"), ("5", "int"), ("null", "NoneType")]
)
def test_mlx_overrides_must_be_an_object(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, value: str, kind: str
) -> None:
    path = _write(workspace / "exp.json", json.dumps(CONFIG))
    monkeypatch.setenv("MLX_OVERRIDES", value)
    with pytest.raises(ConfigError) as info:
        load_raw(path)
    assert str(info.value) == f"MLX_OVERRIDES must be a JSON object, got {kind}."


def test_precedence_defaults_then_file_then_env_then_set(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        workspace / "exp.yaml", "training:\n  epochs: 2\n  batch_size: 4\n  learning_rate: 0.1\n"
    )
    monkeypatch.setenv(
        "MLX_OVERRIDES", json.dumps({"training": {"batch_size": 16, "learning_rate": 0.2}})
    )
    data = load_raw(
        path,
        defaults={"training": {"epochs": 1, "batch_size": 1, "learning_rate": 1, "seed": 3}},
        set_items=["training.learning_rate=0.3"],
    )
    assert data == {"training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.3, "seed": 3}}


def test_load_raw_applies_defaults_and_overrides_to_each_config_of_a_list(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = {**CONFIG, "name": "first"}
    second = {**CONFIG, "name": "second", "training": {"epochs": 3}}
    path = _write(workspace / "multi.json", json.dumps([first, second]))
    monkeypatch.setenv("MLX_OVERRIDES", json.dumps({"output": {"directory": "runs"}}))
    data = load_raw(path, defaults={"description": "d"}, set_items=["training.batch_size=4"])
    assert isinstance(data, list) and len(data) == 2
    assert [d["name"] for d in data] == ["first", "second"]
    for item in data:
        assert item["output"] == {"directory": "runs"}
        assert item["training"]["batch_size"] == 4
        assert item["description"] == "d"
    assert data[0]["training"]["epochs"] == 5
    assert data[1]["training"] == {"epochs": 3, "batch_size": 4}


def test_load_config_validates_and_applies_set_items(workspace: Path) -> None:
    path = _write(workspace / "exp.toml", TOML_TEXT)
    cfg = load_config(path, ExperimentConfig, set_items=["training.epochs=11"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.training.epochs == 11
    assert cfg.dataset.params.n_samples == 50


def test_load_config_rejects_a_list_file(workspace: Path) -> None:
    _write(workspace / "multi.json", json.dumps([CONFIG, CONFIG]))
    with pytest.raises(ConfigError) as info:
        load_config("multi.json", ExperimentConfig)
    assert str(info.value) == (
        "multi.json holds a list of 2 experiments; this command takes one. Use "
        "'mlx run-experiment' to run a list, or pass a file with a single experiment."
    )


# --------------------------------------------------------------------------- workspace root


def _no_marker_above(path: Path) -> bool:
    return not any(
        (p / m).exists() for p in (path, *path.parents) for m in (".git", "pyproject.toml")
    )


@pytest.mark.parametrize("marker", [".git", "pyproject.toml"])
def test_workspace_root_is_the_nearest_ancestor_with_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    monkeypatch.delenv("MLX_WORKSPACE", raising=False)
    project = tmp_path / "project"
    nested = project / "a" / "b"
    nested.mkdir(parents=True)
    if marker == ".git":
        (project / ".git").mkdir()
    else:
        (project / "pyproject.toml").touch()
    assert workspace_root(nested) == project.resolve()
    monkeypatch.chdir(nested)
    assert workspace_root() == project.resolve()


def test_workspace_root_without_marker_is_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLX_WORKSPACE", raising=False)
    if not _no_marker_above(tmp_path):
        pytest.skip("an ancestor of the temporary directory holds .git or pyproject.toml")
    assert workspace_root(tmp_path) == tmp_path.resolve()


def test_mlx_workspace_overrides_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("MLX_WORKSPACE", str(other))
    assert workspace_root(project) == other.resolve()


def test_workspace_root_resolves_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    (real / "pyproject.toml").parent.mkdir()
    (real / "pyproject.toml").touch()
    (real / "sub").mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)

    monkeypatch.setenv("MLX_WORKSPACE", str(link))
    assert workspace_root() == real.resolve()

    monkeypatch.delenv("MLX_WORKSPACE")
    assert workspace_root(link / "sub") == real.resolve()


def test_resolve_path_is_relative_to_the_workspace_not_the_cwd(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = workspace / "deep" / "er"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert resolve_path("data/x.csv") == workspace.resolve() / "data" / "x.csv"


# --------------------------------------------------------------------------- path safety


def _outside_message(path: str, resolved: Path, root: Path) -> str:
    return (
        f"Output directory '{path}' resolves to {resolved}, which is outside the workspace "
        f"root {root}. Use a path inside the workspace (for example 'runs'), or set "
        "MLX_WORKSPACE to a directory that contains it."
    )


@pytest.mark.parametrize("path", ["runs", "outputs/experiment-1", "a/../runs", ".", "./runs/x"])
def test_ensure_within_workspace_accepts_relative_paths_inside(workspace: Path, path: str) -> None:
    root = workspace.resolve()
    assert ensure_within_workspace(path) == (root / path).resolve()


def test_ensure_within_workspace_accepts_absolute_paths_inside(workspace: Path) -> None:
    root = workspace.resolve()
    assert ensure_within_workspace(str(root / "runs")) == root / "runs"
    assert ensure_within_workspace(root) == root


def test_ensure_within_workspace_rejects_parent_escape(workspace: Path) -> None:
    root = workspace.resolve()
    with pytest.raises(PathSafetyError) as info:
        ensure_within_workspace("../outside-workspace")
    assert str(info.value) == _outside_message(
        "../outside-workspace", root.parent / "outside-workspace", root
    )
    assert isinstance(info.value, ConfigError)


def test_ensure_within_workspace_rejects_absolute_paths_outside(workspace: Path) -> None:
    root = workspace.resolve()
    for path in ("/tmp/runs", str(root.parent / "sibling"), "/"):
        with pytest.raises(PathSafetyError) as info:
            ensure_within_workspace(path)
        assert str(info.value) == _outside_message(path, Path(path).resolve(), root)


def test_ensure_within_workspace_rejects_a_prefix_sibling(workspace: Path) -> None:
    # /tmp/ws-evil starts with the text /tmp/ws but is not inside it.
    root = workspace.resolve()
    sibling = str(root) + "-evil"
    with pytest.raises(PathSafetyError):
        ensure_within_workspace(sibling)


def test_ensure_within_workspace_rejects_a_symlink_pointing_outside(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside").resolve()
    (workspace / "runs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathSafetyError) as info:
        ensure_within_workspace("runs/exp")
    assert str(info.value) == _outside_message("runs/exp", outside / "exp", workspace.resolve())


def test_ensure_within_workspace_accepts_a_symlink_pointing_inside(workspace: Path) -> None:
    (workspace / "real").mkdir()
    (workspace / "alias").symlink_to(workspace / "real", target_is_directory=True)
    assert ensure_within_workspace("alias") == (workspace / "real").resolve()


def test_ensure_within_workspace_names_what_is_checked(tmp_path: Path) -> None:
    root = (tmp_path / "ws").resolve()
    root.mkdir()
    with pytest.raises(PathSafetyError) as info:
        ensure_within_workspace("../data", what="Dataset path", root=root)
    assert str(info.value).startswith(f"Dataset path '../data' resolves to {tmp_path.resolve()}")


def test_ensure_within_workspace_with_explicit_root_ignores_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLX_WORKSPACE", os.fspath(tmp_path / "elsewhere"))
    root = tmp_path / "ws"
    root.mkdir()
    assert ensure_within_workspace("runs", root=root) == root.resolve() / "runs"
