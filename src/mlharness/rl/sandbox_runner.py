"""The sandboxed side of :mod:`mlharness.rl.sandbox`: runs inside the confined process.

This file runs as a script (``python -I sandbox_runner.py MODE SETTINGS``), inside
bubblewrap or, with the ``process`` backend, as a plain child process. It imports only the
standard library: inside bubblewrap the project's own source is not even visible. Order
matters: read the input, set the limits, give up root, (``process`` backend only) install
the audit hook, and only then run untrusted code.

Three modes:

- ``program``: run a program; it passes iff it exits with status 0.
- ``candidate``: define a solution's functions, then answer calls to them that arrive as
  JSON lines on one pipe, on another. Nothing but data crosses: arguments and results are
  encoded by :func:`encode` (numbers, strings, lists, tuples, dicts, sets, bytes, None).
- ``tests``: run trusted test code against proxies of the candidate's functions and write
  one verdict line per test to a result file the candidate cannot reach. Because the tests
  and the candidate never share an interpreter, a solution can neither read the tests nor
  their frames, nor print, patch or exit its way to a pass.
"""

from __future__ import annotations

import builtins
import json
import os
import sys

TYPE_CHECKING = False  # importing typing costs every program 5-8 ms of start-up
if TYPE_CHECKING:
    from typing import Any

SETUP_FAILED = 125
"""Exit status of a runner that could not set up its confinement (never the code's)."""

MAX_DEPTH = 100
"""How deeply nested a value may be to cross between the processes."""

MAX_MESSAGE = 64 * 1024 * 1024
"""Longest message line between the processes; a longer answer fails that call."""


