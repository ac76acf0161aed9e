"""The code sandbox against real programs and real attacks, alone and under code_execution.

Each attack must be contained (the caller survives, nothing outside changes, no process is
left behind) and score 0. Attacks run twice where the machine allows: with every layer,
and without the audit hook, to show the operating-system layers hold on their own.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlharness.errors import ConfigError
from mlharness.rl.rewards import RewardContext, RewardRegistry
from mlharness.rl.sandbox import SandboxLimits, SandboxResult, _run, run_many, run_untrusted

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux"),
]

LIMITS = SandboxLimits(timeout_s=2.0, cpu_s=2)
IS_ROOT = os.geteuid() == 0
SECRET = "hunter2-do-not-leak"


def pgid_processes(pgid: int, grace_s: float = 2.0) -> list[int]:
    """Live processes left in process group ``pgid`` once SIGKILL had ``grace_s`` to land.

    Zombies do not count: they are dead, waiting for init to collect them.
    """
    psutil = pytest.importorskip("psutil")
    deadline = time.monotonic() + grace_s
    while True:
        alive = []
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def run_both(program: str, limits: SandboxLimits = LIMITS) -> Iterator[tuple[str, SandboxResult]]:
    """The program with every layer, then (as root) without the audit hook."""
    yield "all layers", run_untrusted(program, limits)
    if IS_ROOT:  # unprivileged, the audit hook is what stops most attacks: keep it
        yield "no audit hook", _run(program, limits, audit_hook=False)


def code_reward(code: str, tests: list[str], **config: object) -> float:
    reward = RewardRegistry.create("code_execution", {"timeout": 2.0, **config})
    text = f"<think>plan</think>\n```python\n{code}\n```"
    value = reward.compute(RewardContext(text, test_cases=tests))["reward"]
    assert isinstance(value, float)
    return value


# ------------------------------------------------------------------------ ordinary code


def test_a_passing_program() -> None:
    result = run_untrusted("import math\nprint(math.factorial(5))", LIMITS)
    assert (result.status, result.returncode, result.stdout) == ("passed", 0, "120\n")
    assert result.passed and result.stderr == "" and result.duration_s < 2


def test_a_failing_assertion() -> None:
    result = run_untrusted("def f(x):\n    return x\n\nassert f(1) == 2, 'wrong'", LIMITS)
    assert (result.status, result.returncode, result.passed) == ("failed", 1, False)
    assert "AssertionError: wrong" in result.stderr


def test_a_syntax_error() -> None:
    result = run_untrusted("def f(:\n    pass", LIMITS)
    assert result.status == "failed" and "SyntaxError" in result.stderr


def test_run_many_keeps_the_order() -> None:
    programs = [f"import time; time.sleep({0.3 - 0.05 * i}); print({i})" for i in range(6)]
    results = run_many(programs, LIMITS, workers=3)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert run_many([], LIMITS) == []


def test_the_working_directory_is_empty_private_and_removed() -> None:
    program = (
        "import os\nprint(os.getcwd())\nprint(os.listdir('.'))\n"
        "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())"
    )
    result = run_untrusted(program, LIMITS)
    assert result.passed, result.stderr
    workdir, listing, content = result.stdout.splitlines()
    assert (listing, content) == ("[]", "ok")
    assert not Path(workdir).exists()


def test_output_is_capped_and_big_files_are_refused() -> None:
    result = run_untrusted("print('x' * 1_000_000)\nprint('end')", LIMITS)
    assert result.passed and len(result.stdout) < 10_000
    assert "bytes cut" in result.stdout and result.stdout.endswith("end\n")
    big = run_untrusted("open('big', 'wb').write(b'0' * 20 * 1024 * 1024)", LIMITS)
    assert big.status == "failed"  # SIGXFSZ, or OSError: File too large


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="'memory_mb' parameter of SandboxLimits"):
        SandboxLimits(memory_mb=16)
    with pytest.raises(ConfigError, match=r"'timeout_s' .* must be a number > 0"):
        SandboxLimits(timeout_s=0)


# ------------------------------------------------------------------------------ attacks


def test_an_infinite_loop_times_out() -> None:
    start = time.monotonic()
    result = run_untrusted(
        "import os\nprint(os.getpgid(0), flush=True)\nwhile True:\n    pass", LIMITS
    )
    assert result.status == "timeout" and not result.passed
    assert 1.9 < time.monotonic() - start < 4
    assert pgid_processes(int(result.stdout)) == []
    sleeper = run_untrusted("import time\ntime.sleep(60)", SandboxLimits(timeout_s=0.5))
    assert sleeper.status == "timeout"
    assert code_reward("def f():\n    while True:\n        pass", ["f()"], timeout=1.0) == 0.0


def test_a_fork_bomb_is_contained() -> None:
    program = "import os, sys\nprint(os.getpgid(0), flush=True)\nwhile True:\n    os.fork()\n"
    # Few processes: where init does not reap orphans (some containers), each one killed
    # stays a zombie of the sandbox user, and zombies count against RLIMIT_NPROC.
    for layers, result in run_both(program, SandboxLimits(timeout_s=2.0, max_processes=4)):
        assert not result.passed, layers
        pgid = int(result.stdout.split()[0])
        assert pgid_processes(pgid) == [], layers
    assert code_reward("import os\nwhile True:\n    os.fork()", ["assert True"]) == 0.0


def test_a_huge_allocation_fails_cleanly() -> None:
    program = "x = bytearray(10 * 1024 ** 3)\nprint('allocated')"
    for layers, result in run_both(program):
        assert result.status == "failed", layers
        assert "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert code_reward("def f():\n    return bytearray(10 * 1024 ** 3)", ["f()"]) == 0.0


def test_writing_outside_the_working_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    program = f"open({str(target)!r}, 'w').write('pwned')"
    for layers, result in run_both(program):
        assert result.status == "failed", layers
        assert "PermissionError" in result.stderr, layers
        assert not target.exists(), layers
    others = [
        f"import os\nos.remove({str(target)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.rename({str(tmp_path)!r}, 'mine')",
        f"import os\nos.symlink({str(tmp_path)!r}, 'link')\nopen('link/escaped.txt', 'w')",
        "import os\nfd = os.open('/', os.O_RDONLY)\nos.mkdir('tmp/x', dir_fd=fd)",
    ]
    target.write_text("keep", encoding="utf-8")
    for program in others:
        result = run_untrusted(program, LIMITS)
        assert result.status == "failed" and "PermissionError" in result.stderr, program
    assert target.read_text(encoding="utf-8") == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escaped.txt"]
    code = f"with open({str(tmp_path / 'x.txt')!r}, 'w') as f:\n    f.write('x')"
    assert code_reward(code, ["assert True"]) == 0.0
    assert not (tmp_path / "x.txt").exists()


def test_the_network_is_unreachable() -> None:
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
        results = list(run_both(program))
        results.append(
            (
                "outside",
                run_untrusted(
                    "import urllib.request as u\nu.urlopen('http://example.com', timeout=1)", LIMITS
                ),
            )
        )
        for layers, result in results:
            assert result.status == "failed", (layers, result)
            assert "connected" not in result.stdout
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
    assert code_reward(code, ["assert True"]) == 0.0


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_SANDBOX_TEST_SECRET", SECRET)
    program = (
        "import os\n"
        "found = os.environ.get('MLX_SANDBOX_TEST_SECRET', '')\n"
        "for path in (f'/proc/{os.getppid()}/environ', '/proc/self/environ'):\n"
        "    try:\n"
        "        found += open(path, 'rb').read().decode(errors='replace')\n"
        "    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
        f"assert {SECRET!r} in found, 'no secret'\n"
    )
    for layers, result in run_both(program):
        assert result.status == "failed", layers
        assert SECRET not in result.stdout + result.stderr, layers
        assert "refused /proc/" in result.stdout, layers
    code = "import os\nSECRET = os.environ.get('MLX_SANDBOX_TEST_SECRET')"
    assert code_reward(code, [f"assert SECRET == {SECRET!r}"]) == 0.0


def test_processes_exec_ctypes_and_signals_are_refused() -> None:
    attacks = [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.execv('/bin/true', ['true'])",
        f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)",
        "import ctypes\nctypes.CDLL(None).fork()",
        "import ctypes\nctypes.CDLL('libc.so.6')",
        "import gc\ngc.get_objects()",
    ]
    for result, program in zip(run_many(attacks, LIMITS), attacks, strict=True):
        assert result.status == "failed", program
        assert "PermissionError: sandbox:" in result.stderr, (program, result.stderr)


def test_the_caller_survives_a_crash() -> None:
    result = run_untrusted("import ctypes\nctypes.memmove(0, 0, 1)", LIMITS)  # segfault
    assert result.status == "failed" and result.returncode is not None
    assert result.returncode < 0
    assert run_untrusted("print('still here')", LIMITS).stdout == "still here\n"
