"""Property test: no config input makes a dry run crash, hang or write (issue 14, section 3).

Hypothesis draws a kind (tabular, lm, rl), a way in (a JSON, YAML or TOML file, ``--set``
items, ``MLX_OVERRIDES``) and one to three hostile values put at schema fields or at keys of
its own: huge and deep values, inf and nan, control and bidi characters, NUL bytes, lone
surrogates, overlong names, YAML alias bombs. Whatever it draws, ``mlx``'s dry run (run in
this process) exits 0 or 1, prints no traceback, says ``Error: ...`` when it fails, writes
nothing, and answers within the example deadline of 2 s.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import tempfile
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from mlharness.cli import main  # noqa: E402
from mlharness.lm.config import LMConfig  # noqa: E402
from mlharness.rl.config import RLConfig  # noqa: E402
from mlharness.tabular.config import ExperimentConfig  # noqa: E402

BASES: dict[str, dict[str, Any]] = {
    "tabular": {
        "name": "exp",
        "dataset": {"name": "synthetic_regression", "params": {"n_features": 3}},
        "model": {"name": "linear_regression"},
        "training": {"epochs": 2},
    },
    "lm": {"name": "tiny", "prepare": {"preparer": "text", "input": "corpus.txt"}},
    "rl": {
        "kind": "rl",
        "name": "grpo",
        "model": {"model_path": "model"},
        "data": {"train_path": "train.jsonl"},
        "rewards": [{"name": "numeric_match"}],
    },
}
SCHEMAS: dict[str, type[BaseModel]] = {
    "tabular": ExperimentConfig,
    "lm": LMConfig,
    "rl": RLConfig,
}


@dataclass(frozen=True)
class Raw:
    """A value written verbatim, as text of its own in each format."""

    json: str
    yaml: str
    toml: str


def _same(text: str) -> Raw:
    return Raw(text, text, text)


_BOMB = (
    "[&a ["
    + ", ".join(['"lol"'] * 9)
    + "]"
    + "".join(
        f", &{b} [" + ", ".join([f"*{a}"] * 9) + "]" for a, b in itertools.pairwise("abcdefghi")
    )
)
RAWS = [
    _same("1" * 5000),
    _same("-" + "9" * 4301),
    _same("[" * 1000 + "]" * 1000),
    _same("[" * 40 + "]" * 40),
    Raw('{"a": ' * 600 + "1" + "}" * 600, "{a: " * 600 + "1" + "}" * 600, "{a = " * 600 + "1}"),
    Raw("null", _BOMB + "]", "0"),
    Raw("1e999", "1e999", "1e999"),
]
STRINGS = [
    "",
    "   ",
    ".",
    "..",
    "/",
    "/dev/null",
    "/dev/zero",
    "../../outside",
    "a\0b",
    "a\x1b[2Jb",
    "exp\u202egnp",
    "x\u2066y",
    "\ud800",
    "x" * 300,
    "é" * 200,
    "runs/" + "y" * 256,
    "inf",
    "-inf",
    "nan",
    "1e309",
    "FILE:/dev/null",
    "FILE:" + "z" * 300,
    "0" + "1" * 4400,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, -(2**64), 10**300, 10**4299]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zs"]), max_size=6),
    st.sampled_from(STRINGS),
    st.sampled_from(RAWS),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["name", "params"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def _types(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Annotated:
        return _types(args[0])
    if args and typing.get_origin(tp) not in (list, dict):  # a union
        return [t for a in args for t in _types(a)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def field_paths(model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field of a schema as a path, through nested models and lists of models."""
    for name, info in model.model_fields.items():
        yield (*prefix, name)
        for tp in _types(info.annotation):
            args = typing.get_args(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                yield from field_paths(tp, (*prefix, name))
            elif typing.get_origin(tp) is list and _is_model(args[0] if args else None):
                yield from field_paths(args[0], (*prefix, name, 0))


PATHS = {kind: sorted(set(field_paths(schema)), key=str) for kind, schema in SCHEMAS.items()}


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, list[tuple[tuple[Any, ...], Any]], str]:
    kind = draw(st.sampled_from(sorted(BASES)))
    path = st.sampled_from(PATHS[kind]) | st.lists(st.text(max_size=5), min_size=1, max_size=3)
    changes = draw(st.lists(st.tuples(path.map(tuple), VALUES), min_size=1, max_size=3))
    channel = draw(st.sampled_from(["json", "yaml", "toml", "set", "env"]))
    command = draw(st.sampled_from(["native", "run-experiment"]))
    return kind, channel, changes, command


