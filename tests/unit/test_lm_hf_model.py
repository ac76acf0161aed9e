"""lm.hf_model: the Hugging Face models the lm trainer builds compute transformers' function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")


def test_gpt2s_tanh_gelu_runs_fused_with_the_same_logits() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    from mlharness.lm import hf_model

    torch.manual_seed(0)
    reference = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    reference.eval()
    args = hf_model.hf_model_args(reference, Path("tiny"))
    model = hf_model.build_model({**args, "block_size": 16})
    hf_model.load_model_state(model, reference.state_dict())
    model.eval()

    acts = [m for m in model.modules() if isinstance(m, (GELUTanh, NewGELUActivation))]
    assert acts and all(type(m) is GELUTanh for m in acts)
    assert model.hf.config.activation_function == "gelu_new"  # exports keep the config
    idx = torch.randint(0, 64, (3, 16))
    with torch.no_grad():
        ours, _ = model(idx, all_logits=True)
        theirs = reference(idx).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
