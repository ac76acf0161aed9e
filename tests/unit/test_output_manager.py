"""OutputManager run directories, provenance in config.json, and the run index."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import mlharness
from mlharness.errors import RunDirectoryError
from mlharness.history import generate_markdown_summary, get_runs_by_experiment, list_all_runs
from mlharness.runs import output as output_module
from mlharness.runs.index import add_run, update_run
from mlharness.runs.output import OutputManager, git_commit
from mlharness.training import OutputManager as PublicOutputManager


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _FrozenDatetime:  # type: ignore[override]
        return cls(2024, 11, 22, 14, 30, 25, 123456)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_module, "datetime", _FrozenDatetime)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", "-C", str(cwd), *args], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


# --------------------------------------------------------------------------- layout


def test_public_import_path() -> None:
    assert PublicOutputManager is OutputManager


def test_run_directory_layout(workspace: Path, frozen: None) -> None:
    manager = OutputManager("my_experiment", base_dir="runs")
    run_dir = manager.get_run_dir()
    assert run_dir == Path("runs") / "my_experiment" / "20241122_143025"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints",
        "logs",
        "metrics",
        "summary.json",
    ]
    assert manager.get_checkpoint_dir() == run_dir / "checkpoints"
    assert manager.get_metrics_dir() == run_dir / "metrics"
    assert manager.get_logs_dir() == run_dir / "logs"
    assert manager.relative_run_dir == "my_experiment/20241122_143025"
    summary = _json(run_dir / "summary.json")
    assert summary["status"] == "running"
    assert summary["experiment"] == "my_experiment"
    assert summary["kind"] == "tabular"
    assert summary["created_at"] == "2024-11-22T14:30:25.123456"
    assert summary["run_dir"] == str(run_dir)
    assert isinstance(summary["elapsed_seconds"], float)


def test_index_entry_on_creation(workspace: Path, frozen: None) -> None:
    OutputManager("my_experiment", base_dir="runs", kind="lm")
    assert _json(workspace / "runs" / "index.json") == {
        "runs": [
            {
                "experiment": "my_experiment",
                "timestamp": "20241122_143025",
                "run_dir": "my_experiment/20241122_143025",
                "created_at": "2024-11-22T14:30:25.123456",
                "kind": "lm",
                "status": "running",
            }
        ]
    }


def test_no_index_when_not_maintained(workspace: Path) -> None:
    OutputManager("exp", base_dir="runs", maintain_index=False)
    assert not (workspace / "runs" / "index.json").exists()


def test_default_base_dir_is_outputs(workspace: Path) -> None:
    manager = OutputManager("exp")
    assert manager.run_dir.parent == Path("outputs") / "exp"
    assert (workspace / "outputs" / "index.json").is_file()


def test_nested_base_dir_is_created(workspace: Path) -> None:
    manager = OutputManager("exp", base_dir=workspace / "a" / "b" / "runs")
    assert manager.run_dir.is_dir()
    assert manager.relative_run_dir.startswith("exp/")


# --------------------------------------------------------------------------- timestamps


def test_same_second_runs_get_counter_suffixes(workspace: Path, frozen: None) -> None:
    managers = [OutputManager("exp", base_dir="runs") for _ in range(3)]
    assert [m.run_dir.name for m in managers] == [
        "20241122_143025",
        "20241122_143025_1",
        "20241122_143025_2",
    ]
    assert all(m.run_dir.is_dir() for m in managers)
    index = _json(workspace / "runs" / "index.json")["runs"]
    assert [r["run_dir"] for r in index] == [
        "exp/20241122_143025",
        "exp/20241122_143025_1",
        "exp/20241122_143025_2",
    ]
    assert [r["timestamp"] for r in index] == [m.run_dir.name for m in managers]


def test_a_leftover_directory_is_never_reused(workspace: Path, frozen: None) -> None:
    (workspace / "runs" / "exp" / "20241122_143025").mkdir(parents=True)
    (workspace / "runs" / "exp" / "20241122_143025_1").mkdir()
    assert OutputManager("exp", base_dir="runs").run_dir.name == "20241122_143025_2"


def test_experiments_do_not_collide(workspace: Path, frozen: None) -> None:
    a = OutputManager("a", base_dir="runs")
    b = OutputManager("b", base_dir="runs")
    assert a.run_dir.name == b.run_dir.name == "20241122_143025"
    assert [r["experiment"] for r in list_all_runs(workspace / "runs" / "index.json")] == [
        "a",
        "b",
    ]


# --------------------------------------------------------------------------- config.json


def test_config_json_records_provenance(workspace: Path, frozen: None) -> None:
    manager = OutputManager("exp", base_dir="runs")
    config = {"name": "exp", "training": {"epochs": 3, "seed": 7}}
    path = manager.write_config(config, seeds={"dataset": 1, "model": 2, "training": 7})
    assert path == manager.run_dir / "config.json"
    data = _json(path)
    run = data.pop("_run")
    assert data == config
    assert run["mlharness_version"] == mlharness.__version__
    assert run["seeds"] == {"dataset": 1, "model": 2, "training": 7}
    assert run["kind"] == "tabular"
    assert run["created_at"] == "2024-11-22T14:30:25.123456"
    assert isinstance(run["python"], str) and run["python"].count(".") == 2
    assert isinstance(run["command"], list)
    assert set(run) >= {"platform", "numpy", "git_commit"}


def test_git_commit_is_none_outside_git(workspace: Path) -> None:
    probe = subprocess.run(
        ["git", "-C", str(workspace), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        pytest.skip("the temporary directory is inside a git work tree")
    manager = OutputManager("exp", base_dir="runs")
    manager.write_config({"name": "exp"})
    run = _json(manager.run_dir / "config.json")["_run"]
    assert run["git_commit"] is None
    assert run["seeds"] == {}
    assert git_commit(workspace) is None


def test_git_commit_is_recorded_in_a_git_workspace(workspace: Path) -> None:
    _git(workspace, "init", "-q")
    (workspace / "train.py").write_text("print('hi')\n", encoding="utf-8")
    _git(workspace, "add", "train.py")
    _git(workspace, "commit", "-q", "-m", "init")
    head = _git(workspace, "rev-parse", "HEAD")

    manager = OutputManager("exp", base_dir="runs")  # untracked outputs do not make it dirty
    manager.write_config({"name": "exp"})
    assert _json(manager.run_dir / "config.json")["_run"]["git_commit"] == head
    assert len(head) == 40

    (workspace / "train.py").write_text("print('changed')\n", encoding="utf-8")
    assert git_commit(workspace) == f"{head}-dirty"


def test_git_repository_without_commits(workspace: Path) -> None:
    _git(workspace, "init", "-q")
    assert git_commit(workspace) is None


# --------------------------------------------------------------------------- summary, finish


def test_finish_updates_summary_and_index(workspace: Path, frozen: None) -> None:
    manager = OutputManager("exp", base_dir="runs")
    other = OutputManager("exp", base_dir="runs")
    final = {"epoch": 5, "loss": 0.25, "val_loss": float("nan")}
    manager.finish({"status": "completed", "final_metrics": final, "epochs_completed": 5})
    summary = _json(manager.run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["final_metrics"] == {"epoch": 5, "loss": 0.25, "val_loss": None}
    assert summary["epochs_completed"] == 5
    runs = list_all_runs(workspace / "runs")
    assert runs[0]["status"] == "completed"
    assert runs[0]["final_metrics"] == {"epoch": 5, "loss": 0.25, "val_loss": None}
    assert runs[0]["finished_at"] == "2024-11-22T14:30:25.123456"
    assert runs[1]["status"] == "running"  # the other run is untouched
    assert "final_metrics" not in runs[1]

    other.finish({"status": "interrupted"})
    runs = list_all_runs(workspace / "runs")
    assert runs[1]["status"] == "interrupted"
    assert runs[1]["final_metrics"] == {}


@pytest.mark.parametrize("status", ["done", None, "RUNNING"])
def test_summary_status_must_be_known(workspace: Path, status: Any) -> None:
    manager = OutputManager("exp", base_dir="runs")
    with pytest.raises(ValueError) as info:
        manager.write_summary({"status": status})
    assert str(info.value) == (
        f"status must be one of ('running', 'completed', 'failed', 'interrupted', 'crashed'), "
        f"got {status!r}"
    )


def test_finish_without_index(workspace: Path) -> None:
    manager = OutputManager("exp", base_dir="runs", maintain_index=False)
    manager.finish({"status": "failed", "error": "ValueError: x"})
    assert _json(manager.run_dir / "summary.json")["error"] == "ValueError: x"
    assert not (workspace / "runs" / "index.json").exists()


# --------------------------------------------------------------------------- permissions


def _permission_message(path: str) -> str:
    return (
        f"Permission denied: '{path}'. Make it writable (chmod u+w {path}) or set "
        "output.directory to a directory you can write to."
    )


def test_permission_denied_message(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workspace / "runs").mkdir()
    monkeypatch.setattr(output_module.os, "access", lambda *args, **kwargs: False)
    with pytest.raises(RunDirectoryError) as info:
        OutputManager("exp", base_dir="runs")
    assert str(info.value) == _permission_message("runs")
    assert not (workspace / "runs" / "exp").exists()


def test_permission_is_checked_on_the_nearest_existing_ancestor(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workspace / "data").mkdir()
    checked: list[str] = []

    def access(path: Any, mode: int) -> bool:
        checked.append(str(path))
        return False

    monkeypatch.setattr(output_module.os, "access", access)
    with pytest.raises(RunDirectoryError) as info:
        OutputManager("exp", base_dir=Path("data") / "new" / "runs")
    assert str(info.value) == _permission_message("data")
    assert checked == ["data"]


def test_permission_error_while_creating_the_run_directory(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.parent.name == "exp":
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(RunDirectoryError) as info:
        OutputManager("exp", base_dir="runs")
    assert str(info.value) == _permission_message(os.path.join("runs", "exp"))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions"
)
def test_read_only_output_directory(workspace: Path) -> None:
    runs = workspace / "runs"
    runs.mkdir()
    runs.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError) as info:
            OutputManager("exp", base_dir="runs")
        assert str(info.value) == _permission_message("runs")
    finally:
        runs.chmod(0o700)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions"
)
def test_read_only_experiment_directory(workspace: Path) -> None:
    exp = workspace / "runs" / "exp"
    exp.mkdir(parents=True)
    exp.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError) as info:
            OutputManager("exp", base_dir="runs")
        assert str(info.value) == _permission_message(os.path.join("runs", "exp"))
    finally:
        exp.chmod(0o700)


# --------------------------------------------------------------------------- the index


def _entry(experiment: str, timestamp: str, **extra: Any) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "timestamp": timestamp,
        "run_dir": f"{experiment}/{timestamp}",
        "created_at": "2024-11-22T14:30:25",
        **extra,
    }


def test_list_all_runs_and_get_runs_by_experiment(tmp_path: Path) -> None:
    index = tmp_path / "runs" / "index.json"
    assert list_all_runs(index) == []  # no index yet
    entries = [
        _entry("a", "20241122_143025"),
        _entry("b", "20241122_143026"),
        _entry("a", "20241122_143027"),
    ]
    for e in entries:
        add_run(index, e)
    assert list_all_runs(index) == entries
    assert list_all_runs(str(index)) == entries
    assert list_all_runs(index.parent) == entries  # the output directory works too
    assert get_runs_by_experiment(index, "a") == [entries[0], entries[2]]
    assert get_runs_by_experiment(index, "b") == [entries[1]]
    assert get_runs_by_experiment(index, "c") == []


def test_update_run_changes_only_the_matching_entry(tmp_path: Path) -> None:
    index = tmp_path / "index.json"
    add_run(index, _entry("a", "1"))
    add_run(index, _entry("a", "2"))
    update_run(index, "a/2", status="failed")
    assert [r.get("status") for r in list_all_runs(index)] == [None, "failed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "index.json.lock"]


def test_generate_markdown_summary(tmp_path: Path) -> None:
    runs = [
        _entry(
            "a",
            "20241122_143025",
            kind="tabular",
            status="completed",
            final_metrics={"epoch": 5, "loss": 0.123456789, "val_loss": None},
        ),
        _entry("b", "20241122_143026", kind="tabular", status="running"),
    ]
    expected = (
        "# Run history\n"
        "\n"
        "2 run(s).\n"
        "\n"
        "| Experiment | Timestamp | Kind | Status | loss | val_loss | Run directory |\n"
        "|---|---|---|---|---|---|---|\n"
        "| a | 20241122_143025 | tabular | completed | 0.123457 |  | `a/20241122_143025` |\n"
        "| b | 20241122_143026 | tabular | running |  |  | `b/20241122_143026` |\n"
    )
    assert generate_markdown_summary(runs) == expected
    out = tmp_path / "HISTORY.md"
    assert generate_markdown_summary(runs, output_path=out) == expected
    assert out.read_text(encoding="utf-8") == expected


def test_markdown_summary_of_no_runs_and_many_metrics() -> None:
    assert generate_markdown_summary([]) == (
        "# Run history\n\n0 run(s).\n\n"
        "| Experiment | Timestamp | Kind | Status | Run directory |\n|---|---|---|---|---|\n"
    )
    metrics = {f"m{i}": i for i in range(8)}
    text = generate_markdown_summary([_entry("a", "1", final_metrics=metrics)])
    assert "| m0 | m1 | m2 | m3 | m4 | m5 | Run directory |" in text  # the first six
    assert "m6" not in text


def test_markdown_summary_from_a_real_index(workspace: Path, frozen: None) -> None:
    manager = OutputManager("exp", base_dir="runs")
    manager.finish({"status": "completed", "final_metrics": {"loss": 0.5}})
    text = generate_markdown_summary(list_all_runs(workspace / "runs" / "index.json"))
    assert "| exp | 20241122_143025 | tabular | completed | 0.5 | `exp/20241122_143025` |" in text


def test_corrupt_index_message(workspace: Path, frozen: None) -> None:
    index = workspace / "runs" / "index.json"
    index.parent.mkdir()
    index.write_text("{not json", encoding="utf-8")
    expected = (
        f"The run index {Path('runs') / 'index.json'} is unreadable (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)). Move it aside; runs are "
        "untouched and new ones will start a fresh index."
    )
    with pytest.raises(RunDirectoryError) as info:
        OutputManager("exp", base_dir="runs")
    assert str(info.value) == expected
    assert index.read_text(encoding="utf-8") == "{not json"  # never overwritten
    # The directory created before the index failed says so instead of "running".
    summary = _json(workspace / "runs" / "exp" / "20241122_143025" / "summary.json")
    assert summary["status"] == "failed"
    assert summary["error"] == expected

    with pytest.raises(RunDirectoryError) as info:
        list_all_runs(index)
    assert str(info.value) == expected.replace(str(Path("runs") / "index.json"), str(index))


@pytest.mark.parametrize("content", ['{"entries": []}', "[]", '{"runs": {}}'])
def test_index_without_a_runs_list(tmp_path: Path, content: str) -> None:
    index = tmp_path / "index.json"
    index.write_text(content, encoding="utf-8")
    with pytest.raises(RunDirectoryError) as info:
        list_all_runs(index)
    assert str(info.value) == f"The run index {index} has no 'runs' list. Move it aside."


def test_elapsed_time_adds_up_across_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(output_module.time, "monotonic", lambda: now[0])
    first = OutputManager("exp", base_dir=tmp_path)
    now[0] = 160.0
    first.finish({"status": "interrupted"})
    summary = json.loads((first.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["elapsed_seconds"] == 60.0
    now[0] = 500.0  # the machine's clock went on while nothing ran
    again = OutputManager("exp", base_dir=tmp_path, resume_dir=first.run_dir)
    now[0] = 530.0
    again.finish({"status": "completed"})
    summary = json.loads((first.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["elapsed_seconds"] == 90.0  # 60 s before the stop, 30 s after the resume
