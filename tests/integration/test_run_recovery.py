"""What a killed process leaves, and how the next one settles it (``mlharness.runs.recovery``).

Every crash here is a real SIGKILL of a child process at a chosen point; the parent then
does what the next ``mlx train`` does. No torch: the runs are bare run directories.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlharness.errors import RunDirectoryError
from mlharness.runs import index, recovery
from mlharness.runs.output import OutputManager

TEMP = ".ckpt_last_00000000.abcd_123.tmp"  # what mkdtemp names a checkpoint being written

# The child starts an lm run, leaves a half-written checkpoint, prints its run directory,
# then runs ``then`` (Python source: SIGKILL itself at some point, or wait to be killed).
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from mlharness.runs import index, io
    from mlharness.runs.output import OutputManager

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    out = OutputManager("exp", base_dir=sys.argv[1], kind="lm", lock=True)
    (out.run_dir / "checkpoints" / "{temp}").mkdir()
    print(out.run_dir, flush=True)
    {then}
    """
)
DIE = "die()"
LIVE = "time.sleep(120)"


def _child(base: Path, then: str) -> tuple[subprocess.Popen[str], Path]:
    """Start the child; its process and run directory, once the run exists."""
    code = CHILD.format(temp=TEMP, then=then)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(base)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _killed(base: Path, then: str = DIE) -> Path:
    """A run whose process died of SIGKILL; its directory."""
    proc, run = _child(base, then)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    return run


@pytest.fixture
def live(workspace: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A run whose process is alive (killed with SIGKILL at the end of the test)."""
    proc, run = _child(workspace / "runs", LIVE)
    yield proc, run
    proc.kill()
    proc.wait(timeout=60)


def _summary(run: Path) -> dict[str, object]:
    return dict(json.loads((run / "summary.json").read_text()))


def _index_status(base: Path, run: Path) -> object:
    (entry,) = [e for e in index.list_all_runs(base) if e["run_dir"] == f"exp/{run.name}"]
    return entry["status"]


def _recover(base: Path, checkpoint: object = None, resume: bool = True) -> object:
    return recovery.recover(base, "exp", "lm", lambda run: checkpoint, resume=resume)


def test_a_dead_run_without_a_checkpoint_is_marked_crashed_and_said_once(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = workspace / "runs"
    run = _killed(base)
    assert _summary(run)["status"] == "running" and _index_status(base, run) == "running"
    assert (run / "checkpoints" / TEMP).is_dir()

    with caplog.at_level(logging.WARNING, logger="mlharness"):
        assert _recover(base) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"Run {run} was left running by a process that is gone and cannot be resumed (no "
        "complete checkpoint): marked crashed; starting a new run."
    ]
    summary = _summary(run)
    assert summary["status"] == "crashed" and "crashed_at" in summary
    assert f"pid {summary['pid']}" in str(summary["error"]) and "is gone" in str(summary["error"])
    assert _index_status(base, run) == "crashed"
    assert not (run / "checkpoints" / TEMP).exists()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlharness"):
        assert _recover(base) is None
        assert _recover(base, checkpoint="ckpt") is None  # crashed is final
    assert caplog.records == []


def test_a_dead_run_with_a_checkpoint_is_resumed_not_marked(workspace: Path) -> None:
    base = workspace / "runs"
    run = _killed(base)
    assert _recover(base, checkpoint="ckpt") == (run, "ckpt")
    assert _summary(run)["status"] == "running"  # its resume takes it from here
    assert not (run / "checkpoints" / TEMP).exists()  # cleaned all the same


def test_fresh_settles_dead_runs_and_resumes_nothing(workspace: Path) -> None:
    base = workspace / "runs"
    with_checkpoint, without = _killed(base), _killed(base)
    found = recovery.recover(
        base, "exp", "lm", lambda run: "ckpt" if run == with_checkpoint else None, resume=False
    )
    assert found is None
    assert _summary(without)["status"] == "crashed"
    assert _summary(with_checkpoint)["status"] == "running"  # still resumable
    assert not (with_checkpoint / "checkpoints" / TEMP).exists()


def test_a_live_run_is_left_alone_and_not_taken_over(
    workspace: Path,
    live: tuple[subprocess.Popen[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = workspace / "runs"
    proc, run = live
    assert _recover(base) is None
    assert _summary(run)["status"] == "running"
    assert (run / "checkpoints" / TEMP).is_dir()  # its writer may still be at work
    with pytest.raises(RunDirectoryError) as info:
        _recover(base, checkpoint="ckpt")
    assert str(info.value) == (
        f"Run {run} is still being trained by process {proc.pid}. Wait for it or stop it, or "
        "pass --fresh to start a separate run."
    )
    monkeypatch.setattr(recovery, "hold_lock", functools.partial(recovery.hold_lock, wait_s=0.1))
    with pytest.raises(RunDirectoryError) as info:
        OutputManager("exp", base_dir=base, kind="lm", resume_dir=run, lock=True)
    assert str(info.value) == (
        f"Run {run} is being trained by another process (it holds {run / 'run.lock'}). Wait "
        "for it or stop it, or pass --fresh to start a separate run."
    )

    proc.kill()  # the kernel drops its lock with it
    proc.wait(timeout=60)
    assert _recover(base, checkpoint="ckpt") == (run, "ckpt")
    resumed = OutputManager("exp", base_dir=base, kind="lm", resume_dir=run, lock=True)
    assert _summary(run)["pid"] == os.getpid()
    resumed.finish({"status": "interrupted"})
    assert _recover(base, checkpoint="ckpt") == (run, "ckpt")


def test_a_mismatched_run_is_passed_over_said_and_kept(
    workspace: Path,
    live: tuple[subprocess.Popen[str], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``mismatch`` (tabular: another config under the same name): such a run, dead or
    alive, is neither resumed, nor an error, nor marked crashed; the reason is said once."""
    base = workspace / "runs"
    _, alive = live
    older, newer = _killed(base), _killed(base)
    asked: list[Path] = []

    def mismatch(run: Path, checkpoint: object) -> str | None:
        asked.append(run)
        return None if run == older else "its config differs (training.epochs: 4 -> 6)"

    with caplog.at_level(logging.WARNING, logger="mlharness"):
        found = recovery.recover(base, "exp", "lm", lambda run: "ckpt", mismatch=mismatch)
    assert found == (older, "ckpt")
    assert asked == [newer, older]  # the live run is older than both: never reached
    assert [r.getMessage() for r in caplog.records] == [
        f"Not resuming run {newer}: its config differs (training.epochs: 4 -> 6); "
        f"resuming {older} instead."
    ]
    assert _summary(newer)["status"] == "running"  # still resumable with its own config

    caplog.clear()
    asked.clear()
    with caplog.at_level(logging.WARNING, logger="mlharness"):
        found = recovery.recover(base, "exp", "lm", lambda run: "ckpt", mismatch=lambda r, c: "x")
        assert found is None  # the live run too: passed over, not an error
        assert (
            recovery.recover(base, "exp", "lm", lambda run: "ckpt", resume=False, mismatch=mismatch)
            is None
        )
    assert asked == []  # --fresh resumes nothing, so nothing is compared
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        f"Not resuming run {run}: x; starting a new run." for run in (newer, older, alive)
    )


