"""The workspace root and path safety.

Runs write only inside the workspace: a config that says ``output.directory: ../../etc``
must fail before anything is created, not after a long training run.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlharness.errors import PathSafetyError

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
    return resolved
