"""The workspace root and path safety.

Runs write only inside the workspace: a config that says ``output.directory: ../../etc``
must fail before anything is created, not after a long training run.

Names and paths from a config also become directory and file names, and appear in messages:
:data:`SafeName`, :data:`SafePath` and :data:`SafePathText` refuse, at validation, the ones
no file system takes or no person can read (blank, control or bidi characters, over 255
bytes a component), naming the field.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from mlharness.errors import UNSAFE_CATEGORIES, PathSafetyError, printable

_MARKERS = (".git", "pyproject.toml")


def workspace_root(start: Path | None = None) -> Path:
    """The directory that relative paths resolve against and outputs must stay inside.

    ``MLX_WORKSPACE`` wins; otherwise the nearest ancestor of ``start`` (default: the
    current directory) holding ``.git`` or ``pyproject.toml``; otherwise ``start`` itself.
    Symlinks are resolved, so a link cannot smuggle a path out of the workspace.
    """
    env = os.environ.get("MLX_WORKSPACE")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in _MARKERS):
            return candidate
    return here


def resolve_path(path: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Resolve ``path`` against ``base`` (default: the workspace root), following symlinks."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (base or workspace_root()) / p
    return p.resolve()


def ensure_within_workspace(
    path: str | os.PathLike[str], what: str = "Output directory", root: Path | None = None
) -> Path:
    """Resolve ``path`` and reject it when it lies outside the workspace root."""
    root = (root or workspace_root()).resolve()
    resolved = resolve_path(path, root)
    if resolved != root and root not in resolved.parents:
        raise PathSafetyError(
            f"{what} '{path}' resolves to {resolved}, which is outside the workspace "
            f"root {root}. Use a path inside the workspace (for example 'runs'), or set "
            f"MLX_WORKSPACE to a directory that contains it."
        )
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), root)
    if not existing.is_dir():
        raise PathSafetyError(
            f"'{existing}' is not a directory: runs need a directory there. Move the file "
            f"away or set {what} ('{path}') to another directory."
        )
    return resolved


MAX_NAME_BYTES = 255
"""Longest file or directory name (one path component), in UTF-8 bytes: Linux's NAME_MAX."""
MAX_PATH_BYTES = 4096
"""Longest path, in UTF-8 bytes: Linux's PATH_MAX."""

_RESERVED = '/\\:*?"<>|'


def unsafe_char(text: str) -> str | None:
    """The first control, invisible format (bidi) or separator character of ``text``."""
    if text.isascii() and text.isprintable():
        return None
    return next((c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES), None)


def _char(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a directory name (an experiment's), or None when it can."""
    char = unsafe_char(name)
    if char is not None:
        return f"it holds the control or invisible character {_char(char)}; remove it"
    if not name.strip():
        return "it is blank"
    if name in (".", "..") or any(c in name for c in _RESERVED):
        return 'avoid / \\ : * ? " < > |'
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"it is {size:,} bytes long, and a name holds at most {MAX_NAME_BYTES} bytes"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file (blank, unsafe characters, too long), or None."""
    char = unsafe_char(path)
    if char is not None:
        return f"holds the control or invisible character {_char(char)}; remove it"
    if not path.strip():
        return "is blank; give a path, or leave the field out"
    size = len(path.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        return f"is {size:,} bytes long; a path holds at most {MAX_PATH_BYTES:,} bytes"
    for part in path.split("/"):
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            return (
                f"has a component '{printable(part, 40)}' of {size:,} bytes; a file or "
                f"directory name holds at most {MAX_NAME_BYTES} bytes"
            )
    return None


def check_name(value: Any) -> Any:
    """Pydantic validator of an experiment name (strings only; other types fail later)."""
    if isinstance(value, str):
        problem = name_problem(value)
        if problem is not None:
            shown = printable(value, 60)
            raise ValueError(f"name '{shown}' must be usable as a directory name: {problem}.")
    return value


def check_path(value: Any) -> Any:
    """Pydantic validator of a path field (a string or path; other types fail later)."""
    if isinstance(value, (str, os.PathLike)):
        problem = path_problem(os.fspath(value) if isinstance(value, str) else str(value))
        if problem is not None:
            raise ValueError(f"the path '{printable(str(value), 80)}' {problem}.")
    return value


SafeName = Annotated[str, BeforeValidator(check_name)]
"""An experiment name: a usable directory name, shown safely in messages."""
SafePath = Annotated[Path, BeforeValidator(check_path)]
"""A path field: no control or bidi characters, within the file system's length limits."""
SafePathText = Annotated[str, BeforeValidator(check_path)]
""":data:`SafePath` for fields kept as text."""
