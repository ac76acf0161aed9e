"""Supervised fine-tuning data (the ``sft`` preparer): prompt/completion pairs in GRPO's
JSONL, the chat template, the completion-only loss, and training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lm_support import TINY_LM  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import ConfigError, DatasetError  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.prepare import artifacts_current, prepare_data  # noqa: E402
from mlharness.lm.sft import SFTBatches  # noqa: E402
from mlharness.lm.tokenizers import load_tokenizer  # noqa: E402
from mlharness.lm.trainer import Trainer, iter_records  # noqa: E402
from sft_support import sft_config, write_pairs  # noqa: E402


def _hf_sft(workspace: Path, chat_template: bool = True, **extra: Any) -> Any:
    from mlharness.rl.tiny_models import build_tiny_model

    model_dir = workspace / "model"
    if not model_dir.is_dir():
        build_tiny_model(model_dir, chat_template=chat_template)
    pairs = write_pairs(workspace / "pairs.jsonl")
    cfg = load_lm_config(None, "sft", overrides=sft_config(model_dir, pairs, **extra))
    prepare_data(cfg, None, progress=False)
    return cfg


def _gpt_sft(workspace: Path, **extra: Any) -> Any:
    """Our GPT from scratch, on the pairs with a char vocabulary (no template, no EOS)."""
    pairs = write_pairs(workspace / "pairs.jsonl")
    overrides = deep_merge(TINY_LM, {"prepare": {"preparer": "sft", "input": str(pairs)}})
    cfg = load_lm_config(None, "gsft", overrides=deep_merge(overrides, extra))
    prepare_data(cfg, None, progress=False)
    return cfg


def _example(data_dir: Path, split: str, i: int) -> tuple[list[int], list[int]]:
    meta = json.loads((data_dir / "meta.json").read_text())
    ids = np.fromfile(data_dir / f"{split}.bin", dtype=meta["dtype"])
    mask = np.fromfile(data_dir / f"{split}_mask.bin", dtype=np.uint8)
    offsets = np.load(data_dir / f"{split}_offsets.npy")
    a, b = offsets[i], offsets[i + 1]
    return ids[a:b].tolist(), mask[a:b].tolist()


def test_chat_template_prompt_then_completion_and_eos_are_the_targets(workspace: Path) -> None:
    cfg = _hf_sft(workspace)
    meta = json.loads((cfg.data_dir / "meta.json").read_text())
    assert meta["sft"] == {
        "train_examples": 180,
        "val_examples": 20,
        "chat_template": True,
        "eos_id": 1,
        "target_tokens": meta["sft"]["target_tokens"],
    }
    tok = load_tokenizer(cfg.data_dir).tokenizer  # type: ignore[attr-defined]
    first = json.loads((workspace / "pairs.jsonl").read_text().splitlines()[0])
    # GRPO's formatting (rl.policy): system and user messages, then the assistant header.
    messages = [
        {"role": "system", "content": first["system"]},
        {"role": "user", "content": first["prompt"]},
    ]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == f"add\nq {first['prompt']}\na "
    ids, mask = _example(cfg.data_dir, "train", 0)
    expected = tok.encode(prompt, add_special_tokens=False)
    completion = [*tok.encode(first["completion"], add_special_tokens=False), tok.eos_token_id]
    assert ids == expected + completion
    assert mask == [0] * len(expected) + [1] * len(completion)
    assert artifacts_current(cfg)
    brief = {"prepare": {"sft": {"system_prompt": "be brief"}}}
    changed = load_lm_config(None, "sft", overrides=deep_merge(cfg.model_dump(mode="json"), brief))
    assert not artifacts_current(changed)  # the prompts would be formatted otherwise


def test_without_a_template_the_prompt_is_plain_and_nothing_is_appended(workspace: Path) -> None:
    cfg = _gpt_sft(workspace)
    meta = json.loads((cfg.data_dir / "meta.json").read_text())
    assert meta["sft"]["chat_template"] is False and meta["sft"]["eos_id"] is None
    tokenizer = load_tokenizer(cfg.data_dir)
    last = json.loads((workspace / "pairs.jsonl").read_text().splitlines()[-1])
    ids, mask = _example(cfg.data_dir, "val", 19)  # the file's last pair is the last val one
    assert tokenizer.decode(ids) == last["prompt"] + last["completion"]
    assert mask == [0] * len(last["prompt"]) + [1] * len(last["completion"])


def test_batches_count_only_completion_targets(workspace: Path) -> None:
    cfg = _hf_sft(workspace)
    data = SFTBatches(cfg.data_dir, "train", "uint16", 32, torch.device("cpu"))
    picks = data.starts(8, torch.Generator().manual_seed(0))
    x, y = data.batch(picks)
    for row, pick in enumerate(data.rows[picks.numpy()]):
        ids, mask = _example(cfg.data_dir, "train", int(pick))
        n = len(ids) - 1
        assert x[row, :n].tolist() == ids[:-1]
        want = [t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)]
        assert y[row].tolist() == want + [-1] * (y.shape[1] - n)  # right padding ignored too
    # The loss is the mean cross-entropy of the completion targets, and nothing else.
    trainer = Trainer(cfg, fresh=True, progress=False)
    logits, loss = trainer.model(x, y)
    counted = y != -1
    by_hand = torch.nn.functional.cross_entropy(logits[counted], y[counted])
    assert loss is not None and loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert (~counted[:, 0]).all()  # the first target of every row is a prompt token


def test_thread_shards_weigh_slices_by_their_counted_targets(workspace: Path) -> None:
    cfg = _hf_sft(workspace, train={"num_threads": 2, "batch_size": 5})
    trainer = Trainer(cfg, fresh=True, progress=False)
    assert trainer.shards is not None
    x, y = trainer.train_data.batch(trainer.train_data.starts(5, torch.Generator()))
    _, loss = trainer.model(x, y)
    with torch.no_grad():
        assert trainer.shards.loss(x, y).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("model", ["hf", "gpt"])
def test_sft_lowers_the_completion_loss(workspace: Path, model: str) -> None:
    fast = {"train": {"max_iters": 50, "eval_interval": 25, "batch_size": 8}}
    cfg = _hf_sft(workspace, **fast) if model == "hf" else _gpt_sft(workspace, **fast)
    trainer = Trainer(cfg, fresh=True, progress=False)
    before = trainer.estimate_loss()["val"]
    result = trainer.fit()
    losses = [r["val_loss"] for r in iter_records(result.run_dir) if "val_loss" in r]
    assert losses[-1] < before - 0.3, (before, losses)


def test_examples_beyond_the_window_are_left_out_with_a_warning(workspace: Path) -> None:
    cfg = _hf_sft(workspace)
    with pytest.warns(UserWarning, match="examples have no completion token within block_size 9"):
        data = SFTBatches(cfg.data_dir, "train", "uint16", 9, torch.device("cpu"))
    assert 0 < len(data.rows) < 180
    with pytest.raises(DatasetError, match="No train example has a completion token"):
        SFTBatches(cfg.data_dir, "train", "uint16", 4, torch.device("cpu"))


def test_missing_or_mismatched_files_are_refused(workspace: Path) -> None:
    cfg = _hf_sft(workspace)
    (cfg.data_dir / "val_mask.bin").write_bytes(b"\x01")
    with pytest.raises(DatasetError, match=r"The val files in .* do not fit together"):
        Trainer(cfg, fresh=True, progress=False)
    (cfg.data_dir / "val_offsets.npy").unlink()
    assert not artifacts_current(cfg)  # mlx loop prepares it again
    with pytest.raises(DatasetError, match=r"lacks val_offsets\.npy: run `mlx prepare"):
        Trainer(cfg, fresh=True, progress=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "1+1="}', "line 2: missing required field 'completion'"),
        ('{"prompt": " ", "completion": "2"}', "line 2: field 'prompt' is empty"),
        ('{"prompt": "1+1=", "completion": 2}', "line 2: field 'completion' must be a string"),
        ("[1, 2]", "line 2: not a JSON object"),
        ('{"prompt": "1+1=",', "line 2: not valid JSON"),
    ],
)
def test_bad_lines_are_named(workspace: Path, line: str, message: str) -> None:
    pairs = workspace / "bad.jsonl"
    pairs.write_text('{"prompt": "1+2=", "completion": "3"}\n' + line + "\n", encoding="utf-8")
    overrides = deep_merge(TINY_LM, {"prepare": {"preparer": "sft", "input": str(pairs)}})
    cfg = load_lm_config(None, "bad", overrides=overrides)
    with pytest.raises(DatasetError, match=message):
        prepare_data(cfg, None, progress=False)


def test_one_pair_and_a_missing_template_are_refused(workspace: Path) -> None:
    pairs = workspace / "one.jsonl"
    pairs.write_text('{"prompt": "1+2=", "completion": "3"}\n', encoding="utf-8")
    overrides = deep_merge(TINY_LM, {"prepare": {"preparer": "sft", "input": str(pairs)}})
    with pytest.raises(DatasetError, match="holds 1 prompt/completion pair"):
        prepare_data(load_lm_config(None, "one", overrides=overrides), None, progress=False)
    write_pairs(pairs)
    asked = deep_merge(overrides, {"prepare": {"sft": {"use_chat_template": True}}})
    with pytest.raises(ConfigError, match="use_chat_template is true but the tokenizer has no"):
        prepare_data(load_lm_config(None, "one", overrides=asked), None, progress=False)
