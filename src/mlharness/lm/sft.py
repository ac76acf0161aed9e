"""Supervised fine-tuning data: prompt/completion pairs, trained on the completions only.

The step before GRPO (nanochat: midtrain, SFT, RL): the same JSONL as GRPO's data
(``prompt``, ``completion``, optional ``system``; see docs/rl-data.md), so one file serves
both. ``mlx prepare`` with the ``sft`` preparer formats each prompt as GRPO will (the
tokenizer's chat template when it has one, else the bare prompt), tokenizes prompt and
completion apart, so the boundary is exact, and appends the tokenizer's end-of-sequence
token to the completion, so the model learns to stop. It writes per split::

    train.bin            the examples' token ids, one after another (nanoGPT's dtype rules)
    train_mask.bin       uint8, one per id: 1 where the id is a target the loss counts
    train_offsets.npy    int64, n_examples + 1 boundaries into train.bin

The trainer then draws whole examples, not windows (:class:`SFTBatches`): each is one row,
right-padded to the longest row of its batch, with the targets of prompt and padding
positions set to -1, the models' ``ignore_index``. Padding, not packing: in a causal model
the pad after a sequence changes nothing before it, so every example is trained exactly as
if alone, at the cost of computing the pads (packing would let examples attend to each
other, or need block-diagonal masks that our GPT's and transformers' fast attention paths
do not take).
"""

from __future__ import annotations

import codecs
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from mlharness.errors import ConfigError, DatasetError
from mlharness.lm.meta import PREPARE_HINT
from mlharness.runs.progress import ProgressBar

if TYPE_CHECKING:
    import torch

    from mlharness.lm.config import SFTConfig

SPLITS = ("train", "val")
IGNORE_INDEX = -1  # the targets the models' cross-entropy skips
_FORMAT_HINT = (
    'Each line must be a JSON object with string fields "prompt" and "completion" (and '
    'optionally "system"), as GRPO\'s data (docs/rl-data.md)'
)


@dataclass(frozen=True)
class Pair:
    prompt: str
    completion: str
    system: str | None
    line: int


class SFTTokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Encoded:
    """Every example's ids one after another, the loss mask, and the example boundaries."""

    ids: npt.NDArray[np.int64]
    mask: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]  # n_examples + 1
    chat_template: bool
    eos_id: int | None


# ----------------------------------------------------------------------------- reading


def _field_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in ("prompt", "completion"):
        if name not in record:
            return f"missing required field '{name}'"
        if not isinstance(record[name], str):
            return f"field '{name}' must be a string"
    if not record["prompt"].strip():
        return "field 'prompt' is empty"
    if record.get("system") is not None and not isinstance(record["system"], str):
        return "field 'system' must be a string"
    return None


def read_pairs(text: str, where: str) -> list[Pair]:
    """The file's pairs; a bad line is an error naming it (other fields are ignored)."""
    pairs = []
    for lineno, line in enumerate(text.removeprefix(codecs.BOM_UTF8.decode()).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where} line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}). "
                f"{_FORMAT_HINT}."
            ) from None
        problem = _field_problem(record)
        if problem is not None:
            raise DatasetError(f"{where} line {lineno}: {problem}. {_FORMAT_HINT}.")
        pairs.append(Pair(record["prompt"], record["completion"], record.get("system"), lineno))
    if len(pairs) < 2:
        raise DatasetError(
            f"{where} holds {len(pairs)} prompt/completion pair(s); training and validation "
            f"need at least one each. {_FORMAT_HINT}."
        )
    return pairs


def plain_text(pairs: list[Pair]) -> str:
    """The text a char or BPE vocabulary is built from: every prompt and completion."""
    return "".join(p.prompt + p.completion for p in pairs)


# ----------------------------------------------------------------------------- encoding


def _chat(tokenizer: Any, settings: SFTConfig) -> Any:
    """The Hugging Face tokenizer whose chat template formats prompts, or None."""
    hf = getattr(tokenizer, "tokenizer", None)  # HFTokenizer's transformers tokenizer
    has_template = bool(getattr(hf, "chat_template", None))
    if settings.use_chat_template and not has_template:
        raise ConfigError(
            "prepare.sft.use_chat_template is true but the tokenizer has no chat template: "
            "set it to false, or prepare with a Hugging Face tokenizer that has one."
        )
    return hf if has_template and settings.use_chat_template is not False else None


def eos_id(tokenizer: Any) -> int | None:
    """The end-of-sequence id appended to each completion: a Hugging Face tokenizer's EOS,
    tiktoken's end-of-text; char and BPE vocabularies have none."""
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and isinstance(hf.eos_token_id, int):
        return int(hf.eos_token_id)
    encoding = getattr(tokenizer, "encoding", None)
    eot = getattr(encoding, "eot_token", None)
    return int(eot) if isinstance(eot, int) else None


