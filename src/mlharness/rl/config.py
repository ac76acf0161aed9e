"""The schema of an ``rl`` (GRPO) experiment: seed 002's sections, every knob documented once.

The sections follow seed 002's example config (``trainer``, ``model``, ``generation``,
``data``, ``rewards``, ``monitoring``, ``checkpointing``) so its files load unchanged, plus
the knobs that users of TRL's GRPOTrainer expect (``loss_type``, ``scale_rewards``,
``epsilon_high``, dynamic sampling, truncation masking). Relative paths in a file resolve
against the file's directory, as for every kind.

One step, in the words of this schema: draw ``ppo_batch_size x grad_accum_steps`` prompts,
generate ``num_rollout_samples`` completions for each, score them with the rewards, turn the
scores into group-relative advantages, then make ``num_iterations`` passes over the
rollouts in ``grad_accum_steps`` micro-batches of ``ppo_batch_size`` prompts (whole groups,
so any batch size works with any group size), one optimizer update per pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlharness.config.loading import (
    deep_merge,
    experiment_kind,
    load_raw,
    validate,
)
from mlharness.config.paths import SafeName, SafePath, workspace_root
from mlharness.errors import ConfigError
from mlharness.runs.describe import Headline, RunMetrics
from mlharness.runs.trackers import TrackerSettings


class _Strict(BaseModel):
    # Every float field must be finite: inf and nan are refused naming the field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LRScheduleConfig(_Strict):
    """Seed 002's ``lr_schedule_config``: ``arguments: [peak, decay_steps, end]`` after warmup."""

    name: Literal["cosine_decay", "constant"] = Field(
        default="cosine_decay", description="`cosine_decay` from peak to end, or `constant`."
    )
    arguments: list[float] | None = Field(
        default=None,
        description="[peak_lr, decay_steps, end_lr]; default: [learning_rate, "
        "num_training_steps - warmup, learning_rate / 10].",
    )
    warmup: int = Field(default=0, ge=0, description="Linear warmup steps from 0 to the peak.")

    @field_validator("arguments")
    @classmethod
    def _three(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 3 or value[0] < 0 or value[1] < 0 or value[2] < 0):
            raise ValueError(
                "arguments must be three non-negative numbers [peak_lr, decay_steps, end_lr], "
                f"as in [1e-5, 1000, 1e-6]; got {value}."
            )
        return value


