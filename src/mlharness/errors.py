"""One exception hierarchy for every user-facing failure.

The CLI catches :class:`MlxError`, prints ``Error: <message>`` on stderr and exits 1,
so every message must be a full sentence that says what was wrong and what to do.
Subclasses also derive from the built-in exception a Python caller would expect
(``ValueError``, ``FileNotFoundError``), so library users can catch either.
"""

from __future__ import annotations


class MlxError(Exception):
    """Base class of every error the ``mlx`` command reports without a traceback."""


class ConfigError(MlxError, ValueError):
    """A configuration file is missing, unreadable, malformed or invalid."""


class ConfigValidationError(ConfigError):
    """The configuration parsed but failed validation; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Configuration validation failed:\n{lines}")


class PathSafetyError(ConfigError):
    """An output path resolves outside the workspace root."""


class DatasetError(MlxError, ValueError):
    """A dataset cannot be created, generated or loaded with the given parameters."""


class ModelError(MlxError, ValueError):
    """A model is misconfigured, or a checkpoint does not fit its architecture."""


class CheckpointError(MlxError):
    """A checkpoint is missing, incomplete or of the wrong schema."""


class EvaluationError(MlxError):
    """Evaluation cannot run: no checkpoint, no run directory, or no data."""


class RunDirectoryError(MlxError):
    """A run directory or the run index cannot be created, found or written."""
