"""The lm engine's GPT: shapes, loss, init, parameter groups, KV cache, sampling, errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("torch")

import torch
import torch.nn.functional as F
from torch import Tensor

from mlharness.errors import ModelError
from mlharness.lm.model import (
    GPT,
    SHORT_CONTEXT,
    GPTConfig,
    KVCache,
    _exponential_race,
    _inverse_cdf,
    causal_attention,
    dropout,
    packed_weights,
    plain_decode_step,
    sample_next_token,
    short_causal_attention,
)

VOCAB = 50
BLOCK = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and OpenMP stalls when a core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides: object) -> GPTConfig:
    args: dict[str, object] = {
        "n_layer": 2,
        "n_head": 4,
        "n_embd": 32,
        "block_size": BLOCK,
        "vocab_size": VOCAB,
    }
    args.update(overrides)
    return GPTConfig(**args)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, **overrides: object) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides))


def tokens(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- forward


@pytest.mark.parametrize("T", [1, 7, 64, SHORT_CONTEXT])
def test_short_context_attention_equals_sdpa_with_gradients(T: int) -> None:
    """The CPU path for short sequences is SDPA's causal attention, values and gradients."""
    torch.manual_seed(0)
    qkv = torch.randn(3, 2, 3, T, 8, dtype=torch.float64)
    grad = torch.randn(2, 3, T, 8, dtype=torch.float64)

    def run(attention: object) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = qkv.clone().requires_grad_()
        q, k, v = leaf.unbind(0)
        out = attention(q, k, v)  # type: ignore[operator]
        out.backward(grad)
        assert leaf.grad is not None
        return out.detach(), leaf.grad

    ours = run(lambda q, k, v: short_causal_attention(q, k, v, 0.0))
    sdpa = run(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    for a, b in zip(ours, sdpa, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.fixture
def matmul_attention_lengths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sequence lengths that causal_attention sends to the two-matmul path."""
    import mlharness.lm.model as model_module

    lengths: list[int] = []

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        lengths.append(q.size(2))
        return short_causal_attention(q, k, v, p)

    monkeypatch.setattr(model_module, "short_causal_attention", spy)
    return lengths


def test_short_context_attention_is_taken_on_cpu_up_to_its_limit(
    matmul_attention_lengths: list[int],
) -> None:
    for T in (SHORT_CONTEXT, SHORT_CONTEXT + 1):
        q = torch.randn(1, 1, T, 4)
        causal_attention(q, q, q, None, 0, 0.0)
    assert matmul_attention_lengths == [SHORT_CONTEXT]  # the longer one went to SDPA


def test_attention_with_dropout_takes_the_matmul_path_on_cpu_at_any_length(
    matmul_attention_lengths: list[int],
) -> None:
    """SDPA has no CPU kernel with dropout (it falls back to a slower math path)."""
    q = torch.randn(1, 1, 2 * SHORT_CONTEXT, 4)
    causal_attention(q, q, q, None, 0, 0.2)
    causal_attention(q, q, q, None, 0, 0.0)
    assert matmul_attention_lengths == [2 * SHORT_CONTEXT]  # without dropout, SDPA's flash


def test_short_context_attention_drops_weights_reproducibly() -> None:
    q = torch.randn(1, 2, 16, 4)
    plain = short_causal_attention(q, q, q, 0.0)
    torch.manual_seed(3)
    dropped = short_causal_attention(q, q, q, 0.5)
    torch.manual_seed(3)
    again = short_causal_attention(q, q, q, 0.5)
    assert not torch.allclose(dropped, plain)
    assert torch.equal(dropped, again)


def test_dropout_zeroes_a_share_p_and_scales_the_rest_to_keep_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.randn(400_000, requires_grad=True)
    state = torch.get_rng_state()
    out = dropout(x, 0.2)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.2) < 0.003  # 5 sd of 400,000 draws
    kept = ~dropped
    torch.testing.assert_close(out[kept], x[kept] * 65536 / 52429)  # 0.2 of 65,536 rounded
    out.backward(torch.ones_like(x))
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept * (65536 / 52429))  # the same mask backwards
    torch.set_rng_state(state)
    assert torch.equal(dropout(x, 0.2), out)  # the global generator: seeded, checkpointed
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x


def test_dropout_bits_are_uniform_and_independent_across_elements() -> None:
    """Four 16-bit uniforms from each 64-bit draw: neighbours must not drop together."""
    torch.manual_seed(1)
    keep = dropout(torch.ones(200_000), 0.5) > 0
    both = (keep[:-1] & keep[1:]).float().mean().item()
    assert abs(keep.float().mean().item() - 0.5) < 0.006
    assert abs(both - 0.25) < 0.005  # independent pairs, within ~5 sd


def test_forward_shapes_with_and_without_targets() -> None:
    model = tiny_model()
    idx = tokens(3, 10)
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, VOCAB)
    assert loss is not None and loss.shape == ()
    logits, loss = model(idx)
    assert logits.shape == (3, 1, VOCAB)  # last position only: generation needs no more
    assert loss is None


def test_last_position_logits_equal_those_of_a_full_forward() -> None:
    model = tiny_model()
    idx = tokens(2, 12)
    full, _ = model(idx, idx)
    last, _ = model(idx)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_loss_at_init_is_near_uniform_guessing() -> None:
    model = tiny_model()
    idx = tokens(8, BLOCK)
    _, loss = model(idx, tokens(8, BLOCK, seed=2))
    assert loss is not None
    assert abs(loss.item() - math.log(VOCAB)) < 0.3


def test_targets_of_minus_one_are_ignored() -> None:
    model = tiny_model()
    idx = tokens(2, 8)
    targets = idx.clone()
    targets[:, 4:] = -1
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :4].reshape(-1, VOCAB), idx[:, :4].reshape(-1)
    )
    assert loss is not None
    torch.testing.assert_close(loss, expected)


def test_lm_head_shares_storage_with_the_token_embedding() -> None:
    model = tiny_model()
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()
    assert "lm_head.weight" in model.state_dict()  # both names stay loadable


@pytest.mark.parametrize("bias", [False, True])
def test_num_params_matches_the_hand_count(bias: bool) -> None:
    model = tiny_model(bias=bias)
    V, C, L, T = VOCAB, 32, 2, BLOCK
    per_block = 12 * C * C + 2 * C  # qkv 3C², proj C², MLP 8C², two LayerNorm gains
    if bias:
        per_block += 3 * C + C + 4 * C + C + 2 * C  # Linear biases, LayerNorm biases
    total = V * C + T * C + L * per_block + C * (2 if bias else 1)  # head tied: counted once
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - T * C  # position embeddings left out


def test_optimizer_groups_decay_matrices_only_and_cover_every_parameter_once() -> None:
    model = tiny_model(bias=True)
    decay, no_decay = model.optimizer_groups(weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(grouped) == len(set(grouped))  # the tied matrix appears once
    assert set(grouped) == {id(p) for p in model.parameters()}
    torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-3)  # accepted as is


def test_residual_projections_get_the_scaled_gpt2_init() -> None:
    model = tiny_model(n_layer=4, n_embd=64)
    residual = torch.cat([model.h[i].mlp.c_proj.weight.flatten() for i in range(4)])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert model.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_biases_start_at_zero() -> None:
    model = tiny_model(bias=True)
    biases = [
        m.bias for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None
    ]
    assert len(biases) == 4 * 2  # four Linear layers with a bias per block; the head has none
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_same_seed_builds_identical_weights() -> None:
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_fifty_adamw_steps_overfit_one_batch() -> None:
    model = tiny_model()
    idx = tokens(4, BLOCK)
    targets = tokens(4, BLOCK, seed=3)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.0), lr=3e-3)
    _, first = model(idx, targets)
    assert first is not None
    for _ in range(50):
        _, loss = model(idx, targets)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert loss.item() < first.item() / 2


def test_dropout_is_active_in_training_only() -> None:
    model = tiny_model(dropout=0.5)
    idx = tokens(2, 8)
    assert not torch.equal(model(idx, idx)[0], model(idx, idx)[0])
    model.eval()
    torch.testing.assert_close(model(idx, idx)[0], model(idx, idx)[0])


def test_crop_block_size_keeps_the_first_positions() -> None:
    config = tiny_config()
    torch.manual_seed(0)
    model = GPT(config)
    idx = tokens(2, 8)
    before, _ = model(idx, idx)
    model.crop_block_size(8)
    assert model.config.block_size == 8 and config.block_size == BLOCK
    assert model.wpe.weight.shape == (8, 32)
    torch.testing.assert_close(model(idx, idx)[0], before)
    with pytest.raises(ModelError, match="block_size"):
        model(tokens(2, 9))
    with pytest.raises(ModelError, match="Cannot crop the context to 9 tokens"):
        model.crop_block_size(9)


# ---------------------------------------------------------------------------- KV cache


def cached_step(model: GPT, idx: torch.Tensor, cache: KVCache, plain: bool) -> torch.Tensor:
    """Last position's logits (B, V) of a cached forward: modules, or the plain path."""
    if plain:
        weights = model._plain_weights()
        assert weights is not None
        return plain_decode_step(idx, cache, weights)
    logits: torch.Tensor = model(idx, kv_cache=cache)[0]
    return logits[:, -1, :]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("plain", [False, True], ids=["forward", "plain"])
def test_cached_logits_equal_full_forward_logits_at_every_step(bias: bool, plain: bool) -> None:
    model = tiny_model(bias=bias).eval()
    idx = tokens(2, BLOCK - 2)
    cache = KVCache(model.config, batch_size=2)
    with torch.no_grad():
        prefill = cached_step(model, idx[:, :3], cache, plain)
        torch.testing.assert_close(prefill, model(idx[:, :3])[0][:, -1], atol=1e-5, rtol=0)
        for t in range(3, idx.size(1)):
            cached = cached_step(model, idx[:, t : t + 1], cache, plain)
            full, _ = model(idx[:, : t + 1])
            torch.testing.assert_close(cached, full[:, -1], atol=1e-5, rtol=0)
    assert cache.length == idx.size(1)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")
def test_onednn_packed_weights_decode_like_the_full_forward() -> None:
    model = tiny_model(n_embd=512, n_head=8, n_layer=1, bias=True).eval()  # wide enough to pack
    idx = tokens(2, BLOCK - 2)
    cache = KVCache(model.config, batch_size=2)
    with torch.no_grad():
        weights = packed_weights(model.plain_weights(), rows=2)
        assert weights.head_t.is_mkldnn and weights.blocks[0].fc_t.is_mkldnn
        steps = [(0, 3), *((t, t + 1) for t in range(3, idx.size(1)))]  # a prefill, then 1s
        for a, b in steps:
            cached = plain_decode_step(idx[:, a:b], cache, weights)
            torch.testing.assert_close(cached, model(idx[:, :b])[0][:, -1], atol=1e-5, rtol=0)
        narrow = tiny_model().plain_weights()
        assert packed_weights(narrow, rows=2) is narrow  # too narrow to pay: unchanged


def test_prefill_then_chunks_equal_a_full_forward() -> None:
    model = tiny_model().eval()
    idx = tokens(2, BLOCK)
    cache = KVCache(model.config, batch_size=2)
    with torch.no_grad():
        full, _ = model(idx, idx)
        pieces = [
            model(idx[:, a:b], idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 6), (6, 16)]
        ]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_a_full_cache_refuses_another_token() -> None:
    model = tiny_model().eval()
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(tokens(1, BLOCK), kv_cache=cache)
        with pytest.raises(ModelError, match=f"after {BLOCK} cached positions"):
            model(tokens(1, 1), kv_cache=cache)


# ---------------------------------------------------------------------------- generation


def test_greedy_generation_is_the_same_with_and_without_the_cache() -> None:
    model = tiny_model()
    prompt = tokens(2, 4)
    cached = model.generate(prompt, BLOCK - 4, temperature=0.0)
    uncached = model.generate(prompt, BLOCK - 4, temperature=0.0, use_cache=False)
    assert cached.shape == (2, BLOCK)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :4], prompt)


