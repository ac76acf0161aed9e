"""Bounds on config input: file size, nesting, number of values, integer length, YAML aliases.

A config is a few kilobytes of settings a person wrote. Input far outside that shape (a 50 MB
file, a YAML "billion laughs" alias bomb, lists nested 1,000 deep, an integer of 5,000
digits) is refused here, before it can hang the command or crash a parser with a traceback.
Every refusal is a :class:`~mlharness.errors.ConfigError` that names the source, the field
(a dotted path such as ``training.params.beta1`` or ``rewards[0].config``) and the limit.
The limits are documented in docs/security.md.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import ConfigError, printable

if TYPE_CHECKING:
    import yaml

MAX_CONFIG_BYTES = 256 * 1024
"""Largest config file read (256 KiB; real configs are a few KiB). PyYAML and tomllib parse
in pure Python, under 1 MB/s: this bound also keeps every load well under a second."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists (a real config needs 3 to 6 levels)."""
MAX_VALUES = 10_000
"""Most values (mappings, lists and scalars, YAML aliases expanded) in one config source."""
MAX_INT_DIGITS = 4_300
"""Longest integer, in decimal digits: Python's own limit on converting text to int."""

_INT_BOUND = 10**MAX_INT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")
_YAML_INT_TAG = "tag:yaml.org,2002:int"


@dataclass(frozen=True)
class LongInt:
    """An integer literal too long to convert, as parsed (JSON); refused by :func:`check_data`."""

    digits: int


def json_int(text: str) -> int | LongInt:
    """``json.loads(..., parse_int=json_int)``: long literals become :class:`LongInt`."""
    digits = len(text.lstrip("+-"))
    return LongInt(digits) if digits > MAX_INT_DIGITS else int(text)


# --------------------------------------------------------------------------- reading


def read_text(path: Path) -> str:
    """The text of a config file of at most :data:`MAX_CONFIG_BYTES`, as UTF-8."""
    try:
        with path.open("rb") as f:  # never more than the bound, whatever the file claims
            data = f.read(MAX_CONFIG_BYTES + 1)
            size = max(len(data), os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise ConfigError(f"Cannot read configuration file {path}: {exc.strerror or exc}.") from exc
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"Configuration file {path} is {_size(size)}; a config file may hold at most "
            f"{_size(MAX_CONFIG_BYTES)}. Keep data (prompts, tables, text) in data files and "
            "point the config at them."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read configuration file {path}: {exc}.") from exc


def _size(n: int) -> str:
    return f"{n / 1024:,.0f} KiB ({n:,} bytes)" if n < 1024 * 1024 else f"{n / 2**20:,.1f} MiB"


# --------------------------------------------------------------------------- parsed data


_ELIDED = object()


def dotted(path: Sequence[Any]) -> str:
    """``("rewards", 0, "config")`` -> ``rewards[0].config``; long paths are elided."""
    shown = list(path)
    if len(shown) > 8:
        shown = [*shown[:6], _ELIDED, shown[-1]]
    text = ""
    for part in shown:
        if part is _ELIDED:
            text += "..."
        elif isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            dot = "." if text and not text.endswith("...") else ""
            text += dot + printable(str(part), 40)
    return text or "(top level)"


def check_data(data: Any, source: str, prefix: Sequence[Any] = ()) -> None:
    """Refuse parsed config data that no schema should see (``source`` names it in messages).

    Walks without recursion: at most :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values
    (shared YAML aliases count each time they appear), integers of at most
    :data:`MAX_INT_DIGITS` digits, and no text holding a NUL byte or a lone surrogate (no
    file name, and no UTF-8 text, can hold them).
    """
    count = 0
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, tuple(prefix))]
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _too_many(source, path)
        if len(path) > MAX_DEPTH:
            raise _too_deep(source, path)
        if isinstance(value, Mapping):
            for key, item in value.items():
                _check_scalar(key, source, (*path, key))
                stack.append((item, (*path, key)))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        else:
            _check_scalar(value, source, path)


def _check_scalar(value: Any, source: str, path: tuple[Any, ...]) -> None:
    where = f"'{dotted(path)}' in {source}"
    if isinstance(value, LongInt):
        raise _long_int(where, value.digits)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_BOUND:
        raise _long_int(where, None)
    if isinstance(value, str):
        if "\0" in value:
            raise ConfigError(
                f"{where} holds a NUL byte (\\x00), which no path, name or text setting can "
                "hold. Remove it."
            )
        if not value.isascii() and _SURROGATE.search(value):
            raise ConfigError(
                f"{where} holds a lone surrogate ({printable(_SURROGATE.findall(value)[0])}), "
                "which is not valid Unicode text. Write the character itself, or a valid "
                "surrogate pair."
            )


