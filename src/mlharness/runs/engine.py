"""The contract every engine keeps, so the CLI needs no branch per kind of experiment.

Each kind (``tabular``, ``lm``, ``rl``) has one module, ``<kind>/engine.py``, with these
names; the CLI holds a table from kind to module (``mlharness.cli.engines``) and calls only
what is here. A Protocol, not a base class: the modules share no code, only a shape, and
mypy checks each module against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlharness.runs.describe import RunMetrics


@dataclass(frozen=True)
class EvalRequest:
    """What ``mlx eval`` was asked for; each engine reads the fields that apply to it."""

    run_dir: Path | None = None
    config: Path | None = None  # a config to use instead of the run's own
    checkpoint: str | None = None  # a checkpoint's name in the run, or its path
    metrics: list[str] | None = None  # tabular: the metrics to report
    benchmarks: list[str] = field(default_factory=list)  # rl: human_eval, gsm8k
    gsm8k_path: Path | None = None
    limit: int | None = None
    num_samples: int = 1
    max_new_tokens: int | None = None
    set_items: list[str] = field(default_factory=list)
    strict: bool = False
    dry_run: bool = False

    def existing_run_dir(self) -> Path:
        """``run_dir``, which must be given and exist: the engines that need one say so alike."""
        from mlharness.errors import EvaluationError

        if self.run_dir is None:
            raise EvaluationError("Missing option --run-dir: name the run directory to evaluate.")
        if not self.run_dir.is_dir():
            raise EvaluationError(f"Run directory not found: {self.run_dir}")
        return self.run_dir


class Engine(Protocol):
    """One kind of experiment, as the CLI sees it.

    Output a person reads (where the run went, its final numbers) is printed by the engine;
    errors are :class:`~mlharness.errors.MlxError` for the CLI to show.
    """

    METRICS: RunMetrics  # step key and headline metrics of its runs

    def load(self, path: Path, set_items: Sequence[str], strict: bool) -> Any:
        """Validate the experiment in ``path`` (with MLX_OVERRIDES and ``--set``)."""
        ...

    def from_raw(self, raw: Mapping[str, Any], source: Path, strict: bool) -> Any:
        """Validate one experiment of a file already read (``source``: that file)."""
        ...

    def check(self, config: Any) -> None:
        """What a run needs but the schema cannot see (paths, files), checked in moments."""
        ...

    def plan(self, config: Any) -> list[str]:
        """What a run would do, one line each, for ``--dry-run``; writes nothing."""
        ...

    def train(self, config: Any, *, fresh: bool = False) -> str:
        """Run the experiment end to end (resuming where the kind does); its final status."""
        ...

    def evaluate(self, request: EvalRequest) -> None:
        """Score a run's checkpoint and write ``<run>/eval/``, or show the plan on a dry run."""
        ...