def test_cached_generation_runs_past_the_block_size() -> None:
    model = tiny_model()
    prompt = tokens(2, 3)
    out = model.generate(prompt, 3 * BLOCK, temperature=0.0)
    assert out.shape == (2, 3 + 3 * BLOCK)
    uncached = model.generate(prompt, 3 * BLOCK, temperature=0.0, use_cache=False)
    # Identical until the sequence first outgrows the context; then contexts differ.
    assert torch.equal(out[:, :BLOCK], uncached[:, :BLOCK])


def test_a_prompt_longer_than_the_block_is_cropped() -> None:
    model = tiny_model()
    prompt = tokens(1, BLOCK + 5)
    cached = model.generate(prompt, 1, temperature=0.0)
    uncached = model.generate(prompt, 1, temperature=0.0, use_cache=False)
    assert cached.shape == (1, BLOCK + 6)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_same_generator_seed_gives_the_same_sample(use_cache: bool) -> None:
    model = tiny_model()
    prompt = tokens(2, 2)

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 20, top_k=10, top_p=0.9, generator=g, use_cache=use_cache)

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_top_k_of_one_and_a_tiny_top_p_are_greedy() -> None:
    model = tiny_model()
    prompt = tokens(2, 2)
    greedy = model.generate(prompt, 12, temperature=0.0)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(prompt, 12, top_k=1, generator=g), greedy)
    assert torch.equal(model.generate(prompt, 12, top_p=1e-6, generator=g), greedy)


