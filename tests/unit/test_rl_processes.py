"""How a GRPO step is shared by the processes of a torchrun job, and what refuses to be."""

from __future__ import annotations

from typing import Any

import pytest

from mlharness.errors import ConfigError
from mlharness.rl.config import RLConfig
from mlharness.rl.sampling import interleave, own_share
from mlharness.rl.trainer import check_processes
from mlharness.runs.device import Dist

pytestmark = pytest.mark.unit


def config(**trainer: Any) -> RLConfig:
    return RLConfig.model_validate(
        {
            "model": {"model_path": "model"},
            "data": {"train_path": "prompts.jsonl"},
            "rewards": [{"name": "exact_match", "weight": 1.0}],
            "trainer": trainer,
        }
    )


def test_each_process_takes_every_world_size_th_micro_batch() -> None:
    # 8 prompts in micro-batches of 2: process 0 takes micro-batches 0 and 2, process 1 1 and 3.
    assert own_share(8, 2, Dist(0, 0, 2)) == [0, 1, 4, 5]
    assert own_share(8, 2, Dist(1, 1, 2)) == [2, 3, 6, 7]
    assert own_share(5, 2, Dist()) == [0, 1, 2, 3, 4]
    assert own_share(3, 1, Dist(1, 1, 2)) == [1]  # validation prompts: uneven shares


def test_interleave_puts_the_shares_back_in_the_steps_order() -> None:
    items = list("abcdefgh")
    shares = [[items[i] for i in own_share(8, 2, Dist(r, r, 2))] for r in range(2)]
    assert interleave(shares, 2) == items
    odd = [[items[i] for i in own_share(5, 1, Dist(r, r, 3))] for r in range(3)]
    assert interleave(odd, 1) == items[:5]
    assert interleave([[], []], 1) == []


def test_one_process_accepts_everything() -> None:
    check_processes(config(grad_accum_steps=3, dynamic_sampling=True), Dist())


def test_micro_batches_must_divide_among_the_processes() -> None:
    with pytest.raises(ConfigError, match=r"grad_accum_steps \(3\) must be a multiple of the"):
        check_processes(config(grad_accum_steps=3), Dist(0, 0, 2))
    check_processes(config(grad_accum_steps=4), Dist(0, 0, 2))


def test_dynamic_sampling_refuses_to_start_under_torchrun() -> None:
    with pytest.raises(ConfigError, match="dynamic_sampling does not work under torchrun yet"):
        check_processes(config(grad_accum_steps=2, dynamic_sampling=True), Dist(1, 1, 2))
