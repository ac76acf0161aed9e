"""Run untrusted Python (model-written code) in a separate, confined process.

A policy trained with a code reward writes programs nobody has read, and sooner or later
one of them loops forever, allocates all memory, forks without end, deletes files, opens
sockets or prints whatever secrets the environment holds. Each program therefore runs in
a fresh interpreter (``sys.executable -I`` running this file as its runner), and no single
mechanism is trusted to contain it. The layers, outermost first:

1. **A separate process in its own session**, waited for with a wall-clock timeout; on
   timeout (and after every run) its whole process group is killed, so no process it
   started outlives it. Its output goes to unnamed temporary files, not pipes, so a
   program that prints without end cannot fill the caller's memory; only 8 KB (the first
   2 and the last 6) are read back.
2. **An empty temporary working directory** (deleted afterwards) and a **scrubbed
   environment** (``PATH``, ``HOME``, locale, thread counts: no tokens or keys), with ``-I``
   so no ``PYTHON*`` variable, user site or current directory changes the interpreter.
3. **Resource limits** (``setrlimit``): CPU seconds, address space, file size, process
   count, no core files. They hold whatever the code does, C extensions included.
4. **No network**: when the process may (root, or CAP_SYS_ADMIN) it moves into a new,
   empty network namespace, where not even loopback is up.
5. **Another user**: when run as root, the runner switches to ``nobody`` before the code
   runs, because root ignores RLIMIT_NPROC, can write every file and can signal every
   process. If the interpreter lives where ``nobody`` cannot read (``/root/.pyenv``), the
   runner keeps exactly one capability, CAP_DAC_READ_SEARCH (read any file), so imports
   still work; writing, signalling and everything else are those of ``nobody``.
6. **A Python audit hook** (:func:`sys.addaudithook`), installed last, refuses sockets,
   new processes (fork, exec, subprocess, os.system), signals to other processes, loading
   libraries and calling C through ctypes, gc's object walks, reading other processes'
   ``/proc`` entries, and writing, creating, renaming or deleting files outside the
   working directory. It is the only layer that also holds for an unprivileged user
   without namespaces, and it turns most attacks into a clean ``PermissionError`` instead
   of a kill. It is not a boundary against a determined attacker (ctypes' ``memmove`` is
   one import away, and numpy needs that import); layers 1-5 are there for that.

Layers 4 and 5 need privileges; without them the runner skips them silently and the
others still hold. A program *passes* iff it exits with status 0 within the limits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO

# The child runs this file too, and waits for its imports: the parent's heavier ones
# (subprocess, tempfile, threads) are made inside the functions that use them.

_OUTPUT_HEAD = 2048
_OUTPUT_TAIL = 6144
"""Bytes of stdout/stderr kept: the start (first error) and the end (traceback, markers)."""

_SETUP_FAILED = 125
"""Exit status of a runner that could not set up its confinement (status ``"error"``)."""

_NOBODY = 65534


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program; each one stops a different way of hurting the machine."""

    timeout_s: float = 5.0
    """Wall-clock seconds; catches sleeping and blocking, which use no CPU."""
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU); the process gets SIGXCPU when they are used."""
    memory_mb: int = 512
    """Address space (RLIMIT_AS); a larger allocation raises MemoryError."""
    max_file_mb: int = 8
    """Largest file the program may write (RLIMIT_FSIZE), its own output included."""
    max_processes: int = 32
    """RLIMIT_NPROC, for the sandbox user (``nobody`` when run as root, else yours)."""

    def __post_init__(self) -> None:
        least = {"cpu_s": 1, "memory_mb": 64, "max_file_mb": 1, "max_processes": 1}
        for name, value in vars(self).items():
            ok = not isinstance(value, bool) and isinstance(value, (int, float))
            if not ok or (value <= 0 if name == "timeout_s" else value < least[name]):
                from mlharness.errors import ConfigError  # not at the top: the child runs this file

                bound = "> 0" if name == "timeout_s" else f">= {least[name]}"
                raise ConfigError(
                    f"The '{name}' parameter of SandboxLimits must be a number {bound} "
                    f"(a Python interpreter needs 64 MB to start). Got {value!r} instead."
                )


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


def run_untrusted(program: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``program`` (Python source) confined; the caller survives whatever it does.

    >>> run_untrusted("print(6 * 7)").stdout
    '42\\n'
    >>> run_untrusted("while True: pass", SandboxLimits(timeout_s=0.5)).status
    'timeout'
    """
    return _run(program, limits)


