"""Helpers shared by the end-to-end tests: run ``mlx`` in a subprocess, write tiny configs.

Every ``mlx`` subprocess runs in a workspace directory that is both its current directory
and its ``MLX_WORKSPACE``, without ``MLX_OVERRIDES`` or ``MLX_DEBUG``; every call asserts
that no traceback was printed unless ``--debug`` (or ``MLX_DEBUG=1``) asked for one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlharness.config import deep_merge

REPO = Path(__file__).resolve().parents[2]
MLX_SCRIPT = Path(sys.executable).with_name("mlx")
UMASK = 0o022
TIMEOUT = 180


def base_env(workspace: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every ``mlx`` subprocess: ours, minus overrides, in ``workspace``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_OVERRIDES", "MLX_DEBUG")}
    env.update(
        MLX_WORKSPACE=str(workspace),
        MPLBACKEND="Agg",
        COLUMNS="100",
        NO_COLOR="1",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra or {})
    return env


def command(entry: str, args: Sequence[str]) -> list[str]:
    """``python -m mlharness ARGS`` or the ``mlx`` console script installed beside Python."""
    if entry == "module":
        return [sys.executable, "-m", "mlharness", *args]
    if entry == "script":
        return [str(MLX_SCRIPT), *args]
    raise ValueError(f"entry must be 'module' or 'script', got {entry!r}")


def show(args: Sequence[str], result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"$ mlx {' '.join(args)}\n--- exit code {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def run_mlx(
    args: Sequence[Any],
    *,
    workspace: Path,
    check: int | None = None,
    env: Mapping[str, str] | None = None,
    entry: str = "module",
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion in ``workspace``; check exit code and tracebacks."""
    argv = [str(a) for a in args]
    full_env = base_env(workspace, env)
    result = subprocess.run(
        command(entry, argv),
        cwd=workspace,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=UMASK,
    )
    if check is not None:
        assert result.returncode == check, f"exit code is not {check}\n{show(argv, result)}"
    if "--debug" not in argv and full_env.get("MLX_DEBUG") != "1":
        output = result.stdout + result.stderr
        assert "Traceback" not in output, f"unexpected traceback\n{show(argv, result)}"
    return result


def make_workspace(path: Path) -> Path:
    """A directory with a ``pyproject.toml``, so it is a workspace root even without the env."""
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text('[project]\nname = "e2e-workspace"\n', encoding="utf-8")
    return path


