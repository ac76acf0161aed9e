"""The policy's decode paths agree with Hugging Face's own forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlharness.rl.policy import _gpt2_decoder, hf_cache_kwarg, load_policy
from mlharness.rl.tiny_models import build_tiny_model

pytestmark = pytest.mark.unit


def test_plain_gpt2_decoder_matches_hf_forward_with_its_cache(tmp_path: Path) -> None:
    from transformers import DynamicCache

    policy = load_policy(build_tiny_model(tmp_path / "m", n_layer=2), device=torch.device("cpu"))
    step = _gpt2_decoder(policy.model, 4)
    assert step is not None
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 49, (4, 5), generator=gen)
    cache = DynamicCache()
    with torch.inference_mode():
        for t in range(12):
            ours = step(ids)
            kwargs = {hf_cache_kwarg(): cache}
            theirs = policy.model(input_ids=ids, use_cache=True, **kwargs).logits
            torch.testing.assert_close(ours, theirs[:, -1], rtol=1e-5, atol=1e-5, msg=f"step {t}")
            ids = torch.randint(3, 49, (4, 1), generator=gen)


def test_other_architectures_use_hf_forward(tmp_path: Path) -> None:
    policy = load_policy(build_tiny_model(tmp_path / "m", arch="llama"), device=torch.device("cpu"))
    assert _gpt2_decoder(policy.model, 2) is None
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
