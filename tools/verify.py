"""``make verify``: is this environment ready to run and develop mlharness?

Run with the project's interpreter (``.venv/bin/python tools/verify.py``). It checks what
``make setup`` should have installed, that ``mlx`` starts, and that a one-second tabular run
completes, and prints one line per problem with the command that fixes it. Exit status 1
when something required is missing; optional pieces only warn.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUP = "make setup"
# (module, what needs it, fix); required ones make the check fail.
REQUIRED = [
    ("numpy", "every kind", SETUP),
    ("pydantic", "config validation", SETUP),
    ("typer", "the mlx command", SETUP),
    ("yaml", "YAML configs", SETUP),
    ("filelock", "the run index", SETUP),
    ("torch", "lm and rl runs", f"{SETUP} (installs torch==2.13.0 first)"),
    ("safetensors", "lm checkpoints", SETUP),
    ("tiktoken", "GPT-2 BPE data", SETUP),
    ("pytest", "make test", SETUP),
    ("ruff", "make lint", SETUP),
    ("mypy", "make mypy", SETUP),
    ("pyright", "make pyright", SETUP),
    ("pytest_cov", "make unit-cov", SETUP),
]
OPTIONAL = [
    ("transformers", "init_from hf:, mlx export --format hf", 'pip install "mlharness[hf]"'),
    ("peft", "LoRA", 'pip install "mlharness[hf]"'),
    ("gguf", "mlx export --format gguf", 'pip install "mlharness[lm]"'),
    ("optuna", "mlx sweep", 'pip install "mlharness[sweep]"'),
    ("mlflow", "output.trackers = [mlflow]", 'pip install "mlharness[track]"'),
    ("wandb", "output.trackers = [wandb]", 'pip install "mlharness[rl]"'),
    ("cosmic_ray", "make quality-ext", "make quality-ext (installs it)"),
]
SMOKE_CONFIG = {
    "name": "verify-smoke",
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 200, "n_features": 4}},
    "model": {"name": "linear_regression", "params": {"use_gradient_descent": True}},
    "training": {"epochs": 5, "batch_size": 32, "learning_rate": 0.05, "optimizer": "sgd"},
}


def missing(modules: list[tuple[str, str, str]]) -> list[str]:
    return [
        f"{name} is not importable (needed for {need}): {fix}"
        for name, need, fix in modules
        if importlib.util.find_spec(name) is None
    ]


def mlx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "mlx"
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def smoke_run() -> str | None:
    """A tiny tabular run from start to summary.json; the problem, or None when it worked."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "smoke.json"
        config.write_text(json.dumps({**SMOKE_CONFIG, "output": {"directory": tmp}}))
        started = time.monotonic()
        done = mlx("run-experiment", "--config", str(config), cwd=Path(tmp))
        if done.returncode != 0:
            return f"a tabular smoke run failed ({done.stderr.strip()[-300:]}): {SETUP}"
        summaries = list(Path(tmp).glob("verify-smoke/*/summary.json"))
        status = json.loads(summaries[0].read_text())["status"] if summaries else None
        if status != "completed":
            return f"the tabular smoke run ended with status {status!r}: run it with --debug"
        print(f"ok  tabular smoke run completed in {time.monotonic() - started:.1f} s")
    return None


def main() -> int:
    problems = missing(REQUIRED)
    version = mlx("--version")
    if version.returncode != 0:
        problems.append(f"mlx --version failed ({version.stderr.strip()[-200:]}): {SETUP}")
    else:
        print(f"ok  {version.stdout.strip()}")
    if not problems:
        smoke = smoke_run()
        problems += [smoke] if smoke else []
    warnings = missing(OPTIONAL)
    if shutil.which("bwrap") is None:
        warnings.append("bwrap is not on PATH (code rewards): apt-get install bubblewrap")
    for line in warnings:
        print(f"note {line}")
    for line in problems:
        print(f"FAIL {line}")
    print("environment ready" if not problems else f"{len(problems)} problem(s): fix and rerun")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
