"""Seed 001's documentation policy: every source and test folder has a ``Readme.md`` with
its scope and a folder tree that names what the folder holds, and DEVELOPMENT.md states the
quality gates and the linear-history rule."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = sorted(
    p
    for root in (REPO / "src" / "mlharness", REPO / "tests")
    for p in [root, *root.rglob("*")]
    if p.is_dir() and "__pycache__" not in p.parts and not p.name.startswith(".")
)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_folder_has_a_readme_naming_its_contents(folder: Path) -> None:
    readme = folder / "Readme.md"
    assert readme.is_file(), f"{folder.relative_to(REPO)} has no Readme.md"
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# ") and "```text" in text, f"{readme}: no title or folder tree"
    names = [p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()]
    wanted = [n for n in names if n.endswith((".py", "/")) and n not in ("__pycache__/",)]
    missing = [n for n in wanted if n not in text]
    assert not missing, f"{readme.relative_to(REPO)} does not name {missing}"


def test_development_md_states_the_gates_and_the_history_rule() -> None:
    text = (REPO / "DEVELOPMENT.md").read_text(encoding="utf-8")
    for needle in ("make setup", "make verify", "make quality", "make pyright", "make mypy",
                   "make unit-cov", "make acceptance", "make quality-ext", "Linear history",
                   "--ff-only"):  # fmt: skip
        assert needle in text, f"DEVELOPMENT.md does not mention {needle}"
