"""Loading configs: JSON, YAML or TOML files, overrides, and validation errors people can act on.

One pipeline serves every engine: read the file (by extension), deep-merge the engine's
defaults, the file, ``MLX_OVERRIDES`` and ``--set`` items in that order, then validate with
the engine's Pydantic schema. Unknown keys are warnings with a "did you mean" (errors with
``strict``); every other problem becomes one line of :class:`ConfigValidationError`.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlharness.config import limits
from mlharness.errors import ConfigError, ConfigValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

M = TypeVar("M", bound=BaseModel)

OVERRIDES_ENV = "MLX_OVERRIDES"
SUFFIXES = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}


class ConfigWarning(UserWarning):
    """A config problem that does not stop the run (an unknown key, outside strict mode)."""


# --------------------------------------------------------------------------- reading files


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON, YAML or TOML file by its extension; syntax errors name line and column."""
    p = Path(path)
    fmt = SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"Unsupported configuration file extension '{p.suffix}' for {p}. "
            "Use a .json, .yaml, .yml or .toml file."
        )
    if not p.is_file():
        raise ConfigError(
            f"Configuration file not found: {path}\nPlease provide a valid config file path."
        )
    text = limits.read_text(p)
    data = _parse(text, fmt, p)
    limits.check_data(data, str(p))
    return data


def experiment_kind(raw: Any, default: str = "tabular") -> str:
    """Which engine a config is for: its ``kind``; without one, ``rl`` for seed 002's shape
    (``trainer`` and ``rewards`` sections), else ``default``.

    >>> experiment_kind({"trainer": {}, "rewards": []}), experiment_kind({"kind": "lm"})
    ('rl', 'lm')
    """
    if not isinstance(raw, Mapping):
        return default
    if "kind" in raw:
        return str(raw["kind"])
    return "rl" if "trainer" in raw and "rewards" in raw else default


def _parse(text: str, fmt: str, p: Path) -> Any:
    """The data in ``text``; syntax errors, and limits crossed while parsing, as ConfigError."""
    try:
        if fmt == "JSON":
            try:
                return json.loads(text, parse_int=limits.json_int)
            except json.JSONDecodeError as exc:
                raise _syntax_error(p, fmt, exc.lineno, exc.colno, exc.msg) from exc
        if fmt == "TOML":
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                line, col, msg = _toml_position(exc, text)
                raise _syntax_error(p, fmt, line, col, msg) from exc
            except ValueError as exc:  # an integer too long to convert
                if not limits.is_long_int_error(exc):
                    raise
                raise limits.long_int_error(text, str(p), toml=True) from None
        import yaml

        try:
            return limits.load_yaml(text, str(p))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            col = mark.column + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise _syntax_error(p, fmt, line, col, problem) from exc
    except RecursionError:
        raise limits.nesting_error(text, str(p), toml=fmt == "TOML") from None


_TOML_AT = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")


def _toml_position(exc: Exception, text: str) -> tuple[int | None, int | None, str]:
    """Line, column and message of a TOML error.

    ``tomllib`` before Python 3.14 has no ``lineno``/``colno``; it appends
    "(at line L, column C)" or "(at end of document)" to the message instead.
    """
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    msg = str(getattr(exc, "msg", None) or exc)
    match = _TOML_AT.search(msg)
    if match:
        msg = msg[: match.start()]
        if line is None:
            if match.group(1):
                line, col = int(match.group(1)), int(match.group(2))
            else:
                line = text.count("\n") + 1
                col = len(text) - (text.rfind("\n") + 1) + 1
    return line, col, msg


def _syntax_error(path: Path, fmt: str, line: int | None, col: int | None, msg: str) -> ConfigError:
    where = f" at line {line}, column {col}" if line is not None else ""
    return ConfigError(f"Invalid {fmt} in {path}{where}: {msg}. Fix the syntax and try again.")


# --------------------------------------------------------------------------- overrides


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: mappings merge key by key, the rest replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as the dotted keys ``--set`` takes: ``{"train": {"lr": 1}}`` ->
    ``{"train.lr": 1}``; an empty section stays a value, so nothing is lost."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_set_items(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["training.epochs=5", "model.params.layer_sizes=[4, 1]"]`` into a nested dict.

    Values are read as YAML scalars or flow collections, so ``5`` is an int, ``true`` a bool,
    ``[4, 1]`` a list and ``adam`` a string, as a person typing them would expect.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"Invalid override '{item}'. Use --set key.path=value, "
                "for example --set training.epochs=5 (tabular) or --set train.max_iters=100 (lm)."
            )
        if len(parts) > limits.MAX_DEPTH:
            raise ConfigError(
                f"Override '{limits.dotted(parts)}' is nested more than {limits.MAX_DEPTH} "
                "levels deep; a config needs a handful of levels."
            )
        value = _parse_value(raw, parts)
        limits.check_data(value, "--set", parts)
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override '{item}' conflicts with another override of '{part}'.")
        previous = node.get(parts[-1])
        if isinstance(previous, dict) and isinstance(value, dict):
            value = deep_merge(previous, value)  # as the merge into the config would
        node[parts[-1]] = value
    return result