# --------------------------------------------------------------------------- encoders


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.json
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}: {to_json(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def to_yaml(value: Any) -> str:
    """YAML flow style: JSON's shape with YAML's inf and nan."""
    if isinstance(value, Raw):
        return value.yaml
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}: {to_yaml(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_yaml(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value, ensure_ascii=False)


def to_toml(value: Any) -> str | None:
    """A TOML inline value, or None for null (TOML has none: the key is left out)."""
    if isinstance(value, Raw):
        return value.toml
    if value is None:
        return None
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k))} = {text}"
            for k, v in value.items()
            if (text := to_toml(v)) is not None
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(t for v in value if (t := to_toml(v)) is not None) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value, ensure_ascii=False)


def toml_document(data: dict[str, Any]) -> str:
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict) and (text := to_toml(value)) is not None:
            lines.append(f"{json.dumps(str(key))} = {text}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(str(key))}]")
            lines += [
                f"{json.dumps(str(k))} = {t}"
                for k, v in value.items()
                if (t := to_toml(v)) is not None
            ]
    return "\n".join(lines) + "\n"


def yaml_document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(k))}: {to_yaml(v)}\n" for k, v in data.items())


def put(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set ``value`` at ``path``, making mappings (and list items) on the way."""
    node: Any = data
    for part, following in itertools.pairwise(path):
        fresh: Any = [] if isinstance(following, int) else {}
        if isinstance(node, dict):
            if not isinstance(node.get(part), (dict, list)):
                node[part] = fresh
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            while len(node) <= part:
                node.append(fresh)
            node = node[part]
        else:
            return
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int):
        while len(node) <= path[-1]:
            node.append(None)
        node[path[-1]] = value


# --------------------------------------------------------------------------- running


@contextmanager
def workspace() -> Iterator[Path]:
    """A fresh workspace as the current directory and MLX_WORKSPACE, restored after."""
    saved_env = {k: os.environ.get(k) for k in ("MLX_WORKSPACE", "MLX_OVERRIDES", "MLX_DEBUG")}
    saved_cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text("[project]\nname = 'ws'\n")
        (root / "model").mkdir()
        (root / "model" / "config.json").write_text('{"model_type": "gpt2"}')
        (root / "train.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
        (root / "corpus.txt").write_text("hello world\n")
        os.environ["MLX_WORKSPACE"] = str(root)
        for key in ("MLX_OVERRIDES", "MLX_DEBUG"):
            os.environ.pop(key, None)
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(saved_cwd)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _write(path: Path, text: str) -> None:
    # Lone surrogates cannot be UTF-8: written as the bytes a careless tool would write.
    path.write_bytes(text.encode("utf-8", "surrogatepass"))


def prepare(root: Path, kind: str, channel: str, changes: list[Any]) -> list[str]:
    """Write the config and set the overrides; the ``--set`` items to pass, if any."""
    data = copy.deepcopy(BASES[kind])
    if channel in ("json", "yaml", "toml"):
        for path, value in changes:
            put(data, path, value)
        render = {"json": to_json, "yaml": yaml_document, "toml": toml_document}[channel]
        _write(root / f"config.{channel}", render(data))
        return []
    _write(root / "config.json", to_json(data))
    if channel == "env":
        overrides: dict[str, Any] = {}
        for path, value in changes:
            put(overrides, path, value)
        os.environ["MLX_OVERRIDES"] = to_json(overrides)  # ASCII: \u0000 for a NUL
        return []
    items = []
    for path, value in changes:
        text = "".join(c for c in to_yaml(value) if c != "\0")  # argv cannot hold a NUL
        items += ["--set", ".".join(str(p) for p in path) + "=" + text]
    return items


def command(kind: str, how: str, config: str, items: list[str]) -> list[str]:
    if kind == "tabular" or how == "run-experiment":
        return ["run-experiment", "--dry-run", "--config", config, *items]
    return ["train", "--config", config, "--dry-run", *items]


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Import what dry runs import before the timed examples (a cold import is not a hang)."""
    for kind in BASES:
        with workspace() as root:
            (root / "config.json").write_text(json.dumps(BASES[kind]))
            assert main(command(kind, "native", "config.json", [])) == 0


@settings(
    max_examples=150,
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_a_dry_run_exits_0_or_1_without_traceback_and_writes_nothing(
    case: tuple[str, str, list[tuple[tuple[Any, ...], Any]], str],
) -> None:
    kind, channel, changes, how = case
    with workspace() as root, _captured() as streams:
        items = prepare(root, kind, channel, changes)
        config = next(p.name for p in root.glob("config.*"))
        before = sorted(root.rglob("*"))
        code = main(command(kind, how, config, items))
        after = sorted(root.rglob("*"))
    out, err = streams
    event(f"{kind} via {channel}: exit {code}")  # shown by --hypothesis-show-statistics
    assert code in (0, 1), (code, err)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 1:
        assert err.getvalue().startswith("Error: ") or "\nError: " in err.getvalue(), err
    assert after == before, "a dry run wrote files"


@contextmanager
def _captured() -> Iterator[tuple[Any, Any]]:
    import io
    import sys

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved
