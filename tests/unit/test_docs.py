"""The docs that are generated from code stay in step with it."""

from __future__ import annotations

from pathlib import Path

from mlharness.config.reference import references

ROOT = Path(__file__).resolve().parents[2]


def test_config_references_match_the_schemas() -> None:
    for name, expected in references().items():
        actual = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert actual == expected, f"Run `python -m mlharness.config.reference` to refresh {name}."


def test_reference_lists_every_field_with_its_description() -> None:
    text = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    for field in ("n_informative", "class_sep", "layer_sizes", "checkpoint_frequency"):
        assert f"`{field}`" in text
    assert "Number of training epochs." in text


def test_readme_keeps_the_permanent_sections_unchanged() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.rstrip().endswith(
        "## License\n\nAll Agent Foundry work is licensed under the GPLv3 License - see the "
        "LICENSE file for details.\n\n## Contributing\n\nFeel free to submit issues and "
        "enhancement requests!\n\n## Author\n\nCreated by Agent Foundry and John Brosnihan"
    )
    assert "make demo" in readme and "make test" in readme
