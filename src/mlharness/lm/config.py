"""The schema of an ``lm`` experiment: prepare, model, train, sample, output.

Every knob is one field with its help text, as in TRL's config classes. The defaults here
are the package defaults; an experiment's preparer may ship its own (merged next), then
the user's file, then ``MLX_OVERRIDES`` and ``--set`` (see :func:`load_lm_config`).
Relative paths in the user's file resolve against that file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlharness.config.loading import deep_merge, load_raw, validate
from mlharness.config.paths import SafeName, SafePath, check_path, workspace_root
from mlharness.errors import ConfigError
from mlharness.lm.pretrained import SOURCES, init_from_problem
from mlharness.runs.describe import Headline, RunMetrics
from mlharness.runs.heap import HEAP_BLOCK_LIMIT
from mlharness.runs.trackers import TrackerSettings

Operation = Literal["+", "-", "*"]


class _Strict(BaseModel):
    # Every float field must be finite: inf and nan are refused naming the field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ArithmeticConfig(_Strict):
    """Generated ``a+b=c`` problems (the ``arithmetic`` experiment)."""

    num_examples: int = Field(default=20_000, gt=0, description="Problems to generate.")
    max_operand: int = Field(
        default=99, gt=0, description="Operands are drawn from 0..max_operand."
    )
    operations: list[Operation] = Field(
        default_factory=lambda: list[Operation](["+"]),
        min_length=1,
        description="Operators to draw from.",
    )
    seed: int = Field(default=1337, description="Seed of the generator; same seed, same file.")


class SFTConfig(_Strict):
    """Prompt/completion pairs for supervised fine-tuning (the `sft` preparer)."""

    use_chat_template: bool | None = Field(
        default=None,
        description="Format prompts with the tokenizer's chat template; default: when it has "
        "one (Hugging Face tokenizers). Use the same setting as the GRPO run that follows.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="System prompt for pairs without a `system` field (chat templates only), "
        "as GRPO's data.system_prompt.",
    )


class PrepareConfig(_Strict):
    """How ``mlx prepare`` turns source text into ``train.bin``, ``val.bin`` and ``meta.json``."""

    preparer: str | None = Field(
        default=None, description="Registered preparer to use; default: the experiment's name."
    )
    input: SafePath | None = Field(
        default=None,
        description="Local source text file. Offline, or for experiments without a download, "
        "this is where the data comes from (also `mlx prepare --input PATH`).",
    )
    data_dir: SafePath | None = Field(
        default=None,
        description="Where the prepared artifacts go; default: <workspace>/data/<experiment>.",
    )
    tokenizer: str = Field(
        default="char",
        description="For the `text` experiment: `char`, `tiktoken:<encoding>` (e.g. "
        "`tiktoken:gpt2`), `bpe` (byte-level BPE trained on the corpus) or `hf:PATH` (the "
        "tokenizer of a local Hugging Face model directory, to fine-tune that model).",
    )
    bpe_vocab_size: int = Field(
        default=2048, ge=260, le=65536, description="Vocabulary size of a trained `bpe` tokenizer."
    )
    val_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Fraction of the tokens (the tail) held out for validation.",
    )
    url: str | None = Field(
        default=None,
        description="Download address of the source text, for experiments that have one.",
    )
    arithmetic: ArithmeticConfig = Field(
        default_factory=ArithmeticConfig, description="Options of the `arithmetic` experiment."
    )
    sft: SFTConfig = Field(
        default_factory=SFTConfig,
        description="Options of the `sft` preparer (a JSONL of prompt/completion pairs).",
    )

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str) -> str:
        if value in ("char", "bpe") or (value.startswith("tiktoken:") and len(value) > 9):
            return value
        if value.startswith("hf:") and value[3:].strip():
            check_path(value[3:])
            return value
        raise ValueError(
            f"tokenizer '{value}' is not known: use 'char', 'bpe', 'tiktoken:<encoding>' "
            "(for example 'tiktoken:gpt2') or 'hf:PATH' (a local Hugging Face model directory)."
        )


class ModelConfig(_Strict):
    """The GPT's shape; ``vocab_size`` comes from the prepared ``meta.json``."""

    n_layer: int = Field(default=4, gt=0, description="Transformer blocks.")
    n_head: int = Field(default=4, gt=0, description="Attention heads per block.")
    n_embd: int = Field(default=128, gt=0, description="Embedding width; a multiple of n_head.")
    block_size: int = Field(default=64, gt=0, description="Context length in tokens.")
    bias: bool = Field(
        default=False, description="Biases in Linear and LayerNorm layers (GPT-2: true)."
    )
    dropout: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout probability while training."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}): each "
                "head gets n_embd / n_head channels."
            )
        return self


