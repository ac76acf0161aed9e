"""Printing helpers shared by the bench scripts."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def section_parser(sections: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for ``--only a,b``: the named sections, each one of ``sections``."""

    def parse(value: str) -> list[str]:
        names = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [n for n in names if n not in sections]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown section(s) {', '.join(unknown) or '(none)'}; choose from "
                f"{', '.join(sections)}"
            )
        return names

    return parse
