"""The lm trainer's AdamW: torch.optim.AdamW's arithmetic and state format, without its
import of torch._dynamo."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from mlharness.lm.model import GPT, GPTConfig  # noqa: E402
from mlharness.runs.optim import AdamW  # noqa: E402

pytestmark = pytest.mark.unit


def _model() -> Any:
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=20, dropout=0.0
    )
    return GPT(config)


def _train(model: Any, optimizer: Any, steps: range) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps.start):  # the same batches whatever the starting step
        torch.randint(20, (4, 16), generator=gen)
    for step in steps:
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * (step + 1) / 20
        x = torch.randint(20, (4, 16), generator=gen)
        _, loss = model(x, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _same_weights(a: Any, b: Any) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


Factory = Callable[[Any, bool], Any]


def ours(model: Any, fused: bool) -> AdamW:
    return AdamW(model.optimizer_groups(0.1), lr=1e-3, betas=(0.9, 0.99), fused=fused)


def theirs(model: Any, fused: bool) -> Any:
    groups = model.optimizer_groups(0.1)
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=fused)


@pytest.mark.parametrize("fused", [True, False])
def test_steps_are_bit_identical_to_torch_optim(fused: bool) -> None:
    a, b = _model(), _model()
    _train(a, ours(a, fused), range(12))
    _train(b, theirs(b, fused), range(12))
    assert _same_weights(a, b)


@pytest.mark.parametrize(("first", "second"), [(ours, theirs), (theirs, ours)])
def test_state_dicts_are_interchangeable_with_torch_optim(first: Factory, second: Factory) -> None:
    """A checkpoint written by either optimizer resumes in the other, bit for bit."""
    straight = _model()
    _train(straight, first(straight, True), range(10))

    model = _model()
    optimizer = first(model, True)
    _train(model, optimizer, range(5))
    state = optimizer.state_dict()
    resumed = second(model, True)
    resumed.load_state_dict(state)
    _train(model, resumed, range(5, 10))
    assert _same_weights(model, straight)


def test_loaded_state_is_a_copy() -> None:
    model = _model()
    optimizer = ours(model, True)
    _train(model, optimizer, range(2))
    state = optimizer.state_dict()
    other = ours(_model(), True)
    other.load_state_dict(state)
    first = next(iter(other.state.values()))
    first["exp_avg"].add_(1.0)
    assert not torch.equal(first["exp_avg"], state["state"][0]["exp_avg"])


def test_mismatched_groups_are_refused() -> None:
    model = _model()
    optimizer = ours(model, True)
    _train(model, optimizer, range(1))
    state = optimizer.state_dict()
    state["param_groups"] = state["param_groups"][:1]
    with pytest.raises(ValueError, match="different set of parameter groups"):
        ours(_model(), True).load_state_dict(state)


def test_zero_grad_can_keep_the_tensors() -> None:
    model = _model()
    optimizer = ours(model, False)
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))
    loss.backward()
    optimizer.zero_grad(set_to_none=False)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and not g.any() for g in grads)
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_training_does_not_import_the_compiler_stack() -> None:
    """torch.optim's constructor imports torch._dynamo (~70 MB); ours must not."""
    code = (
        "import sys, torch\n"
        "from mlharness.lm.model import GPT, GPTConfig\n"
        "from mlharness.runs.optim import AdamW\n"
        "m = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, bias=False,"
        " vocab_size=5, dropout=0.0))\n"
        "o = AdamW(m.optimizer_groups(0.1), lr=1e-3, fused=True)\n"
        "x = torch.zeros(1, 4, dtype=torch.long)\n"
        "m(x, x)[1].backward(); o.step(); o.zero_grad(); o.state_dict()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
