"""``mlx eval`` for GRPO runs: HumanEval, GSM8K and the run's own validation prompts.

The checkpoint is the one named, else the run's best, else its last. Its config comes from
the checkpoint itself (or ``--config``), so a run is evaluated with the rewards and
generation settings it was trained with. Results go to ``<run>/eval/<checkpoint>.json``
and ``.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mlharness.errors import EvaluationError
from mlharness.rl import checkpoints as rl_ckpt
from mlharness.rl.benchmarks import check_benchmark_names, load_gsm8k, run_benchmarks
from mlharness.rl.config import RLConfig, rl_config_from_raw
from mlharness.rl.data import load_examples
from mlharness.rl.policy import Policy, load_policy
from mlharness.rl.rewards import RewardSet, load_reward_sources
from mlharness.rl.rollout import generate
from mlharness.rl.sampling import Sampler, summarize_groups
from mlharness.rl.sandbox import resolve_backend
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.device import resolve_device
from mlharness.runs.io import atomic_write_json, atomic_write_text


def locate(run_dir: Path | None, checkpoint: Path | None) -> tuple[Path, Path]:
    """(run directory, checkpoint directory): a named one, else the best, else the last."""
    if checkpoint is not None:
        if not checkpoint.exists() and run_dir is not None:
            checkpoint = run_dir / "checkpoints" / checkpoint
        if not checkpoint.is_dir():
            raise EvaluationError(
                f"Checkpoint {checkpoint} does not exist: name a ckpt_* directory of the run "
                "(see its checkpoints/), or give its path."
            )
        return checkpoint.resolve().parent.parent, checkpoint
    if run_dir is None:
        raise EvaluationError("Name what to evaluate: --run-dir RUN and/or --checkpoint PATH.")
    if not run_dir.is_dir():
        raise EvaluationError(f"Run directory not found: {run_dir}")
    return run_dir, run_ckpt.pick_for_sampling(run_dir / "checkpoints").path


def _completer(
    policy: Policy, config: RLConfig, stop: list[list[int]], max_new_tokens: int | None = None
) -> Any:
    """Benchmark prompts -> n completions each: greedy for n = 1, sampled otherwise.

    ``max_new_tokens`` (``--max-new-tokens``) defaults to the run's ``data.max_gen_len``;
    code needs more than a math answer. Prompts keep their last tokens that fit the context.
    """
    gen = torch.Generator(device=next(policy.model.parameters()).device).manual_seed(0)
    tok = policy.tokenizer
    new = max_new_tokens or config.data.max_gen_len
    keep = config.data.max_prompt_len
    if policy.context_len is not None:
        if new >= policy.context_len:
            raise EvaluationError(
                f"--max-new-tokens {new} leaves no room for a prompt in the policy's context "
                f"of {policy.context_len} tokens: ask for fewer."
            )
        keep = min(keep, policy.context_len - new)

    def complete(prompts: Sequence[str], n: int) -> list[list[str]]:
        ids = [tok.encode(tok.format_prompt(p, config.data.system_prompt)) for p in prompts]
        ids = [i[-keep:] or [tok.pad_id] for i in ids]
        groups = generate(
            policy,
            ids,
            group_size=n,
            max_new_tokens=new,
            generation=config.generation,
            stop=stop,
            generator=gen,
            greedy=n == 1,
        )
        return [[tok.decode(c.ids) for c in group] for group in groups]

    return complete


def resolve(
    run_dir: Path | None, checkpoint: Path | None, config: RLConfig | None
) -> tuple[Path, Path, RLConfig]:
    """(run directory, checkpoint directory, config): ``config``, else the checkpoint's own."""
    run_dir, ckpt_dir = locate(run_dir, checkpoint)
    meta = rl_ckpt.read(ckpt_dir) if (ckpt_dir / "checkpoint.json").is_file() else {}
    if config is None:
        if "config" not in meta:
            raise EvaluationError(
                f"{ckpt_dir} is not a GRPO checkpoint (it has no config): pass --config FILE."
            )
        config = rl_config_from_raw(meta["config"], Path("/"))
    return run_dir, ckpt_dir, config


def check_request(
    config: RLConfig, benchmarks: Sequence[str], gsm8k_path: Path | None, limit: int | None
) -> None:
    """Fail before the model loads: an unknown benchmark, a missing GSM8K file, nothing to do."""
    if benchmarks:
        wanted = check_benchmark_names(benchmarks)
        if "gsm8k" in wanted:
            load_gsm8k(gsm8k_path, limit)
        if "human_eval" in wanted:
            resolve_backend(config.sandbox.backend)  # no model is loaded for code that cannot run
    elif config.data.val_path is None:
        raise EvaluationError(
            "Nothing to evaluate: pass --benchmark human_eval and/or gsm8k, or give the run "
            "data.val_path prompts."
        )


def evaluate(
    *,
    run_dir: Path | None,
    checkpoint: Path | None,
    config: RLConfig | None,
    benchmarks: Sequence[str],
    gsm8k_path: Path | None = None,
    limit: int | None = None,
    num_samples: int = 1,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Score the checkpoint; write ``<run>/eval/<checkpoint>.json`` and ``.md``."""
    run_dir, ckpt_dir, config = resolve(run_dir, checkpoint, config)
    check_request(config, benchmarks, gsm8k_path, limit)
    started = time.perf_counter()
    device = resolve_device(config.trainer.device)
    policy = load_policy(
        ckpt_dir, device=device, use_chat_template=config.data.use_chat_template, trainable=False
    )
    stop = policy.tokenizer.stop_sequences(config.generation.stop)
    results: dict[str, Any] = {}
    if benchmarks:
        found = run_benchmarks(
            benchmarks,
            _completer(policy, config, stop, max_new_tokens),
            gsm8k_path=gsm8k_path,
            limit=limit,
            num_samples=num_samples,
            k_values=sorted({1, num_samples}),
            backend=config.sandbox.backend,
        )
        results.update({name: r.to_dict() for name, r in found.items()})
    if config.data.val_path is not None:
        results["validation"] = _validation(config, policy, device, limit)
    if not results:
        raise EvaluationError(
            "Nothing to evaluate: pass --benchmark human_eval and/or gsm8k, or give the run "
            "data.val_path prompts."
        )
    report = {
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_dir),
        "seconds": round(time.perf_counter() - started, 2),
        "results": results,
    }
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{ckpt_dir.name}.json", out / f"{ckpt_dir.name}.md"
    markdown = _markdown(report)
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, markdown)
    return {**report, "markdown": markdown, "files": [str(json_path), str(md_path)]}


def _validation(
    config: RLConfig, policy: Policy, device: torch.device, limit: int | None
) -> dict[str, Any]:
    """Greedy completions of the run's validation prompts, scored by its own rewards."""
    load_reward_sources(config.reward_sources, None)
    rewards = RewardSet(config.rewards)
    d = config.data
    assert d.val_path is not None
    examples, _ = load_examples(d.val_path, d.loader_type, policy.tokenizer, d.on_invalid, "val")
    examples = examples[: limit or len(examples)]
    sampler = Sampler(config, policy, rewards, torch.Generator(device=device).manual_seed(0))
    groups = sampler.run(examples, 1, greedy=True)
    return {"name": "validation", "metrics": summarize_groups(groups), "num_problems": len(groups)}


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation of {Path(report['checkpoint']).name}",
        "",
        "| benchmark | metric | value |",
        "|---|---|---|",
    ]
    for name, result in report["results"].items():
        for metric, value in result["metrics"].items():
            lines.append(f"| {name} | {metric} | {value:.4f} |")
    lines.append("")
    return "\n".join(lines)
