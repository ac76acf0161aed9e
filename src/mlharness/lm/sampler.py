"""Sampling text from a trained run: best checkpoint, else last (else a nanoGPT ckpt.pt);
streamed and saved.

The tokenizer comes from the run's own ``meta.json`` copy, so a run samples the same way
after its data directory has been prepared anew. Anything missing is an error that says
what to do, never a silent fallback to another file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import torch

from mlharness.errors import CheckpointError, ConfigError
from mlharness.lm import checkpoints as ckpt
from mlharness.lm import hf_model, pretrained
from mlharness.lm.config import LMConfig
from mlharness.lm.hf_model import HFModel
from mlharness.lm.model import GPT, GPTConfig
from mlharness.lm.pick import latest_run, sampling_checkpoint
from mlharness.lm.tokenizers import Tokenizer, load_tokenizer
from mlharness.runs import checkpoints as run_ckpt
from mlharness.runs.device import resolve_device
from mlharness.runs.io import atomic_write_json, atomic_write_text


@dataclass
class SampleResult:
    checkpoint: Path
    samples: list[str]
    text_path: Path
    json_path: Path
    tokens_per_sec: float


def locate(
    config: LMConfig, run_dir: Path | None = None, checkpoint: Path | None = None
) -> tuple[Path, Path]:
    """(run directory, checkpoint) to sample from: a checkpoint directory, or a nanoGPT
    ``ckpt.pt`` file (seed 004's legacy fallback, after best and last)."""
    if checkpoint is not None:
        if checkpoint.is_file() or _nanogpt_dir(checkpoint):
            file = pretrained.nanogpt_file(checkpoint)
            return file.parent, file
        ckpt.read_meta(checkpoint)
        return checkpoint.resolve().parent.parent, checkpoint
    if run_dir is None:
        run_dir = latest_run(config)
    elif not run_dir.is_dir():
        raise CheckpointError(f"Run directory {run_dir} does not exist.")
    return run_dir, sampling_checkpoint(run_dir)


def _nanogpt_dir(path: Path) -> bool:
    return (path / pretrained.NANOGPT_FILE).is_file() and not (path / run_ckpt.META_FILE).exists()


def load_model(
    checkpoint: Path, device: torch.device, use_ema: bool = True
) -> tuple[GPT | HFModel, dict[str, Any]]:
    """Our GPT or a fine-tuned Hugging Face model (a LoRA run's base comes from its source)."""
    meta = ckpt.read_meta(checkpoint)
    model = pretrained.base_model(meta["model_args"], meta["config"].get("init_from", "scratch"))
    ema = use_ema and bool(meta.get("has_ema"))
    hf_model.load_model_state(model, ckpt.load_weights(checkpoint, ema=ema))
    model.to(device).eval()
    return model, meta


def load_for_sampling(
    run_dir: Path, checkpoint: Path, device: torch.device, use_ema: bool = True
) -> tuple[GPT | HFModel, dict[str, Any], Tokenizer]:
    """The model, its checkpoint's meta and the tokenizer; a ``ckpt.pt`` file is nanoGPT's,
    with the tokenizer nanoGPT's sample.py would use (its meta.pkl, else GPT-2's BPE)."""
    if not checkpoint.is_file():
        return (*load_model(checkpoint, device, use_ema), run_tokenizer(run_dir))
    source = pretrained.load_nanogpt(checkpoint)
    model = GPT(GPTConfig.from_dict(source.model_args))
    run_ckpt.load_into(model, source.state)
    model.to(device).eval()
    return model, {"iter": source.iteration, "has_ema": False}, source.build_tokenizer()


def run_tokenizer(run_dir: Path) -> Tokenizer:
    if not (run_dir / "meta.json").is_file():
        raise CheckpointError(
            f"Run {run_dir} has no meta.json, so its tokenizer is unknown. Copy the meta.json "
            "(and tokenizer.json) of the data the run was trained on into it."
        )
    return load_tokenizer(run_dir)


def start_text(spec: str) -> str:
    """``FILE:path`` reads the prompt from a file; anything else is the prompt itself."""
    if not spec.startswith("FILE:"):
        return spec
    if not spec[5:].strip():
        raise ConfigError("sample.start is 'FILE:' without a path: write FILE:path/to/prompt.txt.")
    path = Path(spec[5:])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sample.start names {path}, which does not exist.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sample.start names {path}, which is not UTF-8 text.") from None
    except OSError as exc:  # its strerror only: the exception's text repeats the path
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError(f"sample.start names {path}, which cannot be read ({reason}).") from None


class _Stream:
    """Writes the new text of a growing token list, holding back half-decoded characters."""

    def __init__(self, tokenizer: Tokenizer, out: TextIO | None) -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, token: torch.Tensor) -> None:
        self.ids.append(int(token[0]))
        if self.out is None:
            return
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return  # a multi-byte character is not complete yet
        self.out.write(text[self.shown :])
        self.out.flush()
        self.shown = len(text)


