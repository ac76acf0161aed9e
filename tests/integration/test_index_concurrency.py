"""Eight processes start runs in the same output directory at the same moment."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

N_PROCESSES = 8

# Each child imports everything first, then waits at a file barrier until all of them are
# ready, so the OutputManagers really are created at the same moment (and mostly in the
# same second, which forces the _1, _2, ... suffixes and contention on the index lock).
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlharness.runs.output import OutputManager

    base, barrier, me, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    (barrier / f"ready_{me}").touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready_*"))) < n:
        if time.monotonic() > deadline:
            sys.exit("barrier timeout")
        time.sleep(0.001)
    manager = OutputManager("exp", base_dir=base)
    manager.finish({"status": "completed", "final_metrics": {"worker": int(me)}})
    print(manager.run_dir)
    """
)


def test_concurrent_output_managers_share_one_consistent_index(workspace: Path) -> None:
    base = workspace / "runs"
    barrier = workspace / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(base), str(barrier), str(i), str(N_PROCESSES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N_PROCESSES)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err

    run_dirs = [Path(out.strip()) for out, _ in outputs]
    assert len(set(run_dirs)) == N_PROCESSES
    assert all(d.is_dir() for d in run_dirs)
    assert sorted(p.name for p in (base / "exp").iterdir()) == sorted(d.name for d in run_dirs)

    index = json.loads((base / "index.json").read_text(encoding="utf-8"))
    runs = index["runs"]
    assert len(runs) == N_PROCESSES
    assert sorted(r["run_dir"] for r in runs) == sorted(f"exp/{d.name}" for d in run_dirs)
    assert all(r["status"] == "completed" for r in runs)
    assert sorted(r["final_metrics"]["worker"] for r in runs) == list(range(N_PROCESSES))
    for d in run_dirs:
        assert json.loads((d / "summary.json").read_text(encoding="utf-8"))["status"] == (
            "completed"
        )
    # Nothing half-written is left behind by the atomic writes.
    assert not [p.name for p in base.iterdir() if p.name.endswith(".tmp")]
