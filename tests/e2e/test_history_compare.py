"""``mlx history`` (the run index as a table) and ``mlx compare`` (runs side by side)."""

from __future__ import annotations

from pathlib import Path

from e2e_helpers import Mlx, Trained, error_lines, snapshot

PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- history


def test_history_lists_every_run(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", check=0)
    out = result.stdout
    assert out.startswith("# Run history")
    assert "2 run(s)." in out
    rows = [line for line in out.splitlines() if line.startswith("| e2e-")]
    assert [row.split(" | ")[0] for row in rows] == ["| e2e-regression", "| e2e-classification"]
    assert all(" | completed | " in row for row in rows)
    assert f"`{trained.rel(trained.regression_run).removeprefix('runs/')}`" in out


def test_history_experiment_filter(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--experiment", "e2e-classification", check=0)
    assert "1 run(s)." in result.stdout
    assert "e2e-classification" in result.stdout
    assert "e2e-regression" not in result.stdout


def test_history_markdown_file(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--output-dir", "runs", "--markdown", "reports/HISTORY.md", check=0)
    written = trained.workspace / "reports" / "HISTORY.md"
    assert "Written: reports/HISTORY.md" in result.stdout
    text = written.read_text()
    assert text.startswith("# Run history")
    assert "e2e-regression" in text and "e2e-classification" in text


def test_history_unknown_experiment(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "-e", "nope", check=1)
    [message] = error_lines(result.stderr)
    assert message.startswith("Error: No runs of experiment 'nope' in ")
    assert message.endswith("Experiments there: e2e-classification, e2e-regression.")


def test_history_without_index(mlx: Mlx, ws: Path) -> None:
    result = mlx("history", check=1)
    assert error_lines(result.stderr) == [
        f"Error: No run index found in {ws / 'runs'} or {ws / 'outputs'}. Pass --output-dir "
        "with the output.directory of your experiments."
    ]
    other = mlx("history", "--output-dir", "elsewhere", check=1)
    assert "Error: No run index at elsewhere/index.json." in other.stderr


def test_history_markdown_into_a_directory(mlx: Mlx, trained: Trained) -> None:
    result = mlx("history", "--markdown", "runs", check=1)
    assert "Error: --markdown runs is a directory" in result.stderr


# ----------------------------------------------------------------------------- compare


def test_compare_two_runs(mlx: Mlx, trained: Trained) -> None:
    a, b = trained.rel(trained.regression_run), trained.rel(trained.classification_run)
    result = mlx("compare", a, b, "--output", "cmp/curves.png", "--markdown", "cmp.md", check=0)
    label_a = "/".join(a.split("/")[-2:])
    label_b = "/".join(b.split("/")[-2:])
    lines = result.stdout.splitlines()
    assert lines[0] == f"| Metric | {label_a} | {label_b} |"
    assert "| status | completed | completed |" in lines
    assert any(line.startswith("| loss | ") for line in lines)
    assert any(line.startswith("| accuracy | ") for line in lines)
    assert "Curves: cmp/curves.png" in result.stdout
    assert (trained.workspace / "cmp" / "curves.png").read_bytes()[:8] == PNG
    assert (trained.workspace / "cmp.md").read_text().startswith("# Run comparison")


def test_compare_a_directory_that_is_not_a_run(mlx: Mlx, trained: Trained) -> None:
    (trained.workspace / "plain").mkdir()
    before = snapshot(trained.workspace)
    result = mlx("compare", trained.rel(trained.regression_run), "plain", check=1)
    assert error_lines(result.stderr) == [
        "Error: plain has no metrics/metrics.json: is it a run directory of a finished or "
        "interrupted run?"
    ]
    assert snapshot(trained.workspace) == before


def test_compare_missing_run_dir(mlx: Mlx, trained: Trained) -> None:
    result = mlx("compare", trained.rel(trained.regression_run), "runs/x/y", check=1)
    assert error_lines(result.stderr) == ["Error: Run directory not found: runs/x/y"]


def test_compare_output_is_a_directory(mlx: Mlx, trained: Trained) -> None:
    result = mlx("compare", trained.rel(trained.regression_run), "-o", "runs", check=1)
    assert "Error: --output runs is a directory" in result.stderr
