"""The GRPO commands end to end: ``mlx train`` / ``mlx-train`` on an rl config (resume,
``--fresh``, ``--dry-run``), ``run-experiment``, ``generate-config`` and its templates,
``preprocess`` into NPY and training on it, ``eval`` / ``mlx-evaluate`` with HumanEval, GSM8K
and the run's validation prompts, W&B offline, and the error messages, each through a real
subprocess of the installed scripts.

The policy is a tiny random Hugging Face GPT-2 with a character tokenizer, built once per
module and loaded through the same ``from_pretrained`` path a user's model takes. One trained
run (``rl.run_dir``) is shared by the tests that only read it or evaluate it. Independent
commands run concurrently (``parallel``) to keep the module's wall time down.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import (
    REGRESSION,
    TIMEOUT,
    UMASK,
    base_env,
    make_workspace,
    read_json,
    run_dirs,
    run_mlx,
    show,
    single_run_dir,
    snapshot,
    write_config,
)

from mlharness.config import deep_merge

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
# Kept small: 2 prompts x 2 completions of at most 4 tokens per step, one torch thread.
SMALL = [
    "--set",
    "trainer.num_training_steps=1",
    "--set",
    "trainer.num_threads=1",
    "--set",
    "trainer.device=cpu",
    "--set",
    "trainer.ppo_batch_size=2",
    "--set",
    "trainer.num_rollout_samples=2",
    "--set",
    "data.max_prompt_len=16",
    "--set",
    "trainer.grad_accum_steps=1",
    "--set",
    "trainer.eval_num_prompts=2",
    "--set",
    "data.max_gen_len=4",
]
LONG_PROMPT = {"prompt": "1234567890123456789+1=", "completion": "1234567890123456789012"}
GSM8K_LINES = [
    {"question": "tom has 3 apples and buys 4 more. how many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "what is 2 times 5?", "answer": "2*5=<<2*5=10>>10\n#### 10"},
    {"question": "what is 9 minus 1?", "answer": "9-1=<<9-1=8>>8\n#### 8"},
]


def grpo_config(model_dir: Path, /, **overrides: Any) -> dict[str, Any]:
    """A GRPO config of 2 steps on the tiny model (``kind: rl``), deep-merged with overrides."""
    base: dict[str, Any] = {
        "kind": "rl",
        "name": "tiny_grpo",
        "trainer": {
            "num_training_steps": 2,
            "learning_rate": 1e-3,
            "ppo_batch_size": 2,
            "num_rollout_samples": 2,
            "grpo_beta": 0.04,
            "seed": 7,
            "device": "cpu",
            "num_threads": 1,
        },
        "model": {"model_path": str(model_dir)},
        "data": {"train_path": "prompts.jsonl", "max_prompt_len": 8, "max_gen_len": 4},
        "rewards": [
            {"name": "exact_match", "weight": 1.0},
            {"name": "response_length_penalty", "weight": 0.1, "config": {"max_words": 5}},
        ],
        "monitoring": {"log_samples_every": 1, "max_logged_samples": 3},
        "checkpointing": {"save_every": 1, "keep_last_n": 2},
    }
    return deep_merge(base, overrides)


def write_prompts(ws: Path, extra: Sequence[Mapping[str, str]] = ()) -> None:
    """30 additions as training prompts, 4 held out, in seed 002's JSONL format."""
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(3)]
    lines = [json.dumps(r) for r in [*rows, *extra]]
    (ws / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    held_out = [{"prompt": f"{a}+5=", "completion": str(a + 5)} for a in range(4)]
    (ws / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out), encoding="utf-8")