def run_many(
    programs: Sequence[str], limits: SandboxLimits = SandboxLimits(), workers: int | None = None
) -> list[SandboxResult]:
    """Run ``programs`` in parallel (``workers`` at a time, default: CPU count), in order.

    Threads suffice: each one only waits for its child process.
    """
    if not programs:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    if workers == 1:
        return [_run(p, limits) for p in programs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p: _run(p, limits), programs))


# ----------------------------------------------------------------------------- parent side


def _run(program: str, limits: SandboxLimits, *, audit_hook: bool = True) -> SandboxResult:
    """:func:`run_untrusted`; tests turn ``audit_hook`` off to check the OS layers alone."""
    # subprocess is imported here, not at the top: this file is also the child's runner,
    # and a child that had imported it would hand the code _posixsubprocess.fork_exec,
    # a way to start processes that raises no audit event.
    import subprocess
    import tempfile

    uid, gid = _sandbox_user()
    workdir = tempfile.mkdtemp(prefix="mlx-sandbox-")
    try:
        if uid is not None and gid is not None:
            os.chown(workdir, uid, gid)  # the program, as nobody, must be able to write here
        settings = [
            -1 if uid is None else uid,
            -1 if gid is None else gid,
            int(limits.cpu_s),
            int(limits.memory_mb),
            int(limits.max_file_mb),
            int(limits.max_processes),
            int(audit_hook),
        ]
        runner = [sys.executable, "-I", "-X", "utf8", os.path.abspath(__file__)]
        argv = runner + [str(value) for value in settings]
        with (
            tempfile.TemporaryFile() as stdin,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            stdin.write(program.encode("utf-8", "surrogatepass"))
            stdin.seek(0)
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    cwd=workdir,
                    env=_scrubbed_env(workdir),
                    start_new_session=True,  # its own process group, killed as a whole
                    close_fds=True,
                )
            except OSError as exc:
                return SandboxResult("error", None, "", f"sandbox: cannot start: {exc}", 0.0)
            exited = _wait_without_reaping(proc.pid, limits.timeout_s)
            # The leader is still unreaped (a zombie at worst), so its process group id
            # cannot have been reused: killing the group reaches only what it started.
            _kill_group(proc.pid)
            returncode = proc.wait()
            duration = time.monotonic() - start
            stdout, stderr = _read_capped(out), _read_capped(err)
    finally:
        _remove_tree(workdir)
    return SandboxResult(_status(exited, returncode), returncode, stdout, stderr, duration)


def _status(exited: bool, returncode: int) -> str:
    if not exited or returncode == -signal.SIGXCPU:  # wall clock or CPU time used up
        return "timeout"
    if returncode == 0:
        return "passed"
    return "error" if returncode == _SETUP_FAILED else "failed"


