"""The Makefile a new user meets first: `make help` lists every documented target."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_documented_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    documented = re.findall(r"^([A-Za-z0-9_-]+):.*## ", makefile, re.MULTILINE)
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    listed = re.findall(r"^  make (\S+)", shown.stdout, re.MULTILINE)
    assert "e2e" in listed and "bench-sandbox" in listed
    assert listed == documented


def test_the_demo_says_how_to_call_mlx() -> None:
    """After `make demo` the bare `mlx` is not on PATH: the demo's last lines say so."""
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo"], cwd=ROOT, capture_output=True, text=True
    )
    assert "source .venv/bin/activate" in dry.stdout and ".venv/bin/mlx" in dry.stdout