@dataclass
class Mlx:
    """``mlx(*args, check=None, env=None, entry="module")`` in one workspace."""

    workspace: Path

    def __call__(
        self,
        *args: Any,
        check: int | None = None,
        env: Mapping[str, str] | None = None,
        entry: str = "module",
        timeout: float = TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        return run_mlx(
            args, workspace=self.workspace, check=check, env=env, entry=entry, timeout=timeout
        )

    def popen(
        self, *args: Any, stdout: Any, stderr: Any, hook: str | None = None
    ) -> subprocess.Popen[str]:
        """Start the command without waiting for it (interruption tests); ``hook`` is Python
        source run first in the process, as :func:`run_mlx_killed`'s."""
        argv = [str(a) for a in args]
        return subprocess.Popen(
            command("module", argv) if hook is None else hooked_command(hook, argv),
            cwd=self.workspace,
            env=base_env(self.workspace),
            stdout=stdout,
            stderr=stderr,
            text=True,
            umask=UMASK,
        )


# ----------------------------------------------------------------------------- torchrun


def torchrun_argv(*args: str, nproc: int = 2) -> list[str]:
    """``torchrun --standalone --nproc_per_node=NPROC -m mlharness ARGS``: one node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "mlharness",
        *args,
    ]


def torchrun(ws: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``mlx ARGS`` as two processes on one node in ``ws``, one thread each."""
    return subprocess.run(
        torchrun_argv(*args),
        cwd=ws,
        env=base_env(ws, {"OMP_NUM_THREADS": "1"}),
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=UMASK,
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a rendezvous endpoint)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_nodes(
    workspaces: Sequence[Path],
    *args: str,
    timeout: float = 240,
    program: Sequence[str] = ("-m", "mlharness"),
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``mlx ARGS`` (or ``program ARGS``) as two torchrun "nodes" on loopback, one process
    each, with c10d rendezvous as on two machines; node ``k`` runs in ``workspaces[k]`` (the
    same path twice for a shared directory). Returns each node's result once both end.

    Each node gets an address of its own, 127.0.0.(k+1), as two machines would have: c10d
    orders nodes by address (then by the text of their process ids), so node 0 is rank 0
    whatever the ids. Node 0 alone hosts the rendezvous store, as the machine named by the
    endpoint does: on one host both nodes race to host it, and when node 1 won and its agent
    ended first, node 0's agent lost the store under it (a failed job, once in 58 launches)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
    ]
    # Files, not pipes: a node's unread pipe could fill and block it while we wait.
    with contextlib.ExitStack() as stack:
        logs = [
            tuple(stack.enter_context(tempfile.TemporaryFile("w+")) for _ in "oe")
            for _ in workspaces
        ]
        nodes = [
            subprocess.Popen(
                [
                    *argv,
                    f"--node_rank={k}",
                    f"--local-addr=127.0.0.{k + 1}",
                    f"--rdzv-conf=is_host={int(k == 0)}",
                    *program,
                    *args,
                ],
                cwd=ws,
                env=base_env(ws, {"OMP_NUM_THREADS": "1"}),
                stdout=out,
                stderr=err,
                umask=UMASK,
                start_new_session=True,  # a timeout kills each node with its workers
            )
            for k, (ws, (out, err)) in enumerate(zip(workspaces, logs, strict=True))
        ]
        hung = _wait_all(nodes, timeout)
        texts = [[_read_back(f) for f in files] for files in logs]
    shown = "\n".join(f"--- node {k}:\n{out}\n{err[-6000:]}" for k, (out, err) in enumerate(texts))
    assert not hung, f"node(s) {hung} still running after {timeout} s:\n{shown}"
    return [
        subprocess.CompletedProcess(node.args, node.returncode, out, err)
        for node, (out, err) in zip(nodes, texts, strict=True)
    ]


def _wait_all(processes: Sequence[subprocess.Popen[Any]], timeout: float) -> list[int]:
    """Wait for every process; kill the groups of those still running at the timeout and
    return their indices."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    hung = [k for k, p in enumerate(processes) if p.poll() is None]
    for k in hung:
        os.killpg(processes[k].pid, signal.SIGKILL)
        processes[k].wait()
    return hung


def _read_back(file: Any) -> str:
    file.seek(0)
    return str(file.read())


# ----------------------------------------------------------------------------- crashes


_KILL_HOOK = """
import functools, importlib, os, signal
_module = importlib.import_module({module!r})
_original = getattr(_module, {attr!r})
_calls = [0]

@functools.wraps(_original)
def _hooked(*args, **kwargs):
    _calls[0] += 1
    n = _calls[0]
    if {before!r} and ({when}):
        os.kill(os.getpid(), signal.{signal_name})
    result = _original(*args, **kwargs)
    if not {before!r} and ({when}):
        os.kill(os.getpid(), signal.{signal_name})
    return result

setattr(_module, {attr!r}, _hooked)
"""


def kill_hook(
    target: str, when: str = "True", *, before: bool = False, signal_name: str = "SIGKILL"
) -> str:
    """Python source that makes the process SIGKILL itself around a call of ``target``.

    ``target`` is ``"package.module.function"``, looked up through the module at call time
    (so it must be called as ``module.function``, or imported by name into that module).
    ``when`` is an expression over ``n`` (the call's number, from 1), ``args`` and ``kwargs``;
    the kill comes right before the call that makes it true, or right after it.
    ``signal_name`` sends another signal instead (``"SIGINT"``: a Ctrl+C at that point).
    """
    module, attr = target.rsplit(".", 1)
    return _KILL_HOOK.format(
        module=module, attr=attr, when=when, before=before, signal_name=signal_name
    )


def hooked_command(hook: str, argv: Sequence[str]) -> list[str]:
    """``mlx ARGV`` in a Python that runs the source ``hook`` first."""
    code = f"{hook}\nimport sys\nfrom mlharness.cli import main\nsys.exit(main())\n"
    return [sys.executable, "-c", code, *argv]


def run_mlx_killed(
    args: Sequence[Any], *, workspace: Path, hook: str, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``mlx ARGS`` with ``hook`` (see :func:`kill_hook`) installed first; assert that
    the process died of SIGKILL, a real one, with no chance to clean up after itself."""
    argv = [str(a) for a in args]
    result = subprocess.run(
        hooked_command(hook, argv),
        cwd=workspace,
        env=base_env(workspace),
        capture_output=True,
        text=True,
        timeout=timeout,
        umask=UMASK,
    )
    assert result.returncode == -signal.SIGKILL, f"not killed\n{show(argv, result)}"
    return result


def leftovers(root: Path) -> list[str]:
    """Hidden temporaries and set-aside directories of atomic writes anywhere under ``root``."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob(".*")
        if p.name.endswith((".tmp", ".old"))
    )


# ----------------------------------------------------------------------------- configs


REGRESSION: dict[str, Any] = {
    "name": "e2e-regression",
    "description": "tiny gradient-descent linear regression",
    "dataset": {
        "name": "synthetic_regression",
        "params": {"n_samples": 200, "n_features": 4, "noise_std": 0.1, "seed": 3},
    },
    "model": {"name": "linear_regression", "params": {"use_gradient_descent": True, "seed": 3}},
    "training": {
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 0.05,
        "optimizer": "sgd",
        "seed": 3,
    },
    "output": {"directory": "runs", "checkpoint_frequency": 2},
}

CLASSIFICATION: dict[str, Any] = {
    "name": "e2e-classification",
    "dataset": {
        "name": "synthetic_classification",
        "params": {"n_samples": 240, "n_features": 4, "n_classes": 3, "class_sep": 2.0, "seed": 5},
    },
    "model": {
        "name": "mlp",
        "params": {"layer_sizes": [4, 8, 3], "activation": "relu", "output_activation": "softmax"},
    },
    "training": {"epochs": 4, "batch_size": 32, "learning_rate": 0.01, "seed": 5},
    "output": {"directory": "runs", "checkpoint_frequency": 2},
}


def regression(**overrides: Any) -> dict[str, Any]:
    """The tiny regression config, deep-merged with ``overrides``."""
    return deep_merge(REGRESSION, overrides)


def classification(**overrides: Any) -> dict[str, Any]:
    """The tiny classification config, deep-merged with ``overrides``."""
    return deep_merge(CLASSIFICATION, overrides)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for our configs: scalars, lists of scalars and nested tables."""
    lines = []
    tables = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}{key}"
        text += f"\n[{name}]\n" + to_toml(value, prefix=name + ".")
    return text


def write_config(path: Path, data: Any) -> str:
    """Write ``data`` as JSON, YAML or TOML (by extension); return the path as a string."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(data, indent=2)
    elif suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    elif suffix == ".toml":
        text = to_toml(data)
    else:
        raise ValueError(f"unsupported config suffix {suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- run directories


def run_dirs(workspace: Path, experiment: str, output: str = "runs") -> list[Path]:
    """The run directories of ``experiment``, oldest first."""
    parent = workspace / output / experiment
    return sorted(p for p in parent.glob("*") if p.is_dir()) if parent.is_dir() else []


def single_run_dir(workspace: Path, experiment: str, output: str = "runs") -> Path:
    """The one run directory of ``experiment`` (fails when there is none or several)."""
    found = run_dirs(workspace, experiment, output)
    assert len(found) == 1, f"expected one run of {experiment}, found {found}"
    return found[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def index_runs(workspace: Path, output: str = "runs") -> list[dict[str, Any]]:
    """The entries of ``<output>/index.json``, oldest first."""
    return list(read_json(workspace / output / "index.json")["runs"])


def snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: compare two to prove nothing was written."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def error_lines(stderr: str) -> list[str]:
    """The ``Error: ...`` lines of stderr."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


@dataclass
class Trained:
    """A workspace holding one finished regression run and one classification run."""

    workspace: Path
    regression_run: Path  # absolute paths
    classification_run: Path
    regression_result: subprocess.CompletedProcess[str]  # output of the regression run

    def rel(self, path: Path) -> str:
        """``path`` relative to the workspace, as the command line would name it."""
        return path.relative_to(self.workspace).as_posix()
