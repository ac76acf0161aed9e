"""Training a GPT on prepared token files: one loop, exactly resumable, observable.

The loop follows nanoGPT's train.py (AdamW, cosine schedule with warmup, gradient
accumulation and clipping, periodic evaluation) with what a long run needs on top:

* Every random draw comes from state that goes into the checkpoint: the batch sampler has
  its own ``torch.Generator``, dropout uses the global RNG, and evaluation uses a fixed
  generator of its own so it never moves the training streams. A run killed at any step and
  resumed therefore ends with the same weights, bit for bit, as one that never stopped.
* On a CPU with several threads, a micro-batch is split into slices that threads run
  side by side (:class:`ThreadShards`), and their gradients are summed in a fixed order,
  so this too is reproducible.
* Under ``torchrun`` every process draws the same plan of micro-batches for a step and takes
  its share, so N processes see exactly the batches one process would see with the same
  global batch; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mlharness.errors import CheckpointError, ConfigError, DatasetError, RunDirectoryError
from mlharness.lm import checkpoints as ckpt
from mlharness.lm import hf_model, pretrained
from mlharness.lm.config import LMConfig, ModelConfig, config_snapshot
from mlharness.lm.hf_model import HFModel
from mlharness.lm.meta import data_changes, load_meta
from mlharness.lm.model import GPT, dropout_generator
from mlharness.lm.pretrained import MODEL_ARGS
from mlharness.lm.sft import SFTBatches
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs import lifecycle
from mlharness.runs.checkpoints import CheckpointInfo
from mlharness.runs.device import end_processes, init_distributed, resolve_device
from mlharness.runs.heap import keep_freed_memory
from mlharness.runs.io import atomic_copy
from mlharness.runs.metrics import MetricsWriter
from mlharness.runs.optim import AdamW
from mlharness.runs.output import OutputManager
from mlharness.runs.progress import ProgressBar, ProgressTask

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # completed | interrupted
    iterations: int
    best_val_loss: float | None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: Path | None = None


# ----------------------------------------------------------------------------- environment


def _check_cpp_compiler() -> None:
    """torch.compile builds C++ kernels on the CPU: without a compiler it fails at the first
    step with a long traceback, so say so before anything runs."""
    compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(compiler) is None:
        raise ConfigError(
            f"train.compile needs a C++ compiler on the CPU, and '{compiler}' was not found: "
            "install one (or point CXX at it), or set train.compile = false."
        )


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA by default; float32 (no autocast) elsewhere unless asked.

    An explicit ``bfloat16`` is honoured on every device (CPU and MPS autocast support it);
    the weights and the optimizer stay float32 either way.
    """
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


# ----------------------------------------------------------------------------- data


class TokenBatches:
    """Random windows of a token file, as nanoGPT samples them, from a seeded generator.

    The file is memory-mapped; one fancy-index gathers a whole batch of windows.
    """

    def __init__(self, path: Path, dtype: str, block_size: int, device: torch.device) -> None:
        if not path.is_file():
            raise DatasetError(f"{path} is missing: run 'mlx prepare' for this experiment first.")
        self.data = np.memmap(path, dtype=np.dtype(dtype), mode="r")
        self.block_size = block_size
        self.device = device
        if len(self.data) <= block_size + 1:
            raise DatasetError(
                f"{path} holds {len(self.data)} tokens, too few for block_size {block_size}: "
                "use more text or a smaller model.block_size."
            )
        self._offsets = np.arange(block_size + 1)

    def starts(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.data) - self.block_size, (count,), generator=generator)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.data[starts.numpy()[:, None] + self._offsets]  # (B, T+1)
        t = torch.from_numpy(windows.astype(np.int64))
        x, y = t[:, :-1], t[:, 1:]
        if self.device.type == "cuda":
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.to(self.device), y.to(self.device)


def batches(
    data_dir: Path, split: str, meta: dict[str, Any], block_size: int, device: torch.device
) -> TokenBatches | SFTBatches:
    """Random windows of a token stream, or whole examples of SFT data (its meta says)."""
    if meta.get("sft"):
        return SFTBatches(data_dir, split, meta["dtype"], block_size, device)
    return TokenBatches(data_dir / f"{split}.bin", meta["dtype"], block_size, device)


