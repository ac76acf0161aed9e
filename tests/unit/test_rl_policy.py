"""The policy's decode paths agree with Hugging Face's (and PEFT's) own forward.

LoRA policies of GPT-2 and our GPT decode on weights with the adapters folded in; these
tests hold those steps to the PEFT model's forward, cached step after cached step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mlharness.lm.hf_model import peft_quietly
from mlharness.lm.model import GPT, GPTConfig
from mlharness.rl.policy import (
    Policy,
    PolicyTokenizer,
    _fold_lora,
    _plain_gpt2,
    add_lora,
    hf_cache_kwarg,
    load_policy,
)
from mlharness.rl.tiny_models import build_tiny_model

pytestmark = pytest.mark.unit

VOCAB = 49  # tiny_models' character vocabulary


def hf_steps(policy: Policy) -> Any:
    """HF's (PEFT's, with LoRA) own forward over a DynamicCache: the reference."""
    from transformers import DynamicCache

    cache = DynamicCache()
    kwargs = {hf_cache_kwarg(): cache}
    return lambda ids: policy.model(input_ids=ids, use_cache=True, **kwargs).logits[:, -1]


def full_forward_steps(policy: Policy) -> Any:
    """Our GPT (with PEFT's LoRA layers) on the whole sequence so far, no cache."""
    seen: list[torch.Tensor] = []

    def step(ids: torch.Tensor) -> torch.Tensor:
        seen.append(ids)
        return policy.model(torch.cat(seen, dim=1), all_logits=True)[0][:, -1]

    return step


def assert_same_steps(
    ours: Any, reference: Any, rows: int = 4, steps: int = 12, tol: float = 1e-5
) -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (rows, 5), generator=gen)
    with torch.inference_mode():
        for t in range(steps):
            torch.testing.assert_close(ours(ids), reference(ids), rtol=tol, atol=tol, msg=f"{t}")
            ids = torch.randint(3, VOCAB, (rows, 1), generator=gen)


def randomise_adapters(policy: Policy, seed: int) -> None:
    """LoRA's B starts at zero (adapters then change nothing): give every adapter weight
    a value, in place, as an optimizer step would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def hf_lora_policy(tmp_path: Path) -> Policy:
    policy = load_policy(build_tiny_model(tmp_path / "m", n_layer=2), device=torch.device("cpu"))
    add_lora(policy, rank=4, alpha=8, dropout=0.0, targets=None)
    policy.model.eval()
    randomise_adapters(policy, 1)
    return policy


def gpt_lora_policy() -> Policy:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=32, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, bias=True))
    tok = PolicyTokenizer(list, lambda ids: "", vocab_size=VOCAB)  # type: ignore[arg-type]
    policy = Policy("gpt", gpt, tok, Path("."), 32, {"model_type": "gpt"})
    add_lora(policy, rank=4, alpha=8, dropout=0.0, targets=None)
    policy.model.eval()
    randomise_adapters(policy, 2)
    return policy


def test_plain_gpt2_decoder_matches_hf_forward_with_its_cache(tmp_path: Path) -> None:
    policy = load_policy(build_tiny_model(tmp_path / "m", n_layer=2), device=torch.device("cpu"))
    assert _plain_gpt2(policy.core)
    assert_same_steps(policy.decoder(4), hf_steps(policy))


def test_gpt2_lora_rollouts_decode_folded_weights_like_peft(tmp_path: Path) -> None:
    policy = hf_lora_policy(tmp_path)
    step = policy.decoder(4)
    assert policy._rollout is not None and policy._rollout[1] is not None  # the plain path
    assert_same_steps(step, hf_steps(policy))
    with torch.inference_mode(), policy.adapters_disabled():  # the adapters do matter here
        ids = torch.tensor([[4, 5, 6]])
        base = policy.model(input_ids=ids).logits
    with torch.inference_mode():
        assert (policy.model(input_ids=ids).logits - base).abs().max() > 1e-2


def test_our_gpt_lora_rollouts_decode_folded_weights_like_peft() -> None:
    policy = gpt_lora_policy()
    step = policy.decoder(4)
    assert policy._rollout is not None and policy._rollout[1] is not None
    assert_same_steps(step, full_forward_steps(policy))


def test_folded_weights_follow_every_update_of_the_adapters(tmp_path: Path) -> None:
    policy = hf_lora_policy(tmp_path)
    policy.decoder(4)
    first = policy._rollout
    policy.decoder(4)
    assert policy._rollout is first  # unchanged weights: folded once, reused
    randomise_adapters(policy, 3)  # in place, like AdamW's step
    assert_same_steps(policy.decoder(4), hf_steps(policy))
    assert policy._rollout is not first

    policy.logits(torch.tensor([[4, 5]]))  # the training forward frees the decode weights
    assert policy._rollout is None


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_wide_gpt2_decodes_on_onednn_packed_weights_like_hf(tmp_path: Path, lora: bool) -> None:
    model = build_tiny_model(tmp_path / "m", n_layer=1, n_embd=512, n_head=8)
    policy = load_policy(model, device=torch.device("cpu"))
    if lora:
        add_lora(policy, rank=4, alpha=8, dropout=0.0, targets=None)
        policy.model.eval()
        randomise_adapters(policy, 4)
    step = policy.decoder(4)
    assert policy._rollout is not None and policy._rollout[1] is not None
    assert policy._rollout[1].head_t.is_mkldnn == torch.backends.mkldnn.is_available()
    # float32 both, summed in another order over 512-wide rows: differences of ~1e-5
    assert_same_steps(step, hf_steps(policy), tol=5e-5)


def test_adapters_the_plain_path_cannot_fold_decode_through_peft(tmp_path: Path) -> None:
    """DoRA rescales each column by a norm the plain path does not compute: HF's forward."""
    from peft import LoraConfig, get_peft_model

    policy = load_policy(build_tiny_model(tmp_path / "m", n_layer=2), device=torch.device("cpu"))
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, use_dora=True)
    with peft_quietly():
        policy.model = get_peft_model(policy.model, config)
    policy.info["lora"] = True
    assert _fold_lora(policy.core, "hf") is None
    assert_same_steps(policy.decoder(4), hf_steps(policy), steps=3)


def test_other_architectures_use_hf_forward(tmp_path: Path) -> None:
    policy = load_policy(build_tiny_model(tmp_path / "m", arch="llama"), device=torch.device("cpu"))
    assert not _plain_gpt2(policy.core)
    step = policy.decoder(2)  # DynamicCache path
    with torch.inference_mode():
        assert step(torch.tensor([[4, 5], [6, 7]])).shape == (2, policy.tokenizer.vocab_size)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("4.46.0", "past_key_values"),
        ("5.23.0", "past_key_values"),
        ("5.24.0", "cache"),
        ("5.40.1", "cache"),
        ("6.0.0.dev0", "cache"),
    ],
)
def test_the_kv_cache_keyword_follows_the_transformers_release(
    monkeypatch: pytest.MonkeyPatch, version: str, expected: str
) -> None:
    """5.24 renamed past_key_values to cache and drops the old name in 5.40."""
    import transformers

    monkeypatch.setattr(transformers, "__version__", version)
    assert hf_cache_kwarg() == expected
