"""The GRPO trainer: rollouts, rewards, group-relative advantages, clipped updates.

One step (see :mod:`mlharness.rl.config` for the knobs):

1. take ``ppo_batch_size x grad_accum_steps`` prompts from the seeded, resumable stream;
2. sample ``num_rollout_samples`` completions for each with the KV cache;
3. score every completion with the weighted rewards; with dynamic sampling, drop groups
   whose rewards are all equal and refill from the next prompts;
4. advantages = reward minus group mean, scaled as ``scale_rewards`` says;
5. ``num_iterations`` passes over the groups in micro-batches of ``ppo_batch_size``
   prompts: the clipped surrogate plus ``grpo_beta`` x KL to the reference, optional SFT on
   the reference completion, optional dual gradients; one AdamW update per pass.

Checkpoints hold the policy, the optimizer, every RNG and the stream's position, so a
resumed run continues at its step with its data order; it never restarts at step 0.
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mlharness.errors import CheckpointError, ConfigError
from mlharness.rl import checkpoints as rl_ckpt
from mlharness.rl import grpo
from mlharness.rl.config import RLConfig, config_snapshot
from mlharness.rl.data import Example, PromptStream, load_examples
from mlharness.rl.policy import (
    HF_DIR,
    Policy,
    add_lora,
    frozen_copy,
    load_policy,
    load_policy_state,
    policy_state,
)
from mlharness.rl.rewards import RewardSet, load_reward_sources
from mlharness.rl.sampling import Group, Sampler, summarize_groups
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.device import resolve_device
from mlharness.runs.interrupt import GracefulInterrupt
from mlharness.runs.io import atomic_copy, atomic_write_text, dumps
from mlharness.runs.lifecycle import find_resumable, keep_history, rng_state, set_rng_state
from mlharness.runs.metrics import MetricsWriter
from mlharness.runs.optim import AdamW
from mlharness.runs.output import OutputManager
from mlharness.runs.progress import ProgressBar

log = logging.getLogger(__name__)

PLOT_KEYS = ("reward", "val_reward", "kl", "policy_loss", "completion_length", "tokens_per_sec")


@dataclass
class RLResult:
    run_dir: Path
    status: str
    steps: int
    final_metrics: dict[str, Any]
    resumed_from: Path | None = None


def resolve_seed(seed: int) -> int:
    """``-1`` draws a seed (recorded in the run so the run can be repeated)."""
    return secrets.randbits(31) if seed == -1 else seed


class GRPOTrainer:
    """Holds the state of one GRPO run; :meth:`fit` runs it to num_training_steps."""

    def __init__(
        self, config: RLConfig, *, fresh: bool = False, progress: bool | None = None
    ) -> None:
        self.config = config
        t, d = config.trainer, config.data
        self.progress = progress if progress is not None else os.isatty(2)
        self.device = resolve_device(t.device)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)

        # Cheap checks first: rewards and JSONL prompts fail in milliseconds, before any model
        # loads (NPY prompts need the policy's tokenizer to decode them).
        load_reward_sources(config.reward_sources, None)
        self.rewards = RewardSet(config.rewards)
        if d.loader_type == "jsonl":
            self._load_data(None)
        found = find_resumable(config.output_dir, config.experiment, "rl", fresh=fresh)
        self.resumed_from: Path | None = found[1].path if found else None
        self.resumed_kind: str | None = found[1].kind if found else None
        resume_meta = rl_ckpt.read(found[1].path) if found else None
        self.seed = int(resume_meta["seed"]) if resume_meta else resolve_seed(t.seed)

        torch.manual_seed(self.seed)
        self.policy = load_policy(
            config.model.model_path,
            device=self.device,
            use_chat_template=d.use_chat_template,
            prefer=config.model.checkpoint,
        )
        self.tokenizer = self.policy.tokenizer
        self._check_lengths()
        self.reference = self._reference()
        m = config.model
        if m.use_lora:
            add_lora(
                self.policy,
                rank=m.lora_rank,
                alpha=m.lora_alpha,
                dropout=m.lora_dropout,
                targets=m.lora_target_modules,
            )
        self.layers = self._layer_ranges()
        self.params = [p for p in self.policy.model.parameters() if p.requires_grad]
        # lm's AdamW: torch.optim.AdamW's arithmetic and state format without its import of
        # torch._dynamo. Fused: one kernel for every parameter (CUDA, and CPU since torch
        # 2.4), 1.7 ms against 5.8 ms per step for the bench's 4-layer model.
        self.optimizer = AdamW(
            [{"params": self.params, "weight_decay": t.optimizer_weight_decay}],
            lr=t.learning_rate,
            betas=(t.optimizer_beta1, t.optimizer_beta2),
            fused=self.device.type in ("cuda", "cpu"),
        )

        if d.loader_type == "npy":
            self._load_data(self.tokenizer)
        self.stream = PromptStream(self.train_examples, shuffle=d.shuffle_data, seed=self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.sampler = Sampler(config, self.policy, self.rewards, self.generator)
        self.step = 0
        self.best_val_reward: float | None = None
        self.last_eval: dict[str, Any] = {}
        self.step_times: list[float] = []
        if found is not None and resume_meta is not None:
            self._restore(found[1].path, resume_meta)
        self.output = OutputManager(
            config.experiment,
            config.output_dir,
            kind="rl",
            resume_dir=found[0] if found else None,
            lock=True,
        )
        self.run_dir = self.output.run_dir
        self._open_run(resumed=found is not None)

    # -- setup -------------------------------------------------------------------------------

    def _load_data(self, tokenizer: Any) -> None:
        d = self.config.data
        self.train_examples, self.load_report = load_examples(
            d.train_path, d.loader_type, tokenizer, d.on_invalid
        )
        self.val: list[Example] = []
        if d.val_path is not None:
            self.val, _ = load_examples(d.val_path, d.loader_type, tokenizer, d.on_invalid, "val")

    def _check_lengths(self) -> None:
        d, ctx = self.config.data, self.policy.context_len
        if ctx is not None and d.max_prompt_len + d.max_gen_len > ctx:
            raise ConfigError(
                f"data.max_prompt_len ({d.max_prompt_len}) + data.max_gen_len ({d.max_gen_len}) "
                f"exceeds the policy's context length ({ctx}). Lower one of them."
            )

    def _reference(self) -> Policy | None:
        """No reference at grpo_beta 0; the given one; LoRA's base; else a frozen copy."""
        t, m = self.config.trainer, self.config.model
        if t.grpo_beta == 0:
            return None
        if m.ref_model_path is not None:
            return load_policy(m.ref_model_path, device=self.device, trainable=False)
        if m.use_lora:
            return None  # adapters disabled on the policy itself: see _ref_logits
        return frozen_copy(self.policy)

    def _layer_ranges(self) -> dict[str, int | None]:
        t = self.config.trainer
        n = self.policy.num_layers()
        for name in ("thinking", "answer"):
            start = getattr(t, f"{name}_layer_start")
            if (t.use_dual_gradients or t.use_sft_on_answer) and n and start >= n:
                raise ConfigError(
                    f"trainer.{name}_layer_start ({start}) is past the policy's {n} layers: "
                    f"choose a value below {n}."
                )
        self.n_layers = n
        return self.policy.layer_of()

    def _open_run(self, resumed: bool) -> None:
        c = self.config
        if not resumed:
            info = {k: v for k, v in self.policy.info.items() if k != "hf_tokenizer"}
            self.output.write_config(
                {**config_snapshot(c), "policy": info, "resolved_seed": self.seed},
                seeds={"train": self.seed},
            )
            history: list[dict[str, Any]] = []
        else:
            history = keep_history(self.run_dir / "metrics", self.step, key="step")
            evals = [r for r in history if "val_reward" in r]
            self.last_eval = evals[-1] if evals else {}
        if self.policy.kind == "gpt":  # `mlx sample --checkpoint` reads the run's tokenizer
            tok_dir = Path(self.policy.info["tokenizer_dir"])
            for name in ("meta.json", "tokenizer.json"):
                if (tok_dir / name).is_file():
                    atomic_copy(tok_dir / name, self.run_dir / name)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        self.metrics = MetricsWriter(
            self.run_dir / "metrics",
            c.experiment,
            step_key="step",
            tensorboard_dir=self.run_dir / "logs" / "tb",
            # The headline curves; every metric is in TensorBoard and the metrics files.
            plot_keys=PLOT_KEYS,
        )
        self.metrics.history = history
        self.wandb: Any = None
        if c.monitoring.use_wandb:
            from mlharness.rl.tracking import start_wandb

            self.wandb = start_wandb(c, self.run_dir, self.seed)

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, kind: str = "last", val_reward: float | None = None) -> None:
        c = self.config.checkpointing
        keep = c.keep_last_n if kind == "last" else 1
        final = kind == "last" and self.step >= self.config.trainer.num_training_steps
        if keep == 0 and not final:
            return  # keep_last_n = 0: only the final checkpoint is written
        trainer_state: dict[str, Any] = {
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "stream": self.stream.state_dict(),
        }
        if c.save_optimizer_state:
            trainer_state["optimizer"] = self.optimizer.state_dict()
        if self.policy.uses_lora:
            trainer_state["adapter"] = policy_state(self.policy)
        directory = self.run_dir / c.checkpoint_dir
        metric = ("val_reward", val_reward) if kind == "best" and val_reward is not None else None
        rl_ckpt.save(
            directory,
            run_ckpt.checkpoint_name(kind, self.step, metric),
            kind=kind,
            step=self.step,
            policy=self.policy,
            trainer_state=trainer_state,
            meta={
                "seed": self.seed,
                "best_val_reward": self.best_val_reward,
                "val_reward": val_reward,
                "metric": "val_reward",
                "config": config_snapshot(self.config),
            },
        )
        run_ckpt.rotate(directory, kind, max(keep, 1))

    def _complete_checkpoints(self, last_due: bool) -> None:
        """On resume, finish the checkpointing a kill cut short at the resumed step.

        Killed between a step's best and last checkpoint, the run resumes from the best (the
        same state): the last one, if the schedule names it (``last_due``), is written now.
        Killed before a rotation, the checkpoints it would have removed are removed now.
        """
        if self.resumed_kind == "best" and last_due:
            self.save("last")
        directory = self.run_dir / self.config.checkpointing.checkpoint_dir
        run_ckpt.rotate(directory, "last", max(self.config.checkpointing.keep_last_n, 1))
        run_ckpt.rotate(directory, "best", 1)

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        state = run_ckpt.load_trainer_state(path)
        try:
            if self.policy.uses_lora or self.config.model.use_lora:
                load_policy_state(self.policy, state["adapter"])
            elif self.policy.kind == "gpt":
                load_policy_state(self.policy, run_ckpt.load_weights(path))
            else:
                from safetensors.torch import load_file

                weights = sorted((path / HF_DIR).glob("*.safetensors"))
                merged: dict[str, Tensor] = {}
                for file in weights:
                    merged.update(load_file(str(file)))
                self.policy.model.load_state_dict(merged, strict=False)
            if "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                log.warning(
                    "Checkpoint %s has no optimizer state (save_optimizer_state was false): "
                    "AdamW restarts its moments, so the resumed run is not bit-identical.",
                    path,
                )
            self.generator.set_state(state["generator"])
            set_rng_state(state["rng"])
            self.stream.load_state_dict(state["stream"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Cannot resume from {path}: {exc}") from exc
        self.step = int(meta["step"])
        self.best_val_reward = meta.get("best_val_reward")
        log.info("Resuming from %s at step %d", path, self.step)

    # -- rollouts and rewards ----------------------------------------------------------------

    def rollout(
        self, examples: Sequence[Example], group_size: int, *, greedy: bool = False
    ) -> list[Group]:
        """Generate and score ``group_size`` completions per example."""
        return self.sampler.run(examples, group_size, greedy=greedy)

    def _collect(self) -> tuple[list[Group], int, int]:
        """The step's groups; with dynamic sampling only those with a reward spread."""
        t = self.config.trainer
        want = t.prompts_per_step
        groups = self.rollout(self.stream.take(want), t.num_rollout_samples)
        generated = len(groups)
        if not t.dynamic_sampling:
            return groups, generated, 0
        kept = [g for g in groups if g.spread]
        dropped = [g for g in groups if not g.spread]
        rounds = 0
        while len(kept) < want and rounds < t.max_resample_rounds:
            rounds += 1
            more = self.rollout(self.stream.take(want - len(kept)), t.num_rollout_samples)
            generated += len(more)
            kept += [g for g in more if g.spread]
            dropped += [g for g in more if not g.spread]
        # Out of rounds: top up with flat groups (no policy gradient, KL and SFT still act).
        return (kept + dropped)[:want], generated, len(dropped)

    # -- the update --------------------------------------------------------------------------

    def _advantages(self, groups: list[Group]) -> None:
        t = self.config.trainer
        rewards = torch.tensor(np.concatenate([g.rewards for g in groups]), dtype=torch.float32)
        adv = grpo.group_advantages(rewards, t.num_rollout_samples, t.scale_rewards)
        for i, g in enumerate(groups):
            g.advantages = adv[i * t.num_rollout_samples : (i + 1) * t.num_rollout_samples]

    def _batch(self, groups: list[Group]) -> tuple[Tensor, Tensor, Tensor, list[list[int]]]:
        """Right-padded prompt+completion rows: (ids (B, T), targets, completion mask, spans)."""
        rows, spans = [], []
        mask_trunc = self.config.trainer.mask_truncated_completions
        for g in groups:
            for c in g.completions:
                rows.append(g.prompt_ids + c.ids)
                keep = not (mask_trunc and c.truncated)
                spans.append([len(g.prompt_ids) - 1, len(c.ids) if keep else 0])
        return (*_pad(rows, spans, self.tokenizer.pad_id, self.device), spans)

    def _logp(self, model_policy: Policy, ids: Tensor, targets: Tensor) -> Tensor:
        return grpo.token_logprobs(model_policy.logits(ids), targets)

    @torch.no_grad()
    def _ref_logp(self, ids: Tensor, targets: Tensor) -> Tensor | None:
        if self.config.trainer.grpo_beta == 0:
            return None
        if self.reference is not None:
            return self._logp(self.reference, ids, targets)
        with self.policy.adapters_disabled():
            return self._logp(self.policy, ids, targets)

    def _regions(
        self, groups: list[Group], spans: list[list[int]], shape: torch.Size
    ) -> tuple[Tensor, Tensor]:
        g = self.config.generation
        think = torch.zeros(shape, device=self.device)
        answer = torch.zeros(shape, device=self.device)
        row = 0
        for group in groups:
            opened = bool(g.think_start_tag) and self.tokenizer.decode(
                group.prompt_ids
            ).rstrip().endswith(g.think_start_tag)
            for c in group.completions:
                pieces = [self.tokenizer.decode([i]) for i in c.ids]
                t_flags, a_flags = grpo.token_regions(
                    pieces, g.think_start_tag, g.think_end_tag, opened
                )
                start = spans[row][0]
                think[row, start : start + len(c.ids)] = torch.tensor(t_flags, dtype=torch.float32)
                answer[row, start : start + len(c.ids)] = torch.tensor(a_flags, dtype=torch.float32)
                row += 1
        return think, answer

    def _backward(self, loss: Tensor, allow: Callable[[int | None], bool] | None) -> None:
        """Backpropagate ``loss`` into .grad, only into parameters whose layer ``allow``s."""
        if allow is None:
            loss.backward()  # type: ignore[no-untyped-call]
            return
        named = [
            (p, self.layers.get(n))
            for n, p in self.policy.model.named_parameters()
            if p.requires_grad
        ]
        chosen = [p for p, layer in named if allow(layer)]
        if not chosen or not loss.requires_grad:
            return
        grads = torch.autograd.grad(loss, chosen, retain_graph=True, allow_unused=True)
        for p, gr in zip(chosen, grads, strict=True):
            if gr is not None:
                p.grad = gr if p.grad is None else p.grad + gr

    def _range(self, name: str) -> tuple[int, int]:
        t = self.config.trainer
        end = getattr(t, f"{name}_layer_end")
        return getattr(t, f"{name}_layer_start"), self.n_layers if end is None else end

    def _policy_backward(
        self, groups: list[Group], step_tokens: int, accum: int, old: bool
    ) -> grpo.LossParts:
        t = self.config.trainer
        ids, targets, mask, spans = self._batch(groups)
        logp = self._logp(self.policy, ids, targets)
        if old:
            old_logp = torch.cat([lp for g in groups for lp in g.old_logp])
        else:
            old_logp = logp.detach()
        adv = torch.cat([g.advantages for g in groups if g.advantages is not None]).to(self.device)
        ref = self._ref_logp(ids, targets)
        kwargs: dict[str, Any] = {
            "beta": t.grpo_beta,
            "eps_low": t.epsilon,
            "eps_high": t.epsilon_high,
            "loss_type": t.loss_type,
            "max_gen_len": self.config.data.max_gen_len,
            "step_tokens": step_tokens,
            "accum": accum,
        }
        parts = grpo.grpo_loss(logp, old_logp, adv, mask, ref, **kwargs)
        if not t.use_dual_gradients:
            self._backward(parts.loss, None)
            return parts
        think, answer = self._regions(groups, spans, mask.shape)
        t0, t1 = self._range("thinking")
        a0, a1 = self._range("answer")
        loss_t, *_ = grpo.per_token_loss(
            logp,
            old_logp,
            adv,
            ref,
            beta=t.grpo_beta,
            eps_low=t.epsilon,
            eps_high=t.epsilon_high or t.epsilon,
        )
        shared = {k: v for k, v in kwargs.items() if k not in ("beta", "eps_low", "eps_high")}
        think_loss = grpo.reduce_loss(loss_t * think, mask, **shared)
        answer_loss = grpo.reduce_loss(loss_t * answer, mask, **shared)
        self._backward(think_loss, lambda layer: grpo.layer_filter(layer, t0, t1))
        self._backward(
            t.answer_gradient_weight * answer_loss, lambda layer: grpo.layer_filter(layer, a0, a1)
        )
        return parts

    def _sft_backward(self, groups: list[Group], accum: int) -> float:
        """Supervised loss on each prompt's reference completion, routed by sft_mode."""
        t = self.config.trainer
        rows, spans, refs = [], [], []
        for g in groups:
            if not g.example.completion:
                continue
            ref_ids = self.tokenizer.encode(g.example.completion)[: self.config.data.max_gen_len]
            if not ref_ids:
                continue
            rows.append(g.prompt_ids + ref_ids)
            spans.append([len(g.prompt_ids) - 1, len(ref_ids)])
            refs.append(ref_ids)
        if not rows:
            return 0.0
        ids, targets, weights = _pad(rows, spans, self.tokenizer.pad_id, self.device)
        logp = self._logp(self.policy, ids, targets)
        allow: Callable[[int | None], bool] | None = None
        if t.sft_mode == "weighted":
            gen = self.config.generation
            weights = torch.zeros_like(weights)
            for r, (span, ref_ids) in enumerate(zip(spans, refs, strict=True)):
                pieces = [self.tokenizer.decode([i]) for i in ref_ids]
                th, an = grpo.token_regions(pieces, gen.think_start_tag, gen.think_end_tag)
                w = [
                    t.sft_thinking_weight if a else (t.sft_answer_weight if b else 0.0)
                    for a, b in zip(th, an, strict=True)
                ]
                weights[r, span[0] : span[0] + len(ref_ids)] = torch.tensor(w)
        elif t.sft_mode == "answer_only":
            a0, a1 = self._range("answer")
            allow = lambda layer: grpo.layer_filter(layer, a0, a1, include_shared=False)  # noqa: E731
        elif t.sft_mode == "exclude_thinking":
            t0, t1 = self._range("thinking")
            allow = lambda layer: not grpo.layer_filter(layer, t0, t1, include_shared=False)  # noqa: E731
        loss = grpo.sft_loss(logp, weights)
        self._backward(t.sft_weight * loss / accum, allow)
        return float(loss.detach())

    def _update(self, groups: list[Group], lr: float) -> dict[str, float]:
        """num_iterations optimizer passes over the step's groups, in micro-batches."""
        t = self.config.trainer
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro = [groups[i : i + t.ppo_batch_size] for i in range(0, len(groups), t.ppo_batch_size)]
        step_tokens = sum(
            len(c.ids)
            for g in groups
            for c in g.completions
            if not (t.mask_truncated_completions and c.truncated)
        )
        if t.num_iterations > 1:  # the behaviour policy's log-probs, before any update
            with torch.no_grad():
                for mb in micro:
                    ids, targets, _, _ = self._batch(mb)
                    logp = self._logp(self.policy, ids, targets)
                    row = 0
                    for g in mb:
                        g.old_logp = [logp[row : row + len(g.completions)]]
                        row += len(g.completions)
        stats: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "kl", "clip_low", "clip_high", "sft_loss")
        }
        for _ in range(t.num_iterations):
            for mb in micro:
                parts = self._policy_backward(mb, step_tokens, len(micro), t.num_iterations > 1)
                for k in ("policy_loss", "kl", "clip_low", "clip_high"):
                    stats[k].append(getattr(parts, k))
                if t.use_sft_on_answer:
                    stats["sft_loss"].append(self._sft_backward(mb, len(micro)))
            grad_norm = 0.0
            if t.max_grad_norm > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = {k: float(np.mean(v)) for k, v in stats.items() if v}
        out["grad_norm"] = grad_norm
        return out

    # -- the loop ----------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.config)

    def train_step(self) -> dict[str, Any]:
        t = self.config.trainer
        t0 = time.perf_counter()
        groups, generated, flat = self._collect()
        t_gen = time.perf_counter() - t0
        self._advantages(groups)
        lr = self.learning_rate(self.step)
        losses = self._update(groups, lr)
        self.step += 1
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        comps = [c for g in groups for c in g.completions]
        n_tokens = sum(len(c.ids) for c in comps)
        rewards = np.concatenate([g.rewards for g in groups])
        record: dict[str, Any] = {
            "step": self.step,
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
        }
        for name in groups[0].per_reward:
            values = np.concatenate([g.per_reward[name] for g in groups])
            record[f"rewards/{name}"] = float(values.mean())
            record[f"rewards/{name}_std"] = float(values.std())
        record.update(
            {
                "frac_reward_zero_std": sum(not g.spread for g in groups) / len(groups),
                **losses,
                "completion_length": n_tokens / len(comps),
                "truncation_rate": sum(c.truncated for c in comps) / len(comps),
                "lr": lr,
                "tokens_per_sec": n_tokens / dt,
                "step_time_s": dt,
                "generation_share": t_gen / dt,
            }
        )
        if t.dynamic_sampling:
            record["groups_generated"] = generated
            record["groups_flat"] = flat
        self._log_samples(groups)
        return record

    def _log_samples(self, groups: list[Group]) -> None:
        mon = self.config.monitoring
        if (
            not mon.log_samples_every
            or self.step % mon.log_samples_every
            or not mon.max_logged_samples
        ):
            return
        lines = []
        for g in groups:
            for i, text in enumerate(g.texts):
                item: dict[str, Any] = {"step": self.step, "completion": text}
                if mon.log_prompts:
                    item["prompt"] = g.example.prompt
                item["reference"] = g.example.completion
                item["reward"] = float(g.rewards[i])
                item["rewards"] = {k: float(v[i]) for k, v in g.per_reward.items()}
                item["advantage"] = float(g.advantages[i]) if g.advantages is not None else None
                item["truncated"] = g.completions[i].truncated
                lines.append(dumps(item, indent=None))
                if len(lines) >= mon.max_logged_samples:
                    break
            if len(lines) >= mon.max_logged_samples:
                break
        atomic_write_text(
            self.run_dir / "samples" / f"step_{self.step:08d}.jsonl", "\n".join(lines) + "\n"
        )

    def evaluate(self, examples: Sequence[Example] | None = None) -> dict[str, Any]:
        """Greedy completions of the validation prompts, scored by the run's rewards."""
        examples = list(examples if examples is not None else self.val)[
            : self.config.trainer.eval_num_prompts
        ]
        if not examples:
            return {}
        groups = self.rollout(examples, 1, greedy=True)
        return {"step": self.step, **summarize_groups(groups, "val_")}

    def _evaluate_and_save(self) -> None:
        record = self.evaluate()
        if not record:
            return
        self.last_eval = record
        self._log(record)
        log.info("step %d: val reward %.4f", self.step, record["val_reward"])
        if self.best_val_reward is None or record["val_reward"] > self.best_val_reward:
            self.best_val_reward = record["val_reward"]
            self.save("best", record["val_reward"])

    def _log(self, record: dict[str, Any]) -> None:
        self.metrics.log(record, sync=False)
        if self.wandb is not None:
            self.wandb.log(
                {k: v for k, v in record.items() if k != "step"}, step=int(record["step"])
            )

    def fit(self) -> RLResult:
        t = self.config.trainer
        if self.resumed_from is None:
            if self.val:
                self._evaluate_and_save()  # the baseline: step 0, before any update
            self.save("last")  # the cold-start safety net, right after init
        else:
            every = self.config.checkpointing.save_every
            self._complete_checkpoints(self.step % every == 0 or self.step == t.num_training_steps)
        status = "completed"
        try:
            with GracefulInterrupt() as interrupt, ProgressBar(self.progress) as bar:
                task = bar.task("grpo", t.num_training_steps, self.step)
                while self.step < t.num_training_steps:
                    if interrupt.requested:
                        status = "interrupted"
                        break
                    record = self.train_step()
                    last = self.step == t.num_training_steps
                    if self.step % self.config.monitoring.log_every == 0 or last:
                        self._log(record)
                        task.update(
                            self.step,
                            f"reward {record['reward']:.3f}  kl {record.get('kl', 0):.4f}  "
                            f"{record['tokens_per_sec']:,.0f} tok/s",
                        )
                        if not self.progress:
                            log.info(
                                "step %d: reward %.4f, kl %.4f, %.0f tok/s",
                                self.step,
                                record["reward"],
                                record.get("kl", 0.0),
                                record["tokens_per_sec"],
                            )
                    if self.val and ((t.eval_every and self.step % t.eval_every == 0) or last):
                        self._evaluate_and_save()
                    if self.step % self.config.checkpointing.save_every == 0 or last:
                        self.save("last")
                if status == "interrupted":
                    self.save("last")
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            self._finish(status, error=str(exc) or type(exc).__name__)
            raise
        final = self._finish(status)
        return RLResult(self.run_dir, status, self.step, final, self.resumed_from)

    def _finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        final: dict[str, Any] = {"step": self.step}
        hist = [r for r in self.metrics.history if "reward" in r]
        if hist:
            final["reward"] = hist[-1]["reward"]
        evals = [r for r in self.metrics.history if "val_reward" in r]
        if evals:
            final["val_reward_initial"] = evals[0]["val_reward"]
        if self.last_eval:
            final["val_reward"] = self.last_eval["val_reward"]
        final["best_val_reward"] = self.best_val_reward
        if self.step_times:
            final["step_time_s"] = statistics.median(self.step_times)
        self.metrics.close(final)
        if self.wandb is not None:
            self.wandb.finish()
        summary: dict[str, Any] = {"status": status, "final_metrics": final, "seed": self.seed}
        if error:
            summary["error"] = error
        if self.resumed_from is not None:
            summary["resumed_from"] = str(self.resumed_from)
        self.output.finish(summary)
        return final