class TrainerConfig(_Strict):
    """The GRPO algorithm, its batching, optimizer, schedule and gradient routing."""

    algorithm: Literal["grpo"] = Field(default="grpo", description="The RL algorithm (GRPO).")
    output_dir: SafePath | None = Field(
        default=None,
        description="Where runs go (`<output_dir>/<name>/<timestamp>/`); default "
        "<workspace>/runs. Must be inside the workspace.",
    )
    num_training_steps: int = Field(default=100, gt=0, description="Optimizer steps in all.")
    learning_rate: float = Field(default=1e-5, gt=0, description="Peak learning rate.")
    optimizer_beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    optimizer_beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    optimizer_weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    lr_schedule_config: LRScheduleConfig = Field(
        default_factory=LRScheduleConfig, description="Warmup then cosine decay."
    )
    ppo_batch_size: int = Field(
        default=4,
        gt=0,
        description="Prompts per micro-batch (each with its whole group of completions).",
    )
    num_rollout_samples: int = Field(
        default=4, gt=0, description="Completions per prompt: the group GRPO compares within."
    )
    grad_accum_steps: int = Field(
        default=1,
        gt=0,
        description="Micro-batches per optimizer step; prompts per step = "
        "ppo_batch_size x grad_accum_steps.",
    )
    num_iterations: int = Field(
        default=1,
        gt=0,
        description="Optimizer passes over each batch of rollouts (TRL's mu). With 1 the "
        "importance ratio is exactly 1; more passes make the clipping matter.",
    )
    grpo_beta: float = Field(
        default=0.04,
        ge=0,
        description="Weight of the KL penalty to the reference (0: no reference "
        "model is loaded at all).",
    )
    kl_importance_weighted: bool = Field(
        default=False,
        description="Weight the KL term by the importance ratio (beta x ratio x KL), as TRL's "
        "use_bias_correction_kl (its default): on-policy the KL gradient becomes the unbiased "
        "reverse-KL gradient, beta x (logp - ref).",
    )
    epsilon: float = Field(
        default=0.2, gt=0, description="Lower clip range of the importance ratio."
    )
    epsilon_high: float | None = Field(
        default=None, gt=0, description="Upper clip range (DAPO's clip-higher); default: epsilon."
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        default="grpo",
        description="Token averaging: `grpo` per sequence then over sequences; `bnpo` over the "
        "micro-batch's tokens; `dapo` over the whole step's tokens; `dr_grpo` by a constant "
        "(sequences x max_gen_len).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="Divide advantages by the group's reward std, the batch's, or not at all "
        "(Dr. GRPO).",
    )
    mask_truncated_completions: bool = Field(
        default=False, description="Leave completions that hit max_gen_len out of the loss."
    )
    dynamic_sampling: bool = Field(
        default=False,
        description="DAPO's dynamic sampling: drop groups whose rewards are all equal (no "
        "signal) and refill from the next prompts.",
    )
    max_resample_rounds: int = Field(
        default=3,
        ge=0,
        description="With dynamic_sampling: extra generation rounds to refill a step.",
    )
    max_grad_norm: float = Field(default=1.0, ge=0, description="Clip the gradient norm (0: off).")
    seed: int = Field(default=42, ge=-1, description="Seed of everything; -1 draws one (recorded).")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="`auto` picks cuda, then mps, then cpu."
    )
    num_threads: int | None = Field(
        default=None, gt=0, description="torch CPU threads; default: torch's own choice."
    )
    eval_every: int = Field(
        default=0,
        ge=0,
        description="Score the validation prompts with the rewards every N steps (0: "
        "only at the end, when val_path is set).",
    )
    eval_num_prompts: int = Field(
        default=64, gt=0, description="Validation prompts scored per evaluation (greedy decoding)."
    )

    # Dual gradients (seed 002): thinking and answer losses routed to layer ranges.
    use_dual_gradients: bool = Field(
        default=False,
        description="Compute the loss of thinking tokens and of answer tokens apart and apply "
        "each only to its layer range; gradient = thinking + answer_gradient_weight x answer.",
    )
    thinking_layer_start: int = Field(
        default=0, ge=0, description="First layer of the thinking range."
    )
    thinking_layer_end: int | None = Field(
        default=None,
        ge=0,
        description="End (exclusive) of the thinking range; default: all layers.",
    )
    answer_layer_start: int = Field(default=0, ge=0, description="First layer of the answer range.")
    answer_layer_end: int | None = Field(
        default=None, ge=0, description="End (exclusive) of the answer range; default: all layers."
    )
    answer_gradient_weight: float = Field(
        default=1.0, ge=0, description="Weight of the answer region's gradient."
    )

    # SFT on the reference completion.
    use_sft_on_answer: bool = Field(
        default=False, description="Add a supervised loss on each prompt's reference completion."
    )
    sft_mode: Literal["all", "answer_only", "weighted", "exclude_thinking"] = Field(
        default="all",
        description="`all`: SFT gradient to every layer; `answer_only`: only the answer layer "
        "range; `exclude_thinking`: every layer but the thinking range; `weighted`: every "
        "layer, thinking and answer tokens weighted by sft_thinking_weight/sft_answer_weight.",
    )
    sft_weight: float = Field(default=0.1, ge=0, description="Coefficient of the SFT loss.")
    sft_thinking_weight: float = Field(
        default=0.0, ge=0, description="`weighted`: weight of the reference's thinking tokens."
    )
    sft_answer_weight: float = Field(
        default=1.0, ge=0, description="`weighted`: weight of the reference's answer tokens."
    )

    @model_validator(mode="after")
    def _ranges(self) -> TrainerConfig:
        for name in ("thinking", "answer"):
            start = getattr(self, f"{name}_layer_start")
            end = getattr(self, f"{name}_layer_end")
            if end is not None and end <= start:
                raise ValueError(
                    f"{name}_layer_end ({end}) must be greater than {name}_layer_start "
                    f"({start}): the range is [start, end)."
                )
        return self

    @property
    def prompts_per_step(self) -> int:
        return self.ppo_batch_size * self.grad_accum_steps