def _sandbox_user() -> tuple[int, int] | tuple[None, None]:
    """``nobody``'s uid and gid when we are root (who must not run the code), else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, None
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return _NOBODY, _NOBODY


def _scrubbed_env(workdir: str) -> dict[str, str]:
    """Only what an interpreter needs: nothing of the caller's tokens, keys or paths."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # One thread per numeric library: threads count against max_processes.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _wait_without_reaping(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (True) or ``timeout`` passes (False), leaving it unreaped."""
    deadline = time.monotonic() + timeout
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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # all gone already
        return


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
    import shutil

    try:
        shutil.rmtree(path)
    except OSError:
        for top, dirs, _files in os.walk(path):
            for name in dirs:  # before os.walk descends into them
                os.chmod(os.path.join(top, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------ child side
# Everything below runs in the child, as ``python -I this_file LIMITS...`` with the program
# on stdin, in this order: read the program, unshare the network, set limits, change user,
# install the audit hook, run the program.

_CLONE_NEWNET = 0x40000000
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_CAP_DAC_READ_SEARCH = 2
_CAP_VERSION_3 = 0x20080522

_REFUSED_EVENTS = frozenset(
    {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    }
)  # fmt: skip
_REFUSED_PREFIXES = ("socket.", "ctypes.")
# ...except ctypes.dlopen(None), which only names this process: numpy's import needs it, and
# every use of the handle (ctypes.dlsym, ctypes.call_function) is still refused.
_REFUSED_IMPORTS = frozenset({"_posixsubprocess"})  # subprocess's unaudited fork_exec
_PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    # event: (index of a path argument, index of its dir_fd argument or None), ...
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _child_main(args: list[str]) -> None:
    try:
        uid, gid, cpu_s, memory_mb, max_file_mb, max_processes, audit_hook = map(int, args)
        source = sys.stdin.buffer.read().decode("utf-8", "replace")
        libc = _libc()
        if libc is not None:
            _unshare_network(libc)
        _set_limits(cpu_s, memory_mb, max_file_mb, max_processes)
        if uid >= 0:
            _drop_privileges(libc, uid, gid)
        # The code gets neither our ctypes (a way to call any C function) nor our state.
        del libc
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
            del sys.modules[name]
        if audit_hook:
            _install_audit_hook(os.path.realpath(os.getcwd()))
    except Exception as exc:  # a sandbox that is not set up must not run the code
        print(f"sandbox: setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        os._exit(_SETUP_FAILED)
    code = compile(source, "<program>", "exec")  # a SyntaxError exits 1 with its traceback
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def _unshare_network(libc: Any) -> None:
    # Python 3.11 has no os.unshare. Fails with EPERM when unprivileged: then the audit
    # hook alone keeps sockets closed.
    if sys.platform.startswith("linux"):
        libc.unshare(_CLONE_NEWNET)


def _set_limits(cpu_s: int, memory_mb: int, max_file_mb: int, max_processes: int) -> None:
    import resource

    mb = 1024 * 1024
    limits = [
        # Soft < hard for CPU: SIGXCPU at the soft limit, SIGKILL a second later.
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_AS, memory_mb * mb, memory_mb * mb),
        (resource.RLIMIT_FSIZE, max_file_mb * mb, max_file_mb * mb),
        (resource.RLIMIT_NPROC, max_processes, max_processes),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # an unprivileged user may only lower it
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def _drop_privileges(libc: Any, uid: int, gid: int) -> None:
    """Become ``nobody``; keep read access to files only if the interpreter needs it."""
    keep_read = libc is not None and not _interpreter_world_readable()
    if keep_read and libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if keep_read:
        import ctypes

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [(f, ctypes.c_uint32) for f in ("effective", "permitted", "inheritable")]

        bit = 1 << _CAP_DAC_READ_SEARCH
        data = (Data * 2)(Data(bit, bit, 0), Data(0, 0, 0))
        if libc.capset(ctypes.byref(Header(_CAP_VERSION_3, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH) failed")
    if libc is not None:  # no exec'd setuid binary can regain what was dropped
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError("still root after setuid")


def _interpreter_world_readable() -> bool:
    """Can any user reach the interpreter's library directories? (``/root/...``: no.)"""
    import stat

    for top in {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)}:
        path = os.path.realpath(top)
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


def _install_audit_hook(root: str) -> None:
    """Refuse, from now on, what untrusted code has no business doing (see the module doc)."""
    own_proc = f"/proc/{os.getpid()}"

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + os.sep) or path == os.devnull

    def resolve(path: Any, dir_fd: Any) -> tuple[str, str]:
        """The path's target and its directory entry, both absolute with symlinks resolved."""
        name = os.fsdecode(os.fspath(path))
        if not os.path.isabs(name) and isinstance(dir_fd, int) and dir_fd >= 0:
            name = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
        entry = os.path.join(os.path.realpath(os.path.dirname(name) or "."), os.path.basename(name))
        return os.path.realpath(name), os.path.normpath(entry)

    def check_open(path: Any, mode: Any, flags: Any) -> None:
        if isinstance(path, int):  # an already open descriptor
            return
        target, entry = resolve(path, None)
        if isinstance(flags, int):
            writing = bool(flags & _WRITE_FLAGS)
        else:
            writing = any(c in str(mode) for c in "wax+")
        if writing and not (inside(target) and inside(entry)):
            raise PermissionError(f"sandbox: writing {target} is not allowed")
        other_process = target.startswith("/proc/") and target.split("/")[2].isdigit()
        if other_process and not (target == own_proc or target.startswith(own_proc + "/")):
            raise PermissionError(f"sandbox: reading {target} is not allowed")
        # A directory descriptor outside would let dir_fd-relative calls escape the checks.
        if not inside(target) and os.path.isdir(target):
            raise PermissionError(f"sandbox: opening the directory {target} is not allowed")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _REFUSED_EVENTS or event.startswith(_REFUSED_PREFIXES):
            if event == "ctypes.dlopen" and args and args[0] is None:
                return
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in _REFUSED_IMPORTS:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            check_open(*args[:3])
        elif event in _PATH_EVENTS:
            for path_at, fd_at in _PATH_EVENTS[event]:
                path = args[path_at] if path_at < len(args) else None
                if path is None or isinstance(path, int):
                    continue
                dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
                target, entry = resolve(path, dir_fd)
                if not (inside(target) and inside(entry)):
                    raise PermissionError(f"sandbox: {event} on {target} is not allowed")

    sys.addaudithook(hook)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