def run_script(
    ws: Path,
    script: str,
    *args: Any,
    check: int | None = None,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """An installed console script (``mlx-train``, ``mlx-evaluate`` ...) run in ``ws``."""
    argv = [str(a) for a in args]
    full_env = {k: v for k, v in base_env(ws, env).items() if k not in unset}
    result = subprocess.run(
        [str(BIN / script), *argv],
        cwd=ws,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        umask=UMASK,
    )
    if check is not None:
        assert result.returncode == check, f"exit code is not {check}\n{show(argv, result)}"
    assert "Traceback" not in result.stdout + result.stderr, show(argv, result)
    return result


def parallel(*calls: Any) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at once: each call is ``(function, args, kwargs)``."""
    with ThreadPoolExecutor(max_workers=min(3, len(calls))) as pool:
        futures = [pool.submit(fn, *args, **kwargs) for fn, args, kwargs in calls]
        return [f.result() for f in futures]


def written_files(stdout: str) -> list[Path]:
    """The files of the ``Written: a, b`` line of ``mlx eval``."""
    (line,) = [x for x in stdout.splitlines() if x.startswith("Written: ")]
    return [Path(p) for p in line.removeprefix("Written: ").split(", ")]


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def stderr_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.startswith("Error: "), result.stderr
    return result.stderr


@dataclass
class RL:
    model: Path  # the tiny Hugging Face model (outside every workspace)
    ws: Path  # the shared workspace
    run_dir: Path  # one finished 2-step run of tiny_grpo, with validation prompts
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def rl(tmp_path_factory: pytest.TempPathFactory) -> RL:
    from mlharness.rl.tiny_models import build_tiny_model

    base = tmp_path_factory.mktemp("rl")
    model = build_tiny_model(base / "tiny_gpt2", n_layer=2, n_embd=32, n_head=2, seed=0)
    ws = make_workspace(base / "ws")
    write_prompts(ws)
    (ws / "gsm8k.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in GSM8K_LINES), encoding="utf-8"
    )
    write_config(ws / "grpo.yaml", grpo_config(model, data={"val_path": "val.jsonl"}))
    result = run_mlx(["train", "--config", "grpo.yaml"], workspace=ws, check=0, entry="script")
    return RL(model, ws, single_run_dir(ws, "tiny_grpo"), result)


@pytest.fixture
def rl_ws(ws: Path, rl: RL) -> Path:
    """A fresh workspace with the prompts and the 2-step config (grpo.yaml)."""
    write_prompts(ws)
    write_config(ws / "grpo.yaml", grpo_config(rl.model))
    return ws


# ----------------------------------------------------------------------------- mlx train


def test_train_runs_the_steps_and_writes_a_complete_run(rl: RL) -> None:
    out = rl.result.stdout
    assert "Experiment: tiny_grpo (GRPO)" in out
    assert "GRPO completed at step 2" in out
    # Sampled and greedy rewards say which they are, not a train/val gap to worry about.
    assert re.search(r"train reward \d\.\d{4} \(sampled\), val reward .* \(greedy\)", out)
    # Named as the run starts (tail -f can begin) and again at the end.
    assert out.count(f"Run directory: {rl.run_dir}") == 2
    assert out.index("Run directory:") < out.index("GRPO completed")
    assert "Loading weights" not in rl.result.stderr  # no Hugging Face progress bars
    run = rl.run_dir
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed"
    assert summary["final_metrics"]["step"] == 2
    assert "val_reward" in summary["final_metrics"]
    config = read_json(run / "config.json")
    assert config["kind"] == "rl" and config["resolved_seed"] == 7
    records = ndjson(run / "metrics" / "metrics.ndjson")
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in (
        "reward",
        "reward_std",
        "rewards/exact_match",
        "rewards/exact_match_std",
        "rewards/response_length_penalty",
        "frac_reward_zero_std",
        "kl",
        "policy_loss",
        "clip_low",
        "clip_high",
        "completion_length",
        "truncation_rate",
        "tokens_per_sec",
    ):
        assert key in steps[-1], key
    evals = [r for r in records if "val_reward" in r]
    assert [r["step"] for r in evals] == [0, 2]  # the baseline, then the end
    for name in ("metrics.json", "metrics.md", "curves.png"):
        assert (run / "metrics" / name).is_file(), name
    assert list((run / "logs" / "tb").glob("events.out.tfevents.*"))
    samples = sorted((run / "samples").glob("step_*.jsonl"))
    assert [p.name for p in samples] == ["step_00000001.jsonl", "step_00000002.jsonl"]
    logged = ndjson(samples[-1])
    assert 0 < len(logged) <= 3 and {"prompt", "completion", "reward"} <= set(logged[0])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "ckpt_last_00000002" in names and any(n.startswith("ckpt_best_") for n in names)
    index = read_json(rl.ws / "runs" / "index.json")["runs"]
    assert any(entry.get("experiment") == "tiny_grpo" for entry in index)


def test_alias_log_level_dry_run_resume_and_fresh_with_wandb_offline(
    ws: Path, rl: RL, tmp_path: Path
) -> None:
    # Seed 002's shape: `trainer` and `rewards`, no `kind`; named after the file.
    write_prompts(ws)
    config = grpo_config(rl.model)
    del config["kind"], config["name"]
    write_config(ws / "seed_shape.yaml", config)

    before = snapshot(ws)
    dry = run_mlx(["train", "--config", "seed_shape.yaml", "--dry-run"], workspace=ws, check=0)
    assert "Plan:" in dry.stdout and "2 GRPO steps: 2 prompts x 2 completions" in dry.stdout
    assert "Dry run: nothing was trained or written." in dry.stdout
    assert snapshot(ws) == before

    first = run_script(ws, "mlx-train", "--config", "seed_shape.yaml", "--log-level", "DEBUG")
    assert first.returncode == 0, show(["mlx-train"], first)
    assert "Experiment: seed_shape (GRPO)" in first.stdout
    assert "Plan: Load the policy from" in first.stdout  # DEBUG lines are shown
    assert "GRPO completed at step 2" in first.stdout
    (run,) = run_dirs(ws, "seed_shape")

    # Mark the run interrupted: `mlx train` resumes it at its last checkpoint (step 2) and
    # trains on to the new total instead of starting again.
    summary = read_json(run / "summary.json")
    summary["status"] = "interrupted"
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    resumed = run_mlx(
        ["train", "--config", "seed_shape.yaml", "--set", "trainer.num_training_steps=3"],
        workspace=ws,
        check=0,
    )
    assert f"Resumed from {run / 'checkpoints' / 'ckpt_last_00000002'}" in resumed.stdout
    assert "GRPO completed at step 3" in resumed.stdout
    assert "Plan:" not in resumed.stdout  # INFO by default
    assert run_dirs(ws, "seed_shape") == [run]
    steps = [r["step"] for r in ndjson(run / "metrics" / "metrics.ndjson") if "reward" in r]
    assert steps == [1, 2, 3]
    assert read_json(run / "summary.json")["status"] == "completed"

    # --fresh starts a new run. It also logs to W&B, with no key and no ~/.netrc: W&B cannot
    # be online, so the run goes offline by itself and leaves its files in the run.
    pytest.importorskip("wandb")
    home = tmp_path / "home"
    home.mkdir()
    fresh = run_script(
        ws,
        "mlx",
        "train",
        "--config",
        "seed_shape.yaml",
        "--fresh",
        "--set",
        "monitoring.use_wandb=true",
        check=0,
        env={"HOME": str(home), "WANDB_SILENT": "true"},
        unset=("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_BASE_URL"),
    )
    assert "Resumed" not in fresh.stdout and "GRPO completed at step 2" in fresh.stdout
    runs = run_dirs(ws, "seed_shape")
    assert len(runs) == 2 and f"Run directory: {runs[-1]}" in fresh.stdout
    offline = list((runs[-1] / "logs" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, sorted(p.name for p in (runs[-1] / "logs").rglob("*"))
    assert list(offline[0].glob("run-*.wandb"))
    assert not (runs[0] / "logs" / "wandb").exists()


# ----------------------------------------------------------------------------- run-experiment


def test_run_experiment_validates_and_runs_an_rl_config(rl_ws: Path) -> None:
    before = snapshot(rl_ws)
    dry = run_mlx(["run-experiment", "--config", "grpo.yaml", "--dry-run"], workspace=rl_ws)
    assert dry.returncode == 0, show(["run-experiment"], dry)
    assert "Validation: OK (tiny_grpo)" in dry.stdout
    assert "Dry run: 1 experiment(s) valid; nothing was written." in dry.stdout
    assert snapshot(rl_ws) == before

    out = run_mlx(
        ["run-experiment", "--config", "grpo.yaml", "--set", "trainer.num_training_steps=1"],
        workspace=rl_ws,
        check=0,
    ).stdout
    assert "GRPO completed at step 1" in out
    (run,) = run_dirs(rl_ws, "tiny_grpo")
    assert read_json(run / "summary.json")["status"] == "completed"


def test_run_experiment_list_checks_the_rl_model_before_training_anything(ws: Path, rl: RL) -> None:
    write_prompts(ws)
    bad = grpo_config(rl.model, model={"model_path": "no/such/model"})
    write_config(ws / "list.json", [deep_merge(REGRESSION, {}), bad])
    result = run_mlx(["run-experiment", "--config", "list.json"], workspace=ws, check=1)
    assert "Experiment 2 of 2 ('tiny_grpo')" in stderr_error(result)
    assert "model.model_path" in result.stderr and "does not exist" in result.stderr
    assert not (ws / "runs").exists()  # the regression before it never ran


# ----------------------------------------------------------------------------- generate-config


def test_generate_config_templates_validate_and_run(ws: Path, rl: RL) -> None:
    write_prompts(ws)
    common = ["--model-path", rl.model, "--data-path", "prompts.jsonl"]
    out = run_mlx(
        ["generate-config", *common, "--output", "minimal.yaml", "--template", "minimal"],
        workspace=ws,
        check=0,
    ).stdout
    assert "Wrote minimal config: minimal.yaml" in out
    run_mlx(
        ["generate-config", *common, "--output", "advanced.yaml", "--template", "advanced"],
        workspace=ws,
        check=0,
    )
    # The alias, with the seed's default template (standard).
    out = run_script(ws, "mlx-generate-config", *common, "--output", "standard.yaml", check=0)
    assert "Wrote standard config: standard.yaml" in out.stdout
    run_mlx(
        ["generate-config", *common, "--output", "advanced.json", "--template", "advanced"],
        workspace=ws,
        check=0,
    )

    for name in ("minimal", "standard", "advanced"):
        text = (ws / f"{name}.yaml").read_text(encoding="utf-8")
        assert "# Peak learning rate." in text  # the schema's descriptions as comments
        data = yaml.safe_load(text)
        assert data["model"]["model_path"] == str(rl.model)
        assert data["data"]["train_path"] == str(ws / "prompts.jsonl")
    assert json.loads((ws / "advanced.json").read_text()) == yaml.safe_load(
        (ws / "advanced.yaml").read_text()
    )
    dry = run_mlx(["train", "--config", "advanced.json", "--dry-run"], workspace=ws, check=0)
    assert "Dry run: nothing was trained or written." in dry.stdout

    results = parallel(
        *[
            (run_mlx, (["train", "--config", f"{name}.yaml", *SMALL],), {"workspace": ws})
            for name in ("minimal", "standard", "advanced")
        ]
    )
    for name, result in zip(("minimal", "standard", "advanced"), results, strict=True):
        assert result.returncode == 0, show([name], result)
        assert "GRPO completed at step 1" in result.stdout
        (run,) = run_dirs(ws, name)
        assert read_json(run / "summary.json")["status"] == "completed"
    # The advanced template scores validation prompts and turns dynamic sampling on.
    advanced = ndjson(single_run_dir(ws, "advanced") / "metrics" / "metrics.ndjson")
    assert any("val_reward" in r for r in advanced)
    assert any("groups_generated" in r for r in advanced)


def test_generate_config_errors(ws: Path, rl: RL) -> None:
    write_prompts(ws)
    common = ["--data-path", "prompts.jsonl"]
    (ws / "out").mkdir()
    cases = [
        (["--model-path", rl.model, *common, "--template", "huge"], "Unknown template 'huge'"),
        (["--model-path", "no/model", *common], "--model-path no/model does not exist"),
        (["--model-path", rl.model, "--data-path", "nope.jsonl"], "does not exist"),
        (["--model-path", rl.model, *common, "--output", "out"], "--output out is a directory"),
        (["--model-path", rl.model, *common, "--output", "c.toml"], "use a .yaml, .yml or .json"),
    ]
    before = snapshot(ws)
    for args, message in cases:
        result = run_mlx(["generate-config", *args], workspace=ws, check=1)
        assert message in stderr_error(result), result.stderr
    result = run_script(ws, "mlx-generate-config", *common, check=1)
    assert "Missing option '--model-path'" in result.stderr
    assert snapshot(ws) == before
    (ws / "mine.yaml").write_text("# my edited config\n", encoding="utf-8")
    args = ["generate-config", "--model-path", rl.model, *common, "--output", "mine.yaml"]
    refused = run_mlx(args, workspace=ws, check=1)
    assert "--output mine.yaml exists already: pass --force" in stderr_error(refused)
    assert (ws / "mine.yaml").read_text(encoding="utf-8") == "# my edited config\n"
    run_mlx([*args, "--force"], workspace=ws, check=0)
    assert "model_path" in (ws / "mine.yaml").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- preprocess


def test_preprocess_then_train_on_the_npy_files(ws: Path, rl: RL) -> None:
    import numpy as np

    write_prompts(ws, extra=[LONG_PROMPT])
    write_config(ws / "grpo.yaml", grpo_config(rl.model))
    out = run_mlx(
        [
            "preprocess",
            "--config",
            "grpo.yaml",
            "--output-train-path",
            "data/train",
            "--output-val-path",
            "data/val",
        ],
        workspace=ws,
        check=0,
    ).stdout
    assert "Loaded 31 examples" in out
    assert "1 prompts and 1 completions were truncated" in out
    train = np.load(ws / "data" / "train_prompts.npy", allow_pickle=False)
    val = np.load(ws / "data" / "val_prompts.npy", allow_pickle=False)
    assert train.shape[0] + val.shape[0] == 31 and val.shape[0] >= 1
    assert f"Wrote {train.shape[0]} training examples" in out
    assert f"and {val.shape[0]} validation examples" in out
    assert train.shape[1] <= 8  # data.max_prompt_len
    completions = np.load(ws / "data" / "train_completions.npy", allow_pickle=False)
    assert completions.shape == (train.shape[0], 4)  # data.max_gen_len
    # The alias, as seed 002 writes it: only the train prefix; val goes beside it.
    alias = run_script(
        ws, "mlx-preprocess", "--config", "grpo.yaml", "--output-train-path", "b/train", check=0
    )
    assert "Loaded 31 examples" in alias.stdout
    assert (ws / "b" / "train_prompts.npy").is_file() and (ws / "b" / "val_prompts.npy").is_file()

    npy = grpo_config(
        rl.model,
        name="tiny_npy",
        data={"loader_type": "npy", "train_path": "data/train", "val_path": "data/val"},
        trainer={"num_training_steps": 1},
    )
    write_config(ws / "npy.yaml", npy)
    out = run_mlx(["train", "--config", "npy.yaml"], workspace=ws, check=0).stdout
    assert "GRPO completed at step 1" in out
    run = single_run_dir(ws, "tiny_npy")
    assert any("val_reward" in r for r in ndjson(run / "metrics" / "metrics.ndjson"))


def test_npy_config_without_the_files_names_mlx_preprocess(rl_ws: Path, rl: RL) -> None:
    npy = grpo_config(rl.model, data={"loader_type": "npy", "train_path": "data/train"})
    write_config(rl_ws / "npy.yaml", npy)
    result = run_mlx(["train", "--config", "npy.yaml"], workspace=rl_ws, check=1)
    assert "No NPY dataset" in stderr_error(result) and "mlx preprocess" in result.stderr


# ----------------------------------------------------------------------------- eval


def test_eval_human_eval_gsm8k_and_validation(rl: RL) -> None:
    run = rl.run_dir
    ckpt = run / "checkpoints" / "ckpt_last_00000002"
    by_run, by_ckpt = parallel(
        (
            run_mlx,
            (["eval", "--run-dir", run, "--benchmark", "human_eval", "--limit", "2"],),
            {"workspace": rl.ws, "check": 0},
        ),
        (
            # Seed 002's spelling: two values after one --benchmark.
            run_script,
            (
                rl.ws,
                "mlx-evaluate",
                "--checkpoint",
                ckpt,
                "--benchmark",
                "human_eval",
                "gsm8k",
                "--limit",
                "2",
                "--gsm8k-path",
                "gsm8k.jsonl",
            ),
            {"check": 0},
        ),
    )
    json_path, md_path = written_files(by_run.stdout)
    assert json_path.parent == run / "eval" and md_path == json_path.with_suffix(".md")
    report = read_json(json_path)
    human_eval = report["results"]["human_eval"]
    assert human_eval["num_problems"] == 2
    assert 0.0 <= human_eval["metrics"]["pass@1"] <= 1.0  # a random model: 0
    # The run has data.val_path: its held-out prompts are scored by its own rewards.
    validation = report["results"]["validation"]
    assert validation["num_problems"] == 2 and "reward" in validation["metrics"]
    markdown = md_path.read_text(encoding="utf-8")
    assert "| human_eval | pass@1 |" in markdown and "| validation | reward |" in markdown

    json_path, _ = written_files(by_ckpt.stdout)
    assert json_path == run / "eval" / "ckpt_last_00000002.json"
    results = read_json(json_path)["results"]
    assert (
        results["human_eval"]["num_problems"] == 2 and "pass@1" in results["human_eval"]["metrics"]
    )
    assert results["gsm8k"]["num_problems"] == 2 and "accuracy" in results["gsm8k"]["metrics"]
    assert "| gsm8k | accuracy |" in by_ckpt.stdout


def test_eval_dry_run_and_errors_write_nothing(rl: RL) -> None:
    run = rl.run_dir
    before = snapshot(run)
    eval_ = ["eval", "--run-dir", run, "--benchmark"]
    dry, missing, unknown = parallel(
        (run_mlx, ([*eval_, "human_eval", "--limit", "2", "--dry-run"],), {"workspace": rl.ws}),
        (run_mlx, ([*eval_, "gsm8k"],), {"workspace": rl.ws}),
        (run_mlx, ([*eval_, "humaneval"],), {"workspace": rl.ws}),
    )
    assert dry.returncode == 0, show(["eval", "--dry-run"], dry)
    assert "Checkpoint to load:" in dry.stdout and "Benchmarks: human_eval" in dry.stdout
    assert "Validation prompts:" in dry.stdout
    assert "Dry run: nothing was evaluated or written." in dry.stdout
    # No GSM8K file: the message says where to put it, before any model loads.
    assert missing.returncode == 1
    message = stderr_error(missing)
    assert "GSM8K test file data/gsm8k/test.jsonl was not found" in message
    assert "grade-school-math" in message and "--gsm8k-path" in message
    assert unknown.returncode == 1
    assert "Did you mean 'human_eval'?" in stderr_error(unknown)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- errors


def test_errors_are_one_line_with_exit_code_1(rl_ws: Path, rl: RL) -> None:
    (rl_ws / "empty_model").mkdir()
    cases = {
        "model.model_path=no/such/dir": "does not exist",
        "model.model_path=empty_model": "holds no model",
        "trainer.loss_type=ppo": "Invalid value for 'trainer.loss_type'",
        'rewards=[{"name": "exact_mach"}]': "Did you mean 'exact_match'?",
    }
    results = parallel(
        *[
            (run_mlx, (["train", "--config", "grpo.yaml", "--set", item],), {"workspace": rl_ws})
            for item in cases
        ]
    )
    for (item, message), result in zip(cases.items(), results, strict=True):
        assert result.returncode == 1, show([item], result)
        assert message in stderr_error(result), (item, result.stderr)
    assert "Configuration validation failed" in results[2].stderr
    assert not run_dirs(rl_ws, "tiny_grpo")


def test_seed_example_config_loads_unchanged(rl_ws: Path, rl: RL) -> None:
    """Seed 002's example config, verbatim: only its placeholder paths fail the dry run."""
    seed = next((Path(__file__).parents[3] / "shared" / "seeds").glob("002_*.txt"), None)
    if seed is None:
        pytest.skip("seed 002 is not in ../shared/seeds")
    text = seed.read_text(encoding="utf-8")
    start = text.index("```yaml\n# Production-ready configuration")
    example = text[start + len("```yaml\n") : text.index("```", start + 7)]
    (rl_ws / "seed.yaml").write_text(example, encoding="utf-8")
    result = run_mlx(["train", "--config", "seed.yaml", "--dry-run"], workspace=rl_ws, check=1)
    assert "model.model_path /path/to/model does not exist" in stderr_error(result)
    paths = [
        f"model.model_path={rl.model}",
        f"model.ref_model_path={rl.model}",
        f"data.train_path={rl_ws / 'prompts.jsonl'}",
    ]
    sets = [x for p in paths for x in ("--set", p)]
    out = run_mlx(
        ["train", "--config", "seed.yaml", "--dry-run", "--strict", *sets],
        workspace=rl_ws,
        check=0,
    ).stdout
    assert "2500 GRPO steps: 8 prompts x 1 completions" in out
    assert "semantic_similarity x 0.65" in out
    assert not (rl_ws / "outputs").exists()


def test_train_refuses_an_output_dir_outside_the_workspace(rl_ws: Path) -> None:
    result = run_mlx(
        ["train", "--config", "grpo.yaml", "--set", "trainer.output_dir=../elsewhere"],
        workspace=rl_ws,
        check=1,
    )
    assert "outside the workspace" in stderr_error(result)
    assert not (rl_ws.parent / "elsewhere").exists()


def guide_config(ws: Path, rl: RL) -> Path:
    """docs/rl.md's annotated config (code_execution among its rewards), ready to run."""
    text = (Path(__file__).parents[2] / "docs" / "rl.md").read_text(encoding="utf-8")
    start = text.index("```yaml\nkind: rl")
    block = text[start + len("```yaml\n") : text.index("```", start + 7)]
    (ws / "full.yaml").write_text(block, encoding="utf-8")
    (ws / "models").mkdir()
    (ws / "models" / "my-model").symlink_to(rl.model, target_is_directory=True)
    (ws / "data").mkdir()
    write_prompts(ws)
    (ws / "prompts.jsonl").rename(ws / "data" / "train.jsonl")
    (ws / "val.jsonl").rename(ws / "data" / "val.jsonl")
    return ws / "full.yaml"


def test_without_bwrap_code_rewards_stop_before_training(ws: Path, rl: RL) -> None:
    """No silent downgrade: the run refuses, says how to install bwrap or opt in to process."""
    guide_config(ws, rl)
    no_bwrap = {"PATH": str(ws / "no-bin")}
    args = ["train", "--config", "full.yaml", "--dry-run"]
    refused = run_mlx(args, workspace=ws, env=no_bwrap, check=1)
    message = stderr_error(refused)
    assert "Model-written code runs only inside bubblewrap, and bwrap is not installed" in message
    assert "apt-get install bubblewrap" in message and 'sandbox.backend = "process"' in message
    opted = run_mlx([*args, "--set", "sandbox.backend=process"], workspace=ws, env=no_bwrap)
    assert opted.returncode == 0, show(args, opted)


def test_the_guides_full_config_validates_strictly(ws: Path, rl: RL) -> None:
    """docs/rl.md's annotated config, with its model and data in place, passes --strict."""
    guide_config(ws, rl)
    result = run_mlx(["train", "--config", "full.yaml", "--dry-run", "--strict"], workspace=ws)
    assert result.returncode == 0, show(["train", "--dry-run"], result)
    assert result.stderr == ""  # no unknown-key warnings either
    assert "Rewards: code_execution x 0.7, format_structure x 0.3" in result.stdout
