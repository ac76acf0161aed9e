"""Public façade of the run history (seed API: ``from mlharness.history import list_all_runs``)."""

from mlharness.runs.index import generate_markdown_summary, get_runs_by_experiment, list_all_runs

__all__ = ["generate_markdown_summary", "get_runs_by_experiment", "list_all_runs"]