class KeepConfig(_Strict):
    last: int = Field(
        default=2, ge=0, description="Rotating `ckpt_last_*` checkpoints to keep (0: none)."
    )
    best: int = Field(default=1, ge=0, description="`ckpt_best_*` checkpoints to keep (0: none).")


class CheckpointingConfig(_Strict):
    """Seed 004's rotation policy: first checkpoint after init, last on cadence, best on gain."""

    interval: int | None = Field(
        default=None,
        gt=0,
        description="Write a last checkpoint every N iterations; default: eval_interval.",
    )
    keep: KeepConfig = Field(default_factory=KeepConfig, description="Retention per kind.")


class TrainConfig(_Strict):
    """The optimisation: AdamW, cosine schedule with warmup, accumulation and clipping."""

    max_iters: int = Field(default=2000, gt=0, description="Optimizer steps in all.")
    batch_size: int = Field(
        default=12, gt=0, description="Sequences per micro-batch (per process)."
    )
    grad_accum_steps: int = Field(
        default=1,
        gt=0,
        description="Micro-batches per optimizer step (divided among DDP processes).",
    )
    learning_rate: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    min_lr: float = Field(default=1e-4, ge=0, description="Learning rate at the end of the decay.")
    warmup_iters: int = Field(default=100, ge=0, description="Linear warmup steps.")
    lr_decay_iters: int | None = Field(
        default=None, gt=0, description="Steps of cosine decay to min_lr; default: max_iters."
    )
    decay_lr: bool = Field(default=True, description="Use the schedule; false keeps learning_rate.")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW decay of 2-D weights only.")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(default=0.99, ge=0, lt=1, description="AdamW beta2.")
    grad_clip: float = Field(
        default=1.0, ge=0, description="Clip the gradient norm to this (0: off)."
    )
    eval_interval: int = Field(
        default=250, gt=0, description="Evaluate train and val loss every N steps."
    )
    eval_iters: int = Field(default=20, gt=0, description="Batches per loss estimate.")
    log_interval: int = Field(default=10, gt=0, description="Log training metrics every N steps.")
    seed: int = Field(default=1337, description="Seeds model init, batches and dropout.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="`auto` picks cuda, then mps, then cpu."
    )
    # No float16: without loss scaling its gradients underflow, and bfloat16 needs none.
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Autocast dtype; `auto` is bfloat16 on CUDA, float32 elsewhere (an "
        "explicit bfloat16 applies on any device; weights stay float32).",
    )
    compile: bool = Field(
        default=False, description="torch.compile the model (slow start, faster steps)."
    )
    ema_decay: float = Field(
        default=0.0, ge=0, lt=1, description="Keep an EMA of the weights with this decay (0: off)."
    )
    num_threads: int | None = Field(
        default=None, gt=0, description="torch CPU threads; default: torch's own choice."
    )
    cpu_batch_split: bool = Field(
        default=True,
        description="On CPU with several torch threads, give each thread a slice of the "
        "micro-batch to run forward and backward alone, and sum the slices' gradients in a "
        "fixed order (with dropout: our GPT only, each slice's masks from a generator of its "
        "own); false: every op is split across the threads instead "
        "(slower for small models, see docs/lm.md). Not for logits of 64 MB or more per "
        "micro-batch, where it gains nothing and costs memory.",
    )
    checkpointing: CheckpointingConfig = Field(
        default_factory=CheckpointingConfig, description="Checkpoint cadence and retention."
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass (less memory, slower); for "
        '`init_from = "hf:PATH"` models.',
    )

    @model_validator(mode="after")
    def _schedule(self) -> TrainConfig:
        if self.min_lr > self.learning_rate:
            raise ValueError(
                f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})."
            )
        return self