class ModelConfig(_Strict):
    """The policy, its reference, and LoRA."""

    model_path: SafePath = Field(
        ...,
        description="An `mlx train` run directory or checkpoint directory (our GPT), or a "
        "local Hugging Face causal-LM directory (config.json + weights).",
    )
    checkpoint: Literal["best", "last"] = Field(
        default="best", description="For an lm run directory: its best checkpoint, else the last."
    )
    ref_model_path: SafePath | None = Field(
        default=None,
        description="Reference model for the KL penalty; default: a frozen copy of the initial "
        "policy (with LoRA: the base model with adapters disabled, no second copy).",
    )
    use_lora: bool = Field(
        default=False, description="Train LoRA adapters (PEFT) instead of all weights."
    )
    lora_rank: int = Field(default=8, gt=0, description="LoRA rank r.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] | None = Field(
        default=None,
        description="Module names to adapt; default: the attention and MLP projections "
        "(`c_attn`, `c_proj`, `c_fc` for GPT-2 style, `q_proj` ... `down_proj` for Llama style).",
    )


class GenerationConfig(_Strict):
    """Sampling of rollouts and the logit rules that shape thinking (seed 002's biases).

    The think rules are active when any of their values is non-zero (all are 0 by default).
    They act on the first token of each tag (a tag is often several tokens); once a tag has
    started, its other tokens are left to the model.
    """

    temperature: float = Field(default=1.0, gt=0, description="Softmax temperature of rollouts.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(
        default=None, gt=0, description="Keep the k likeliest tokens (null: all)."
    )
    stop: list[str] | None = Field(
        default=None,
        description="Texts that end a completion (kept in it, trained on); default: the "
        "tokenizer's EOS for Hugging Face models, a newline for char-level GPTs.",
    )
    think_start_tag: str = Field(default="<think>", description="Opens the thinking region.")
    think_end_tag: str = Field(default="</think>", description="Closes the thinking region.")
    answer_start_tag: str | None = Field(
        default=None, description="Text that starts an answer; the target of bias_answer_start."
    )
    bias_close_think: float = Field(
        default=0.0,
        description="Added to the think-end tag's logit while thinking (after min tokens).",
    )
    bias_answer_start: float = Field(
        default=0.0, description="Added to answer_start_tag's logit right after the think-end tag."
    )
    punish_extra_think_end: float = Field(
        default=0.0, description="Added to the think-end tag's logit once thinking has closed."
    )
    min_think_tokens: int = Field(
        default=0, ge=0, description="Thinking tokens before the think-end tag is encouraged."
    )
    think_end_early_bias: float = Field(
        default=0.0,
        description="Subtracted from the think-end tag's logit while fewer than "
        "min_think_tokens thinking tokens were generated.",
    )
    int8_rollouts: bool = Field(
        default=False,
        description="Sample training rollouts from an int8 copy of the policy (our GPT or "
        "GPT-2, on the CPU; remade after each optimizer step): decoding reads a quarter of "
        "the bytes. Each token's surrogate loss is then weighted by min(p_policy / p_int8, "
        "int8_correction_cap), truncated importance sampling as in FlashRL. Evaluation "
        "samples the float policy.",
    )
    int8_correction_cap: float = Field(
        default=2.0,
        ge=1,
        description="The cap C of int8 rollouts' importance weights min(p_policy / p_int8, C).",
    )