def _long_int(where: str, digits: int | None) -> ConfigError:
    size = f"of {digits:,} digits" if digits else f"of more than {MAX_INT_DIGITS:,} digits"
    return ConfigError(
        f"{where} is an integer {size}; integers in a config have at most "
        f"{MAX_INT_DIGITS:,} digits. Use a smaller value."
    )


def _too_deep(source: str, path: Sequence[Any], at: str = "") -> ConfigError:
    return ConfigError(
        f"'{dotted(path)}' in {source}{at} is nested more than {MAX_DEPTH} levels deep; a "
        "config needs a handful of levels. Flatten the value."
    )


# --------------------------------------------------------------------------- YAML


def load_yaml(text: str, source: str, prefix: Sequence[Any] = ()) -> Any:
    """``yaml.safe_load`` within the limits, checked before any Python object is built.

    The parser's events are read first, stopping at :data:`MAX_DEPTH` levels or
    :data:`MAX_VALUES` values whatever the text's size; the nodes composed from them are
    then checked with aliases expanded, so an alias bomb costs its (small) text and nothing
    more. Syntax errors stay ``yaml.YAMLError``. ``prefix`` is where the text's value goes
    (a ``--set`` key), for messages and depth.
    """
    import yaml

    parser = yaml.SafeLoader(text)
    try:
        events = _checked_events(parser, source, tuple(prefix))
    finally:
        parser.dispose()
    loader = _replay_class()(events)
    node = loader.get_single_node()
    if node is None:
        return None
    _check_yaml_nodes(node, source, tuple(prefix))
    return loader.construct_document(node)


@functools.cache
def _replay_class() -> type[Any]:
    """PyYAML's safe composer and constructor, fed with events already read and checked."""
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class Replay(Composer, SafeConstructor, Resolver):
        def __init__(self, events: list[Any]) -> None:
            self.events = events
            self.position = 0
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def check_event(self, *choices: Any) -> bool:
            if self.position >= len(self.events):
                return False
            return not choices or isinstance(self.events[self.position], choices)

        def peek_event(self) -> Any:
            return self.events[self.position]

        def get_event(self) -> Any:
            self.position += 1
            return self.events[self.position - 1]

    return Replay


def _checked_events(parser: Any, source: str, prefix: tuple[Any, ...]) -> list[Any]:
    """The parser's events, refused past the depth or the number of nodes (aliases count
    once each here; :func:`_check_yaml_nodes` counts them expanded)."""
    import yaml

    events = []
    count = 0
    frames: list[list[Any]] = []  # [is_mapping, key or index, expecting a key]
    while parser.check_event():
        event = parser.get_event()
        events.append(event)
        if isinstance(event, yaml.CollectionEndEvent):
            frames.pop()
            _node_done(frames)
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        count += 1
        if frames and frames[-1][0] and frames[-1][2]:  # a mapping's key
            value = getattr(event, "value", None)
            frames[-1][1] = value if isinstance(value, str) else "?"
        path = (*prefix, *(f[1] for f in frames))
        if count > MAX_VALUES:
            raise _too_many(source, path)
        if len(path) > MAX_DEPTH:
            raise _too_deep(source, path)
        if isinstance(event, yaml.CollectionStartEvent):
            is_mapping = isinstance(event, yaml.MappingStartEvent)
            frames.append([is_mapping, "?" if is_mapping else 0, True])
        else:
            _node_done(frames)
    return events


def _node_done(frames: list[list[Any]]) -> None:
    """A node ended inside ``frames[-1]``: the next is a value, a key or the next item."""
    if not frames:
        return
    frame = frames[-1]
    if frame[0]:
        frame[2] = not frame[2]
    else:
        frame[1] += 1


def _too_many(source: str, path: Sequence[Any]) -> ConfigError:
    return ConfigError(
        f"{source} holds more than {MAX_VALUES:,} values (reached at '{dotted(path)}'). A "
        "config holds settings: keep data in data files."
    )


