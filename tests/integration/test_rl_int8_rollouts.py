"""GRPO's int8 rollouts (generation.int8_rollouts): sampled from an int8 copy of the policy,
each token's rollout log-prob kept, the loss corrected by truncated importance weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from mlharness.errors import ConfigError  # noqa: E402
from mlharness.lm.model import GPT, GPTConfig, KVCache, int8_weights, plain_decode_step  # noqa: E402
from mlharness.rl.config import GenerationConfig  # noqa: E402
from mlharness.rl.rollout import generate  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402
from mlharness.rl.trainer import GRPOTrainer  # noqa: E402
from rl_support import arithmetic_rows, rl_config, write_jsonl  # noqa: E402

pytestmark = pytest.mark.integration


def trainer_for(workspace: Path, overrides: dict[str, Any], arch: str = "gpt2") -> GRPOTrainer:
    model = build_tiny_model(workspace / f"model-{arch}", arch=arch)  # type: ignore[arg-type]
    prompts = write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))
    base = {"generation": {"int8_rollouts": True}, "monitoring": {"log_samples_every": 0}}
    config = rl_config(workspace, model, prompts, {**base, **overrides})
    return GRPOTrainer(config, progress=False)


def test_int8_decoding_stays_close_to_float_for_our_gpt() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=300, n_layer=2, n_head=2, n_embd=64, bias=True)
    model = GPT(cfg).eval()
    idx = torch.randint(0, 300, (4, 6))
    with torch.inference_mode():
        weights = model.plain_weights()
        fp, q8 = (KVCache(cfg, 4, device=torch.device("cpu"), dtype=torch.float32) for _ in "ab")
        for t in range(6):  # a prefill of one token, then cached steps
            want = plain_decode_step(idx[:, t : t + 1], fp, weights)
            got = plain_decode_step(idx[:, t : t + 1], q8, int8_weights(weights))
            assert (got - want).abs().max() < 0.1 * want.std()
            assert got.shape == want.shape and not torch.equal(got, want)


def test_rollout_logprobs_are_the_int8_policys_own(workspace: Path) -> None:
    trainer = trainer_for(workspace, {})
    policy = trainer.policy
    prompt = policy.tokenizer.encode("3+4=")
    gen = GenerationConfig(temperature=1.3, top_k=20)
    (group,) = generate(
        policy,
        [prompt],
        group_size=3,
        max_new_tokens=6,
        generation=gen,
        stop=[],
        int8=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert all(c.logp is not None and len(c.logp) == len(c.ids) == 6 for c in group)
    # Teacher-forced through the same int8 decoder: the raw logits' log-softmax at each token
    # (no temperature, no top-k: the distribution the trainer scores), the same floats.
    step = policy.decoder(3, int8=True)
    with torch.inference_mode():
        logits = step(torch.tensor([prompt] * 3))
        for t in range(6):
            tokens = torch.tensor([c.ids[t] for c in group])
            want = torch.log_softmax(logits.float(), -1).gather(1, tokens.view(3, 1)).squeeze(1)
            assert want.tolist() == pytest.approx([c.logp[t] for c in group], abs=1e-5)  # type: ignore[index]
            logits = step(tokens.view(3, 1))
    (plain,) = generate(
        policy, [prompt], group_size=1, max_new_tokens=3, generation=gen, stop=[], greedy=True
    )
    assert plain[0].logp is None  # float rollouts keep none


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_int8_rollouts_train_and_log_their_weights(workspace: Path, lora: bool) -> None:
    trainer = trainer_for(
        workspace, {"model": {"use_lora": lora}, "trainer": {"num_training_steps": 2}}
    )
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    trainer.fit()
    assert trainer.policy._rollout is None  # freed by the last training forward
    lines = (trainer.run_dir / "metrics" / "metrics.ndjson").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if "reward" in r]
    assert len(steps) == 2
    for record in steps:
        assert 0 < record["is_weight"] <= 2.0 and 0 <= record["is_truncated"] <= 1
        # a tiny random model's int8 logits are close: the weights stay near 1
        assert record["is_weight"] == pytest.approx(1.0, abs=0.2)
    moved = [n for n, p in trainer.policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved
    if lora:
        assert all("lora_" in n for n in moved)


def test_int8_rollouts_are_reproducible(workspace: Path) -> None:
    runs = []
    for name in ("a", "b"):
        trainer = trainer_for(workspace, {"name": name, "trainer": {"num_training_steps": 2}})
        runs.append([trainer.train_step() for _ in range(2)])
    for a, b in zip(*runs, strict=True):
        for key in ("reward", "is_weight", "policy_loss", "completion_length"):
            assert a[key] == b[key], key


def test_a_model_without_an_int8_path_is_refused_at_start_up(workspace: Path) -> None:
    with pytest.raises(ConfigError, match=r"generation\.int8_rollouts needs our GPT or a GPT-2"):
        trainer_for(workspace, {}, arch="llama")
