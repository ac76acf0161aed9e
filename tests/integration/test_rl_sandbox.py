"""The code sandbox against real programs and real attacks, alone and under code_execution.

Each attack must be contained (the caller survives, nothing outside changes, no process is
left behind) and score 0. Ordinary behaviour and resource attacks run on both backends;
the attacks that the weaker ``process`` backend does not claim to stop (reading the
machine's files, daemons, a total memory cap, disabling its audit hook) run on bwrap,
which is what ``auto`` chooses and what CI installs.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlharness.errors import ConfigError
from mlharness.rl import sandbox
from mlharness.rl.rewards import RewardContext, RewardRegistry
from mlharness.rl.sandbox import (
    CodeWithTests,
    SandboxLimits,
    SandboxUnavailableError,
    resolve_backend,
    run_many,
    run_tested,
    run_untrusted,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux"),
]

LIMITS = SandboxLimits(timeout_s=3.0, cpu_s=2)
SECRET = "hunter2-do-not-leak"
HAVE_BWRAP = sandbox.bwrap_problem() is None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason=f"bubblewrap cannot run here: {sandbox.bwrap_problem()}"
)
BACKENDS = [pytest.param("bwrap", marks=needs_bwrap), "process"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def code_reward(code: str, tests: list[str], backend: str = "bwrap", **config: object) -> float:
    options = {"timeout": 3.0, "backend": backend, **config}
    reward = RewardRegistry.create("code_execution", options)
    text = f"<think>plan</think>\n```python\n{code}\n```"
    value = reward.compute(RewardContext(text, test_cases=tests))["reward"]
    assert isinstance(value, float)
    return value


def processes_with(marker: str, grace_s: float = 2.0) -> list[int]:
    """Live processes whose command line holds ``marker``, once kills had time to land."""
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if not entry.name.isdigit():
                    continue
                zombie = (entry / "stat").read_text().split(")")[-1].split()[:1] == ["Z"]
                if marker in (entry / "cmdline").read_text("latin-1") and not zombie:
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def no_leftover_workdirs() -> Iterator[None]:
    before = set(Path(tempfile.gettempdir()).glob("mlx-sandbox-*"))
    yield
    assert set(Path(tempfile.gettempdir()).glob("mlx-sandbox-*")) - before == set()


# ------------------------------------------------------------------------ ordinary code


def test_a_passing_program(backend: str) -> None:
    result = run_untrusted("import math\nprint(math.factorial(5))", LIMITS, backend)
    assert (result.status, result.returncode, result.stdout) == ("passed", 0, "120\n")
    assert result.passed and result.stderr == "" and result.duration_s < 3


def test_a_failing_assertion_and_a_syntax_error(backend: str) -> None:
    result = run_untrusted("def f(x):\n    return x\n\nassert f(1) == 2, 'wrong'", LIMITS, backend)
    assert (result.status, result.returncode, result.passed) == ("failed", 1, False)
    assert "AssertionError: wrong" in result.stderr
    result = run_untrusted("def f(:\n    pass", LIMITS, backend)
    assert result.status == "failed" and "SyntaxError" in result.stderr


def test_run_many_keeps_the_order(backend: str) -> None:
    programs = [f"import time; time.sleep({0.3 - 0.05 * i}); print({i})" for i in range(6)]
    results = run_many(programs, LIMITS, workers=3, backend=backend)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert run_many([], LIMITS, backend=backend) == []


@pytest.mark.usefixtures("no_leftover_workdirs")
def test_the_working_directory_is_empty_private_and_removed(backend: str) -> None:
    program = (
        "import os\nprint(os.listdir('.'))\n"
        "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())"
    )
    result = run_untrusted(program, LIMITS, backend)
    assert result.passed, result.stderr
    assert result.stdout.splitlines() == ["[]", "ok"]


def test_output_is_capped_and_big_files_are_refused(backend: str) -> None:
    result = run_untrusted("print('x' * 1_000_000)\nprint('end')", LIMITS, backend)
    assert result.passed and len(result.stdout) < 10_000
    assert "bytes cut" in result.stdout and result.stdout.endswith("end\n")
    big = run_untrusted("open('big', 'wb').write(b'0' * 20 * 1024 * 1024)", LIMITS, backend)
    assert big.status == "failed"  # SIGXFSZ, or OSError: File too large


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="'memory_mb' parameter of SandboxLimits"):
        SandboxLimits(memory_mb=16)
    with pytest.raises(ConfigError, match=r"'timeout_s' .* must be a number > 0"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ConfigError, match="'total_memory_mb' parameter"):
        SandboxLimits(total_memory_mb=float("nan"))  # type: ignore[arg-type]
    assert SandboxLimits(memory_mb=512, total_memory_mb=1024).processes_without_cgroup() == 2


# -------------------------------------------------------------------- choosing a backend


def test_auto_refuses_without_bwrap_and_never_downgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox.bwrap_problem.cache_clear()
    try:
        for backend in ("auto", "bwrap"):
            with pytest.raises(SandboxUnavailableError) as caught:
                resolve_backend(backend)
            message = str(caught.value)
            assert "bwrap is not installed" in message
            assert "apt-get install bubblewrap" in message
            assert 'sandbox.backend = "process"' in message
        with pytest.raises(ConfigError, match="bwrap is not installed"):
            RewardRegistry.create("code_execution", {})
        assert resolve_backend("process") == "process"
        assert code_reward("def f():\n    return 1", ["assert f() == 1"], "process") == 1.0
    finally:
        sandbox.bwrap_problem.cache_clear()
    with pytest.raises(ConfigError, match="one of auto, bwrap, process; got 'docker'"):
        resolve_backend("docker")
    with pytest.raises(ConfigError, match="'backend' option of reward 'code_execution'"):
        RewardRegistry.create("code_execution", {"backend": "docker"})


# ----------------------------------------------------------- the verdict, out of reach


def test_tests_call_the_solution_through_data_only(backend: str) -> None:
    code = (
        "def pair(a, b):\n    return (a, b)\n"
        "def stats(xs):\n    return {'n': len(xs), 'set': set(xs), 1: b'x', 'c': 1j}\n"
        "def boom(x):\n    raise ValueError('bad ' + x)\n"
        "LIMIT = 10\n"
        "class Thing:\n    pass\n"
    )
    tests = [
        "assert pair(1, 'a') == (1, 'a')",
        "assert stats([1, 2, 2]) == {'n': 3, 'set': {1, 2}, 1: b'x', 'c': 1j}",
        "try:\n    boom('input')\nexcept ValueError as e:\n    assert str(e) == 'bad input'",
        "assert LIMIT == 10",
        "Thing()",  # classes do not cross
        "assert pair(1, 2) == [1, 2]",
    ]
    result = run_tested(CodeWithTests(code, tests), LIMITS, backend)
    assert result.verdicts == [True, True, True, True, False, False], result
    assert result.errors[4] == "NameError: name 'Thing' is not defined"
    assert result.status == "failed" and result.num_passed == 4


FORGERIES = {
    "prints pass lines": "import sys\nfor i in range(9):\n    print('mlx-test', i, 'passed')",
    "walks the harness's frames": (
        "import sys\nf = sys._getframe(0)\nwhile f:\n"
        "    for v in list(f.f_locals.values()):\n"
        "        if isinstance(v, list):\n            v.clear()\n"
        "    f = f.f_back\n"
    ),
    "rewrites the tests through gc": (
        "import gc\nfor o in gc.get_objects():\n"
        "    if isinstance(o, list) and any('assert' in str(x) for x in o):\n"
        "        o[:] = ['pass'] * len(o)\n"
    ),
    "exits with 0": "import sys\nsys.exit(0)",
    "exits hard with 0": "import os\nos._exit(0)",
    "kills its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("attack", sorted(FORGERIES))
def test_a_solution_cannot_forge_its_verdict(backend: str, attack: str) -> None:
    code = "def double(x):\n    return x\n" + FORGERIES[attack]
    tests = ["assert double(2) == 4", "assert False"]
    assert code_reward(code, tests, backend) == 0.0


def test_an_object_equal_to_everything_does_not_cross(backend: str) -> None:
    code = (
        "class Yes:\n    def __eq__(self, other):\n        return True\n"
        "def double(x):\n    return Yes()\n"
    )
    result = run_tested(CodeWithTests(code, ["assert double(2) == 4"]), LIMITS, backend)
    assert result.verdicts == [False]
    assert "TypeError" in (result.errors[0] or "")


# ------------------------------------------------------------------------ resource attacks


def test_an_infinite_loop_times_out(backend: str) -> None:
    start = time.monotonic()
    result = run_untrusted("while True:\n    pass", LIMITS, backend)
    assert result.status == "timeout" and not result.passed
    assert time.monotonic() - start < 6
    sleeper = run_untrusted("import time\ntime.sleep(60)", SandboxLimits(timeout_s=0.5), backend)
    assert sleeper.status == "timeout"
    slow = "def f():\n    while True:\n        pass"
    assert code_reward(slow, ["f()"], backend, timeout=1.0) == 0.0


def test_a_fork_bomb_is_contained(backend: str) -> None:
    marker = f"mlx-bomb-{secrets.token_hex(6)}"
    bomb = "import os\nwhile True:\n    os.fork()\n"
    program = (
        f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {marker!r}])"
    )
    result = run_untrusted(program, SandboxLimits(timeout_s=2.0, max_processes=8), backend)
    assert not result.passed
    assert processes_with(marker) == []
    assert code_reward("import os\nwhile True:\n    os.fork()", ["assert True"], backend) == 0.0


def test_a_huge_allocation_fails_cleanly(backend: str) -> None:
    result = run_untrusted("x = bytearray(10 * 1024 ** 3)\nprint('allocated')", LIMITS, backend)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout
    code = "def f():\n    return bytearray(10 * 1024 ** 3)"
    assert code_reward(code, ["f()"], backend) == 0.0


@needs_bwrap
def test_the_whole_sandbox_has_one_memory_cap() -> None:
    """Six children of 300 MB each under 512 MB per process: at most 1,024 MB in all."""
    program = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "kids = []\n"
        "for _ in range(6):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        block = b'x' * (300 * 1024 * 1024)\n"
        "        os.write(w, b'%d\\n' % os.getpid())\n"
        "        time.sleep(60)\n"
        "    kids.append(pid)\n"
        "os.close(w)\n"
        "os.set_blocking(r, False)\n"
        "holding, dead, data = set(), set(), b''\n"
        "while len(holding | dead) < len(kids):\n"
        "    try:\n"
        "        data += os.read(r, 4096)\n"
        "    except BlockingIOError:\n"
        "        pass\n"
        "    holding = {int(x) for x in data.split()}\n"
        "    pid, _ = os.waitpid(-1, os.WNOHANG) if kids else (0, 0)\n"
        "    if pid:\n"
        "        dead.add(pid)\n"
        "    time.sleep(0.01)\n"
        "print(len(kids), len(holding - dead))\n"
    )
    # 0.7 s alone; the wall clock has room for a machine busy with other tests (CI once
    # took more than 8 s here, with the second pytest worker running beside it).
    limits = SandboxLimits(timeout_s=30.0, cpu_s=8, memory_mb=512, total_memory_mb=1024)
    result = run_untrusted(program, limits, "bwrap")
    assert result.passed, result
    _forked, holding = map(int, result.stdout.split())
    assert holding * 300 <= 1024, result  # main's sandbox held all six at once: 1.8 GB


@needs_bwrap
def test_no_process_outlives_the_program() -> None:
    """A daemon (setsid + double fork) or a new process group dies with the program."""
    marker = f"mlx-daemon-{secrets.token_hex(6)}"
    sleeper = f"[sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}]"
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, {sleeper})\n"
        "    os._exit(0)\n"
        "if os.fork() == 0:\n"
        "    os.setpgid(0, 0)\n"
        f"    os.execv(sys.executable, {sleeper})\n"
        "import time\ntime.sleep(0.5)\n"
        "mine = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        f"print(sum({marker!r} in open(f'/proc/{{p}}/cmdline').read() for p in mine))\n"
    )
    result = run_untrusted(program, LIMITS, "bwrap")
    assert result.passed and result.stdout == "2\n", result  # both were running
    assert processes_with(marker) == []


@needs_bwrap
def test_the_machine_s_files_are_out_of_sight(tmp_path: Path) -> None:
    home_secret = Path.home() / f".mlx-sandbox-secret-{secrets.token_hex(4)}"
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "key").write_text(SECRET)
    (private / "key").chmod(0o600)
    home_secret.write_text(SECRET)
    home_secret.chmod(0o600)
    paths = ["/etc/shadow", "/etc/passwd", str(home_secret), str(private / "key")]
    program = (
        "import os\n"
        f"for path in {paths!r}:\n"
        "    try:\n        print('READ', path, open(path).read())\n"
        "    except OSError as exc:\n        print('refused', path, type(exc).__name__)\n"
        "print('home', sorted(os.listdir(os.path.dirname(" + repr(str(home_secret)) + "))))\n"
        "print('uid', os.getuid(), os.geteuid())\n"
    )
    try:
        result = run_untrusted(program, LIMITS, "bwrap")
    finally:
        home_secret.unlink()
    assert result.passed, result
    assert "READ" not in result.stdout and SECRET not in result.stdout
    listing = next(line for line in result.stdout.splitlines() if line.startswith("home "))
    assert home_secret.name not in listing  # home holds only the interpreter, if that
    assert "uid 65534 65534" in result.stdout


@needs_bwrap
def test_writing_outside_the_working_directory_leaves_no_trace(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    before_shm = set(shm.iterdir()) if shm.is_dir() else set()
    before_tmp = set(Path(tempfile.gettempdir()).iterdir())
    name = f"mlx-escape-{secrets.token_hex(4)}"
    program = (
        "import os\n"
        f"for d in ['/tmp', '/dev/shm', '/usr', {str(tmp_path)!r}, '/']:\n"
        "    try:\n"
        f"        open(os.path.join(d, {name!r}), 'w').write('x')\n"
        "        print('wrote', d)\n"
        "    except OSError as exc:\n        print('refused', d, type(exc).__name__)\n"
        f"os.system('echo x > /tmp/{name}.sh; echo x > {tmp_path}/{name}.sh')\n"
        f"os.mkfifo('../{name}.fifo') if os.access('..', os.W_OK) else None\n"
    )
    result = run_untrusted(program, LIMITS, "bwrap")
    assert "wrote /usr" not in result.stdout and f"wrote {tmp_path}" not in result.stdout
    assert list(tmp_path.iterdir()) == []
    assert (set(shm.iterdir()) if shm.is_dir() else set()) == before_shm
    new_tmp = set(Path(tempfile.gettempdir()).iterdir()) - before_tmp
    assert not [p for p in new_tmp if name in p.name]
    assert not Path("/", name).exists()


@needs_bwrap
def test_signals_and_host_processes_are_out_of_reach() -> None:
    program = (
        "import os, signal\n"
        f"try:\n    os.kill({os.getpid()}, signal.SIGKILL)\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)\n"
        "print('pids', len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    result = run_untrusted(program, LIMITS, "bwrap")
    assert "refused ProcessLookupError" in result.stdout, result
    assert int(result.stdout.split("pids")[1]) <= 3  # bwrap's init, the program, its ls


def test_the_network_is_unreachable(backend: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    program = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "s.sendall(b'leak')\nprint('connected')"
    )
    try:
        result = run_untrusted(program, LIMITS, backend)
        assert result.status == "failed" and "connected" not in result.stdout, result
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
    assert code_reward(code, ["assert True"], backend) == 0.0


def test_environment_secrets_are_not_visible(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_SANDBOX_TEST_SECRET", SECRET)
    program = (
        "import os\n"
        "found = os.environ.get('MLX_SANDBOX_TEST_SECRET', '')\n"
        "for path in (f'/proc/{os.getppid()}/environ', '/proc/self/environ', '/proc/1/environ'):\n"
        "    try:\n"
        "        found += open(path, 'rb').read().decode(errors='replace')\n"
        "    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
        f"assert {SECRET!r} in found, 'no secret'\n"
    )
    result = run_untrusted(program, LIMITS, backend)
    assert result.status == "failed"
    assert SECRET not in result.stdout + result.stderr
    code = "import os\nSECRET = os.environ.get('MLX_SANDBOX_TEST_SECRET')"
    assert code_reward(code, [f"assert SECRET == {SECRET!r}"], backend) == 0.0


def test_the_caller_survives_a_crash(backend: str) -> None:
    result = run_untrusted("import ctypes\nctypes.memmove(0, 0, 1)", LIMITS, backend)
    assert result.status == "failed" and result.returncode is not None
    assert run_untrusted("print('still here')", LIMITS, backend).stdout == "still here\n"


# ------------------------------------------------------------- the process backend's hook


def test_the_process_backend_refuses_processes_ctypes_and_signals() -> None:
    attacks = [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.execv('/bin/true', ['true'])",
        f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)",
        "import ctypes\nctypes.CDLL(None).fork()",
        "import ctypes\nctypes.CDLL('libc.so.6')",
        "import gc\ngc.get_objects()",
    ]
    for result, program in zip(run_many(attacks, LIMITS, backend="process"), attacks, strict=True):
        assert result.status == "failed", program
        assert "PermissionError: sandbox:" in result.stderr, (program, result.stderr)


def test_the_process_backend_hook_cannot_be_switched_off(tmp_path: Path) -> None:
    """Its tables are in a closure: reassigning the runner's globals changes nothing."""
    target = tmp_path / "escaped.txt"
    program = (
        "import sys, posixpath, builtins\n"
        "m = sys.modules['__main__']\n"
        "for name in list(vars(m)):\n"
        "    if not name.startswith('__'):\n"
        "        setattr(m, name, None)\n"
        "builtins.isinstance = lambda *a: False\n"
        "import os\n"
        f"open({str(target)!r}, 'w').write('pwned')\n"
    )
    result = run_untrusted(program, LIMITS, "process")
    assert result.status == "failed" and "PermissionError" in result.stderr, result
    assert not target.exists()