def _check_yaml_nodes(root: yaml.Node, source: str, prefix: tuple[Any, ...]) -> None:
    """Depth, expanded size, self-reference and integer length of a composed YAML document."""
    import yaml

    count = 0
    stack: list[tuple[yaml.Node, tuple[Any, ...], tuple[int, ...]]] = [(root, prefix, ())]
    while stack:
        node, path, ancestors = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source} expands to more than {MAX_VALUES:,} values (reached at "
                f"'{dotted(path)}'). YAML aliases (*name) repeat their anchor's whole value "
                "each time they appear: write the values out, or use fewer aliases."
            )
        if len(path) > MAX_DEPTH:
            raise _too_deep(source, path)
        if id(node) in ancestors:
            raise ConfigError(
                f"'{dotted(path)}' in {source} refers to itself through a YAML alias; a config "
                "value cannot contain itself."
            )
        if isinstance(node, yaml.ScalarNode):
            literal = re.sub(r"^[-+]?0[xob]|[^0-9a-fA-F]", "", str(node.value))
            digits = len(literal)
            if node.tag == _YAML_INT_TAG and digits > MAX_INT_DIGITS:
                raise _long_int(f"'{dotted(path)}' in {source}", digits)
            continue
        inner = (*ancestors, id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i), inner) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key, item in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((key, (*path, name), inner))
                stack.append((item, (*path, name), inner))


# --------------------------------------------------------------------------- locating


@dataclass(frozen=True)
class Site:
    """Where in a config's text a limit is crossed: line, column and dotted path."""

    kind: str  # "depth" or "int"
    line: int
    column: int
    path: tuple[Any, ...]


_TOKEN = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*'
    r"|[\[\]{},:=\n]|[^\s\[\]{},:=\"'#]+"
)


def locate(text: str, *, toml: bool) -> Site | None:
    """Find the first place where nesting passes :data:`MAX_DEPTH` or an integer literal
    passes :data:`MAX_INT_DIGITS`, in JSON, YAML flow or TOML text, with the keys leading
    there. For messages when a parser itself gave up (``RecursionError``, an integer too
    long to convert), which say neither where nor in which field.
    """
    frames: list[list[Any]] = []  # [opener, key or index] of each open [ or {
    table: list[str] = []  # the current TOML [table] header
    top: Any = None  # the key being assigned outside any bracket
    header = False  # inside a TOML [table] header
    last: Any = None
    line_start = True
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "\n" or token.startswith("#"):
            line_start = line_start or token == "\n"
            continue
        if toml and token == "[" and (header or (line_start and not frames)):
            header, table, top = True, [], None
        elif header and token == "]":
            header = False
        elif header:
            table = [*table, *(p.strip().strip("\"'") for p in token.split("."))]
        elif token in "[{":
            frames.append([token, 0 if token == "[" else None])
            if len(frames) > MAX_DEPTH:
                return _site("depth", text, match.start(), [*table, top], frames)
        elif token in "]}":
            if frames:
                frames.pop()
        elif token == ",":
            if frames:
                frames[-1][1] = (frames[-1][1] or 0) + 1 if frames[-1][0] == "[" else None
        elif token in ":=":
            if frames and frames[-1][0] == "{":
                frames[-1][1] = last
            elif not frames:
                top = last
        elif token[0] not in "\"'" and _digits(token) > MAX_INT_DIGITS:
            return _site("int", text, match.start(), [*table, top], [*frames, ["", None]])
        else:
            last = token.strip("\"'")
        line_start = False
    return None


def _digits(token: str) -> int:
    return sum(c.isdigit() for c in token) if token.lstrip("+-")[:1].isdigit() else 0


def _site(kind: str, text: str, pos: int, outer: list[Any], frames: list[list[Any]]) -> Site:
    """The site at ``pos``: the keys outside brackets, then each enclosing bracket's key."""
    keys = [k for k in outer if k is not None]
    keys += [f[1] if f[1] is not None else "?" for f in frames[:-1]]
    line = text.count("\n", 0, pos) + 1
    return Site(kind, line, pos - (text.rfind("\n", 0, pos) + 1) + 1, tuple(keys))


def nesting_error(text: str, source: str, *, toml: bool) -> ConfigError:
    """The message for a parser's ``RecursionError``: where the nesting passed the bound."""
    site = locate(text, toml=toml)
    if site is None or site.kind != "depth":
        return ConfigError(
            f"{source} is nested too deeply to read; a config needs a handful of levels "
            f"(at most {MAX_DEPTH}). Flatten it."
        )
    return _too_deep(source, site.path, f" (line {site.line}, column {site.column})")


def long_int_error(text: str, source: str, *, toml: bool) -> ConfigError:
    """The message for a parser's "Exceeds the limit ... for integer string conversion"."""
    site = locate(text, toml=toml)
    if site is None or site.kind != "int":
        return ConfigError(
            f"{source} holds an integer of more than {MAX_INT_DIGITS:,} digits, the most a "
            "config may hold. Use a smaller value."
        )
    return _long_int(
        f"'{dotted(site.path)}' in {source} (line {site.line}, column {site.column})", None
    )


def is_long_int_error(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "integer string conversion" in str(exc)
