"""``mlx lit`` in an environment without LIT (the main one): one sentence that says how to
get it, exit 1. What it serves is tested in tests/integration/test_lit.py, in .venv-lit."""

from __future__ import annotations

import importlib.util

import pytest
from e2e_helpers import Mlx

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lit_nlp") is not None,
    reason="lit-nlp is installed here: the message for its absence cannot show",
)


def test_lit_without_lit_nlp_says_how_to_get_it(mlx: Mlx) -> None:
    result = mlx("lit", "runs/tiny/20260101_000000", check=1)
    assert result.stderr == (
        "Error: LIT (lit-nlp) is not installed in this environment: run 'make lit-env', then "
        "'make lit RUN=<run dir>' or '.venv-lit/bin/mlx lit <run dir>' (docs/lit.md).\n"
    )
    assert result.stdout == ""


def test_help_lists_lit(mlx: Mlx) -> None:
    lines = mlx("--help", check=0).stdout.splitlines()
    assert any(line.split()[:3] == ["lit", "Serve", "LIT"] for line in lines if line.strip())