class DataConfig(_Strict):
    """Prompts and reference completions: JSONL or pre-tokenized NPY."""

    train_path: SafePath = Field(..., description="JSONL file, or the NPY directory/prefix.")
    val_path: SafePath | None = Field(
        default=None,
        description="Held-out prompts, in the same format as train_path (loader_type).",
    )
    loader_type: Literal["jsonl", "npy"] = Field(default="jsonl", description="`jsonl` or `npy`.")
    max_prompt_len: int = Field(
        default=256, gt=0, description="Prompt tokens kept (the last ones; longer prompts are cut)."
    )
    max_gen_len: int = Field(default=128, gt=0, description="Completion tokens generated at most.")
    shuffle_data: bool = Field(
        default=True, description="Reshuffle the prompts every epoch (seeded)."
    )
    on_invalid: Literal["fail", "skip"] = Field(
        default="fail", description="A bad JSONL line: fail naming it, or skip it and count it."
    )
    use_chat_template: bool | None = Field(
        default=None,
        description="Format prompts with the tokenizer's chat template; default: when it has one.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="System prompt for examples that carry none (chat templates only).",
    )
    val_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="`mlx preprocess`: fraction held out for validation."
    )


class RewardSpec(_Strict):
    """One reward: a registered name, its weight in the sum, and its own options."""

    name: str = Field(..., description="Registered reward name (see docs/rl-rewards.md).")
    weight: float = Field(default=1.0, description="Weight in the total reward.")
    config: dict[str, Any] = Field(default_factory=dict, description="The reward's options.")


class MonitoringConfig(_Strict):
    log_every: int = Field(default=1, gt=0, description="Log metrics every N steps.")
    log_samples_every: int = Field(
        default=10, ge=0, description="Write samples to samples/*.jsonl every N steps (0: never)."
    )
    max_logged_samples: int = Field(
        default=8, ge=0, description="Samples written each time, at most."
    )
    log_prompts: bool = Field(default=True, description="Include the prompt in logged samples.")
    use_wandb: bool = Field(
        default=False,
        description="Seed 002's W&B switch: true adds `wandb` to output.trackers, with "
        "wandb_project and wandb_mode below unless output sets them.",
    )
    wandb_project: str = Field(
        default="mlharness-grpo",
        description="W&B project with use_wandb (else output.wandb_project).",
    )
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        default="auto", description="W&B mode with use_wandb (else output.wandb_mode)."
    )


class OutputConfig(_Strict, TrackerSettings):
    """Where metrics go besides the run's files (the run directory is trainer.output_dir)."""


class CheckpointingConfig(_Strict):
    checkpoint_dir: str = Field(
        default="checkpoints",
        description="Seed 002's field; the run layout fixes it to `checkpoints` (inside the "
        "run directory), where resume, eval and sample look.",
    )
    save_every: int = Field(default=50, gt=0, description="Save every N steps (and at the end).")
    keep_last_n: int = Field(
        default=3, ge=0, description="Checkpoints kept (0: keep none but the final)."
    )
    save_optimizer_state: bool = Field(
        default=True,
        description="Keep the optimizer state so a resumed run continues exactly; without it "
        "a resume restarts the optimizer's moments (with a warning).",
    )

    @field_validator("checkpoint_dir")
    @classmethod
    def _fixed_layout(cls, value: str) -> str:
        if value.strip("/") != "checkpoints":
            raise ValueError(
                f"checkpoint_dir '{value}' is not supported: every run keeps its checkpoints "
                "in <run>/checkpoints/, where resume, eval and sample find them. Remove the "
                "field or set it to 'checkpoints'."
            )
        return "checkpoints"


class SandboxConfig(_Strict):
    """Where model-written code runs: ``code_execution`` rewards and HumanEval."""

    backend: Literal["auto", "bwrap", "process"] = Field(
        default="auto",
        description="`auto` and `bwrap`: bubblewrap (namespaces, read-only system, nobody, "
        "no network); the run stops with an error where bwrap cannot run. `process`: a "
        "plain child process with limits and an audit hook, not a security boundary (see "
        "docs/security.md). A code_execution reward's own `backend` option wins.",
    )


