"""``mlx sweep`` on a PostgreSQL study: the path a sweep takes across machines.

A throwaway PostgreSQL cluster is started for the test (``initdb``/``pg_ctl`` from the
distribution's packages; CI installs them), listening on a free loopback port with trust
authentication. Two ``mlx sweep`` processes, each in a workspace of its own as two machines
would be, work on one study there; the study and both run indexes are read back, so a
trial run twice or a budget overrun shows.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import Mlx, free_port, index_runs, make_workspace, regression, write_config

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install psycopg2-binary")

BUDGET = 6
SWEEP = {
    "metric": "val_mse",
    "direction": "minimize",
    "sampler": "random",
    "seed": 0,
    "n_trials": BUDGET,
    "heartbeat_interval": 1,
    "grace_period": 2,
    "params": {"training.learning_rate": {"low": 0.001, "high": 0.3, "log": True}},
}


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, else Debian's versioned one."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


def server_user() -> list[str]:
    """The command prefix that runs the server: initdb refuses to run as root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    pytest.skip("running as root and neither a postgres nor a nobody user exists for initdb")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on a throwaway cluster; the cluster is stopped and removed after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed: apt-get install postgresql")
    as_user = server_user()
    # Not under tmp_path: its parents are private to root, and the server user must enter.
    root = Path(tempfile.mkdtemp(prefix="mlx-pg-"))
    if as_user:
        shutil.chown(root, user=as_user[2])
    data, port = root / "data", free_port()
    server = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w"]

    def run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    try:
        run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U",
             "postgres", "--no-sync", "-E", "UTF8", "--no-locale"])  # fmt: skip
        options = f"-k {root} -h 127.0.0.1 -p {port} -F"  # socket in root; no fsync
        run([*server, "-l", str(root / "server.log"), "-o", options, "start"])
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
             "sweeps"])  # fmt: skip
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*server, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_machines_share_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    machines = [Mlx(make_workspace(tmp_path / name)) for name in ("a", "b")]
    base = regression(name="sw", training={"epochs": 3}, output={"tensorboard": False})
    config = {**base, "sweep": SWEEP}
    for m in machines:
        write_config(m.workspace / "sweep.yaml", config)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    files = [open(p, "w", encoding="utf-8") for p in logs]  # noqa: SIM115 - closed below
    args = ("sweep", "-c", "sweep.yaml", "--jobs", "1", "--storage", postgres_url)
    try:
        procs = [m.popen(*args, stdout=f, stderr=f) for m, f in zip(machines, files, strict=True)]
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for f in files:
            f.close()
    texts = [p.read_text(encoding="utf-8") for p in logs]
    assert codes == [0, 0], texts
    assert all(" started: " in text for text in texts), texts  # both machines ran trials

    trials = optuna.load_study(study_name="sw", storage=postgres_url).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == BUDGET
    others = [t for t in trials if t.state.name != "COMPLETE"]  # lost races only, never run
    assert all("budget was spent" in t.user_attrs.get("error", "") for t in others), others
    runs = [r for m in machines for r in index_runs(m.workspace) if r.get("sweep") == "sw"]
    assert_one_run_per_trial(runs, done)

    shown = machines[0]("sweep", "show", "sw", "--storage", postgres_url, check=0).stdout
    best = min(done, key=lambda t: t.value)
    assert f"## Best: trial {best.number}" in shown


def assert_one_run_per_trial(runs: list[dict[str, Any]], done: list[Any]) -> None:
    """Each complete trial has exactly one run, completed, and no other run exists."""
    experiments = [r["experiment"] for r in runs]
    assert len(experiments) == len(set(experiments)), experiments
    assert all(r["status"] == "completed" for r in runs), runs
    assert sorted(int(r["trial"]) for r in runs) == sorted(t.number for t in done)
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
