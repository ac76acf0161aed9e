"""The one progress bar of every loop a person waits for: training, GRPO, benchmarks.

A rich bar on stderr when a person watches, nothing at all otherwise (``enabled`` is False
when stderr is not a terminal, or the caller says so), so logs and pipes stay clean. One
bar may show several tasks, one line each (the benchmarks of an evaluation).
"""

from __future__ import annotations

from typing import Any


class ProgressTask:
    """One line of a :class:`ProgressBar`; every method does nothing when the bar is off."""

    def __init__(self, bar: Any, task_id: Any) -> None:
        self._bar = bar
        self._id = task_id

    def update(self, completed: int, info: str = "") -> None:
        """Set the count done (a resumed run starts past 0) and the text beside the bar."""
        if self._bar is not None:
            self._bar.update(self._id, completed=completed, info=info)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        if self._bar is not None:
            fields = {} if info is None else {"info": info}
            self._bar.update(self._id, advance=n, **fields)


class ProgressBar:
    """``with ProgressBar(enabled) as bar: task = bar.task("train", total)``.

    ``transient`` clears the bar when the block ends (the tabular loop logs its own
    summary lines); otherwise the finished bar stays on screen.
    """

    def __init__(self, enabled: bool, *, transient: bool = False) -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=transient,
            )

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def task(self, label: str, total: int, completed: int = 0) -> ProgressTask:
        """A new line on the bar, ``completed`` of ``total`` done."""
        if self._bar is None:
            return ProgressTask(None, None)
        return ProgressTask(
            self._bar, self._bar.add_task(label, total=total, completed=completed, info="")
        )