# ----------------------------------------------------------------------------- CPU threads


class ThreadShards:
    """Forward and backward of a micro-batch's slices in parallel threads, one torch thread each.

    Why: with torch's own threading every op of a step is split across the OpenMP threads,
    and for small models (the recipe's activations are 768 x 128) waking and joining them
    for each of some 150 ops costs ~10% of the step. Here each thread runs whole ops on its
    slice alone, so the threads never meet within a step. The slices' losses are weighted
    by their share of the batch, so the summed gradient is the batch's, up to float
    rounding; the fixed order of the sum keeps runs bit-for-bit reproducible. With
    ``dropout``, each slice's masks come from a generator of its own, seeded from the global
    RNG in the calling thread (:func:`~mlharness.lm.model.dropout_generator`): our GPT's
    dropout only, as a Hugging Face model's draws from the global RNG in whatever order
    racing threads make.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        threads: int,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
        dropout: bool = False,
    ) -> None:
        self.model = model
        self.dropout = dropout
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.threads = threads
        self.autocast = autocast
        self.pool = ThreadPoolExecutor(
            threads,
            thread_name_prefix="mlx-shard",
            initializer=torch.set_num_threads,
            initargs=(1,),
        )

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, scale: float, grad: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        n = min(self.threads, len(x))
        sizes = [len(x) // n + (i < len(x) % n) for i in range(n)]
        # Each slice's mean loss weighs by its share of the counted targets (SFT data leaves
        # some out with -1), so the sum is the batch's mean; without -1, its share of rows.
        counted = (y != -1).sum(dim=1).tolist()
        total = sum(counted)
        shares = [sum(c) for c in torch.split(torch.tensor(counted), sizes)]
        seeds = torch.randint(2**62, (n,)).tolist() if self.dropout and grad else [None] * n
        futures = [
            self.pool.submit(self._slice, xs, ys, scale * int(share) / total, grad, seed)
            for xs, ys, share, seed in zip(
                torch.split(x, sizes), torch.split(y, sizes), shares, seeds, strict=True
            )
        ]
        results = [f.result() for f in futures]
        loss = results[0][0]
        grads = results[0][1]
        for part_loss, part_grads in results[1:]:
            loss = loss + part_loss
            if grads is not None and part_grads is not None:
                torch._foreach_add_(grads, part_grads)  # pyright: ignore[reportPrivateImportUsage]
        return loss, grads

    def _slice(
        self, x: torch.Tensor, y: torch.Tensor, weight: float, grad: bool, seed: int | None
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        # Grad mode, autocast and the dropout generator are per thread: set here, in the worker.
        masks: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if seed is not None:
            masks = dropout_generator(torch.Generator().manual_seed(seed))
        with torch.set_grad_enabled(grad), self.autocast(), masks:
            _, loss = self.model(x, y)
        assert loss is not None
        loss = loss * weight
        if not grad:
            return loss, None
        return loss.detach(), list(torch.autograd.grad(loss, self.params))

    def loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``scale`` times the batch's mean loss, and its gradients (in ``params`` order)."""
        loss, grads = self._run(x, y, scale, grad=True)
        assert grads is not None
        return loss, grads

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss, without gradients."""
        return self._run(x, y, 1.0, grad=False)[0]

    def __enter__(self) -> ThreadShards:
        # The rest of a step (summing the slices' gradients, clipping, the optimizer update)
        # is small ops too, and ran 1.5 of 37 ms faster single-threaded in the calling thread.
        self._caller_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._caller_threads)

    def close(self) -> None:
        self.pool.shutdown()


# ----------------------------------------------------------------------------- schedule


def learning_rate(it: int, config: LMConfig) -> float:
    """Linear warmup, then cosine decay to min_lr over lr_decay_iters, then min_lr."""
    t = config.train
    if not t.decay_lr:
        return t.learning_rate
    decay_iters = t.lr_decay_iters or t.max_iters
    if it < t.warmup_iters:
        return t.learning_rate * (it + 1) / (t.warmup_iters + 1)
    if it >= decay_iters:
        return t.min_lr
    ratio = (it - t.warmup_iters) / max(decay_iters - t.warmup_iters, 1)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (t.learning_rate - t.min_lr)


# ----------------------------------------------------------------------------- runs


def _model_args(config: LMConfig, vocab_size: int) -> dict[str, Any]:
    """The model args the config asks for; with init_from only those it sets itself, since
    the source (or, on resume, the checkpoint) gives the rest."""
    m = config.model
    if config.init_from != "scratch":
        return {k: getattr(m, k) for k in MODEL_ARGS if k in m.model_fields_set}
    return {
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_embd": m.n_embd,
        "block_size": m.block_size,
        "bias": m.bias,
        "vocab_size": vocab_size,
        "dropout": m.dropout,
    }


def _with_shape(config: LMConfig, args: dict[str, Any]) -> LMConfig:
    """The config with the model section the run really has (from a source or checkpoint),
    so that its snapshots, and the evaluations that read them, describe the model."""
    shape = {k: v for k, v in args.items() if k in MODEL_ARGS and k != "vocab_size"}
    return config.model_copy(update={"model": ModelConfig(**shape)})


def _reconcile_model_args(ours: dict[str, Any], theirs: dict[str, Any], where: Path) -> None:
    """The checkpoint's architecture (and LoRA adapters) win on resume (seed 001); say what
    it overrides."""
    diffs = [
        f"{k}: config {ours.get(k)!r} -> checkpoint {theirs.get(k)!r}"
        for k in MODEL_ARGS
        if k in ours and ours[k] != theirs.get(k)
    ]
    if diffs:
        warnings.warn(
            f"Resuming from {where}: the checkpoint's model args override the config's "
            f"({'; '.join(diffs)}).",
            UserWarning,
            stacklevel=3,
        )
    ours.update(theirs)


# What a run's tokens mean and which tokens it trains on: a resumed run must find the same.
def _check_same_data(data_dir: Path, meta: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run on data prepared anew since it started: a checkpointed batch
    position would index another file, and the ids would mean other tokens."""
    path = run_dir / "meta.json"
    if not path.is_file():
        return  # a run from before runs kept their meta.json: nothing to compare with
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{path} cannot be read ({exc}), so the run's data cannot be checked before it "
            "resumes: start a new run with --fresh."
        ) from exc
    changed = data_changes(started, run_dir, meta, data_dir)
    if changed:
        raise DatasetError(
            f"The data in {data_dir} was prepared anew since the run {run_dir} started "
            f"({', '.join(changed)} changed), so it cannot be resumed on it: start a new run "
            "with --fresh, or prepare the data as that run had it (its meta.json says how)."
        )