def test_on_token_sees_every_new_token() -> None:
    model = tiny_model()
    seen: list[torch.Tensor] = []
    out = model.generate(tokens(2, 3), 25, on_token=seen.append)
    assert len(seen) == 25
    assert torch.equal(torch.stack(seen, dim=1), out[:, 3:])


def test_generate_restores_training_mode_and_returns_a_plain_tensor() -> None:
    model = tiny_model()
    assert model.training
    out = model.generate(tokens(1, 2), 4)
    assert model.training
    assert not out.is_inference()
    _, loss = model(out, out)  # usable in a training forward, as GRPO does
    assert loss is not None
    loss.backward()


def test_a_hooked_model_samples_through_its_modules() -> None:
    model = tiny_model()
    prompt = tokens(2, 3)
    plain = model.generate(prompt, 8, temperature=0.0)
    # Negated logits turn argmax into argmin; only the head's forward() knows about it.
    model.lm_head.register_forward_hook(lambda module, args, out: -out)
    assert model._plain_weights() is None
    hooked = model.generate(prompt, 8, temperature=0.0)
    assert torch.equal(hooked, model.generate(prompt, 8, temperature=0.0, use_cache=False))
    assert not torch.equal(hooked, plain)


def test_generate_leaves_onednn_as_it_found_it() -> None:
    model = tiny_model()
    before = torch.backends.mkldnn.enabled
    model.generate(tokens(1, 2), 3)
    assert torch.backends.mkldnn.enabled == before