# YAML 1.1 reads "1e-3" (no dot) as a string and "010" as octal 8; people mean 1e-3 and 10.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_LEADING_ZERO_INT = re.compile(r"[-+]?0\d+")


def _parse_value(raw: str, key: Sequence[str] = ()) -> Any:
    """One ``--set`` value: a YAML scalar or flow collection, numbers as a person means them."""
    import yaml

    text = raw.strip()
    if not text:
        return ""
    if _LEADING_ZERO_INT.fullmatch(text):
        return limits.json_int(text)  # too long: refused by check_data, naming the key
    try:
        value = limits.load_yaml(text, "--set", key)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _FLOAT.fullmatch(text):
        return float(text)
    return value


def env_overrides(var: str = OVERRIDES_ENV) -> dict[str, Any]:
    """The JSON object in ``MLX_OVERRIDES``, or an empty dict when it is unset."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw, parse_int=limits.json_int)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{var} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            f"""Set it to a JSON object, for example {var}='{{"train": {{"max_iters": 100}}}}'."""
        ) from exc
    except RecursionError:
        raise limits.nesting_error(raw, var, toml=False) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{var} must be a JSON object, got {type(value).__name__}.")
    limits.check_data(value, var)
    return value


def apply_overrides(data: Any, set_items: Sequence[str] = ()) -> Any:
    """Deep-merge ``MLX_OVERRIDES`` then ``--set`` items into one config or each of a list."""
    layers = [env_overrides(), parse_set_items(set_items)]
    if not any(layers):
        return data
    if isinstance(data, list):
        return [apply_overrides(item, set_items) for item in data]
    if not isinstance(data, Mapping):
        return data
    merged = dict(data)
    for layer in layers:
        merged = deep_merge(merged, layer)
    return merged


# --------------------------------------------------------------------------- validation


def validate(
    schema: type[M],
    data: Any,
    *,
    strict: bool = False,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate ``data`` against ``schema``; unknown keys warn (or fail when ``strict``).

    Schemas forbid extra keys, so a typo is always caught; outside strict mode the typo is
    reported as a :class:`ConfigWarning`, dropped, and validation runs again without it.
    """
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigValidationError(
            [f"The configuration must be a mapping of fields to values, got {kind}."]
        )
    data = copy.deepcopy(dict(data))
    for _ in range(50):  # every pass removes at least one unknown key
        try:
            return schema.model_validate(data, context=context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        extras = [e for e in errors if e["type"] == "extra_forbidden"]
        others = [e for e in errors if e["type"] != "extra_forbidden"]
        if strict or others:
            problems = [_describe(schema, e) for e in others]
            extra_msgs = [_describe(schema, e) for e in extras]
            if strict:
                problems += extra_msgs
            else:
                for msg in extra_msgs:
                    warnings.warn(msg, ConfigWarning, stacklevel=2)
            raise ConfigValidationError(problems)
        for error in extras:
            warnings.warn(_describe(schema, error), ConfigWarning, stacklevel=2)
            _delete(data, _data_path(schema, error["loc"]))
    raise ConfigValidationError(["Too many unknown keys in the configuration."])


def describe_errors(schema: type[BaseModel], exc: ValidationError) -> list[str]:
    """Each problem in ``exc`` as ``validate`` words it, for callers that validate Python
    arguments (not a config file) against a schema's rules."""
    return [_describe(schema, e) for e in exc.errors(include_url=False)]


def _describe(schema: type[BaseModel], error: Any) -> str:
    loc = tuple(error["loc"])
    path = _data_path(schema, loc)
    dotted = ".".join(str(p) for p in path)
    kind = error["type"]
    if kind == "missing":
        return f"Missing required field: '{dotted}'"
    if kind == "extra_forbidden":
        key = str(path[-1])
        candidates = _field_names(schema, loc[:-1])
        hint = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        where = f" in '{'.'.join(str(p) for p in path[:-1])}'" if len(path) > 1 else ""
        known = f" Known keys: {', '.join(sorted(candidates))}." if candidates and not hint else ""
        return f"Unknown configuration key '{key}'{where}{did_you_mean}.{known}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _describe_tag(schema, dotted, error)
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.startswith("value_error") or kind == "assertion_error":
        return msg if not dotted or _names_itself(msg, dotted) else f"{dotted}: {msg}"
    shown = error.get("input")
    got = f" (got {shown!r})" if not isinstance(shown, (dict, list)) else ""
    return f"Invalid value for '{dotted}': {msg}{got}"


def _names_itself(msg: str, dotted: str) -> bool:
    """True when a validator's message already starts with the field ("name 'x' must ...")."""
    rest = msg[len(dotted) : len(dotted) + 1]
    return msg.startswith(dotted) and not (rest.isalnum() or rest == "_")


def _describe_tag(schema: type[BaseModel], dotted: str, error: Any) -> str:
    ctx = error.get("ctx") or {}
    what = dotted.split(".")[-1] if dotted else "value"
    expected = [t.strip().strip("'\"") for t in str(ctx.get("expected_tags", "")).split(",")]
    expected = [t for t in expected if t] or _tags_at(schema, error["loc"])
    supported = ", ".join(expected)
    tag = ctx.get("tag")
    if tag is None:
        return f"Missing required field: '{dotted}.name'. Currently supported: {supported}"
    planned: Mapping[str, Sequence[str]] = getattr(schema, "NOT_YET_SUPPORTED", {})
    if tag in planned.get(what, ()):
        return (
            f"{what.capitalize()} '{tag}' is not yet supported.\n"
            f"    Currently supported: {supported}"
        )
    return f"Unknown {what} '{tag}'. Currently supported: {supported}"


# The error loc of a discriminated union carries the tag ("dataset", "csv", "params", ...);
# the data does not. Walking the schema alongside the loc tells the two apart.


def _walk(schema: type[BaseModel], loc: Sequence[Any]) -> tuple[list[Any], Any]:
    """Follow ``loc`` through the schema; return the data path and the type reached."""
    path: list[Any] = []
    current: Any = schema
    for part in loc:
        current = _unwrap(current)
        members = _union_members(current)
        if members and isinstance(part, str):
            tagged = [m for m in members if part in _tags(m)]
            if tagged:  # a discriminator tag: consumes no data level
                current = tagged[0]
                continue
            models = [m for m in members if _is_model(m) and part in m.model_fields]
            current = models[0] if models else None
        if _is_model(current) and isinstance(part, str) and part in current.model_fields:
            path.append(part)
            current = current.model_fields[part].annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        path.append(part)
        if origin in (list, tuple, Sequence) and args:
            current = args[0]
        elif origin in (dict, Mapping) and len(args) == 2:
            current = args[1]
        else:
            current = None
    return path, current


def _tags_at(schema: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The tags of the tagged union at ``loc`` (pydantic omits them when the tag is missing)."""
    reached = _unwrap(_walk(schema, loc)[1])
    return [str(tag) for member in _union_members(reached) for tag in _tags(member)]


def _data_path(schema: type[BaseModel], loc: Sequence[Any]) -> list[Any]:
    return _walk(schema, loc)[0]


def _field_names(schema: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    reached = _unwrap(_walk(schema, loc)[1])
    if _is_model(reached):
        return list(reached.model_fields)
    for member in _union_members(reached):
        if _is_model(member):
            return list(member.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    return []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: Any) -> tuple[Any, ...]:
    if not _is_model(model) or "name" not in model.model_fields:
        return ()
    annotation = model.model_fields["name"].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def _delete(data: Any, path: Sequence[Any]) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)


# --------------------------------------------------------------------------- the pipeline


def load_raw(
    path: str | os.PathLike[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    set_items: Sequence[str] = (),
) -> Any:
    """Read a config file and apply defaults and overrides, without validating it.

    A file may hold one config (a mapping) or a list of them (run in order); defaults and
    overrides apply to each.
    """
    data = read_config_file(path)
    if defaults:
        if isinstance(data, list):
            data = [deep_merge(defaults, d) if isinstance(d, Mapping) else d for d in data]
        elif isinstance(data, Mapping):
            data = deep_merge(defaults, data)
    return without_sweep(apply_overrides(data, set_items))


def without_sweep(data: Any) -> Any:
    """The config without its ``sweep:`` section, which ``mlx sweep`` reads and the engines'
    strict schemas would refuse: a sweep's base config trains as it is."""
    if isinstance(data, Mapping) and "sweep" in data:
        return {k: v for k, v in data.items() if k != "sweep"}
    return data


def load_config(
    path: str | os.PathLike[str],
    schema: type[M],
    *,
    defaults: Mapping[str, Any] | None = None,
    set_items: Sequence[str] = (),
    strict: bool = False,
    context: dict[str, Any] | None = None,
) -> M:
    """Read, merge and validate one config file against ``schema``."""
    data = load_raw(path, defaults=defaults, set_items=set_items)
    if isinstance(data, list):
        raise ConfigError(
            f"{path} holds a list of {len(data)} experiments; this command takes one. "
            "Use 'mlx run-experiment' to run a list, or pass a file with a single experiment."
        )
    return validate(schema, data, strict=strict, context=context)
