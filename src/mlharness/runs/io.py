"""Atomic file and directory writes, and JSON that survives NumPy values and NaN.

Every file that matters is written to a temporary sibling, flushed, fsynced and renamed
over the target, so a crash leaves either the old file or the new one, never half of one.
What a crash can leave is a hidden sibling: ``.<name>.<8 random>.tmp`` (a write cut short,
or a directory being deleted) or ``.<name>.old`` (a complete directory being replaced);
:func:`clean_leftovers` removes the first and puts the second back where it belongs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Convert NumPy scalars/arrays, paths and tuples to JSON types; NaN and Inf become None.

    JSON has no NaN: writing ``NaN`` would make files other tools refuse, so a metric that
    diverged is recorded as ``null``.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)  # subclasses (IntEnum, ...) as plain ints
    if isinstance(value, float):  # np.float64 is a float subclass: return a plain float
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    # NumPy without importing it: scalars have .item(), arrays .tolist().
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Serialize ``value`` to strict JSON (``allow_nan=False``) after :func:`to_jsonable`."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)


# mkstemp/mkdtemp names: the prefix ".<name>.", 8 characters of [a-z0-9_], the suffix ".tmp".
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_TRASH = re.compile(r"^\.(?P<name>.+)\.old$")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files should follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented strict JSON to ``path`` atomically."""
    atomic_write_text(path, dumps(value) + "\n")


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the file ``src`` to ``dst`` atomically (a killed copy leaves no half file)."""
    atomic_write_bytes(dst, Path(src).read_bytes())


def remove_directory(path: str | os.PathLike[str]) -> None:
    """Delete a directory tree; a crash midway leaves a hidden leftover, never half a tree
    under the directory's own name (where readers would take it for a whole one).

    The tree is first renamed to ``.<name>.<random>.tmp`` (atomic), then deleted. A
    directory that does not exist is not an error.
    """
    target = Path(path)
    doomed = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.replace(target, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Undo what atomic writes killed midway left in ``directory`` (not its subdirectories).

    Temporary files and directories (``.<name>.<random>.tmp``) are deleted. A directory
    set aside while being replaced (``.<name>.old``, always complete) goes back to its name
    if the replacement never arrived, and is deleted otherwise. ``name`` limits this to the
    leftovers of that one file. Call it only where no writer is at work: a writer's
    temporary file would go too. Returns the leftovers removed or restored.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    handled = []
    for child in sorted(folder.iterdir()):
        temp, trash = _TEMP.match(child.name), _TRASH.match(child.name)
        match = temp or trash
        if match is None or (name is not None and match["name"] != name):
            continue
        is_tree = child.is_dir() and not child.is_symlink()
        if temp and is_tree:
            shutil.rmtree(child, ignore_errors=True)
        elif temp:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
        elif is_tree and not child.with_name(match["name"]).exists():
            os.replace(child, child.with_name(match["name"]))
        elif is_tree:
            remove_directory(child)
        else:
            continue  # a file named .x.old was not written by us
        handled.append(child)
    if handled:
        _fsync_dir(folder)
    return handled


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    Used for checkpoints: the files are written into a hidden sibling, fsynced, and the
    directory is renamed into place, so a reader never sees a checkpoint missing a file.
    An existing directory at ``path`` is replaced.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        if target.exists():
            # Killed between the two renames, the complete old directory waits under the
            # trash name, and clean_leftovers puts it back: so the trash is only ever
            # deleted through remove_directory, never left half deleted under that name.
            trash = target.with_name(f".{target.name}.old")
            remove_directory(trash)
            os.replace(target, trash)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(trash, target)  # put the old directory back where readers look
                raise
            remove_directory(trash)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