# ------------------------------------------------------------------------------- the data


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data; raises TypeError for anything but plain data.

    Lists stay arrays; tuples, sets, dicts (any hashable keys), bytes and complex numbers
    become one-key objects, so ``(1, 2)`` does not come back as ``[1, 2]``.
    """
    if depth > MAX_DEPTH:
        raise TypeError("the value is nested too deeply to cross the sandbox")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    kids = depth + 1
    if isinstance(value, list):
        return [encode(v, kids) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(v, kids) for v in value]}
    if isinstance(value, (set, frozenset)):
        tag = "set" if isinstance(value, set) else "frozenset"
        return {tag: [encode(v, kids) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, kids), encode(v, kids)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if callable(getattr(value, "tolist", None)):  # numpy arrays and scalars
        return encode(value.tolist(), kids)
    raise TypeError(f"a {type(value).__name__} cannot cross the sandbox (only plain data can)")


def decode(data: Any, depth: int = 0) -> Any:
    """The value :func:`encode` made; builds only built-in types, whatever ``data`` holds."""
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    kids = depth + 1
    if type(data) is list:
        return [decode(v, kids) for v in data]
    if type(data) is dict and len(data) == 1:
        ((tag, inner),) = data.items()
        if tag == "bytes" and type(inner) is str:
            return bytes.fromhex(inner)
        if tag == "complex" and type(inner) is list and len(inner) == 2:
            return complex(float(inner[0]), float(inner[1]))
        if type(inner) is list:
            items = [decode(v, kids) for v in inner]
            if tag == "tuple":
                return tuple(items)
            if tag == "set":
                return set(items)
            if tag == "frozenset":
                return frozenset(items)
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
                return {k: v for k, v in items}
    raise ValueError("malformed data from the sandboxed solution")


# ---------------------------------------------------------------------------- confinement


def set_limits(settings: dict[str, Any]) -> None:
    import resource

    mb = 1024 * 1024
    cpu = int(settings["cpu_s"])
    memory = int(settings["memory_mb"]) * mb
    file_size = int(settings["max_file_mb"]) * mb
    nproc = int(settings["max_processes"])
    limits = [
        # Soft < hard for CPU: SIGXCPU at the soft limit, SIGKILL a second later.
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, memory, memory),
        (resource.RLIMIT_FSIZE, file_size, file_size),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # an unprivileged user may only lower it
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def drop_root(uid: int, gid: int, keep_read: bool) -> None:
    """Become ``uid`` (``nobody``); the kernel clears every capability as we leave root.

    ``keep_read`` (the ``process`` backend, when the interpreter lives where ``nobody``
    cannot read, such as ``/root``) keeps CAP_DAC_READ_SEARCH so imports still work.
    Inside bubblewrap it is never needed: the sandbox shows the interpreter on open paths.
    """
    libc = _libc() if keep_read else None
    if libc is not None and libc.prctl(8, 1, 0, 0, 0) != 0:  # PR_SET_KEEPCAPS
        raise OSError("prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if libc is not None:
        _keep_read_capability(libc)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary regains root
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError("still root after setuid")


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _keep_read_capability(libc: Any) -> None:
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(f, ctypes.c_uint32) for f in ("effective", "permitted", "inheritable")]

    bit = 1 << 2  # CAP_DAC_READ_SEARCH
    data = (Data * 2)(Data(bit, bit, 0), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:  # _LINUX_CAPABILITY_VERSION_3
        raise OSError(ctypes.get_errno(), "capset(CAP_DAC_READ_SEARCH) failed")


def unshare_network() -> None:
    """A new, empty network namespace (``process`` backend, when privileged)."""
    if sys.platform.startswith("linux"):
        _libc().unshare(0x40000000)  # CLONE_NEWNET; fails quietly when unprivileged


def confine(settings: dict[str, Any]) -> None:
    if settings.get("unshare_net"):
        unshare_network()
    set_limits(settings)
    if settings.get("uid") is not None:
        drop_root(int(settings["uid"]), int(settings["gid"]), bool(settings.get("keep_read")))
    # The code gets neither our ctypes (a way to call any C function) nor our state.
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
        del sys.modules[name]
    if settings.get("audit_hook"):
        install_audit_hook(os.path.realpath(os.getcwd()))


def _audit_tables() -> tuple[frozenset[str], tuple[str, ...], dict[str, tuple[int, ...]]]:
    """What the hook refuses: events, event prefixes, and path events with their path args."""
    refused = frozenset(
        {
            "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        }
    )  # fmt: skip
    prefixes = ("socket.", "ctypes.")
    paths = {  # event: the positions of its path arguments
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
        "os.chown": (0,), "os.utime": (0,), "os.truncate": (0,), "os.rename": (0, 1),
        "os.link": (0, 1), "os.symlink": (1,), "os.setxattr": (0,), "os.removexattr": (0,),
        "shutil.rmtree": (0,),
    }  # fmt: skip
    return refused, prefixes, paths


def install_audit_hook(root: str) -> None:
    """The ``process`` backend's last layer: refuse what untrusted code has no business doing.

    Sockets, new processes, signals, ctypes, gc's object walks, other processes' ``/proc``,
    and writes outside the working directory raise PermissionError. Its tables live in
    this closure, not in module globals the code could reassign; still, it is no boundary
    against a determined attacker (ctypes' memmove is one import away and numpy needs it):
    that is what the bwrap backend is for.
    """
    refused, prefixes, paths = _audit_tables()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, isabs, isdir = os.path.realpath, os.path.isabs, os.path.isdir
    fspath, fsdecode, devnull = os.fspath, os.fsdecode, os.devnull
    own_proc = f"/proc/{os.getpid()}"

    def outside(path: Any) -> bool:
        if isinstance(path, int):  # an open descriptor: opened under this hook's checks
            return False
        name = fsdecode(fspath(path))
        if not isabs(name):  # relative to cwd only: dir_fd-relative paths are refused below
            name = root + "/" + name
        target = realpath(name)
        return not (target in (root, devnull) or target.startswith(root + "/"))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in refused or event.startswith(prefixes):
            if event == "ctypes.dlopen" and args and args[0] is None:
                return  # numpy's import names this process; every use is still refused
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] == "_posixsubprocess":
            raise PermissionError("sandbox: importing _posixsubprocess is not allowed")
        if event == "open" and not isinstance(args[0], int):
            flags, mode = args[2], args[1]
            writing = (
                bool(flags & write_flags)
                if isinstance(flags, int)
                else any(c in str(mode) for c in "wax+")
            )
            name = str(fsdecode(fspath(args[0])))
            if writing and outside(args[0]):
                raise PermissionError(f"sandbox: writing {name} is not allowed")
            if name.startswith("/proc/") and not name.startswith((own_proc, "/proc/self")):
                raise PermissionError(f"sandbox: reading {name} is not allowed")
            if outside(args[0]) and isdir(name):  # a dir_fd there would escape
                raise PermissionError(f"sandbox: opening the directory {name} is not allowed")
        elif event in paths:
            for at in paths[event]:
                if at < len(args) and args[at] is not None and outside(args[at]):
                    raise PermissionError(f"sandbox: {event} outside the working directory")

    sys.addaudithook(hook)


# ---------------------------------------------------------------------------------- modes


def run_program(source: str) -> None:
    code = compile(source, "<program>", "exec")  # a SyntaxError exits 1 with its traceback
    exec(code, {"__name__": "__main__", "__builtins__": builtins})


def serve_candidate(source: str, requests: Any, answers: Any, expose: list[str] | None) -> None:
    """Define the solution, tell the tests what it defined, then answer calls until EOF."""
    namespace: dict[str, Any] = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(compile(source, "<solution>", "exec"), namespace)
    except BaseException as exc:  # SystemExit too: exiting early must not look like passing
        import traceback

        traceback.print_exc()
        _send(answers, {"failed": f"{type(exc).__name__}: {exc}"[:500]})
        return
    names = [n for n in namespace if not n.startswith("__")] if expose is None else expose
    exported: dict[str, Any] = {}
    for name in names:
        if name not in namespace:
            continue
        value = namespace[name]
        if callable(value) and not isinstance(value, type):
            exported[name] = {"function": True}
        else:
            try:
                exported[name] = {"value": encode(value)}
            except TypeError:
                continue  # modules, classes, objects: not something a test can receive
    _send(answers, {"names": exported})
    for line in requests:
        _send(answers, _answer(namespace, line))


def _answer(namespace: dict[str, Any], line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        function = namespace[request["call"]]
        args, kwargs = decode(request["args"]), decode(request["kwargs"])
        return {"result": encode(function(*args, **kwargs))}
    except BaseException as exc:
        return {"raise": [type(exc).__name__, str(exc)[:2000]]}


def _send(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


class _Candidate:
    """The test side's end of the pipes: every call is a request and one answer."""

    def __init__(self, requests: Any, answers: Any) -> None:
        self.requests, self.answers = requests, answers

    def receive(self) -> Any:
        line = self.answers.readline(MAX_MESSAGE)
        if not line:
            raise RuntimeError("the solution's process ended (it crashed, exited or was killed)")
        if not line.endswith(b"\n"):
            raise RuntimeError("the solution sent an answer that is too long")
        return json.loads(line)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = {"call": name, "args": encode(list(args)), "kwargs": encode(kwargs)}
        _send(self.requests, request)
        answer = self.receive()
        if type(answer) is not dict:
            raise RuntimeError("the solution sent a malformed answer")
        if "raise" in answer:
            raise _exception(answer["raise"])
        return decode(answer.get("result"))

    def proxy(self, name: str) -> Any:
        def function(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, args, kwargs)

        function.__name__ = function.__qualname__ = name
        return function


def _exception(raised: Any) -> Exception:
    """The same built-in exception type (ValueError, IndexError, ...), else RuntimeError."""
    if type(raised) is not list or len(raised) != 2:
        return RuntimeError("the solution sent a malformed answer")
    name, message = str(raised[0]), str(raised[1])
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:  # an exception type that needs other arguments
            pass
    return RuntimeError(f"{name}: {message}")


def run_tests(spec: dict[str, Any], candidate: _Candidate, results: Any) -> None:
    """Trusted setup, the candidate's names as proxies, then each test with its verdict."""
    try:
        hello = candidate.receive()
    except (RuntimeError, ValueError) as exc:
        hello = {"failed": str(exc)}
    if type(hello) is not dict or type(hello.get("names")) is not dict:
        reason = hello.get("failed") if type(hello) is dict else None
        _send(results, {"setup": str(reason or "the solution sent no definitions")})
        return
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(spec.get("setup", ""), "<setup>", "exec"), namespace)
    trusted = set(namespace)
    names: dict[str, Any] = hello["names"]  # pyright: ignore[reportAssignmentType]
    for name, entry in names.items():
        if not _may_bind(str(name), spec.get("expose"), trusted) or type(entry) is not dict:
            continue
        if entry.get("function") is True:
            namespace[name] = candidate.proxy(name)
        elif "value" in entry:
            namespace[name] = decode(entry["value"])
    for i, test in enumerate(spec["tests"]):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
        except BaseException as exc:
            _send(results, {"test": i, "passed": False, "error": _error(exc)})
        else:
            _send(results, {"test": i, "passed": True})


