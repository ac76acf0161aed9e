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

Under ``torchrun`` every process loads the policy and its reference, takes the step's
prompts and their sampling seeds from the same stream and generator, and generates and
scores its share of the micro-batches (whole groups); rewards are gathered for the
advantages, gradients summed before the update, and the step's groups gathered so that
rank 0, which alone writes the run, logs the whole step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlharness.errors import CheckpointError, ConfigError, RunDirectoryError
from mlharness.rl import checkpoints as rl_ckpt
from mlharness.rl.config import RLConfig, config_snapshot
from mlharness.rl.data import Example, PromptStream, load_examples
from mlharness.rl.policy import (
    Policy,
    add_lora,
    frozen_copy,
    load_policy,
    policy_state,
)
from mlharness.rl.rewards import RewardSet, load_reward_sources
from mlharness.rl.sampling import (
    Group,
    Sampler,
    collect_groups,
    interleave,
    own_share,
    sample_lines,
    step_record,
    summarize_groups,
)
from mlharness.rl.update import GRPOUpdate
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs import lifecycle
from mlharness.runs.device import (
    Dist,
    broadcast_object,
    end_processes,
    gather_objects,
    init_distributed,
    resolve_device,
)
from mlharness.runs.interrupt import GracefulInterrupt
from mlharness.runs.io import atomic_copy, atomic_write_text
from mlharness.runs.metrics import MetricsWriter
from mlharness.runs.output import OutputManager
from mlharness.runs.progress import ProgressBar, ProgressTask

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
    """Holds the state of one GRPO run; :meth:`fit` runs it to num_training_steps.

    Sampling and scoring are :class:`~mlharness.rl.sampling.Sampler`'s, the loss and the
    optimizer :class:`~mlharness.rl.update.GRPOUpdate`'s; the trainer keeps the run: data,
    checkpoints, metrics, and the loop between them.
    """

    def __init__(
        self, config: RLConfig, *, fresh: bool = False, progress: bool | None = None
    ) -> None:
        self.config = config
        d = config.data
        self._setup_device()
        self.progress = (progress if progress is not None else os.isatty(2)) and self.dist.master

        # Cheap checks first: rewards and JSONL prompts fail in milliseconds, before any model
        # loads (NPY prompts need the policy's tokenizer to decode them).
        load_reward_sources(config.reward_sources, None)
        self.rewards = RewardSet(config.rewards)
        if d.loader_type == "jsonl":
            self._load_data(None)
        found = self._find_resumable(fresh)
        self.resumed_from: Path | None = found[1].path if found else None
        self.resumed_kind: str | None = found[1].kind if found else None
        resume_meta = rl_ckpt.read(found[1].path) if found else None
        drawn = broadcast_object(resolve_seed(config.trainer.seed), self.dist)
        self.seed = int(resume_meta["seed"]) if resume_meta else drawn

        torch.manual_seed(self.seed)  # the same initial weights (LoRA) in every process
        self._setup_policy()
        if config.generation.int8_rollouts:  # a policy without an int8 path refuses here
            self.policy.decoder(1, int8=True)
        if d.loader_type == "npy":
            self._load_data(self.tokenizer)
        self.stream = PromptStream(self.train_examples, shuffle=d.shuffle_data, seed=self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.sampler = Sampler(config, self.policy, self.rewards, self.generator)
        if self.dist.rank:
            torch.manual_seed(self.seed + self.dist.rank)  # dropout streams differ per process
        self.step = 0
        self.best_val_reward: float | None = None
        self.last_eval: dict[str, Any] = {}
        self.step_times: list[float] = []
        if found is not None and resume_meta is not None:
            self._restore(found[1].path, resume_meta)
        self.output: OutputManager | None = None
        self.metrics: MetricsWriter | None = None
        if self.dist.master:
            self._open_run(found[0] if found else None)

    # -- setup -------------------------------------------------------------------------------

    def _setup_device(self) -> None:
        """Device, process group and CPU threads; what torchrun cannot share fails here."""
        t = self.config.trainer
        self.device = resolve_device(t.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device.type)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        check_processes(self.config, self.dist)

    def _find_resumable(self, fresh: bool) -> tuple[Path, run_ckpt.CheckpointInfo] | None:
        """Rank 0 decides (and alone settles dead runs); every process follows it."""
        c, found = self.config, None
        if self.dist.master:
            found = lifecycle.find_resumable(c.output_dir, c.experiment, "rl", fresh=fresh)
        return lifecycle.follow_resume(found, c.output_dir, c.experiment, self.dist, fresh=fresh)

    def _setup_policy(self) -> None:
        """The policy (with LoRA when asked), its reference, and the update that trains it."""
        c, m = self.config, self.config.model
        self.policy = load_policy(
            m.model_path,
            device=self.device,
            use_chat_template=c.data.use_chat_template,
            prefer=m.checkpoint,
        )
        self.tokenizer = self.policy.tokenizer
        check_lengths(c, self.policy)
        self.reference = reference_policy(c, self.policy, self.device)
        if m.use_lora:
            add_lora(
                self.policy,
                rank=m.lora_rank,
                alpha=m.lora_alpha,
                dropout=m.lora_dropout,
                targets=m.lora_target_modules,
            )
        self.update = GRPOUpdate(c, self.policy, self.reference, self.device, self.dist)
        self.optimizer = self.update.optimizer

    def _load_data(self, tokenizer: Any) -> None:
        d = self.config.data
        self.train_examples, self.load_report = load_examples(
            d.train_path, d.loader_type, tokenizer, d.on_invalid
        )
        self.val: list[Example] = []
        if d.val_path is not None:
            self.val, _ = load_examples(d.val_path, d.loader_type, tokenizer, d.on_invalid, "val")

    def _open_run(self, resume_dir: Path | None) -> None:
        c = self.config
        info = {k: v for k, v in self.policy.info.items() if k != "hf_tokenizer"}
        self.output = lifecycle.open_run(
            c.experiment,
            c.output_dir,
            "rl",
            resume_dir=resume_dir,
            config={**config_snapshot(c), "policy": info, "resolved_seed": self.seed},
            seeds={"train": self.seed},
            trackers=c.output,
        )
        history: list[dict[str, Any]] = []
        if resume_dir is not None:
            history = lifecycle.keep_history(self.run_dir / "metrics", self.step, key="step")
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
            trackers=self.output.trackers,
            # The headline curves; every metric is in TensorBoard and the metrics files.
            plot_keys=PLOT_KEYS,
        )
        self.metrics.history = history

    @property
    def run_dir(self) -> Path:
        if self.output is None:
            raise RunDirectoryError("Only rank 0 has a run directory.")
        return self.output.run_dir

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, kind: str = "last", val_reward: float | None = None) -> None:
        """Write a checkpoint: every process hands in its RNG state, rank 0 writes."""
        c = self.config.checkpointing
        keep = c.keep_last_n if kind == "last" else 1
        final = kind == "last" and self.step >= self.config.trainer.num_training_steps
        if keep == 0 and not final:
            return  # keep_last_n = 0: only the final checkpoint is written
        rngs = gather_objects(lifecycle.rng_state(), self.dist)
        if not self.dist.master:
            return
        trainer_state: dict[str, Any] = {
            "generator": self.generator.get_state(),
            "rng": rngs[0] if len(rngs) == 1 else rngs,  # one process: the format it had
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
                "world_size": self.dist.world_size,
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
        if not self.dist.master:
            return
        directory = self.run_dir / self.config.checkpointing.checkpoint_dir
        run_ckpt.rotate(directory, "last", max(self.config.checkpointing.keep_last_n, 1))
        run_ckpt.rotate(directory, "best", 1)

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        state = run_ckpt.load_trainer_state(path)
        try:
            adapters = self.policy.uses_lora or self.config.model.use_lora
            rl_ckpt.load_policy_weights(path, self.policy, adapters)
            if "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                log.warning(
                    "Checkpoint %s has no optimizer state (save_optimizer_state was false): "
                    "AdamW restarts its moments, so the resumed run is not bit-identical.",
                    path,
                )
            self.generator.set_state(state["generator"])
            rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
            # A process the checkpoint had no state for (more processes now) takes rank 0's.
            lifecycle.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
            self.stream.load_state_dict(state["stream"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Cannot resume from {path}: {exc}") from exc
        self.step = int(meta["step"])
        self.best_val_reward = meta.get("best_val_reward")
        if self.dist.master:
            lifecycle.say_resuming(path, self.step, "step")

    # -- rollouts and rewards ----------------------------------------------------------------

    def rollout(
        self, examples: Sequence[Example], group_size: int, *, greedy: bool = False
    ) -> list[Group]:
        """Generate and score ``group_size`` completions per example."""
        return self.sampler.run(examples, group_size, greedy=greedy)

    # -- the loop ----------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.config)

    def train_step(self) -> dict[str, Any]:
        """One GRPO step; its record covers every process's groups (the whole step)."""
        t = self.config.trainer
        t0 = time.perf_counter()
        groups, generated, flat = collect_groups(self.sampler, self.stream, self.config, self.dist)
        t_gen = time.perf_counter() - t0
        self.update.advantages(groups)
        lr = self.learning_rate(self.step)
        losses = self.update.apply(groups, lr)
        groups, losses = self._whole_step(groups, losses)
        self.step += 1
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        comps = [c for g in groups for c in g.completions]
        n_tokens = sum(len(c.ids) for c in comps)
        record = step_record(groups, self.step)
        record.update(
            {
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

    def _whole_step(
        self, groups: list[Group], losses: dict[str, float]
    ) -> tuple[list[Group], dict[str, float]]:
        """Every process's groups in the step's order, and its loss statistics averaged
        (each process had as many micro-batches); the gradient norm is already global."""
        if not self.dist.enabled:
            return groups, losses
        light = [dataclasses.replace(g, old_logp=[]) for g in groups]
        everyone = interleave(gather_objects(light, self.dist), self.config.trainer.ppo_batch_size)
        shares = gather_objects(losses, self.dist)
        averaged = {k: float(np.mean([share[k] for share in shares])) for k in losses}
        averaged["grad_norm"] = losses["grad_norm"]
        return everyone, averaged

    def _log_samples(self, groups: list[Group]) -> None:
        mon = self.config.monitoring
        if (
            not self.dist.master
            or not mon.log_samples_every
            or self.step % mon.log_samples_every
            or not mon.max_logged_samples
        ):
            return
        lines = sample_lines(groups, self.step, mon.max_logged_samples, mon.log_prompts)
        atomic_write_text(
            self.run_dir / "samples" / f"step_{self.step:08d}.jsonl", "\n".join(lines) + "\n"
        )
        if self.metrics is not None:  # W&B's completions table, MLflow's tables/
            rows = [json.loads(line) for line in lines]
            self.metrics.log_table("completions", rows, self.step)

    def evaluate(self, examples: Sequence[Example] | None = None) -> dict[str, Any]:
        """Greedy completions of the validation prompts, scored by the run's rewards (each
        process scores its share; every process returns the record of them all)."""
        examples = list(examples if examples is not None else self.val)[
            : self.config.trainer.eval_num_prompts
        ]
        if not examples:
            return {}
        mine = [examples[i] for i in own_share(len(examples), 1, self.dist)]
        groups = self.rollout(mine, 1, greedy=True) if mine else []
        groups = interleave(gather_objects(groups, self.dist), 1)
        return {"step": self.step, **summarize_groups(groups, "val_")}

    def _evaluate_and_save(self) -> None:
        record = self.evaluate()
        if not record:
            return
        self.last_eval = record
        self._log(record)
        if self.dist.master:
            log.info("step %d: val reward %.4f (greedy)", self.step, record["val_reward"])
        if self.best_val_reward is None or record["val_reward"] > self.best_val_reward:
            self.best_val_reward = record["val_reward"]
            self.save("best", record["val_reward"])

    def _log(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.log(record, sync=False)

    def fit(self) -> RLResult:
        t = self.config.trainer
        if self.resumed_from is None:
            if self.val:
                self._evaluate_and_save()  # the baseline: step 0, before any update
            self.save("last")  # the cold-start safety net, right after init
        else:
            every = self.config.checkpointing.save_every
            self._complete_checkpoints(self.step % every == 0 or self.step == t.num_training_steps)
        status = lifecycle.COMPLETED

        def failed(status: str, error: str) -> None:
            # torchrun sends SIGTERM to every process once one fails: the summary of the
            # failure is written first (a second signal still cuts it short).
            with GracefulInterrupt():
                self._finish(status, error=error)

        with lifecycle.guarded(failed) as stop, ProgressBar(self.progress) as bar:
            task = bar.task("grpo", t.num_training_steps, self.step)
            while self.step < t.num_training_steps:
                # Every process stops at the same step, or their collectives would not pair.
                if any(gather_objects(stop.requested, self.dist)):
                    status = lifecycle.INTERRUPTED
                    break
                self._step_and_report(task)
            if status == lifecycle.INTERRUPTED:
                self.save("last")
        final = self._finish(status)
        run_dir = self.output.run_dir if self.output is not None else Path()
        return RLResult(run_dir, status, self.step, final, self.resumed_from)

    def _step_and_report(self, task: ProgressTask) -> None:
        """One training step; its record, evaluation and checkpoint when they are due."""
        t = self.config.trainer
        record = self.train_step()
        last = self.step == t.num_training_steps
        if self.step % self.config.monitoring.log_every == 0 or last:
            self._log(record)
            task.update(
                self.step,
                f"train reward {record['reward']:.3f}  kl {record.get('kl', 0):.4f}  "
                f"{record['tokens_per_sec']:,.0f} tok/s",
            )
            if not self.progress and self.dist.master:
                log.info(
                    "step %d: train reward %.4f (sampled), kl %.4f, %.0f tok/s",
                    self.step,
                    record["reward"],
                    record.get("kl", 0.0),
                    record["tokens_per_sec"],
                )
        if self.val and ((t.eval_every and self.step % t.eval_every == 0) or last):
            self._evaluate_and_save()
        if self.step % self.config.checkpointing.save_every == 0 or last:
            self.save("last")

    def _finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        history = self.metrics.history if self.metrics is not None else []
        final = final_metrics(
            self.step, history, self.last_eval, self.best_val_reward, self.step_times
        )
        if self.metrics is not None:
            self.metrics.close(final)
        if self.output is not None:
            lifecycle.finish(
                self.output,
                status,
                final,
                error=error,
                resumed_from=self.resumed_from,
                seed=self.seed,
            )
        end_processes(self.dist, error is None)
        return final


def check_processes(config: RLConfig, dist: Dist) -> None:
    """Under torchrun: each process takes an equal share of whole micro-batches, and what
    cannot be shared yet refuses to start rather than train differently."""
    t = config.trainer
    if not dist.enabled:
        return
    if t.grad_accum_steps % dist.world_size:
        raise ConfigError(
            f"trainer.grad_accum_steps ({t.grad_accum_steps}) must be a multiple of the number "
            f"of processes ({dist.world_size}): each process takes an equal share of the "
            "step's micro-batches."
        )
    if t.dynamic_sampling:
        raise ConfigError(
            "trainer.dynamic_sampling does not work under torchrun yet (refilled groups would "
            "have to move between processes): set it to false or train in one process."
        )


def check_lengths(config: RLConfig, policy: Policy) -> None:
    """A prompt and its completion must fit the policy's context."""
    d, ctx = config.data, policy.context_len
    if ctx is not None and d.max_prompt_len + d.max_gen_len > ctx:
        raise ConfigError(
            f"data.max_prompt_len ({d.max_prompt_len}) + data.max_gen_len ({d.max_gen_len}) "
            f"exceeds the policy's context length ({ctx}). Lower one of them."
        )


def reference_policy(config: RLConfig, policy: Policy, device: torch.device) -> Policy | None:
    """No reference at grpo_beta 0; the given one; LoRA's base; else a frozen copy."""
    t, m = config.trainer, config.model
    if t.grpo_beta == 0:
        return None
    if m.ref_model_path is not None:
        return load_policy(m.ref_model_path, device=device, trainable=False)
    if m.use_lora:
        return None  # adapters disabled on the policy itself: see GRPOUpdate._ref_logp
    return frozen_copy(policy)


def final_metrics(
    step: int,
    history: list[dict[str, Any]],
    last_eval: dict[str, Any],
    best_val_reward: float | None,
    step_times: list[float],
) -> dict[str, Any]:
    """summary.json's final metrics: the last reward, the first, last and best val reward."""
    final: dict[str, Any] = {"step": step}
    hist = [r for r in history if "reward" in r]
    if hist:
        final["reward"] = hist[-1]["reward"]
    evals = [r for r in history if "val_reward" in r]
    if evals:
        final["val_reward_initial"] = evals[0]["val_reward"]
    if last_eval:
        final["val_reward"] = last_eval["val_reward"]
    final["best_val_reward"] = best_val_reward
    if step_times:
        final["step_time_s"] = statistics.median(step_times)
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


def train(config: RLConfig, *, fresh: bool = False, progress: bool | None = None) -> RLResult:
    """Train (or resume) a GRPO run; see :class:`GRPOTrainer`."""
    return GRPOTrainer(config, fresh=fresh, progress=progress).fit()