def learning_rate(step: int, config: RLConfig) -> float:
    """Linear warmup to the peak, cosine decay to the end value over decay_steps, then flat."""
    t = config.trainer
    s = t.lr_schedule_config
    warmup = s.warmup
    if s.arguments is not None:
        peak, decay_steps, end = s.arguments[0], int(s.arguments[1]), s.arguments[2]
    else:
        peak, decay_steps, end = (
            t.learning_rate,
            max(t.num_training_steps - warmup, 1),
            t.learning_rate / 10,
        )
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if s.name == "constant":
        return peak
    progress = min((step - warmup) / max(decay_steps, 1), 1.0)
    return end + 0.5 * (1 + float(np.cos(np.pi * progress))) * (peak - end)


def _pad(
    rows: list[list[int]], spans: list[list[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs (B, T-1), targets (B, T-1), mask (B, T-1)) from ragged rows and target spans."""
    width = max(len(r) for r in rows)
    full = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width - 1))
    for i, (row, (start, length)) in enumerate(zip(rows, spans, strict=True)):
        full[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, start : start + length] = 1.0
    full = full.to(device)
    return full[:, :-1], full[:, 1:], mask.to(device)


def train(config: RLConfig, *, fresh: bool = False, progress: bool | None = None) -> RLResult:
    """Train (or resume) a GRPO run; see :class:`GRPOTrainer`."""
    return GRPOTrainer(config, fresh=fresh, progress=progress).fit()