def _may_bind(name: str, expose: list[str] | None, trusted: set[str]) -> bool:
    """Whether the solution's ``name`` may enter the tests' namespace.

    The solution says what it defined, and it may lie: only the exposed names, or else
    names that shadow neither a builtin (``abs``, ``len``) nor the trusted setup's own.
    """
    if not name.isidentifier() or name.startswith("__"):
        return False
    if expose is not None:
        return name in expose
    return name not in trusted and not hasattr(builtins, name)


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]


def main(argv: list[str]) -> None:
    mode, settings = argv[0], json.loads(argv[1])
    try:
        stdin = sys.stdin.buffer.read()
        requests: Any = None
        answers: Any = None
        results: Any = None
        if mode == "candidate":
            requests = os.fdopen(settings["requests_fd"], "rb")
            answers = os.fdopen(settings["answers_fd"], "wb")
        elif mode == "tests":
            requests = os.fdopen(settings["requests_fd"], "wb")
            answers = os.fdopen(settings["answers_fd"], "rb")
            results = os.fdopen(settings["results_fd"], "wb")
        confine(settings)
    except Exception as exc:  # a sandbox that is not set up must not run the code
        print(f"sandbox: setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        os._exit(SETUP_FAILED)
    if mode == "program":
        run_program(stdin.decode("utf-8", "replace"))
    elif mode == "candidate":
        serve_candidate(stdin.decode("utf-8", "replace"), requests, answers, settings["expose"])
    else:
        run_tests(json.loads(stdin), _Candidate(requests, answers), results)


if __name__ == "__main__":
    main(sys.argv[1:])
