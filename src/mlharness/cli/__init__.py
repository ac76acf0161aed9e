"""The ``mlx`` command: thin Typer commands that load a config and call an engine.

Nothing heavy is imported at module level: ``mlx --help`` and ``mlx --version`` load only
Typer. Every user error is an :class:`~mlharness.errors.MlxError`, printed as
``Error: ...`` on stderr with exit code 1 (usage errors too, not Click's usual 2); an
interrupted run exits 130.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from mlharness import __version__

app = typer.Typer(
    name="mlx",
    help="Run machine-learning experiments from a validated config file to a run directory "
    "you can read, compare and evaluate.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: importing rich for it would double `mlx --help` time
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, Any] = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlx (mlharness) {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", metavar="LEVEL", help="Console log level: DEBUG, INFO, WARNING, ERROR."
        ),
    ] = "INFO",
) -> None:
    _state["debug"] = debug or _state["debug"]
    _setup_logging(log_level)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(1)


# Commands live in their own modules; importing them registers them on ``app``.
from mlharness.cli import commands as _commands  # noqa: E402,F401
from mlharness.cli import lm_commands as _lm_commands  # noqa: E402,F401
from mlharness.cli import rl_commands as _rl_commands  # noqa: E402,F401
from mlharness.cli import sweep_commands as _sweep_commands  # noqa: E402,F401


class _ConsoleHandler(logging.Handler):
    """INFO to stdout as plain lines; warnings and errors to stderr, prefixed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                from mlharness.errors import printable

                msg = printable(msg)  # config values are quoted in warnings, never obeyed
            if record.levelno >= logging.ERROR:
                print(f"Error: {msg}", file=sys.stderr, flush=True)
            elif record.levelno >= logging.WARNING:
                print(f"Warning: {msg}", file=sys.stderr, flush=True)
            else:
                print(msg, flush=True)
        except Exception:  # pragma: no cover - logging must never crash a run
            self.handleError(record)


def _setup_logging(level: str) -> None:
    logger = logging.getLogger("mlharness")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(
            f"'{level}' is not a log level. Use DEBUG, INFO, WARNING or ERROR.",
            param_hint="--log-level",
        )
    logger.setLevel(numeric)
    logger.propagate = False
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        logger.warning(str(message))

    warnings.showwarning = show


def _usage_error_class() -> type[Exception]:
    # Typer vendors Click; its UsageError is the base of typer.BadParameter.
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlx`` console script; returns the process exit code."""
    from mlharness.errors import MlxError, printable
    from mlharness.runs.device import leave_job

    args = list(sys.argv[1:] if argv is None else argv)
    args = _spread_benchmarks(_hoist_log_level(_hoist_debug(args)))
    _state["debug"] = "--debug" in args or os.environ.get("MLX_DEBUG") == "1"
    command = typer.main.get_command(app)
    usage_error = _usage_error_class()
    try:
        result = command.main(args=args, prog_name="mlx", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except MlxError as exc:
        if _state["debug"]:
            raise
        print(f"Error: {printable(str(exc))}", file=sys.stderr)
        code = 1
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            print(ctx.get_usage(), file=sys.stderr)
        message = exc.format_message()  # type: ignore[attr-defined]
        print(f"Error: {message}\nRun 'mlx --help' for the commands and options.", file=sys.stderr)
        code = 1
    except OSError as exc:
        # A file or directory the user named cannot be used (a directory where a file is
        # expected, a full disk, no permission): say which, without a traceback.
        if _state["debug"]:
            raise
        print(f"Error: {printable(_describe_os_error(exc))}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        code = 130
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    leave_job(code)  # a torchrun worker ends here, without finalisation
    return code


def _hoist_debug(args: list[str]) -> list[str]:
    """Accept ``--debug`` anywhere before ``--``, as ``mlx run-experiment -c x --debug`` too.

    Click only knows the option on the root command; moving it there spares a person the
    "No such option: --debug" they would otherwise get for asking to see a traceback.
    """
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug"] + [a for i, a in enumerate(args) if i >= end or a != "--debug"]


def _hoist_log_level(args: list[str]) -> list[str]:
    """``mlx-train --config c.yaml --log-level DEBUG`` (seed 002): the root option, moved there."""
    end = args.index("--") if "--" in args else len(args)
    for i, arg in enumerate(args[:end]):
        if arg.startswith("--log-level=") and i > 0:
            return [arg, *args[:i], *args[i + 1 :]]
        if arg == "--log-level" and i > 0 and i + 1 < end:
            return [arg, args[i + 1], *args[:i], *args[i + 2 :]]
    return args


def _spread_benchmarks(args: list[str]) -> list[str]:
    """Seed 002 writes ``--benchmark human_eval gsm8k``; Click takes one value per option."""
    out: list[str] = []
    taking = False
    for arg in args:
        if arg == "--benchmark":
            taking = False
            out.append(arg)
            continue
        if out and out[-1] == "--benchmark":
            out.append(arg)
            taking = True
            continue
        if taking and not arg.startswith("-"):
            out += ["--benchmark", arg]
            continue
        taking = False
        out.append(arg)
    return out


def _alias(command: str) -> int:
    return main([command, *sys.argv[1:]])


def train_alias() -> int:
    """``mlx-train``: ``mlx train``."""
    return _alias("train")


def evaluate_alias() -> int:
    """``mlx-evaluate``: ``mlx eval``."""
    return _alias("eval")


def preprocess_alias() -> int:
    """``mlx-preprocess``: ``mlx preprocess``."""
    return _alias("preprocess")


def generate_config_alias() -> int:
    """``mlx-generate-config``: ``mlx generate-config``."""
    return _alias("generate-config")


def _describe_os_error(exc: OSError) -> str:
    """``Permission denied: 'runs'``: the system's reason and the path it concerns."""
    reason = exc.strerror or str(exc)
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    return f"{reason}: '{path}'" if path is not None else reason