def sample_paths(samples_dir: Path, stamp: str, checkpoint: Path) -> tuple[Path, Path]:
    """The .txt and .json paths of one sampling, named ``<stamp>_<checkpoint>``.

    The suffix is appended, not swapped in with ``with_suffix``: best checkpoint names end
    in a metric such as ``val_loss_3.9958``, whose ``.9958`` would otherwise be cut off.
    """
    base = f"{stamp}_{checkpoint.name}"
    return samples_dir / f"{base}.txt", samples_dir / f"{base}.json"


def sample(
    config: LMConfig,
    *,
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    out: TextIO | None = None,
) -> SampleResult:
    """Draw ``sample.num_samples`` texts; stream them to ``out`` and save them in samples/."""
    s = config.sample
    run_dir, checkpoint = locate(config, run_dir, checkpoint)
    device = resolve_device(s.device)
    model, meta, tokenizer = load_for_sampling(run_dir, checkpoint, device, s.use_ema)
    prompt = start_text(s.start)
    ids = _encode_start(tokenizer, prompt)
    started = time.perf_counter()
    texts = _generate(model, tokenizer, config, prompt, ids, device, out)
    new_tokens = s.max_new_tokens * s.num_samples
    elapsed = time.perf_counter() - started
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    text_path, json_path = sample_paths(samples_dir, stamp, checkpoint)
    atomic_write_text(
        text_path, "".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in enumerate(texts))
    )
    atomic_write_json(
        json_path,
        {
            "checkpoint": str(checkpoint),
            "iter": meta["iter"],
            "ema": bool(s.use_ema and meta.get("has_ema")),
            "settings": json.loads(s.model_dump_json()),
            "samples": texts,
            "tokens_per_sec": new_tokens / elapsed if elapsed > 0 else None,
        },
    )
    return SampleResult(
        checkpoint, texts, text_path, json_path, new_tokens / elapsed if elapsed else 0.0
    )


def _encode_start(tokenizer: Tokenizer, prompt: str) -> list[int]:
    try:
        ids = tokenizer.encode(prompt)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"The start text cannot be encoded by this run's tokenizer ({exc}): use only "
            "characters that occur in the training text."
        ) from exc
    if not ids:
        raise ConfigError("The start text encodes to no tokens: give at least one character.")
    return ids


def _generate(
    model: GPT | HFModel,
    tokenizer: Tokenizer,
    config: LMConfig,
    prompt: str,
    ids: list[int],
    device: torch.device,
    out: TextIO | None,
) -> list[str]:
    """The samples' texts, each streamed to ``out`` token by token under a header line."""
    s = config.sample
    generator = torch.Generator(device=device).manual_seed(s.seed)
    texts: list[str] = []
    for i in range(s.num_samples):
        if out is not None:
            out.write(("" if i == 0 else "\n") + f"--- sample {i + 1}/{s.num_samples} ---\n")
            out.write(prompt)
        stream = _Stream(tokenizer, out)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        result = model.generate(
            idx,
            s.max_new_tokens,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            generator=generator,
            on_token=stream,
        )
        texts.append(tokenizer.decode(result[0].tolist()))
        if out is not None:
            out.write("\n")
    return texts