def test_zero_new_tokens_returns_the_prompt() -> None:
    model = tiny_model()
    prompt = tokens(2, 5)
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next_token(logits, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(sample_next_token(logits, top_p=0.81, generator=g).tolist()) == {0, 1, 2}
    assert set(sample_next_token(logits, top_k=3, generator=g).tolist()) == {0, 1, 2}
    assert set(sample_next_token(logits, temperature=0.0).tolist()) == {0}


@pytest.mark.parametrize("draw", [_inverse_cdf, _exponential_race])
def test_draws_follow_the_softmax_and_never_pick_a_cut_token(draw: Callable[..., Tensor]) -> None:
    # 40,000 draws: each token's count within 5 standard deviations of its odds; token 4 is
    # cut (weight 0) and never drawn.
    probs = torch.tensor([0.5, 0.3, 0.199, 0.001, 0.0])
    n = 40_000
    weights = probs.repeat(n, 1)
    tokens = draw(weights, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=5).double()
    sd = (n * probs.double() * (1 - probs.double())).sqrt()
    assert counts[4] == 0
    assert torch.all((counts - n * probs.double()).abs() <= 5 * sd + 1e-9), counts


def test_a_lone_token_is_always_drawn_wherever_it_sits() -> None:
    for position in (0, 7, VOCAB - 1):
        logits = torch.full((64, VOCAB), float("-inf"))
        logits[:, position] = 0.0
        drawn = sample_next_token(logits, generator=torch.Generator().manual_seed(position))
        assert drawn.tolist() == [position] * 64


def test_each_block_of_rows_draws_from_its_own_generator() -> None:
    # GRPO's groups: a block's tokens do not depend on the rows beside it.
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    together = sample_next_token(logits, generator=gens)
    alone = sample_next_token(logits[2:4], generator=torch.Generator().manual_seed(6))
    assert torch.equal(together[2:4], alone)


# ---------------------------------------------------------------------------- errors


def test_width_not_divisible_by_heads_is_refused() -> None:
    with pytest.raises(ModelError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig(n_embd=30, n_head=4)


def test_non_positive_sizes_and_wrong_types_are_refused() -> None:
    with pytest.raises(ModelError, match="n_layer must be a positive integer; got 0"):
        GPTConfig(n_layer=0)
    with pytest.raises(ModelError, match=r"dropout must be a number in \[0, 1\); got 1.5"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ModelError, match="bias must be true or false; got 'yes'"):
        GPTConfig.from_dict({"bias": "yes"})


def test_a_sequence_longer_than_the_block_is_refused() -> None:
    model = tiny_model()
    with pytest.raises(ModelError, match=rf"sequence of {BLOCK + 1} tokens.*block_size.*{BLOCK}"):
        model(tokens(1, BLOCK + 1))


def test_config_round_trips_and_refuses_unknown_keys() -> None:
    config = tiny_config(bias=True, dropout=0.1)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError, match=r"Unknown GPTConfig key.*n_embed.*expected only"):
        GPTConfig.from_dict({**config.to_dict(), "n_embed": 32})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        tiny_model().generate(tokens(1, 1), 1, **kwargs)  # type: ignore[arg-type]


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ModelError, match="at least one token"):
        tiny_model().generate(torch.zeros((1, 0), dtype=torch.long), 1)
