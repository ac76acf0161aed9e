"""The command itself: help, version, entry points, usage errors, lazy imports, --debug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import MLX_SCRIPT, REPO, Mlx, base_env, error_lines, regression, write_config

from mlharness import __version__

COMMANDS = ("run-experiment", "eval", "history", "compare")


# ----------------------------------------------------------------------------- help and version


def test_help_lists_every_command(mlx: Mlx) -> None:
    result = mlx("--help", check=0, entry="script")
    assert result.stdout.startswith("Usage: mlx ")
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout, name
    assert result.stderr == ""


@pytest.mark.parametrize("entry", ["script", "module"])
def test_version(mlx: Mlx, entry: str) -> None:
    result = mlx("--version", check=0, entry=entry)
    assert result.stdout.strip() == f"mlx (mlharness) {__version__}"


def test_bare_mlx_prints_help_and_exits_1(mlx: Mlx) -> None:
    result = mlx(check=1, entry="script")
    assert "Usage: mlx " in result.stdout
    for name in COMMANDS:
        assert name in result.stdout


def test_python_dash_m_help(mlx: Mlx) -> None:
    result = mlx("-h", check=0, entry="module")
    assert result.stdout.startswith("Usage: mlx ")
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout, name


@pytest.mark.parametrize("name", ["run-experiment", "eval"])
def test_subcommand_help(mlx: Mlx, name: str) -> None:
    result = mlx(name, "--help", check=0)
    assert result.stdout.startswith(f"Usage: mlx {name} ")


def test_console_script_is_installed_beside_python() -> None:
    assert MLX_SCRIPT.is_file(), f"{MLX_SCRIPT} is missing: is the package installed?"


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run-experiment"], "Error: Missing option '--config'"),
        (["run-experiment", "--dry-run"], "Error: Missing option '--config'"),
        (["eval"], "Error: Missing option '--run-dir'"),
        (["--bogus"], "Error: No such option: --bogus"),
        (["run-experiment", "--config", "x.json", "--frobnicate"], "No such option: --frobnicate"),
        (["frobnicate"], "Error: No such command 'frobnicate'."),
        (["compare"], "Error: Missing argument"),
        (["history", "--limit", "0"], "Error: Invalid value for '--limit'"),
        (["--log-level", "LOUD", "history"], "'LOUD' is not a log level"),
    ],
    ids=[
        "run-experiment-no-config",
        "dry-run-no-config",
        "eval-no-run-dir",
        "unknown-root-option",
        "unknown-command-option",
        "unknown-command",
        "compare-no-runs",
        "history-bad-limit",
        "bad-log-level",
    ],
)
def test_usage_errors_exit_1_not_2(mlx: Mlx, args: list[str], message: str) -> None:
    result = mlx(*args, check=1)
    assert message in result.stderr
    assert "Run 'mlx --help' for the commands and options." in result.stderr
    assert result.stderr.lstrip().startswith("Usage: mlx")


def test_usage_error_through_console_script(mlx: Mlx) -> None:
    result = mlx("eval", check=1, entry="script")
    assert error_lines(result.stderr) == ["Error: Missing option '--run-dir'."]


# ----------------------------------------------------------------------------- lazy imports

# Runs mlharness.cli.main(argv) with torch and scikit-learn made unimportable, then reports
# which of them were attempted or loaded. An attempt that some code caught and survived
# still counts: the point is that these commands never reach for them.
IMPORT_CHECK = r"""
import importlib.abc, json, sys

BLOCKED = ("torch", "sklearn")
WATCHED = ("torch", "sklearn", "numpy", "matplotlib", "pydantic", "tensorboard")
attempted = []

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempted.append(name)
            raise ImportError(f"{name} must not be imported by this command")
        return None

sys.meta_path.insert(0, Block())
from mlharness.cli import main

try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))
print("IMPORT-CHECK " + json.dumps({"attempted": attempted, "loaded": loaded}), file=sys.stderr)
sys.exit(code or 0)
"""


def import_check(ws: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, *args],
        cwd=ws,
        env=base_env(ws),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("IMPORT-CHECK ")]
    assert lines, f"no report\n{result.stdout}\n{result.stderr}"
    return result, json.loads(lines[-1].removeprefix("IMPORT-CHECK "))


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(ws: Path, option: str) -> None:
    result, report = import_check(ws, option)
    assert result.returncode == 0, result.stderr
    assert report["attempted"] == []
    assert report["loaded"] == [], "--help and --version should load only Typer"


def test_help_import_time_has_no_torch_or_sklearn(ws: Path) -> None:
    """The same, measured the way a person would: python -X importtime -m mlharness --help."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlharness", "--help"],
        cwd=ws,
        env=base_env(ws),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    modules = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "mlharness" in modules  # the measurement worked
    assert not modules & {"torch", "sklearn", "numpy", "matplotlib"}


@pytest.mark.parametrize(
    "config",
    ["tiny.json", "experiments/iris_mlp.toml"],
)
def test_dry_run_of_tabular_config_imports_no_torch_or_sklearn(ws: Path, config: str) -> None:
    if config == "tiny.json":
        write_config(ws / config, regression())
    else:
        (ws / config).parent.mkdir(exist_ok=True)
        (ws / config).write_bytes((REPO / config).read_bytes())
    result, report = import_check(ws, "run-experiment", "--dry-run", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "Validation: OK" in result.stdout
    assert report["attempted"] == [], f"dry run tried to import {report['attempted']}"
    assert "matplotlib" not in report["loaded"], "a dry run draws nothing"


# ----------------------------------------------------------------------------- --debug


@pytest.mark.parametrize(
    "args",
    [
        ["--debug", "run-experiment", "--config", "missing.json"],
        ["run-experiment", "--config", "missing.json", "--debug"],
    ],
    ids=["before-command", "after-command"],
)
def test_debug_shows_traceback(mlx: Mlx, args: list[str]) -> None:
    result = mlx(*args, check=1)
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: Configuration file not found: missing.json" in result.stderr


def test_mlx_debug_env_shows_traceback(mlx: Mlx) -> None:
    result = mlx("run-experiment", "--config", "missing.json", check=1, env={"MLX_DEBUG": "1"})
    assert "Traceback (most recent call last)" in result.stderr


def test_without_debug_no_traceback(mlx: Mlx) -> None:
    result = mlx("run-experiment", "--config", "missing.json", check=1)
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == ["Error: Configuration file not found: missing.json"]