def format_prompt(pair: Pair, chat: Any, system_prompt: str | None) -> str:
    """As GRPO formats it (rl.policy.PolicyTokenizer): the chat template with the system
    prompt and the assistant header, else the prompt as written."""
    if chat is None:
        return pair.prompt
    system = pair.system if pair.system is not None else system_prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": pair.prompt}
    ]
    text: str = chat.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def encode_pairs(
    pairs: list[Pair], tokenizer: SFTTokenizer, settings: SFTConfig, where: str, progress: bool
) -> Encoded:
    """Token ids (formatted prompt, completion, EOS) and the mask of completion and EOS."""
    chat = _chat(tokenizer, settings)
    eos = eos_id(tokenizer)
    ids: list[int] = []
    mask: list[int] = []
    offsets = [0]
    with ProgressBar(progress) as bar:
        task = bar.task("tokenize", len(pairs))
        for n, pair in enumerate(pairs, 1):
            try:
                prompt = tokenizer.encode(format_prompt(pair, chat, settings.system_prompt))
                completion = tokenizer.encode(pair.completion)
            except (KeyError, ValueError) as exc:
                raise DatasetError(
                    f"{where} line {pair.line} cannot be tokenized: {exc}."
                ) from None
            completion += [eos] if eos is not None else []
            ids += prompt + completion
            mask += [0] * len(prompt) + [1] * len(completion)
            offsets.append(len(ids))
            if n % 1000 == 0 or n == len(pairs):
                task.update(n)
    return Encoded(
        ids=np.asarray(ids, dtype=np.int64),
        mask=np.asarray(mask, dtype=np.uint8),
        offsets=np.asarray(offsets, dtype=np.int64),
        chat_template=chat is not None,
        eos_id=eos,
    )


def split_files(encoded: Encoded, n_val: int, dtype: str) -> dict[str, bytes]:
    """The files of both splits: the last ``n_val`` examples are the validation split."""
    cut = len(encoded.offsets) - 1 - n_val
    stored = np.dtype(dtype).newbyteorder("<")
    files = {}
    for split, first, last in (("train", 0, cut), ("val", cut, len(encoded.offsets) - 1)):
        start, end = encoded.offsets[first], encoded.offsets[last]
        files[f"{split}.bin"] = encoded.ids[start:end].astype(stored).tobytes()
        files[f"{split}_mask.bin"] = encoded.mask[start:end].tobytes()
        files[f"{split}_offsets.npy"] = _npy_bytes(encoded.offsets[first : last + 1] - start)
    return files


def _npy_bytes(array: npt.NDArray[np.int64]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype("<i8"), allow_pickle=False)
    return buffer.getvalue()


def file_names() -> list[str]:
    return [f"{s}{suffix}" for s in SPLITS for suffix in ("_mask.bin", "_offsets.npy")]


# ----------------------------------------------------------------------------- batches


class SFTBatches:
    """Whole examples of one split, drawn at random from the trainer's seeded generator.

    The same two calls as the trainer's token windows (``starts``, ``batch``), so the loop,
    evaluation, resume (the generator's state is checkpointed) and DDP's shares are
    unchanged. An example longer than ``block_size + 1`` tokens is cut at the end; one
    whose first completion token lies beyond the window is left out, with a warning.
    """

    def __init__(
        self, data_dir: Path, split: str, dtype: str, block_size: int, device: torch.device
    ) -> None:
        paths = [data_dir / f"{split}{s}" for s in (".bin", "_mask.bin", "_offsets.npy")]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(f"{data_dir} lacks {', '.join(missing)}: {PREPARE_HINT} anew.")
        self.ids = np.memmap(paths[0], dtype=np.dtype(dtype), mode="r")
        self.mask = np.memmap(paths[1], dtype=np.uint8, mode="r")
        self.offsets = np.load(paths[2], allow_pickle=False)
        if len(self.ids) != len(self.mask) or self.offsets[-1] != len(self.ids):
            raise DatasetError(
                f"The {split} files in {data_dir} do not fit together: {PREPARE_HINT} anew."
            )
        self.block_size = block_size
        self.device = device
        self.rows = self._trainable(split)

    def _trainable(self, split: str) -> npt.NDArray[np.int64]:
        """The examples with a target inside the window (position 1 .. block_size)."""
        starts, ends = self.offsets[:-1], self.offsets[1:]
        targets = np.flatnonzero(self.mask)
        i = np.searchsorted(targets, starts + 1)
        first = np.append(targets, np.iinfo(np.int64).max)[i]
        keep = (first < ends) & (first - starts <= self.block_size)
        cut = int(((ends - starts)[keep] > self.block_size + 1).sum())
        if not keep.any():
            raise DatasetError(
                f"No {split} example has a completion token within block_size "
                f"{self.block_size}: shorten the prompts or raise model.block_size."
            )
        if not keep.all() or cut:
            warnings.warn(
                f"SFT {split} data: {int((~keep).sum())} of {len(keep)} examples have no "
                f"completion token within block_size {self.block_size} and are left out; "
                f"{cut} are cut to {self.block_size + 1} tokens (losing their end). Raise "
                "model.block_size or shorten them.",
                UserWarning,
                stacklevel=2,
            )
        return np.flatnonzero(keep).astype(np.int64)

    def starts(self, count: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.randint(len(self.rows), (count,), generator=generator)

    def batch(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), right-padded to the batch's longest row; y is -1 off the completions."""
        import torch

        picks = self.rows[starts.numpy()]
        begin = self.offsets[picks]
        end = np.minimum(self.offsets[picks + 1], begin + self.block_size + 1)
        width = int((end - begin).max()) - 1
        x = np.zeros((len(picks), width), dtype=np.int64)  # pad id 0: never a target
        y = np.full((len(picks), width), IGNORE_INDEX, dtype=np.int64)
        for row, (b, e) in enumerate(zip(begin, end, strict=True)):
            seq = self.ids[b:e].astype(np.int64)
            x[row, : len(seq) - 1] = seq[:-1]
            y[row, : len(seq) - 1] = np.where(self.mask[b + 1 : e] == 1, seq[1:], IGNORE_INDEX)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if self.device.type == "cuda":
            return (
                xt.pin_memory().to(self.device, non_blocking=True),
                yt.pin_memory().to(self.device, non_blocking=True),
            )
        return xt.to(self.device), yt.to(self.device)
