"""One exception hierarchy for every user-facing failure.

The CLI catches :class:`MlxError`, prints ``Error: <message>`` on stderr and exits 1,
so every message must be a full sentence that says what was wrong and what to do.
Subclasses also derive from the built-in exception a Python caller would expect
(``ValueError``, ``FileNotFoundError``), so library users can catch either.
"""

from __future__ import annotations


class MlxError(Exception):
    """Base class of every error the ``mlx`` command reports without a traceback."""


class ConfigError(MlxError, ValueError):
    """A configuration file is missing, unreadable, malformed or invalid."""


class ConfigValidationError(ConfigError):
    """The configuration parsed but failed validation; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Configuration validation failed:\n{lines}")


class PathSafetyError(ConfigError):
    """An output path resolves outside the workspace root."""


class DatasetError(MlxError, ValueError):
    """A dataset cannot be created, generated or loaded with the given parameters."""


class ModelError(MlxError, ValueError):
    """A model is misconfigured, or a checkpoint does not fit its architecture."""


class CheckpointError(MlxError):
    """A checkpoint is missing, incomplete or of the wrong schema."""


class EvaluationError(MlxError):
    """Evaluation cannot run: no checkpoint, no run directory, or no data."""


class RunDirectoryError(MlxError):
    """A run directory or the run index cannot be created, found or written."""


class SweepError(MlxError):
    """A sweep cannot start or go on: no Optuna, an unknown study, a metric its runs lack."""


class PeerProcessError(MlxError):
    """Another process of a ``torchrun`` job stopped, so this one cannot go on."""


def printable(text: str, limit: int | None = None) -> str:
    r"""``text`` safe to show on a terminal: control, format (bidi) and lone surrogate
    characters become ``\xNN``/``\uNNNN`` escapes, newlines and tabs stay; cut to ``limit``.

    Config values reach error messages verbatim; a name holding ``\x1b[2J`` or U+202E must
    not clear the screen or reverse the line it is shown on.
    """
    import unicodedata

    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) not in UNSAFE_CATEGORIES:
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


# Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width), surrogate, and
# line/paragraph separator characters: invisible, or able to change how a line displays.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
