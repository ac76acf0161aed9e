"""GRPO's arithmetic against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mlharness.rl import grpo

pytestmark = pytest.mark.unit


def test_group_advantages_by_group_std() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])  # two groups of 3
    adv = grpo.group_advantages(rewards, 3, "group", eps=0.0)
    # group 1: mean 1/3, std (unbiased) sqrt(1/3); group 2: mean 5/3, std sqrt(1/3)
    s = math.sqrt(1 / 3)
    expected = [(1 - 1 / 3) / s, -1 / 3 / s, -1 / 3 / s, (1 - 5 / 3) / s, 1 / 3 / s, 1 / 3 / s]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_flat_group_gets_zero_advantage_and_none_scaling_keeps_units() -> None:
    rewards = torch.tensor([0.5, 0.5, 0.0, 1.0])
    assert grpo.group_advantages(rewards, 2, "group")[:2].tolist() == [0.0, 0.0]
    assert grpo.group_advantages(rewards, 2, "none").tolist() == [0.0, 0.0, -0.5, 0.5]
    batch = grpo.group_advantages(rewards, 2, "batch", eps=0.0)
    std = float(rewards.std())
    assert batch.tolist() == pytest.approx([0, 0, -0.5 / std, 0.5 / std])


def test_group_of_one_has_zero_advantage() -> None:
    assert grpo.group_advantages(torch.tensor([3.0, 1.0]), 1, "group").tolist() == [0.0, 0.0]


def test_k3_kl_is_zero_for_equal_policies_and_positive_otherwise() -> None:
    lp = torch.tensor([-1.0, -2.0])
    assert grpo.k3_kl(lp, lp).tolist() == [0.0, 0.0]
    d = 0.5
    assert grpo.k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0 + d])).item() == pytest.approx(
        math.exp(d) - d - 1
    )


def test_loss_matches_a_hand_computed_example() -> None:
    # Two sequences, three token slots; the second has only two real tokens.
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.2, -0.3, 0.0]])
    old = torch.tensor([[-1.2, -0.5, -1.0], [-0.2, -0.6, 0.0]])
    ref = torch.tensor([[-1.0, -0.4, -2.0], [-0.1, -0.3, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    beta, eps = 0.1, 0.2

    def token(lp: float, o: float, r: float, a: float) -> float:
        ratio = math.exp(lp - o)
        clipped = min(max(ratio, 1 - eps), 1 + eps)
        d = r - lp
        return -min(ratio * a, clipped * a) + beta * (math.exp(d) - d - 1)

    t = [
        [
            token(logp[i, j].item(), old[i, j].item(), ref[i, j].item(), adv[i].item())
            for j in range(3)
        ]
        for i in range(2)
    ]
    seq1 = (t[0][0] + t[0][1] + t[0][2]) / 3
    seq2 = (t[1][0] + t[1][1]) / 2
    parts = grpo.grpo_loss(logp, old, adv, mask, ref, beta=beta, eps_low=eps, loss_type="grpo")
    assert parts.loss.item() == pytest.approx((seq1 + seq2) / 2, rel=1e-6)
    tokens = t[0][0] + t[0][1] + t[0][2] + t[1][0] + t[1][1]
    bnpo = grpo.grpo_loss(logp, old, adv, mask, ref, beta=beta, eps_low=eps, loss_type="bnpo")
    assert bnpo.loss.item() == pytest.approx(tokens / 5, rel=1e-6)
    dr = grpo.grpo_loss(
        logp, old, adv, mask, ref, beta=beta, eps_low=eps, loss_type="dr_grpo", max_gen_len=4
    )
    assert dr.loss.item() == pytest.approx(tokens / (2 * 4), rel=1e-6)
    dapo = grpo.grpo_loss(
        logp, old, adv, mask, ref, beta=beta, eps_low=eps, loss_type="dapo", step_tokens=10
    )
    assert dapo.loss.item() == pytest.approx(tokens / 10, rel=1e-6)
    # ratio exp(0.2) = 1.22 > 1.2 with A > 0: clipped high; exp(-1) < 0.8 with A > 0: not low
    assert parts.clip_high == pytest.approx(1 / 5)
    assert parts.clip_low == 0.0
    assert parts.tokens == 5


def test_asymmetric_clipping_uses_epsilon_high() -> None:
    logp, old = torch.tensor([[0.25]]), torch.tensor([[0.0]])  # ratio e^0.25 = 1.284
    adv, mask = torch.tensor([1.0]), torch.ones(1, 1)
    clipped = grpo.grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    wide = grpo.grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.3)
    assert clipped.loss.item() == pytest.approx(-1.2)
    assert wide.loss.item() == pytest.approx(-math.exp(0.25))
    assert clipped.clip_high == 1.0 and wide.clip_high == 0.0


def test_gradient_of_on_policy_loss_is_minus_advantage_times_score() -> None:
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    parts = grpo.grpo_loss(logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2))
    parts.loss.backward()
    assert logp.grad is not None
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -1.0])  # -A / tokens each


def test_importance_weighted_kl_matches_hand_computed_values() -> None:
    # TRL's use_bias_correction_kl: loss_t = surrogate_t + beta * ratio_t * KL_t.
    logp = torch.tensor([[-1.0, -0.5]])
    old = torch.tensor([[-1.1, -0.5]])  # ratios e^0.1 and 1
    ref = torch.tensor([[-0.7, -0.9]])
    adv, mask, beta = torch.tensor([0.5]), torch.ones(1, 2), 0.1

    def token(lp: float, o: float, r: float) -> float:
        ratio = math.exp(lp - o)
        d = r - lp
        return -min(ratio * 0.5, min(max(ratio, 0.8), 1.2) * 0.5) + beta * ratio * (
            math.exp(d) - d - 1
        )

    expected = (token(-1.0, -1.1, -0.7) + token(-0.5, -0.5, -0.9)) / 2
    parts = grpo.grpo_loss(logp, old, adv, mask, ref, beta=beta, kl_weighted=True)
    assert parts.loss.item() == pytest.approx(expected, rel=1e-6)
    kl = [math.exp(0.1) * (math.exp(0.3) - 1.3), math.exp(-0.4) + 0.4 - 1]
    assert parts.kl == pytest.approx(sum(kl) / 2, rel=1e-6)  # the term the loss holds
    plain = grpo.grpo_loss(logp, old, adv, mask, ref, beta=beta)
    assert plain.kl == pytest.approx((math.exp(0.3) - 1.3 + kl[1]) / 2, rel=1e-6)


def test_importance_weighted_kl_changes_the_on_policy_gradient() -> None:
    # On-policy (ratio = 1) the values agree, but the weighted term's gradient is
    # beta * (logp - ref), the plain k3 term's beta * (1 - exp(ref - logp)); per token / 2.
    lp, ref, beta = [-1.0, -0.5], [-0.7, -0.9], 0.1
    grads = {}
    for weighted in (False, True):
        logp = torch.tensor([lp], requires_grad=True)
        parts = grpo.grpo_loss(
            logp,
            logp.detach(),
            torch.zeros(1),
            torch.ones(1, 2),
            torch.tensor([ref]),
            beta=beta,
            kl_weighted=weighted,
        )
        parts.loss.backward()
        assert logp.grad is not None
        grads[weighted] = logp.grad[0].tolist()
    plain = [beta * (1 - math.exp(r - x)) / 2 for x, r in zip(lp, ref, strict=True)]
    weighted = [beta * (x - r) / 2 for x, r in zip(lp, ref, strict=True)]
    assert grads[False] == pytest.approx(plain, rel=1e-6)
    assert grads[True] == pytest.approx(weighted, rel=1e-6)


def test_kl_term_is_zero_when_policy_equals_reference() -> None:
    logp = torch.randn(3, 4)
    parts = grpo.grpo_loss(logp, logp, torch.zeros(3), torch.ones(3, 4), logp.clone(), beta=1.0)
    assert parts.kl == 0.0 and parts.loss.item() == 0.0


def test_token_logprobs_match_log_softmax() -> None:
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(grpo.token_logprobs(logits.clone(), targets), expected, atol=1e-6)


def _gather_minus_logsumexp(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The plain autograd formulation token_logprobs replaces."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


@pytest.mark.parametrize("keep_graph", [False, True])
def test_token_logprobs_values_and_gradients_are_plain_autograds(keep_graph: bool) -> None:
    # Bit for bit: the in-place softmax and gradient change memory, not arithmetic.
    w = torch.randn(3, 8, 6, dtype=torch.float32) * 2
    x = torch.randn(3, 4, 8)
    targets = torch.randint(0, 6, (3, 4))
    upstream = torch.randn(3, 4)
    grads = []
    for ours in (True, False):
        weight = w.clone().requires_grad_()
        logits = torch.einsum("btc,bcv->btv", x, weight)  # a layer's output, as in training
        if ours:
            logp = grpo.token_logprobs(logits, targets, keep_graph=keep_graph)
        else:
            logp = _gather_minus_logsumexp(logits, targets)
        (logp * upstream).sum().backward(retain_graph=keep_graph)
        grads.append((logp.detach(), weight.grad.clone()))
        if keep_graph and ours:  # a second pass through the same graph sees the same softmax
            (logp * upstream).sum().backward()
            assert torch.equal(weight.grad, 2 * grads[0][1])
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_token_logprobs_of_bfloat16_logits_are_float32_and_leave_them_intact() -> None:
    logits = torch.randn(2, 3, 5).bfloat16().requires_grad_()
    before = logits.detach().clone()
    logp = grpo.token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long))
    logp.sum().backward()
    assert logp.dtype == torch.float32 and logits.grad is not None
    assert logits.grad.dtype == torch.bfloat16
    assert torch.equal(logits.detach(), before)


def test_sft_loss_weights_tokens() -> None:
    logp = torch.tensor([[-1.0, -3.0, -5.0]])
    assert grpo.sft_loss(logp, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(2.0)
    assert grpo.sft_loss(logp, torch.tensor([[0.5, 1.0, 0.0]])).item() == pytest.approx(1.75)


@pytest.mark.parametrize(
    ("pieces", "opened", "thinking", "answer"),
    [
        (
            ["<think>", "a", "b", "</think>", "4", "2"],
            False,
            [1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1],
        ),
        (["x", "y"], False, [0, 0], [1, 1]),  # no tags: all answer
        (["a", "</think>", "7"], True, [1, 1, 0], [0, 0, 1]),  # the prompt opened thinking
        (["<think>", "a", "b"], False, [1, 1, 1], [0, 0, 0]),  # unclosed: thinking to the end
        (["<th", "ink>", "a", "</th", "ink>", "5"], False, [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]),
        (["<think>", "</think>", "1", "</think>", "2"], False, [1, 1, 1, 1, 0], [0, 0, 0, 0, 1]),
    ],
)
def test_token_regions(
    pieces: list[str], opened: bool, thinking: list[int], answer: list[int]
) -> None:
    t, a = grpo.token_regions(pieces, "<think>", "</think>", opened)
    assert [int(x) for x in t] == thinking
    assert [int(x) for x in a] == answer


def test_layer_filter() -> None:
    assert grpo.layer_filter(2, 1, 3) and not grpo.layer_filter(3, 1, 3)
    assert grpo.layer_filter(None, 1, 3)
    assert not grpo.layer_filter(None, 1, 3, include_shared=False)


def test_think_rules_bias_the_first_tag_token_by_state() -> None:
    from mlharness.rl.rollout import ThinkRules, _ThinkState

    # token ids: 1 = "<think>", 2 = "</think>", 3 = "A" (answer start), 4 = any word
    rules = ThinkRules(
        start=[1], end=[2], answer_start=[3], bias_close_think=-2.0, bias_answer_start=6.0,
        punish_extra_think_end=-12.0, min_think_tokens=2, think_end_early_bias=12.0,
    )  # fmt: skip
    state, seq = _ThinkState([9], rules), [9]

    def biases(token: int) -> list[float]:
        logits = torch.zeros(5)
        state.bias(logits)
        seq.append(token)
        state.observe(seq)
        return logits.tolist()

    assert biases(1) == [0, 0, 0, 0, 0]  # not thinking yet: no rule applies
    assert biases(4) == [0, 0, -12.0, 0, 0]  # thinking, 0 of 2 tokens: closing is early
    assert biases(4) == [0, 0, -12.0, 0, 0]  # 1 of 2
    assert biases(2) == [0, 0, -2.0, 0, 0]  # 2 of 2: bias_close_think
    assert biases(3) == [0, 0, -12.0, 6.0, 0]  # just closed: answer start, extra end punished
    assert biases(4) == [0, 0, -12.0, 0, 0]  # after thinking: only the extra end is punished


def test_a_prompt_ending_in_the_start_tag_opens_thinking() -> None:
    from mlharness.rl.rollout import ThinkRules, _ThinkState

    rules = ThinkRules([1], [2], [], 0.0, 0.0, 0.0, 3, 5.0)
    state = _ThinkState([7, 1], rules)
    logits = torch.zeros(3)
    state.bias(logits)
    assert logits.tolist() == [0, 0, -5.0]