def test_a_reused_pid_does_not_keep_a_dead_run_alive(workspace: Path) -> None:
    base = workspace / "runs"
    run = _killed(base)
    # The dead owner's pid now belongs to a live process (our parent): the free lock wins.
    (run / "summary.json").write_text(json.dumps({**_summary(run), "pid": os.getppid()}))
    assert _recover(base) is None
    assert _summary(run)["status"] == "crashed"


def test_a_run_without_a_lock_file_is_judged_by_its_pid(workspace: Path) -> None:
    base = workspace / "runs"
    run = _killed(base)
    (run / recovery.LOCK_FILE).unlink()  # as a run of an older version left it
    (run / "summary.json").write_text(json.dumps({**_summary(run), "pid": os.getppid()}))
    assert _recover(base) is None
    assert _summary(run)["status"] == "running"  # its pid is alive: not ours to settle
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    (run / "summary.json").write_text(json.dumps({**_summary(run), "pid": int(gone.stdout)}))
    assert _recover(base) is None
    assert _summary(run)["status"] == "crashed"


def test_a_run_killed_between_its_summary_and_the_index_is_settled(workspace: Path) -> None:
    base = workspace / "runs"
    run = _killed(
        base,
        "index.update_run = die\nout.finish({'status': 'completed', 'final_metrics': {'x': 1}})",
    )
    assert _summary(run)["status"] == "completed" and _index_status(base, run) == "running"
    assert _recover(base) is None
    (entry,) = index.list_all_runs(base)
    assert entry["status"] == "completed" and entry["final_metrics"] == {"x": 1}


def test_a_killed_index_writer_leaves_nothing_behind(workspace: Path) -> None:
    base = workspace / "runs"
    run = _killed(base, "io.os.replace = die\nindex.add_run(out.index_path, {'run_dir': 'x'})")
    (temp,) = [p.name for p in base.iterdir() if p.name.endswith(".tmp")]
    assert temp.startswith(".index.json.")
    index.add_run(base / "index.json", {"run_dir": "y"})
    assert not [p for p in base.iterdir() if p.name.endswith(".tmp")]
    assert [e["run_dir"] for e in index.list_all_runs(base)] == [f"exp/{run.name}", "y"]