def _copy_tokenizer(data_dir: Path, run_dir: Path) -> None:
    """The run keeps its own copy of meta.json (and tokenizer.json), so sampling a run never
    depends on a data directory that may since have been prepared anew."""
    for name in ("meta.json", "tokenizer.json"):
        if (data_dir / name).is_file():
            atomic_copy(data_dir / name, run_dir / name)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Holds the state of one training run; :meth:`fit` runs it to max_iters."""

    def __init__(self, config: LMConfig, *, fresh: bool = False, progress: bool | None = None):
        self.config = config
        t = config.train
        self._setup_device()
        self.progress = (
            progress if progress is not None else sys.stderr.isatty()
        ) and self.dist.master

        self.meta = load_meta(config.data_dir)
        args = _model_args(config, int(self.meta["vocab_size"]))
        resume = self._find_resumable(args, fresh)
        # A resumed run has its weights: init_from applies to a new run only.
        start = self._pretrained(args) if resume is None and config.init_from != "scratch" else None
        self.model_args = args = start[0] if start else args
        if resume is None and config.lora is not None:
            args["lora"] = config.lora.model_dump()
        self.config = config = _with_shape(config, args)
        torch.manual_seed(t.seed)  # identical initial weights in every process
        self.model = self._build_model(args, start)
        self.optimizer = self._optimizer()
        self.ema: dict[str, torch.Tensor] | None = None
        if t.ema_decay > 0:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.train_data = batches(
            config.data_dir, "train", self.meta, args["block_size"], self.device
        )
        self.val_data = batches(config.data_dir, "val", self.meta, args["block_size"], self.device)
        self.batch_gen = torch.Generator().manual_seed(t.seed)
        torch.manual_seed(t.seed + self.dist.rank)  # dropout streams differ per process
        self.iter = 0
        self.best_val_loss: float | None = None
        self.last_eval: dict[str, Any] = {}
        self.step_times: list[float] = []
        if resume is not None:
            self._restore(resume[1].path, resume[2])
        self._wrap_model()
        self.output: OutputManager | None = None
        self.metrics: MetricsWriter | None = None
        if self.dist.master:
            self._open_run(resume[0] if resume else None)

    def _setup_device(self) -> None:
        """Device, process group and CPU threads; what the hardware cannot do fails here."""
        t = self.config.train
        self.device = resolve_device(t.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device.type)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults for each step's activations
        if t.compile and self.device.type == "cpu":
            _check_cpp_compiler()
        if t.grad_accum_steps % self.dist.world_size:
            raise ConfigError(
                f"train.grad_accum_steps ({t.grad_accum_steps}) must be a multiple of the "
                f"number of processes ({self.dist.world_size}): each process takes an equal share."
            )
        self.accum_local = t.grad_accum_steps // self.dist.world_size

    def _find_resumable(
        self, args: dict[str, Any], fresh: bool
    ) -> tuple[Path, CheckpointInfo, dict[str, Any]] | None:
        """(run, checkpoint, its meta) to resume; ``args`` take the checkpoint's architecture.

        Rank 0 decides (and alone settles dead runs), everyone follows its checkpoint.
        """
        c = self.config
        found = None
        if self.dist.master:
            found = lifecycle.find_resumable(c.output_dir, c.experiment, "lm", fresh=fresh)
        found = lifecycle.follow_resume(found, c.output_dir, c.experiment, self.dist, fresh=fresh)
        self.resumed_from: Path | None = None
        self.resumed_kind: str | None = None
        self.started_from: dict[str, Any] | None = None
        if found is None:
            return None
        run_dir, info = found
        _check_same_data(c.data_dir, self.meta, run_dir)
        meta = ckpt.read_meta(info.path)
        _reconcile_model_args(args, meta["model_args"], info.path)
        self.resumed_from = info.path
        self.resumed_kind = info.kind
        return run_dir, info, meta

    def _pretrained(self, chosen: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model args, weights) of a new run from ``init_from``, its vocabulary checked."""
        source = pretrained.load_source(self.config.init_from)
        pretrained.check_vocabulary(source, self.meta, self.config.data_dir)
        fitted = pretrained.fit_to_run(source, chosen)
        self.started_from = source.record()
        if self.dist.master:
            log.info("Starting from %s (iteration %d)", source.path, source.iteration)
        return fitted

    def _build_model(
        self, args: dict[str, Any], start: tuple[dict[str, Any], dict[str, Any]] | None
    ) -> GPT | HFModel:
        """Our GPT or a Hugging Face model: a new run's with its source's weights and fresh
        LoRA layers; a resumed run's with what its checkpoint's weights load into."""
        if start is None:
            model = pretrained.base_model(args, self.config.init_from)
        else:
            model = hf_model.build_model(args)
            hf_model.load_model_state(model, start[1])
            if args.get("lora"):
                args["lora"]["target_modules"] = hf_model.add_lora_layers(model, args["lora"])
        if self.config.train.gradient_checkpointing:
            hf_model.enable_gradient_checkpointing(model)
        assert isinstance(model, (GPT, HFModel))
        return model.to(self.device)

    def _wrap_model(self) -> None:
        """What runs the forward: compiled, under DDP, or split across CPU threads."""
        t, args = self.config.train, self.model_args
        self.run_model: torch.nn.Module = self.model
        if t.compile:
            self.run_model = torch.compile(self.model)  # type: ignore[assignment]
        if self.dist.enabled:
            self.run_model = DistributedDataParallel(
                self.run_model,
                device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
            )
        self.shards: ThreadShards | None = None
        threads = min(torch.get_num_threads(), t.batch_size)
        if (
            t.cpu_batch_split
            and self.device.type == "cpu"
            and threads > 1
            and (args["dropout"] == 0 or isinstance(self.model, GPT))
            and not (args.get("lora") or {}).get("dropout")
            and not t.compile
            and not self.dist.enabled
            and not self.config.logits_outgrow_heap(args["vocab_size"])
        ):
            self.shards = ThreadShards(self.model, threads, self.autocast, args["dropout"] > 0)

    # -- setup helpers ---------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A fresh autocast context (one object must not be entered by two threads at once)."""
        return autocast_context(self.device, self.config.train.dtype)

    def _optimizer(self) -> AdamW:
        t = self.config.train
        return AdamW(
            self.model.optimizer_groups(t.weight_decay),
            lr=t.learning_rate,
            betas=(t.beta1, t.beta2),
            # one kernel for all parameters (CUDA, and CPU since torch 2.4)
            fused=self.device.type in ("cuda", "cpu"),
        )

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        try:
            hf_model.load_model_state(self.model, ckpt.load_weights(path))
            state = run_ckpt.load_trainer_state(path)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None and meta.get("has_ema"):
                ema = ckpt.load_weights(path, ema=True)
                self.ema = {k: ema.get(k, v).to(self.device) for k, v in self.ema.items()}
            elif self.ema is not None:
                # EMA switched on at resume: average from the trained weights, not the
                # initial ones the model had before they were loaded.
                self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.batch_gen.set_state(state["batch_generator"])
            rngs = state["rng"]
            lifecycle.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Cannot resume from {path}: {exc}") from exc
        self.iter = int(meta["iter"])
        self.best_val_loss = meta.get("best_val_loss")
        lifecycle.say_resuming(path, self.iter, "iteration")

    def _open_run(self, resume_dir: Path | None) -> None:
        c = self.config
        self.output = lifecycle.open_run(
            c.experiment,
            c.output_dir,
            "lm",
            resume_dir=resume_dir,
            config={
                **config_snapshot(c),
                "model_args": self.model_args,
                **({"started_from": self.started_from} if self.started_from else {}),
            },
            seeds={"train": c.train.seed},
            trackers=c.output,
        )
        run_dir = self.output.run_dir
        if resume_dir is None:
            _copy_tokenizer(c.data_dir, run_dir)
            history: list[dict[str, Any]] = []
        else:
            history = lifecycle.keep_history(run_dir / "metrics", self.iter)
            evals = [r for r in history if "val_loss" in r]
            self.last_eval = evals[-1] if evals else {}
        (run_dir / "samples").mkdir(exist_ok=True)
        self.metrics = MetricsWriter(
            run_dir / "metrics",
            c.experiment,
            step_key="iter",
            trackers=self.output.trackers,
        )
        self.metrics.history = history

    @property
    def run_dir(self) -> Path:
        if self.output is None:
            raise RunDirectoryError("Only rank 0 has a run directory.")
        return self.output.run_dir

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, kind: str, val_loss: float | None = None) -> None:
        """Write a checkpoint (all ranks hand in their RNG state; rank 0 writes)."""
        t = self.config.train
        keep = t.checkpointing.keep.last if kind == "last" else t.checkpointing.keep.best
        rng = [lifecycle.rng_state()]
        if self.dist.enabled:
            rng = [None] * self.dist.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, lifecycle.rng_state())
        if not self.dist.master or keep == 0:
            return
        directory = self.run_dir / "checkpoints"
        metric = ("val_loss", val_loss) if kind == "best" and val_loss is not None else None
        ckpt.save_checkpoint(
            directory,
            run_ckpt.checkpoint_name(kind, self.iter, metric),
            kind=kind,
            iteration=self.iter,
            model_state=hf_model.model_state(self.model),
            ema_state=self.ema,
            trainer_state={
                "optimizer": self.optimizer.state_dict(),
                "batch_generator": self.batch_gen.get_state(),
                "rng": rng,
            },
            meta={
                "model_args": self.model_args,
                "best_val_loss": self.best_val_loss,
                "val_loss": val_loss,
                "metric": "val_loss",
                "config": config_snapshot(self.config),
                "tokenizer": self.meta.get("tokenizer"),
                "world_size": self.dist.world_size,
            },
        )
        run_ckpt.rotate(directory, kind, keep)

    def _complete_checkpoints(self, last_due: bool) -> None:
        """On resume, finish the checkpointing a kill cut short at the resumed iteration.

        Killed between a step's best and last checkpoint, the run resumes from the best (the
        same state): the last one, if the schedule names it (``last_due``), is written now.
        Killed before a rotation, the checkpoints it would have removed are removed now.
        """
        if self.resumed_kind == "best" and last_due:
            self.save("last")
        keep = self.config.train.checkpointing.keep
        if self.dist.master:
            for kind, n in (("last", keep.last), ("best", keep.best)):
                if n > 0:
                    run_ckpt.rotate(self.run_dir / "checkpoints", kind, n)

    # -- the loop ----------------------------------------------------------------------------

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over eval_iters batches of each split, from a fixed generator.

        The same batches every time make successive evaluations comparable (and the
        "best" checkpoint a fair pick); the training streams are not touched.
        """
        self.model.eval()
        out = {"train": self._mean_loss(self.train_data), "val": self._mean_loss(self.val_data)}
        if self.ema is not None:
            live = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.ema)
            out["val_ema"] = self._mean_loss(self.val_data)
            self.model.load_state_dict(live)
        self.model.train()
        return out

    def _mean_loss(self, data: TokenBatches | SFTBatches) -> float:
        t = self.config.train
        gen = torch.Generator().manual_seed(t.seed + 1)
        total = 0.0
        for _ in range(t.eval_iters):
            x, y = data.batch(data.starts(t.batch_size, gen))
            if self.shards is not None:
                loss: torch.Tensor | None = self.shards.loss(x, y)
            else:
                with self.autocast():
                    _, loss = self.model(x, y)
            assert loss is not None
            total += loss.item()
        return total / t.eval_iters

    def _no_sync(self) -> contextlib.AbstractContextManager[Any]:
        # Gradients of all but the last micro-batch stay local: one all-reduce per step.
        ddp: DistributedDataParallel = self.run_model  # type: ignore[assignment]
        return ddp.no_sync()

    def _backward(self, plan: torch.Tensor, total: torch.Tensor) -> None:
        """The micro-batches' gradients, accumulated in ``.grad`` (all-reduced by DDP)."""
        for micro, starts in enumerate(plan):
            x, y = self.train_data.batch(starts)
            sync = not self.dist.enabled or micro == self.accum_local - 1
            no_sync = contextlib.nullcontext() if sync else self._no_sync()
            with no_sync, self.autocast():
                _, loss = self.run_model(x, y)
                assert loss is not None
                loss = loss / self.accum_local
            loss.backward()
            total += loss.detach()

    def _sharded_backward(self, plan: torch.Tensor, total: torch.Tensor) -> None:
        """The micro-batches' gradients through :class:`ThreadShards`, summed in order."""
        assert self.shards is not None
        grads: list[torch.Tensor] = []
        for starts in plan:
            x, y = self.train_data.batch(starts)
            loss, micro_grads = self.shards.loss_and_grads(x, y, 1.0 / self.accum_local)
            total += loss
            if grads:
                torch._foreach_add_(grads, micro_grads)  # pyright: ignore[reportPrivateImportUsage]
            else:
                grads = micro_grads
        for p, g in zip(self.shards.params, grads, strict=True):
            p.grad = g

    def _step(self, lr: float) -> torch.Tensor:
        """One optimizer step over this process's share of the step's micro-batches."""
        t = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        plan = self.train_data.starts(t.grad_accum_steps * t.batch_size, self.batch_gen)
        plan = plan.view(t.grad_accum_steps, t.batch_size)[self.dist.rank :: self.dist.world_size]
        total = torch.zeros((), device=self.device)
        if self.shards is not None:
            self._sharded_backward(plan, total)
        else:
            self._backward(plan, total)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            params = list(self.model.state_dict().values())
            torch._foreach_lerp_(list(self.ema.values()), params, 1.0 - t.ema_decay)  # pyright: ignore[reportPrivateImportUsage]
        return total

    def fit(self) -> TrainResult:
        t = self.config.train
        ckpt_every = t.checkpointing.interval or t.eval_interval
        if self.resumed_from is None:
            self.save("last")  # the cold-start safety net: a checkpoint right after init
        else:
            self._complete_checkpoints(self.iter % ckpt_every == 0 or self.iter == t.max_iters)
        if t.compile and self.dist.master and self.iter < t.max_iters:
            log.info("torch.compile: the first step compiles the model (tens of seconds on a CPU)")
        self.started = time.perf_counter()
        status = lifecycle.COMPLETED
        threads = contextlib.nullcontext() if self.shards is None else self.shards

        def failed(status: str, error: str) -> None:
            self._finish(status, error=error)

        with lifecycle.guarded(failed) as stop, ProgressBar(self.progress) as bar, threads:
            task = bar.task("train", t.max_iters, self.iter)
            while self.iter < t.max_iters:
                if stop.requested:
                    status = lifecycle.INTERRUPTED
                    break
                self._iteration(task)
                if self.iter % ckpt_every == 0 or self.iter == t.max_iters:
                    self.save("last")
            if status == lifecycle.INTERRUPTED:
                self.save("last")
        final = self._finish(status)
        return TrainResult(
            run_dir=self.output.run_dir if self.output else Path(),
            status=status,
            iterations=self.iter,
            best_val_loss=self.best_val_loss,
            final_metrics=final,
            resumed_from=self.resumed_from,
        )

    def _iteration(self, task: ProgressTask) -> None:
        """One optimizer step, its log record when due, and an evaluation when due."""
        t = self.config.train
        lr = learning_rate(self.iter, self.config)
        t0 = time.perf_counter()
        loss_t = self._step(lr)
        self.iter += 1
        if self.iter % t.log_interval == 0 or self.iter == t.max_iters:
            if self.dist.enabled:
                dist.all_reduce(loss_t)
                loss_t /= self.dist.world_size
            loss = float(loss_t)
            dt = time.perf_counter() - t0
            self.step_times.append(dt)
            tokens_per_sec = self._tokens_per_step() / dt
            record = {
                "iter": self.iter,
                "loss": loss,
                "lr": lr,
                "tokens_per_sec": tokens_per_sec,
                "step_time_ms": dt * 1000.0,
                "elapsed_s": time.perf_counter() - self.started,
            }
            self._log(record, sync=False)
            task.update(self.iter, f"loss {loss:.4f}  {tokens_per_sec:,.0f} tok/s")
        if self.iter % t.eval_interval == 0 or self.iter == t.max_iters:
            self._evaluate(time.perf_counter() - self.started)

    def _tokens_per_step(self) -> int:
        t = self.config.train
        return int(t.batch_size * self.model_args["block_size"] * t.grad_accum_steps)

    def _evaluate(self, elapsed: float) -> None:
        losses = self.estimate_loss()
        record: dict[str, Any] = {
            "iter": self.iter,
            "val_loss": losses["val"],
            "eval/train_loss": losses["train"],
        }
        if "val_ema" in losses:
            record["val_ema_loss"] = losses["val_ema"]
        record["elapsed_s"] = elapsed
        self.last_eval = record
        self._log(record)
        if not self.progress and self.dist.master:
            log.info(
                "iter %d: train loss %.4f, val loss %.4f", self.iter, losses["train"], losses["val"]
            )
        if self.best_val_loss is None or losses["val"] < self.best_val_loss:
            self.best_val_loss = losses["val"]
            self.save("best", losses["val"])

    def _log(self, record: dict[str, Any], sync: bool = True) -> None:
        if self.metrics is not None:
            self.metrics.log(record, sync=sync)

    def _finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        final: dict[str, Any] = {"iter": self.iter}
        if self.last_eval:
            final["val_loss"] = self.last_eval["val_loss"]
            final["train_loss"] = self.last_eval["eval/train_loss"]
        final["best_val_loss"] = self.best_val_loss
        if self.step_times:
            final["tokens_per_sec"] = self._tokens_per_step() / statistics.median(self.step_times)
        if self.metrics is not None:
            self.metrics.close(final)
        if self.output is not None:
            lifecycle.finish(
                self.output, status, final, error=error, resumed_from=self.resumed_from
            )
        if self.shards is not None:
            self.shards.close()
        end_processes(self.dist, error is None)
        return final


def train(config: LMConfig, *, fresh: bool = False, progress: bool | None = None) -> TrainResult:
    """Train (or resume) the experiment's GPT; see :class:`Trainer`."""
    return Trainer(config, fresh=fresh, progress=progress).fit()


def iter_records(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The metric records of a run, as written (for benches and tests)."""
    path = run_dir / "metrics" / "metrics.ndjson"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
