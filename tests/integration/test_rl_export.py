"""``mlx export`` of GRPO runs: LoRA merged by PEFT into a Hugging Face base (same logits as
the adapter model), the adapter alone (PeftModel.from_pretrained loads it), full weights,
and our GPT's policy as GPT-2; each loaded by a Python that cannot import this project."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parents[1]))

from export_support import load_cleanly  # noqa: E402
from mlharness.cli import main  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import ConfigError, ModelError  # noqa: E402
from mlharness.rl import trainer as rl_trainer  # noqa: E402
from mlharness.rl.export import export  # noqa: E402
from mlharness.rl.policy import load_policy  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402
from mlharness.rl.trainer import train  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402
from mlharness.runs.metrics import MetricsWriter  # noqa: E402
from rl_support import arithmetic_rows, rl_config, write_jsonl  # noqa: E402

IDS = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]]
LORA = {"model": {"use_lora": True}, "trainer": {"learning_rate": 0.05}}


def quiet(_: str) -> None:
    """Export's console lines, unwanted in these tests."""


@pytest.fixture(autouse=True)
def no_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """curves.png takes seconds to draw and nothing here reads it."""
    monkeypatch.setattr(rl_trainer, "MetricsWriter", functools.partial(MetricsWriter, plot=False))


def grpo(workspace: Path, model: Path, overrides: dict[str, Any]) -> Path:
    """The newest checkpoint of a two-step GRPO run on ``model``."""
    prompts = write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))
    run_dir = train(rl_config(workspace, model, prompts, overrides), progress=False).run_dir
    return run_ckpt.list_checkpoints(run_dir / "checkpoints", "last")[-1].path


def policy_logits(checkpoint: Path, ids: list[list[int]], base: bool = False) -> Any:
    policy = load_policy(checkpoint, device=torch.device("cpu"), trainable=False)
    with torch.no_grad():
        if base:
            with policy.adapters_disabled():
                return policy.logits(torch.tensor(ids))
        return policy.logits(torch.tensor(ids))


def test_lora_on_hf_merges_into_the_base_and_exports_the_adapter(workspace: Path) -> None:
    base = build_tiny_model(workspace / "gpt2", arch="gpt2")
    checkpoint = grpo(workspace, base, LORA)
    ours = policy_logits(checkpoint, IDS)
    assert (ours - policy_logits(checkpoint, IDS, base=True)).abs().max().item() > 1e-4

    merged = export(checkpoint, "hf", say=quiet)
    assert merged.out == checkpoint.parent.parent / "export" / f"hf-float32-{checkpoint.name}"
    assert not (merged.out / "adapter_config.json").exists()
    answer = load_cleanly(merged.out, ids=IDS, texts=["1+2=3"])
    assert (torch.tensor(answer["logits"]) - ours).abs().max().item() < 1e-5
    tokenizer = load_policy(checkpoint, device=torch.device("cpu")).info["hf_tokenizer"]
    assert answer["encoded"] == [tokenizer("1+2=3").input_ids]

    # Through the command: mlx export finds that the run is a GRPO run (its config.json).
    assert main(["export", str(checkpoint.parent.parent), "--format", "hf", "--adapter-only"]) == 0
    adapter = checkpoint.parent.parent / "export" / f"adapter-float32-{checkpoint.name}"
    assert (adapter / "adapter_config.json").is_file()
    assert not (adapter / "model.safetensors").exists()
    answer = load_cleanly(adapter, base=str(base), ids=IDS)
    assert (torch.tensor(answer["logits"]) - ours).abs().max().item() < 1e-5

    # GPT-2's layout goes to GGUF, but not this tokenizer (one WordLevel token per character).
    with pytest.raises(ModelError, match=r"not a byte-level BPE .* convert_hf_to_gguf\.py"):
        export(checkpoint, "gguf", out=workspace / "gguf", say=quiet)
    assert not (workspace / "gguf").exists()
    base.rename(base.with_name("moved"))
    with pytest.raises(ConfigError, match=r"The adapter's base model .* is gone"):
        export(checkpoint, "hf", adapter_only=True, out=workspace / "adapter", say=quiet)
    assert not (workspace / "adapter").exists()


def test_full_weights_of_an_hf_policy_export_in_float16(workspace: Path) -> None:
    base = build_tiny_model(workspace / "llama", arch="llama")
    checkpoint = grpo(workspace, base, {})
    result = export(checkpoint, "hf", dtype="float16", say=quiet)
    from safetensors import safe_open

    with safe_open(str(result.out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
    answer = load_cleanly(result.out, ids=IDS)
    diff = torch.tensor(answer["logits"]) - policy_logits(checkpoint, IDS)
    assert diff.abs().max().item() < 5e-2  # float16 weights, float32 compute
    with pytest.raises(ConfigError, match=r"needs a run trained with LoRA \(model\.use_lora\)"):
        export(checkpoint, "hf", adapter_only=True, say=quiet)
    with pytest.raises(ConfigError, match=r"a Hugging Face llama model.*convert_hf_to_gguf\.py"):
        export(checkpoint, "gguf", say=quiet)


def test_our_gpt_policy_with_lora_exports_as_gpt2(tiny_lm: Any, workspace: Path) -> None:
    from mlharness.lm.trainer import train as lm_train

    lm_run = lm_train(tiny_lm({"train": {"max_iters": 6}}), progress=False).run_dir
    rows = [{"prompt": p, "completion": " and"} for p in ("the ", "a ", "to ", "and ")]
    prompts = write_jsonl(workspace / "gpt_train.jsonl", rows)
    overrides = deep_merge(LORA, {"rewards": [{"name": "char_share", "config": {"chars": "ae "}}]})
    overrides["data"] = {"max_prompt_len": 8, "max_gen_len": 6}
    run_dir = train(rl_config(workspace, lm_run, prompts, overrides), progress=False).run_dir
    checkpoint = run_ckpt.list_checkpoints(run_dir / "checkpoints", "last")[-1].path
    ids = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    ours = policy_logits(checkpoint, ids)
    result = export(checkpoint, "hf", say=quiet)
    answer = load_cleanly(result.out, ids=ids)
    assert (torch.tensor(answer["logits"]) - ours).abs().max().item() < 1e-5
    with pytest.raises(ConfigError, match="--adapter-only needs a Hugging Face base model"):
        export(checkpoint, "hf", adapter_only=True, say=quiet)
