"""Benchmark the per-trial overhead of ``mlx sweep`` over running the same configs by hand.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/sweep.py                   # 12 trials, 3 rounds, ~2-4 min
    .venv/bin/python bench/sweep.py --trials 6 --rounds 1   # a quick look
    .venv/bin/python bench/sweep.py --json sweep.json  # also save every figure as JSON

(``make bench-sweep`` runs the default.) Both sides run the same N tiny tabular configs
(a synthetic regression, 3 epochs; only the learning rate differs, N fixed values), one
after another, each in a fresh workspace:

- **sweep**: ``mlx sweep --config sweep.yaml --jobs 1``, a grid over those N learning
  rates, so the study runs exactly those N configs as trial processes;
- **by hand**: ``mlx run-experiment --config hand-<k>.yaml`` for k = 1..N, one after
  another, the same configs written out as files.

The overhead per trial is (sweep - by hand) / N: the sweep process's start (Optuna's
import, the SQLite study), claiming and telling each trial, and the polling that notices a
trial has ended. The target is under 0.5 s a trial. Rounds alternate which side goes first,
with the load average printed before each, and the medians are reported.

Torch: ``mlx sweep`` and its tabular trials must never import torch. One extra sweep of 2
trials runs with ``PYTHONPROFILEIMPORTTIME=1``, which makes every Python process (the sweep
and each trial, whose stderr goes to ``sweeps/<name>/trials/trial-<n>.log``) list each
module it imports; the bench reads those lists. Speed is measured here, never by a timed
test.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from report import child_env, finish, heading, load_line, print_header, say, table

BIN = Path(sys.executable).parent  # the venv's bin/, where the `mlx` console script lives
TARGET_S = 0.5
CONFIG: dict[str, Any] = {
    "name": "bench-sweep",
    "dataset": {
        "name": "synthetic_regression",
        "params": {"n_samples": 200, "n_features": 4, "noise_std": 0.1, "seed": 3},
    },
    "model": {"name": "linear_regression", "params": {"use_gradient_descent": True, "seed": 3}},
    "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "optimizer": "sgd"},
    "output": {"directory": "runs"},
}
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", re.MULTILINE)


def rates(n: int) -> list[float]:
    """N learning rates spread on a log scale from 0.001 to 0.3."""
    return [round(0.001 * 300 ** (k / max(n - 1, 1)), 6) for k in range(n)]


def workspace(root: Path, name: str, n: int) -> Path:
    """A fresh workspace with the sweep's config and the N by-hand configs."""
    ws = root / name
    ws.mkdir()
    (ws / "pyproject.toml").write_text('[project]\nname = "bench"\n', encoding="utf-8")
    space = {"training.learning_rate": {"choices": rates(n)}}
    sweep = {"metric": "val_mse", "direction": "minimize", "sampler": "grid", "params": space}
    (ws / "sweep.yaml").write_text(yaml.safe_dump({**CONFIG, "sweep": sweep}), encoding="utf-8")
    for k, rate in enumerate(rates(n)):
        config = {**CONFIG, "name": f"hand-{k}", "training": {**CONFIG["training"]}}
        config["training"]["learning_rate"] = rate
        (ws / f"hand-{k}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return ws


def mlx(ws: Path, *args: str, **env: str) -> float:
    """Wall time of one ``mlx ARGS`` in ``ws``; a failure stops the bench with its output."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "mlx"), *args],
        cwd=ws,
        env=child_env(MLX_WORKSPACE=str(ws), **env),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"mlx {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return wall


def by_hand(ws: Path, n: int) -> float:
    return sum(mlx(ws, "run-experiment", "--config", f"hand-{k}.yaml") for k in range(n))


def completed_runs(ws: Path) -> int:
    index = json.loads((ws / "runs" / "index.json").read_text(encoding="utf-8"))
    return sum(run.get("status") == "completed" for run in index["runs"])


def measure(root: Path, n: int, rounds: int) -> dict[str, list[float]]:
    """Both sides ``rounds`` times, alternating which goes first; wall seconds each."""
    times: dict[str, list[float]] = {"sweep": [], "by hand": []}
    for r in range(rounds):
        order = ["sweep", "by hand"] if r % 2 == 0 else ["by hand", "sweep"]
        for side in order:
            ws = workspace(root, f"{side.replace(' ', '-')}-{r}", n)
            say(f"round {r + 1}, {side}: load average {load_line()}")
            if side == "sweep":
                wall = mlx(ws, "sweep", "--config", "sweep.yaml", "--jobs", "1")
            else:
                wall = by_hand(ws, n)
            assert completed_runs(ws) == n, f"{side} did not complete {n} runs in {ws}"
            times[side].append(wall)
            say(f"    {wall:.2f} s, {wall / n:.3f} s a trial")
    return times


def torch_check(root: Path) -> dict[str, Any]:
    """Which processes of a 2-trial sweep imported torch (``PYTHONPROFILEIMPORTTIME``)."""
    ws = workspace(root, "imports", 2)
    result = subprocess.run(
        [str(BIN / "mlx"), "sweep", "--config", "sweep.yaml"],
        cwd=ws,
        env=child_env(MLX_WORKSPACE=str(ws), PYTHONPROFILEIMPORTTIME="1"),
        capture_output=True,
        text=True,
    )
    logs = sorted((ws / "runs" / "sweeps" / "bench-sweep" / "trials").glob("trial-*.log"))
    texts = {"sweep": result.stderr} | {p.stem: p.read_text(encoding="utf-8") for p in logs}
    modules = {name: set(IMPORT_LINE.findall(text)) for name, text in texts.items()}
    return {
        "processes": sorted(modules),
        "listed": all("mlharness" in m for m in modules.values()),  # the lists are real
        "trials_imported_tabular": all(
            any(x.startswith("mlharness.tabular.") for x in m)
            for name, m in modules.items()
            if name != "sweep"
        ),
        "torch_importers": sorted(name for name, m in modules.items() if "torch" in m),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials (configs) per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds")
    parser.add_argument("--json", help="also save every figure to this JSON file")
    args = parser.parse_args()
    started = time.perf_counter()
    figures: dict[str, Any] = print_header(
        "mlx sweep: per-trial overhead over the same configs by hand", ["optuna", "numpy"]
    )
    n = args.trials
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        heading(f"{n} tabular trials, --jobs 1, {args.rounds} rounds", load=True)
        times = measure(Path(tmp), n, args.rounds)
        heading("Torch in the sweep and its trials", load=True)
        imports = torch_check(Path(tmp))
    sweep, hand = (statistics.median(times[k]) for k in ("sweep", "by hand"))
    overhead = (sweep - hand) / n
    rows = [
        [side, f"{statistics.median(t):.2f}", f"{statistics.median(t) / n:.3f}",
         " ".join(f"{x:.2f}" for x in t)]
        for side, t in times.items()
    ]  # fmt: skip
    heading("Results (medians)")
    say(table(["side", "total s", "s a trial", "each round s"], rows))
    ok = overhead < TARGET_S
    say(f"\noverhead per trial: {overhead:.3f} s (target < {TARGET_S} s): {_verdict(ok)}")
    clean = imports["listed"] and imports["trials_imported_tabular"]
    no_torch = clean and not imports["torch_importers"]
    say(
        f"torch imported by: {', '.join(imports['torch_importers']) or 'none'} of "
        f"{', '.join(imports['processes'])} (import lists read: {clean}): {_verdict(no_torch)}"
    )
    figures.update(trials=n, times_s=times, overhead_per_trial_s=overhead, imports=imports)
    finish(figures, started, args.json)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


if __name__ == "__main__":
    main()
