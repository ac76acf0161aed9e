"""Render a config schema as Markdown tables, so the docs come from the field descriptions.

``python -m mlharness.config.reference`` rewrites docs/config-reference.md,
docs/lm-config-reference.md and docs/rl-config-reference.md; a test fails when a file and its
schema drift apart.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mlharness.config.loading import _is_model, _union_members, _unwrap


def _type_name(tp: Any) -> str:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`" if a is not None else "null" for a in typing.get_args(tp))
    members = typing.get_args(tp) if _union_members(tp) else ()
    if members and all(_is_model(m) and _tag(m) for m in members):
        return "object, by `name`: " + ", ".join(_tag(m) for m in members)
    if members:
        return " \\| ".join(_type_name(m) if m is not type(None) else "null" for m in members)
    if origin in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if _is_model(tp):
        return "object"
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{value!r}`"
    if field.default is PydanticUndefined:
        return ""
    return "null" if field.default is None else f"`{field.default!r}`"


def _constraints(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None):
            parts.append(f"length ≥ {meta.min_length}")
    return f" ({', '.join(parts)})" if parts else ""


def model_table(model: type[BaseModel], title: str) -> list[str]:
    """One Markdown table of ``model``'s fields, then one per nested model, depth first."""
    lines = [f"### `{title}`", ""]
    if model.__doc__ and model.__module__ != "pydantic.main":
        lines += [model.__doc__.strip().splitlines()[0], ""]
    lines += ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        description = (field.description or "") + _constraints(field)
        lines.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
        )
        tp = _unwrap(field.annotation)
        candidates = _union_members(tp) or [tp]
        for member in candidates:
            if _is_model(member):
                tag = _tag(member)
                nested.append((f"{title}.{name}" + (f" ({tag})" if tag else ""), member))
            elif typing.get_origin(member) is list:  # a list of models: one table per item
                for item in typing.get_args(member):
                    if _is_model(_unwrap(item)):
                        nested.append((f"{title}.{name}[]", _unwrap(item)))
    lines.append("")
    for sub_title, sub in nested:
        lines += model_table(sub, sub_title)
    return lines


def _tag(model: type[BaseModel]) -> str:
    name = model.model_fields.get("name")
    if name is None or typing.get_origin(name.annotation) is not typing.Literal:
        return ""
    return ", ".join(str(a) for a in typing.get_args(name.annotation))


def markdown_reference(model: type[BaseModel], title: str) -> str:
    header = [
        f"# Config reference: {title}",
        "",
        "Generated from the schema by `python -m mlharness.config.reference`; do not edit by hand.",
        "Unknown keys are warnings with a suggestion (errors with `--strict`).",
        "",
    ]
    return "\n".join(header + model_table(model, "config")).rstrip() + "\n"


def references() -> dict[str, str]:
    """File name under docs/ → its generated text, one per engine."""
    from mlharness.lm.config import LMConfig
    from mlharness.rl.config import RLConfig
    from mlharness.tabular.config import ExperimentConfig

    return {
        "config-reference.md": markdown_reference(ExperimentConfig, "tabular experiments"),
        "lm-config-reference.md": markdown_reference(LMConfig, "lm experiments"),
        "rl-config-reference.md": markdown_reference(RLConfig, "rl (GRPO) experiments"),
    }


def write_references(docs: Path) -> None:
    for name, text in references().items():
        (docs / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_references(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