class LoraSettings(_Strict):
    """LoRA adapters (PEFT) on a pretrained model; only they train, and checkpoints hold them."""

    r: int = Field(default=8, gt=0, description="Rank of each adapter's A and B matrices.")
    alpha: float = Field(
        default=16.0, gt=0, description="Scale: the adapter's update is alpha / r * BA."
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Module names to adapt; default per layout: c_attn, c_proj, c_fc (our GPT, "
        "GPT-2), q/k/v/o_proj and gate/up/down_proj (Llama, Qwen2, Mistral).",
    )


class SampleConfig(_Strict):
    """How ``mlx sample`` generates text from the best (else last) checkpoint."""

    num_samples: int = Field(default=3, gt=0, description="Samples to draw.")
    max_new_tokens: int = Field(default=500, gt=0, description="Tokens to generate per sample.")
    temperature: float = Field(default=0.8, gt=0, description="Softmax temperature (< 1: safer).")
    top_k: int | None = Field(
        default=200, gt=0, description="Keep only the k likeliest tokens (null: all)."
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Nucleus sampling: smallest set with this probability mass.",
    )
    start: str = Field(
        default="\n", description="Prompt text, or `FILE:path` to read it from a file."
    )
    seed: int = Field(default=1337, description="Sampling seed.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Where to sample."
    )
    use_ema: bool = Field(
        default=True, description="Sample from the EMA weights when the run kept them."
    )

    @field_validator("start")
    @classmethod
    def _start_file(cls, start: str) -> str:
        if start.startswith("FILE:"):
            check_path(start[5:])
        return start


class OutputConfig(_Strict, TrackerSettings):
    directory: SafePath | None = Field(
        default=None,
        description="Where runs go; default <workspace>/runs. Must be inside the workspace.",
    )


class LMConfig(_Strict):
    """A language-model experiment: prepare the text, train a GPT, sample from it."""

    kind: Literal["lm"] = Field(default="lm", description="Experiment kind.")
    name: SafeName | None = Field(
        default=None,
        description="Experiment name; default: the EXPERIMENT argument of the command.",
    )
    description: str | None = Field(default=None, description="Human-readable description.")
    init_from: str = Field(
        default="scratch",
        description="Where the weights start: `scratch` (random), `nanogpt:PATH` (a nanoGPT "
        "ckpt.pt or the directory holding it) or `run:PATH` (an lm run: its best checkpoint, "
        "else its last; or one ckpt_* directory) or `hf:PATH` (a local Hugging Face causal "
        'LM directory; prepare the data with `prepare.tokenizer = "hf:PATH"`). A source '
        "gives the model its shape: `model.*` may only change dropout and lower block_size. "
        "Weights only: the optimizer and schedule start anew. See docs/lm.md.",
    )
    lora: LoraSettings | None = Field(
        default=None,
        description="Train LoRA adapters (PEFT) on the init_from model instead of all its "
        "weights; absent: full fine-tuning.",
    )
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="Data preparation.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="GPT shape.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Sampling.")
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="Run directories and trackers."
    )

    @field_validator("init_from")
    @classmethod
    def _known_source(cls, value: str) -> str:
        problem = init_from_problem(value)
        if problem is not None:
            raise ValueError(problem + ".")
        if value != "scratch":
            check_path(value.partition(":")[2])
        return value

    @model_validator(mode="after")
    def _fine_tuning(self) -> LMConfig:
        if self.lora is not None and self.init_from == "scratch":
            raise ValueError(
                "[lora] trains adapters on a pretrained model, but init_from is 'scratch': set "
                'init_from (e.g. "hf:PATH" or "run:PATH"), or remove [lora].'
            )
        if self.train.ema_decay > 0 and (self.lora is not None or self.init_from.startswith("hf:")):
            raise ValueError(
                "train.ema_decay is for GPT runs without [lora]: set it to 0 for a Hugging "
                "Face model or a LoRA run."
            )
        return self

    # Resolved locations; the loader fills name, so these never see None there.
    @property
    def experiment(self) -> str:
        if self.name is None:
            raise ConfigError("The experiment has no name: set `name` or pass EXPERIMENT.")
        return self.name

    @property
    def preparer(self) -> str:
        return self.prepare.preparer or self.experiment

    @property
    def data_dir(self) -> Path:
        return self.prepare.data_dir or workspace_root() / "data" / self.experiment

    @property
    def output_dir(self) -> Path:
        return self.output.directory or workspace_root() / "runs"

    def logits_outgrow_heap(self, vocab_size: int) -> bool:
        """Whether a micro-batch's float32 logits are too large for the heap to keep between
        steps (``runs/heap.py``): a GPT-2 vocabulary's are, 12 x 64 x 50,257 floats (154 MB).

        Such tensors are mapped afresh each step at a page fault per 4 KiB, and they are
        large enough that torch's own threading splits their ops well: the CPU trainer then
        asks for huge pages and keeps its batch whole (see docs/lm.md).
        """
        logits = self.train.batch_size * self.model.block_size * vocab_size * 4
        return logits >= HEAP_BLOCK_LIMIT


_PATH_FIELDS = (("prepare", "input"), ("prepare", "data_dir"), ("output", "directory"))


def resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the path fields of ``data`` absolute, relative ones against ``base``.

    ``sample.start = "FILE:notes.txt"`` and ``init_from = "run:runs/x"`` hold paths too.
    """
    out = deep_merge(data, {})
    for section, key in _PATH_FIELDS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, (str, os.PathLike)) and str(value).strip():
            p = Path(value).expanduser()
            out[section][key] = str(p if p.is_absolute() else (base / p).resolve())
    source = out.get("init_from")
    if isinstance(source, str) and source != "scratch":
        prefix, _, where = source.partition(":")
        p = Path(where).expanduser()
        hub_name = prefix == "hf" and not p.is_absolute() and not (base / p).exists()
        if prefix in SOURCES and where.strip() and not hub_name:  # hub names: refused at use
            out["init_from"] = f"{prefix}:{p if p.is_absolute() else (base / p).resolve()}"
    prepare = out.get("prepare")
    tokenizer = prepare.get("tokenizer") if isinstance(prepare, dict) else None
    if (
        isinstance(prepare, dict)
        and isinstance(tokenizer, str)
        and tokenizer.startswith("hf:")
        and tokenizer[3:].strip()
    ):
        p = Path(tokenizer[3:]).expanduser()
        if p.is_absolute() or (base / p).exists():  # else a hub name, refused where it is used
            prepare["tokenizer"] = f"hf:{p if p.is_absolute() else (base / p).resolve()}"
    sample = out.get("sample")
    if isinstance(sample, dict) and isinstance(sample.get("start"), str):
        start: str = sample["start"]
        if start.startswith("FILE:") and start[5:].strip():
            p = Path(start[5:]).expanduser()
            sample["start"] = "FILE:" + str(p if p.is_absolute() else (base / p).resolve())
    return out


def load_lm_config(
    path: str | os.PathLike[str] | None,
    experiment: str | None,
    *,
    set_items: Sequence[str] = (),
    strict: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> LMConfig:
    """Experiment defaults, then the file, then MLX_OVERRIDES and --set; validated strictly.

    ``overrides`` (a nested mapping) is for Python callers such as tests and benchmarks.
    """
    from mlharness.config.loading import apply_overrides

    if path is not None:
        raw = load_raw(path, set_items=set_items)
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path} must hold one lm experiment (a table of settings), not a list."
            )
        base = Path(path).expanduser().resolve().parent
    else:
        raw, base = apply_overrides({}, set_items), Path.cwd()
    if overrides:
        raw = deep_merge(raw, overrides)
    return lm_config_from_raw(raw, base, experiment, strict=strict)


def lm_config_from_raw(
    raw: Mapping[str, Any], base: Path, experiment: str | None = None, *, strict: bool = False
) -> LMConfig:
    """Validate one lm experiment whose file lies in ``base`` (overrides already applied).

    ``experiment`` (the command's EXPERIMENT argument) names the run when the file does not;
    when both name it they must agree, so a config is never silently trained under
    another experiment's directory.
    """
    from mlharness.lm.registry import experiment_defaults

    data = resolve_relative_paths(dict(raw), base)
    name = data.get("name")
    if experiment is not None and name is not None and name != experiment:
        raise ConfigError(
            f"The config names experiment '{name}' but the command says '{experiment}'. "
            "Use the same name, or remove `name` from the config."
        )
    name = name or experiment
    if name is None:
        raise ConfigError(
            'The config has no `name` and no EXPERIMENT was given: add name = "..." to it.'
        )
    data["name"] = name
    prepare = data.get("prepare")
    preparer = (prepare.get("preparer") if isinstance(prepare, dict) else None) or name
    defaults = experiment_defaults(str(preparer))
    if data.get("init_from", "scratch") != "scratch":
        defaults.pop("model", None)  # the source gives the shape; [model] holds only the user's
    merged = deep_merge(defaults, data)
    # Seeds 001/004: lm configs are strict. An unknown key is an error (with a did-you-mean),
    # never a warning: a typo'd [trian] section trained 2000 iterations with the defaults.
    del strict  # accepted for the shared --strict flag; lm configs are always strict
    return validate(LMConfig, merged, strict=True)


def config_snapshot(config: LMConfig) -> dict[str, Any]:
    """The resolved config as plain JSON data (paths as strings)."""
    return config.model_dump(mode="json")


# What `mlx history`, `mlx compare` and the curves show of an lm run: records are logged
# against the iteration; each evaluation logs val_loss and the train split's loss.
LM_METRICS = RunMetrics(
    kind="lm",
    step_key="iter",
    headline=(Headline("val_loss", "min"), Headline("eval/train_loss", "min")),
)
