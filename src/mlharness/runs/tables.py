"""Markdown tables for metrics.md, ``mlx history`` and ``mlx compare``.

>>> print("\\n".join(table(["a", "b"], [["1", "2|3"]])))
| a | b |
|---|---|
| 1 | 2\\|3 |
>>> column_groups(["step", "a", "b", "c"], "step", width=3)
[['step', 'a', 'b'], ['step', 'c']]
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_COLUMNS = 8  # a wider table wraps on most screens; it is split, the step column repeated


def cell(text: str) -> str:
    """A table cell: a pipe would end the cell early and a newline the row."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of one Markdown table."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def column_groups(
    keys: Sequence[str], step_key: str | None, width: int = MAX_COLUMNS
) -> list[list[str]]:
    """Split ``keys`` into groups of at most ``width`` columns, each led by ``step_key``.

    ``step_key`` None (or not among ``keys``): plain chunks of ``width``.
    """
    lead = [step_key] if step_key is not None and step_key in keys else []
    rest = [k for k in keys if k not in lead]
    size = max(1, width - len(lead))
    chunks = [rest[i : i + size] for i in range(0, len(rest), size)] or [[]]
    return [lead + chunk for chunk in chunks]
