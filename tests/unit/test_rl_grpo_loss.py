"""GRPO loss edge cases the hand-computed examples in test_rl_grpo.py do not reach.

Each pins a behaviour a training run depends on without ever failing loudly when it is
wrong: near-flat groups, a lone reward, gradient accumulation, which tokens count as
clipped, and when the KL term is there at all (found by mutation testing, DEVELOPMENT.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from mlharness.rl import grpo

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_a_nearly_flat_group_keeps_its_order_without_blowing_up(scale: grpo.ScaleRewards) -> None:
    # std 7.1e-5 is below eps 1e-4: dividing by std + eps bounds the advantages below 1.
    adv = grpo.group_advantages(torch.tensor([0.0, 1e-4]), 2, scale)
    std = 1e-4 / math.sqrt(2)
    assert adv.tolist() == pytest.approx([-5e-5 / (std + 1e-4), 5e-5 / (std + 1e-4)], rel=1e-4)


def test_batch_scaling_of_a_single_reward_is_zero_not_nan() -> None:
    assert grpo.group_advantages(torch.tensor([0.7]), 1, "batch").tolist() == [0.0]


def _batch() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 3, generator=gen)
    old = logp + 0.3 * (torch.rand(4, 3, generator=gen) - 0.5)
    ref = logp + 0.3 * (torch.rand(4, 3, generator=gen) - 0.5)
    adv = torch.tensor([1.0, -0.5, 0.25, -1.0])
    return logp, old, ref, adv


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_two_accumulated_halves_add_up_to_the_whole_batch(loss_type: grpo.LossType) -> None:
    logp, old, ref, adv = _batch()
    mask = torch.ones(4, 3)

    def loss(s: slice, accum: int) -> torch.Tensor:
        return grpo.grpo_loss(
            logp[s],
            old[s],
            adv[s],
            mask[s],
            ref[s],
            beta=0.1,
            loss_type=loss_type,
            max_gen_len=3,
            accum=accum,
        ).loss

    whole = loss(slice(0, 4), 1)
    halves = [loss(slice(0, 2), 2), loss(slice(2, 4), 2)]
    assert (halves[0] + halves[1]).item() == pytest.approx(whole.item(), rel=1e-6)


def test_dapo_weighs_every_token_of_the_step_alike_across_uneven_micro_batches() -> None:
    logp, old, ref, adv = _batch()
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    whole = grpo.grpo_loss(logp, old, adv, mask, ref, beta=0.1, loss_type="bnpo").loss
    halves = [
        grpo.grpo_loss(
            logp[s], old[s], adv[s], mask[s], ref[s], beta=0.1, loss_type="dapo", step_tokens=9
        ).loss
        for s in (slice(0, 1), slice(1, 4))
    ]
    assert (halves[0] + halves[1]).item() == pytest.approx(whole.item(), rel=1e-6)


def test_tokens_with_zero_advantage_are_never_counted_as_clipped() -> None:
    logp = torch.tensor([[-2.0, 2.0]])  # ratios e^-2 and e^2: far outside [0.8, 1.2]
    parts = grpo.grpo_loss(logp, torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2))
    assert parts.clip_low == 0.0 and parts.clip_high == 0.0


def test_logged_figures_cover_only_masked_tokens() -> None:
    logp = torch.tensor([[-0.5, 0.0, 3.0]])  # ratios e^-0.5 = 0.61 (clipped low), 1, padding
    ref = torch.tensor([[-0.5, 0.5, 0.0]])  # KL 0, e^0.5 - 1.5, and padding's
    adv, mask = torch.tensor([-1.0]), torch.tensor([[1.0, 1.0, 0.0]])
    parts = grpo.grpo_loss(logp, torch.zeros(1, 3), adv, mask, ref, beta=0.1)
    # -min(r * A, clip(r) * A) with A = -1: max(r, clip(r)) = 0.8 and 1
    assert parts.policy_loss == pytest.approx((0.8 + 1.0) / 2)
    assert parts.kl == pytest.approx((math.exp(0.5) - 1.5) / 2)
    assert parts.clip_low == 0.5 and parts.clip_high == 0.0 and parts.tokens == 2


def test_the_kl_term_needs_both_a_reference_and_a_nonzero_beta() -> None:
    logp, old, ref, adv = _batch()
    mask = torch.ones(4, 3)
    plain = grpo.grpo_loss(logp, old, adv, mask)
    no_ref = grpo.grpo_loss(logp, old, adv, mask, None, beta=0.1)
    no_beta = grpo.grpo_loss(logp, old, adv, mask, ref, beta=0.0)
    assert no_ref.loss.item() == no_beta.loss.item() == plain.loss.item()
    assert no_ref.kl == no_beta.kl == 0.0
    assert grpo.grpo_loss(logp, old, adv, mask, ref, beta=0.1).kl > 0


def test_thinking_the_prompt_opened_can_close_on_the_first_token() -> None:
    thinking, answer = grpo.token_regions(["</think>", "4", "2"], "<think>", "</think>", True)
    assert thinking == [True, False, False] and answer == [False, True, True]


def test_layer_ranges_include_their_start_and_exclude_their_end() -> None:
    assert [grpo.layer_filter(i, 1, 3) for i in range(4)] == [False, True, True, False]
    assert not grpo.layer_filter(None, 1, 3, include_shared=False)


# ------------------------------------------------ int8 rollouts: truncated importance sampling


def test_truncated_importance_weights_by_hand() -> None:
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    rollout = torch.log(torch.tensor([[0.2, 0.4, 0.3]]))
    weight = grpo.truncated_is_weight(old, rollout, 2.0)
    assert weight.tolist()[0] == pytest.approx([2.0, 0.5, 1.0])  # 2.5 capped at 2


def test_the_correction_weights_each_tokens_surrogate_and_its_gradient() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.3]])).requires_grad_()
    old = logp.detach()
    rollout = torch.log(torch.tensor([[0.2, 0.4, 0.3]]))
    mask = torch.ones(1, 3)
    adv = torch.tensor([1.5])
    parts = grpo.grpo_loss(logp, old, adv, mask, rollout_logp=rollout, is_cap=2.0, loss_type="bnpo")
    # On-policy the ratio is 1: token t's loss is -A * w_t * ratio_t, its gradient -A * w_t / 3.
    parts.loss.backward()
    assert logp.grad is not None
    assert logp.grad.tolist()[0] == pytest.approx([-1.5 * w / 3 for w in (2.0, 0.5, 1.0)])
    assert parts.policy_loss == pytest.approx(-1.5 * (2.0 + 0.5 + 1.0) / 3)
    assert parts.is_weight == pytest.approx((2.0 + 0.5 + 1.0) / 3)
    assert parts.is_truncated == pytest.approx(1 / 3)


def test_the_kl_term_is_not_weighted_and_float_rollouts_log_no_weights() -> None:
    logp, old, ref, adv = _batch()
    mask = torch.ones_like(logp)
    plain = grpo.grpo_loss(logp, old, adv, mask, ref, beta=0.1)
    same = grpo.grpo_loss(logp, old, adv, mask, ref, beta=0.1, rollout_logp=old, is_cap=2.0)
    assert plain.is_weight is None and plain.is_truncated is None
    assert same.is_weight == pytest.approx(1.0) and same.is_truncated == 0.0
    assert same.kl == pytest.approx(plain.kl)
    assert float(same.loss) == pytest.approx(float(plain.loss))
