"""The rl (GRPO) engine's side of the run contract (:class:`mlharness.runs.engine.Engine`).

torch and the model libraries load only when a function trains or evaluates; checks and
plans run without them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlharness.rl.config import RL_METRICS, RLConfig, load_rl_config, rl_config_from_raw
from mlharness.rl.preflight import check
from mlharness.runs.device import leads
from mlharness.runs.engine import EvalRequest

METRICS = RL_METRICS

__all__ = ["METRICS", "check", "evaluate", "from_raw", "load", "plan", "quiet_hub", "train"]


def _say(text: str) -> None:
    if leads():  # under torchrun only rank 0 reports, as only it writes the run
        print(text, flush=True)


def load(path: Path, set_items: Sequence[str], strict: bool) -> RLConfig:
    return load_rl_config(path, set_items=list(set_items), strict=strict)


def from_raw(raw: Mapping[str, Any], source: Path, strict: bool) -> RLConfig:
    base = source.expanduser().resolve().parent
    return rl_config_from_raw(raw, base, source.stem, strict=strict)


def quiet_hub() -> None:
    """No Hugging Face "Loading weights" / "Writing model shards" bars on every load and
    checkpoint: the command shows its own progress (a user's own setting wins)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def plan(cfg: RLConfig) -> list[str]:
    """The policy, the prompts, the steps, the rewards and where the run goes."""
    t, d = cfg.trainer, cfg.data
    rewards = ", ".join(f"{r.name} x {r.weight:g}" for r in cfg.rewards)
    return [
        f"Load the policy from {cfg.model.model_path}"
        + (f" with LoRA r={cfg.model.lora_rank}" if cfg.model.use_lora else ""),
        f"Read prompts from {d.train_path} ({d.loader_type})",
        f"{t.num_training_steps} GRPO steps: {t.prompts_per_step} prompts x "
        f"{t.num_rollout_samples} completions (<= {d.max_gen_len} tokens), loss {t.loss_type}, "
        f"beta {t.grpo_beta:g}",
        f"Rewards: {rewards}",
        f"Write the run to {cfg.output_dir / cfg.experiment}/<timestamp>/",
    ]


def train(config: RLConfig, *, fresh: bool = False) -> str:
    """Train (or resume) a GRPO run and report it; an interrupted run says how to resume."""
    check(config)
    quiet_hub()
    from mlharness.rl.trainer import train as run_training

    _say(f"Experiment: {config.experiment} (GRPO)")
    for line in plan(config):
        logging.getLogger("mlharness.rl").debug("Plan: %s", line)
    result = run_training(config, fresh=fresh)
    if result.resumed_from is not None:
        _say(f"Resumed from {result.resumed_from}")
    final = result.final_metrics
    # The two rewards are of different things: say which, or they look like a train/val gap.
    parts = [f"train reward {final['reward']:.4f} (sampled)"] if "reward" in final else []
    if final.get("val_reward") is not None:
        start = final.get("val_reward_initial")
        before = f"{start:.4f} at step 0 -> " if start is not None else ""
        parts.append(f"val reward {before}{final['val_reward']:.4f} (greedy)")
    _say(
        f"GRPO {result.status} at step {result.steps}" + (": " + ", ".join(parts) if parts else "")
    )
    _say(f"Run directory: {result.run_dir}")
    if result.status == "interrupted":
        _say("Interrupted: run 'mlx train --config ...' again to resume.")
    return result.status


def evaluate(request: EvalRequest) -> None:
    """Benchmarks and the run's validation prompts, on the checkpoint named, else the run's
    best, else its last; with the run's own config unless ``request.config`` names one."""
    quiet_hub()
    from mlharness.rl import evaluate as rl_eval

    cfg = load(request.config, request.set_items, request.strict) if request.config else None
    checkpoint = Path(request.checkpoint) if request.checkpoint else None
    if request.dry_run:
        run, ckpt, cfg = rl_eval.resolve(request.run_dir, checkpoint, cfg)
        rl_eval.check_request(cfg, request.benchmarks, request.gsm8k_path, request.limit)
        _eval_plan(request, run, ckpt, cfg)
        return
    report = rl_eval.evaluate(
        run_dir=request.run_dir,
        checkpoint=checkpoint,
        config=cfg,
        benchmarks=request.benchmarks,
        gsm8k_path=request.gsm8k_path,
        limit=request.limit,
        num_samples=request.num_samples,
        max_new_tokens=request.max_new_tokens,
    )
    _say(report["markdown"])
    _say("Written: " + ", ".join(report["files"]))


def _eval_plan(request: EvalRequest, run: Path, ckpt: Path, cfg: RLConfig) -> None:
    _say(f"Checkpoint to load: {ckpt}")
    if request.benchmarks:
        _say(
            f"Benchmarks: {', '.join(request.benchmarks)} ({request.num_samples} completion(s) "
            "per problem" + (f", first {request.limit} problems" if request.limit else "") + ")"
        )
    if cfg.data.val_path is not None:
        _say(f"Validation prompts: {cfg.data.val_path}, scored by the run's rewards")
    _say(f"Would write: {run / 'eval' / (ckpt.name + '.json')} and .md")
    _say("Dry run: nothing was evaluated or written.")