@needs_bwrap
def test_the_working_directory_is_a_bounded_tmpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many files below the per-file limit fill neither the host's disk nor its memory."""
    program = (
        "written = 0\n"
        "try:\n"
        "    for i in range(100):\n"
        "        with open(f'f{i}', 'wb') as f:\n"
        "            f.write(b'0' * (4 * 1024 * 1024))\n"
        "        written += 4\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
        "print(written)\n"
    )
    limits = SandboxLimits(timeout_s=5.0, total_memory_mb=128)
    capped = run_untrusted(program, limits, "bwrap")
    if capped.passed:  # no cgroup here: the tmpfs is full at its size
        assert int(capped.stdout.split()[-1]) <= 128, capped  # 400 MB were asked for
    else:  # the cgroup's memory cap, which counts tmpfs pages, stopped it first
        assert capped.returncode == -9, capped
    monkeypatch.setattr(sandbox, "_cgroup_parents", lambda: None)
    full = run_untrusted(program, limits, "bwrap")
    error, written = full.stdout.split()
    assert full.passed and error == "OSError" and int(written) <= 128, full


def test_a_solution_cannot_rebind_the_tests_names(backend: str) -> None:
    """It may say it defined anything: builtins, the setup's names and unexposed names stay."""
    code = "import json, os, sys\ndef abs(x):\n    return 0\ndef f(x):\n    return 99\n"
    tests = ["assert abs(f(1) - 5) < 1"]
    assert run_tested(CodeWithTests(code, tests), LIMITS, backend).verdicts == [False]
    forged = (
        "import json, os, sys\n"
        "fd = json.loads(sys.argv[2])['answers_fd']\n"
        'os.write(fd, b\'{"names": {"check": {"value": 1}, "f": {"function": true}}}\\n\')\n'
        "os._exit(0)\n"
    )
    job = CodeWithTests(forged, ["check(f)"], setup="def check(g):\n    assert g(2) == 4\n",
                        expose=["f"])  # fmt: skip
    result = run_tested(job, LIMITS, backend)
    assert result.verdicts == [False]
    error = result.errors[0] or ""
    assert "ended" in error or "Broken pipe" in error, result  # the real check, a dead f


@needs_bwrap
def test_a_sandbox_that_cannot_start_is_an_error_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = ("--ro-bind", "/nonexistent-mlx-path", "/nonexistent-mlx-path")
    monkeypatch.setattr(sandbox, "_root_filesystem", lambda: broken)
    result = run_untrusted("print('hi')", LIMITS, "bwrap")
    assert result.status == "error" and result.stderr.startswith("bwrap: "), result
    judged = run_tested(CodeWithTests("def f():\n    return 1", ["assert f() == 1"]), LIMITS)
    assert judged.status == "error" and judged.verdicts == [False], judged