class RLConfig(_Strict):
    """A GRPO experiment: a policy, prompts, rewards, and how to train."""

    kind: Literal["rl"] = Field(default="rl", description="Experiment kind.")
    name: SafeName | None = Field(
        default=None, description="Experiment name; default: the config file's stem."
    )
    description: str | None = Field(default=None, description="Human-readable description.")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="The algorithm.")
    model: ModelConfig = Field(..., description="Policy and reference models.")
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Rollout sampling."
    )
    data: DataConfig = Field(..., description="Prompts.")
    rewards: list[RewardSpec] = Field(..., min_length=1, description="Weighted rewards.")
    reward_sources: list[str] = Field(
        default_factory=list,
        description="Python files or modules that register user rewards, imported first.",
    )
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Logging.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Trackers.")
    checkpointing: CheckpointingConfig = Field(
        default_factory=CheckpointingConfig, description="Checkpoints."
    )
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="Where model-written code runs."
    )

    @model_validator(mode="after")
    def _code_rewards_use_the_sandbox(self) -> RLConfig:
        """Every code_execution reward without a backend of its own takes sandbox.backend."""
        for spec in self.rewards:
            if spec.name == "code_execution":
                spec.config.setdefault("backend", self.sandbox.backend)
        return self

    @model_validator(mode="after")
    def _use_wandb_alias(self) -> RLConfig:
        """monitoring.use_wandb, seed 002's switch, stays a first-class spelling of ``wandb``
        in output.trackers: seed 002's configs load unchanged and without a warning."""
        m, out = self.monitoring, self.output
        if not m.use_wandb or "wandb" in out.trackers:
            return self
        out.trackers = [*out.trackers, "wandb"]
        if "wandb_project" not in out.model_fields_set:
            out.wandb_project = m.wandb_project
        if "wandb_mode" not in out.model_fields_set:
            out.wandb_mode = m.wandb_mode
        return self

    @property
    def experiment(self) -> str:
        return self.name or "grpo"

    @property
    def output_dir(self) -> Path:
        return self.trainer.output_dir or workspace_root() / "runs"


_PATH_FIELDS = (
    ("trainer", "output_dir"),
    ("model", "model_path"),
    ("model", "ref_model_path"),
    ("data", "train_path"),
    ("data", "val_path"),
)


def is_rl_config(raw: Any) -> bool:
    """An rl config says ``kind: rl``, or has seed 002's shape (``trainer`` and ``rewards``)."""
    return isinstance(raw, Mapping) and experiment_kind(raw) == "rl"


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = deep_merge(data, {})
    for section, key in _PATH_FIELDS:
        part = out.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, (str, os.PathLike)) and str(value).strip():
            p = Path(value).expanduser()
            part[key] = str(p if p.is_absolute() else (base / p).resolve())  # type: ignore[index]
    sources = out.get("reward_sources")
    if isinstance(sources, list):
        out["reward_sources"] = [
            str((base / s).resolve()) if isinstance(s, str) and s.endswith(".py") else s
            for s in sources
        ]
    return out


def rl_config_from_raw(
    raw: Mapping[str, Any], base: Path, name: str | None = None, *, strict: bool = False
) -> RLConfig:
    """Validate one rl experiment whose file lies in ``base`` (overrides already applied)."""
    data = _resolve_paths(dict(raw), base)
    if data.get("name") is None and name is not None:
        data["name"] = name
    data["kind"] = "rl"
    del strict  # rl configs are always strict, like lm's: an unknown key is an error
    return validate(RLConfig, data, strict=True)


def load_rl_config(
    path: str | os.PathLike[str],
    *,
    set_items: Sequence[str] = (),
    strict: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> RLConfig:
    """The file, then MLX_OVERRIDES and --set; validated strictly; named after the file."""
    raw = load_raw(path, set_items=set_items)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must hold one rl experiment (a mapping of sections), not a list."
        )
    if overrides:
        raw = deep_merge(raw, overrides)
    p = Path(path).expanduser().resolve()
    return rl_config_from_raw(raw, p.parent, p.stem, strict=strict)


def config_snapshot(config: RLConfig) -> dict[str, Any]:
    """The resolved config as plain JSON data (paths as strings)."""
    return config.model_dump(mode="json")


# What `mlx history`, `mlx compare` and the curves show of a GRPO run: records are logged
# against the optimizer step; val_reward is greedy on the validation prompts, reward is the
# mean over the step's sampled completions.
RL_METRICS = RunMetrics(
    kind="rl",
    step_key="step",
    headline=(Headline("val_reward", "max"), Headline("reward", "max")),
)
