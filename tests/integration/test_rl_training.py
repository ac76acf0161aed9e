"""The GRPO trainer end to end on real tiny models (CPU): run layout, metrics, reference, LoRA,
resume, SFT and dual-gradient routing, the loss variants, and every setup error message.

Models are random: a 2-layer GPT-2 or Llama saved with ``save_pretrained`` and loaded back
the way a user's local model is, or our GPT from a short ``lm`` run. Weight decay is off in
every run, so a parameter changes exactly when its gradient is non-zero: "changed" and
"unchanged" below are statements about where the gradient went.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from lm_support import TINY_LM, corpus_text  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.errors import ConfigError, DatasetError  # noqa: E402
from mlharness.lm import checkpoints as lm_ckpt  # noqa: E402
from mlharness.rl import trainer as rl_trainer  # noqa: E402
from mlharness.rl.config import RLConfig  # noqa: E402
from mlharness.rl.tiny_models import build_tiny_model  # noqa: E402
from mlharness.rl.trainer import GRPOTrainer, train  # noqa: E402
from mlharness.rl.update import GRPOUpdate  # noqa: E402
from mlharness.runs import checkpoints as run_ckpt  # noqa: E402
from mlharness.runs.metrics import MetricsWriter  # noqa: E402
from rl_support import arithmetic_rows, rl_config, write_jsonl  # noqa: E402

pytestmark = pytest.mark.integration

Tensors = dict[str, Any]

PER_STEP_KEYS = {
    "step",
    "reward",
    "reward_std",
    "rewards/numeric_match",
    "rewards/numeric_match_std",
    "rewards/char_share",
    "rewards/char_share_std",
    "frac_reward_zero_std",
    "kl",
    "policy_loss",
    "clip_low",
    "clip_high",
    "completion_length",
    "truncation_rate",
    "tokens_per_sec",
    "lr",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_curves(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing curves.png's ~20 panels takes seconds: only tests with ``draw_curves`` draw it."""
    callspec = getattr(request.node, "callspec", None)
    if not (callspec is not None and callspec.params.get("draw_curves")):
        writer = functools.partial(MetricsWriter, plot=False)
        monkeypatch.setattr(rl_trainer, "MetricsWriter", writer)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random 2-layer, 32-wide GPT-2 and Llama models with a character tokenizer."""
    root = tmp_path_factory.mktemp("hf_models")
    return {
        "gpt2": build_tiny_model(root / "gpt2", arch="gpt2"),
        "llama": build_tiny_model(root / "llama", arch="llama"),
    }


@pytest.fixture
def gpt2(models: dict[str, Path]) -> Path:
    return models["gpt2"]


@pytest.fixture
def prompts(workspace: Path) -> Path:
    return write_jsonl(workspace / "train.jsonl", arithmetic_rows(5))


@pytest.fixture
def make_config(workspace: Path, gpt2: Path, prompts: Path) -> Callable[..., RLConfig]:
    """``make_config(overrides, model=gpt2, data=prompts)``: an RLConfig writing into workspace."""

    def make(
        overrides: dict[str, Any] | None = None, *, model: Path = gpt2, data: Path = prompts
    ) -> RLConfig:
        return rl_config(workspace, model, data, overrides)

    return make


@pytest.fixture(scope="module")
def gpt_lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(lm config, run directory) of a tiny char-level GPT trained for a few iterations.

    Built once for the module, in a workspace of its own (conftest's ``tiny_lm`` is
    per test): the rl runs only read it.
    """
    from mlharness.lm.config import load_lm_config
    from mlharness.lm.prepare import prepare_data
    from mlharness.lm.trainer import train as lm_train

    root = tmp_path_factory.mktemp("lm_workspace")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text(), encoding="utf-8")
    overrides = {
        "prepare": {"preparer": "text", "input": str(corpus)},
        "train": {"max_iters": 6, "eval_interval": 3, "log_interval": 3},
        "sample": {"max_new_tokens": 5},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLX_WORKSPACE", str(root))
        mp.delenv("MLX_OVERRIDES", raising=False)
        cfg = load_lm_config(None, "tiny", overrides=deep_merge(TINY_LM, overrides))
        prepare_data(cfg, None, force=True, progress=False)
        return cfg, lm_train(cfg, progress=False).run_dir


@pytest.fixture
def gpt_run(gpt_lm: tuple[Any, Path]) -> Path:
    return gpt_lm[1]


@pytest.fixture
def gpt_prompts(workspace: Path) -> Path:
    """Prompts in tiny-shakespeare's (or the fallback corpus's) lowercase alphabet."""
    rows = [{"prompt": p, "completion": " and"} for p in ("the ", "a ", "to ", "and ")]
    return write_jsonl(workspace / "gpt_train.jsonl", rows)


GPT_REWARDS = {"rewards": [{"name": "char_share", "config": {"chars": "aeiou "}}]}


# --------------------------------------------------------------------------- helpers


def snapshot(model: torch.nn.Module, trainable_only: bool = False) -> Tensors:
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad or not trainable_only
    }


def changed(before: Tensors, model: torch.nn.Module) -> set[str]:
    now = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, now[n].detach())}


def records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics" / "metrics.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def steps(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(run_dir) if "reward" in r]


def summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def layer(name: str) -> int | None:
    for part in (".h.", ".layers."):
        if part in name:
            return int(name.split(part)[1].split(".")[0])
    return None


def fit(config: RLConfig, **kwargs: Any) -> tuple[GRPOTrainer, Tensors]:
    """A trainer, trained; and the snapshot of its trainable parameters before training."""
    trainer = GRPOTrainer(config, progress=False, **kwargs)
    before = snapshot(trainer.policy.model, trainable_only=True)
    trainer.fit()
    return trainer, before


@pytest.fixture
def grads_at_update(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every optimizer update's gradients by parameter name, recorded as it happens."""
    seen: list[dict[str, Any]] = []
    original = GRPOUpdate.apply

    def recording(self: GRPOUpdate, groups: Any, lr: float) -> dict[str, float]:
        step = self.optimizer.step

        def record(*args: Any, **kwargs: Any) -> Any:
            seen.append(
                {
                    n: None if p.grad is None else p.grad.detach().clone()
                    for n, p in self.policy.model.named_parameters()
                    if p.requires_grad
                }
            )
            return step(*args, **kwargs)

        self.optimizer.step = record  # type: ignore[method-assign]
        try:
            return original(self, groups, lr)
        finally:
            del self.optimizer.step

    monkeypatch.setattr(GRPOUpdate, "apply", recording)
    yield seen


# --------------------------------------------------------------------------- 1. HF policies


@pytest.mark.parametrize(("arch", "draw_curves"), [("gpt2", True), ("llama", False)])
def test_hf_policy_trains_every_parameter_and_writes_the_run(
    arch: str, draw_curves: bool, models: dict[str, Path], make_config: Callable[..., RLConfig]
) -> None:
    config = make_config({"checkpointing": {"keep_last_n": 2}}, model=models[arch])
    trainer, before = fit(config)
    run = trainer.run_dir

    assert before, "no trainable parameters"
    assert changed(before, trainer.policy.model) == set(before)  # TRL's check

    logged = steps(run)
    assert [r["step"] for r in logged] == [1, 2]
    for record in logged:
        assert set(record) >= PER_STEP_KEYS, PER_STEP_KEYS - set(record)
        assert record["completion_length"] <= 6 and 0 <= record["truncation_rate"] <= 1
        assert record["tokens_per_sec"] > 0
    assert logged[0]["frac_reward_zero_std"] < 1  # char_share gives every group a spread

    curves = run / "metrics" / "curves.png"
    assert curves.is_file() == draw_curves
    assert not draw_curves or curves.read_bytes().startswith(b"\x89PNG")
    assert (run / "metrics" / "metrics.md").is_file()
    assert list((run / "logs" / "tb").glob("events.out.tfevents.*"))
    samples = sorted((run / "samples").glob("step_*.jsonl"))
    assert [p.name for p in samples] == ["step_00000001.jsonl", "step_00000002.jsonl"]
    for path in samples:
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(lines) == 3  # max_logged_samples, of 8 completions
        assert {"prompt", "completion", "reward", "rewards", "advantage"} <= set(lines[0])

    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["ckpt_last_00000001", "ckpt_last_00000002"]  # keep_last_n 2 of 0, 1, 2
    assert (run / "checkpoints" / "ckpt_last_00000002" / "hf" / "config.json").is_file()
    s = summary(run)
    assert s["status"] == "completed" and s["final_metrics"]["step"] == 2
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["resolved_seed"] == 0 and config_json["trainer"]["seed"] == 0


# --------------------------------------------------------------------------- 2. our GPT


def test_gpt_policy_trains_and_its_checkpoint_samples(
    gpt_lm: tuple[Any, Path], gpt_prompts: Path, make_config: Callable[..., RLConfig]
) -> None:
    from mlharness.lm.sampler import load_model, sample

    lm_config, gpt_run = gpt_lm
    config = make_config(GPT_REWARDS, model=gpt_run, data=gpt_prompts)
    trainer, before = fit(config)
    assert trainer.policy.kind == "gpt"
    assert changed(before, trainer.policy.model) == set(before)
    assert summary(trainer.run_dir)["status"] == "completed"

    last = trainer.run_dir / "checkpoints" / "ckpt_last_00000002"
    model, meta = load_model(last, torch.device("cpu"))  # what `mlx sample --checkpoint` does
    trained = trainer.policy.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert meta["step"] == 2

    result = sample(lm_config, checkpoint=last)  # `mlx sample --checkpoint`, tokenizer too
    assert len(result.samples) == 2 and all(len(t) > 0 for t in result.samples)


# --------------------------------------------------------------------------- 3. reference


def test_reference_never_changes_and_kl_starts_at_zero(
    make_config: Callable[..., RLConfig],
) -> None:
    trainer = GRPOTrainer(make_config({"trainer": {"num_training_steps": 3}}), progress=False)
    assert trainer.reference is not None
    before = snapshot(trainer.reference.model)
    policy_before = snapshot(trainer.policy.model)
    trainer.fit()
    assert changed(before, trainer.reference.model) == set()
    assert changed(policy_before, trainer.policy.model) == set(policy_before)
    kls = [r["kl"] for r in steps(trainer.run_dir)]
    assert kls[0] == 0.0  # the policy is its reference until the first update
    assert all(k > 0 for k in kls[1:])


def test_beta_zero_loads_no_reference(make_config: Callable[..., RLConfig]) -> None:
    trainer, before = fit(make_config({"trainer": {"grpo_beta": 0.0}}))
    assert trainer.reference is None
    assert all(r["kl"] == 0.0 for r in steps(trainer.run_dir))
    assert changed(before, trainer.policy.model) == set(before)


# --------------------------------------------------------------------------- 4. LoRA


def test_lora_on_hf_trains_only_adapters(gpt2: Path, make_config: Callable[..., RLConfig]) -> None:
    trainer = GRPOTrainer(make_config({"model": {"use_lora": True}}), progress=False)
    model = trainer.policy.model
    before = snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.fit()

    assert trainer.reference is None  # the base with adapters disabled: no second copy
    assert changed(before, model) == trainable  # every adapter weight moved, nothing else
    logged = steps(trainer.run_dir)
    assert logged[0]["kl"] == 0.0 and logged[1]["kl"] > 0  # lora_B starts at 0: policy == base

    last = trainer.run_dir / "checkpoints" / "ckpt_last_00000002"
    assert (last / "hf" / "adapter_config.json").is_file()
    assert not (last / "hf" / "model.safetensors").exists()  # adapters only, not the base


def test_lora_on_our_gpt_adapts_c_attn(
    gpt_run: Path, gpt_prompts: Path, make_config: Callable[..., RLConfig]
) -> None:
    from mlharness.lm.sampler import load_model

    config = make_config(
        {**GPT_REWARDS, "model": {"use_lora": True}}, model=gpt_run, data=gpt_prompts
    )
    trainer, before = fit(config)
    assert trainer.reference is None
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in before} == {"c_attn", "c_proj", "c_fc"}
    assert changed(before, trainer.policy.model) == set(before)  # every adapter weight

    # The base weights are bit for bit those of the lm checkpoint the run started from.
    original = lm_ckpt.load_weights(run_ckpt.pick_for_sampling(gpt_run / "checkpoints").path)
    state = trainer.policy.core.state_dict()
    for name, value in original.items():
        key = name if name in state else name.replace(".weight", ".base_layer.weight")
        key = key if key in state else key.replace(".bias", ".base_layer.bias")
        assert torch.equal(state[key], value), name

    # The checkpoint holds the merged weights in lm's format: `mlx sample` loads it.
    last = trainer.run_dir / "checkpoints" / "ckpt_last_00000002"
    model, _ = load_model(last, torch.device("cpu"))
    ids = torch.tensor([trainer.tokenizer.encode("the ")])
    with torch.no_grad():
        expected = trainer.policy.logits(ids)
        assert torch.allclose(model(ids, all_logits=True)[0], expected, atol=1e-5)


# --------------------------------------------------------------------------- 5. resume


@pytest.mark.parametrize("policy", ["hf", "hf-lora", "gpt-lora", "gpt-int8"])
def test_resume_after_a_crash_is_bit_identical(
    policy: str,
    request: pytest.FixtureRequest,
    make_config: Callable[..., RLConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where: dict[str, Any] = {}
    overrides: dict[str, Any] = {
        "trainer": {"num_training_steps": 4},
        "checkpointing": {"save_every": 2, "keep_last_n": 5},
    }
    if policy.endswith("lora"):
        overrides["model"] = {"use_lora": True}
    if policy.endswith("int8"):  # the int8 copy is remade from the restored weights
        overrides["generation"] = {"int8_rollouts": True}
    if policy.startswith("gpt"):
        overrides.update(GPT_REWARDS)
        where = {"model": request.getfixturevalue("gpt_run")}
        where["data"] = request.getfixturevalue("gpt_prompts")
    config = make_config(overrides, **where)
    uninterrupted, _ = fit(config, fresh=True)

    original = GRPOTrainer.train_step
    calls = {"n": 0}

    def crashing(self: GRPOTrainer) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(GRPOTrainer, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        GRPOTrainer(config, fresh=True, progress=False).fit()
    monkeypatch.setattr(GRPOTrainer, "train_step", original)
    (crashed,) = [d for d in (config.output_dir / "grpo").iterdir() if d != uninterrupted.run_dir]
    assert summary(crashed)["status"] == "failed"

    resumed = GRPOTrainer(config, progress=False)
    assert resumed.run_dir == crashed
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "ckpt_last_00000002"
    assert resumed.step == 2  # continues at its checkpoint, not at 0
    result = resumed.fit()
    assert result.status == "completed" and result.steps == 4

    a = uninterrupted.policy.model.state_dict()
    b = resumed.policy.model.state_dict()
    assert a.keys() == b.keys()
    assert [n for n in a if not torch.equal(a[n], b[n])] == []
    strip = ("tokens_per_sec", "step_time_s", "generation_share")
    want = [{k: v for k, v in r.items() if k not in strip} for r in steps(uninterrupted.run_dir)]
    got = [{k: v for k, v in r.items() if k not in strip} for r in steps(crashed)]
    assert got == want  # steps 1-2 before the crash, 3-4 after: each logged once
    s = summary(crashed)
    assert s["status"] == "completed" and s["resumed_from"].endswith("ckpt_last_00000002")


# --------------------------------------------------------------------------- 6. SFT, dual


def _routing_config(
    make_config: Callable[..., RLConfig], workspace: Path, trainer: dict[str, Any], completion: str
) -> RLConfig:
    """One step whose only gradient is SFT's: flat rewards (zero advantages) and no KL."""
    data = write_jsonl(workspace / "sft.jsonl", [{"prompt": "3+4=", "completion": completion}] * 2)
    return make_config(
        {
            "trainer": {
                "num_training_steps": 1,
                "grpo_beta": 0.0,
                "use_sft_on_answer": True,
                "sft_weight": 1.0,
                **trainer,
            },
            # 8 tokens: all of "<think>7" (thinking that never closes) fits.
            "data": {"max_gen_len": 8},
            "rewards": [{"name": "constant"}],
        },
        data=data,
    )


@pytest.mark.parametrize(
    ("trainer", "completion", "moves"),
    [
        ({"sft_mode": "all"}, "7", {None, 0, 1}),
        ({"sft_mode": "answer_only", "answer_layer_start": 1, "answer_layer_end": 2}, "7", {1}),
        (
            {"sft_mode": "exclude_thinking", "thinking_layer_start": 0, "thinking_layer_end": 1},
            "7",
            {None, 1},
        ),
        ({"sft_mode": "weighted", "sft_thinking_weight": 0.0}, "<think>7", set()),
        ({"sft_mode": "weighted", "sft_thinking_weight": 1.0}, "<think>7", {None, 0, 1}),
        ({"sft_mode": "weighted", "sft_answer_weight": 0.0}, "7", set()),
    ],
    ids=[
        "all",
        "answer_only",
        "exclude_thinking",
        "weighted-think0",
        "weighted-think1",
        "weighted-answer0",
    ],
)
def test_sft_mode_routes_the_gradient(
    workspace: Path,
    make_config: Callable[..., RLConfig],
    trainer: dict[str, Any],
    completion: str,
    moves: set[int | None],
) -> None:
    run, before = fit(_routing_config(make_config, workspace, trainer, completion))
    record = steps(run.run_dir)[0]
    assert record["frac_reward_zero_std"] == 1.0 and record["policy_loss"] == 0.0
    moved = changed(before, run.policy.model)
    by_layer = {layer(n) for n in moved}
    assert by_layer == moves
    for n in before:  # whole groups move together: every parameter of a moved layer
        if layer(n) in moves:
            assert n in moved, n
    assert (record["sft_loss"] > 0) == bool(moves)


def test_dual_gradients_with_full_ranges_match_the_plain_update(
    make_config: Callable[..., RLConfig], grads_at_update: list[dict[str, Any]]
) -> None:
    one_step = {"trainer": {"num_training_steps": 1}}
    fit(make_config(one_step))
    fit(make_config({"trainer": {"num_training_steps": 1, "use_dual_gradients": True}}))
    plain, dual = grads_at_update
    assert plain.keys() == dual.keys()
    for name in plain:
        assert plain[name] is not None and dual[name] is not None, name
        assert torch.allclose(plain[name], dual[name], rtol=1e-5, atol=1e-8), name
    assert any(bool(g.abs().sum() > 0) for g in plain.values())


def test_dual_gradients_route_answer_tokens_to_the_answer_layers(
    make_config: Callable[..., RLConfig], grads_at_update: list[dict[str, Any]]
) -> None:
    config = make_config(
        {
            "trainer": {
                "num_training_steps": 1,
                "use_dual_gradients": True,
                "thinking_layer_start": 0,
                "thinking_layer_end": 1,
                "answer_layer_start": 1,
                "answer_layer_end": 2,
            }
        }
    )
    trainer, before = fit(config)
    texts = [
        json.loads(line)["completion"]
        for path in (trainer.run_dir / "samples").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert texts and not any("think>" in t for t in texts)  # every token is an answer token
    (grads,) = grads_at_update
    for name, g in grads.items():
        if layer(name) == 0:
            assert g is None or not g.any(), name
        else:
            assert g is not None and g.any(), name
    assert {layer(n) for n in changed(before, trainer.policy.model)} == {None, 1}


# --------------------------------------------------------------------------- 7. variants


@pytest.mark.parametrize(
    "trainer",
    [
        {"loss_type": "grpo"},
        {"loss_type": "dr_grpo"},
        {"loss_type": "dapo", "grad_accum_steps": 2, "ppo_batch_size": 1},
        {"loss_type": "bnpo"},
        {"scale_rewards": "batch"},
        {"scale_rewards": "none"},
        {"kl_importance_weighted": True, "num_iterations": 2},
        {"ppo_batch_size": 3, "num_rollout_samples": 5, "grad_accum_steps": 2},
    ],
    ids=lambda t: "-".join(f"{k}={v}" for k, v in t.items()),
)
def test_loss_variants_train(make_config: Callable[..., RLConfig], trainer: dict[str, Any]) -> None:
    run, before = fit(make_config({"trainer": {"num_training_steps": 1, **trainer}}))
    (record,) = steps(run.run_dir)
    assert all(
        isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in record.values()
    )
    assert changed(before, run.policy.model) == set(before)
    assert summary(run.run_dir)["status"] == "completed"
    assert record["completion_length"] > 0


def test_dynamic_sampling_drops_flat_groups_and_refills(
    workspace: Path, make_config: Callable[..., RLConfig]
) -> None:
    rows = [
        {"prompt": p, "completion": c, "meta": {"flat": flat}}
        for (p, c), flat in zip(
            [("3+4=", "7"), ("1+2=", "3"), ("5+2=", "7"), ("2+6=", "8"), ("4+4=", "8")],
            [True, False, True, False, False],
            strict=True,
        )
    ]
    data = write_jsonl(workspace / "mixed.jsonl", rows)
    config = make_config(
        {
            "trainer": {"num_training_steps": 1, "dynamic_sampling": True},
            "data": {"shuffle_data": False},
            "rewards": [{"name": "char_share"}],
        },
        data=data,
    )
    trainer, _ = fit(config)
    (record,) = steps(trainer.run_dir)
    # [flat, spread] -> refill 1: [flat] -> refill 1: [spread]: 4 groups drawn, 2 dropped.
    assert record["groups_generated"] == 4 and record["groups_flat"] == 2
    assert record["frac_reward_zero_std"] == 0.0
    assert trainer.stream.position == 4


def test_mask_truncated_completions_leaves_them_out_of_the_loss(
    make_config: Callable[..., RLConfig],
) -> None:
    # A stop text longer than max_gen_len is never completed: every completion is truncated.
    never = {"generation": {"stop": ["zzzzzzzzzz"]}}
    masked, before = fit(
        make_config(
            {**never, "trainer": {"num_training_steps": 1, "mask_truncated_completions": True}}
        )
    )
    (record,) = steps(masked.run_dir)
    assert record["truncation_rate"] == 1.0 and record["completion_length"] == 6
    assert record["policy_loss"] == 0.0 and record["kl"] == 0.0
    assert changed(before, masked.policy.model) == set()

    plain, before = fit(make_config({**never, "trainer": {"num_training_steps": 1}}))
    assert changed(before, plain.policy.model) == set(before)


def test_several_iterations_per_batch_clip(make_config: Callable[..., RLConfig]) -> None:
    config = make_config(
        {
            "trainer": {
                "num_training_steps": 2,
                "num_iterations": 2,
                "learning_rate": 1e-2,
                "epsilon": 0.02,
                "epsilon_high": 0.05,
            }
        }
    )
    trainer, _ = fit(config)
    logged = steps(trainer.run_dir)
    for record in logged:
        for key in ("policy_loss", "kl", "clip_low", "clip_high"):
            value = record[key]
            assert value == value and abs(value) < 1e6, (key, value)
        assert 0 <= record["clip_low"] <= 1 and 0 <= record["clip_high"] <= 1
    assert sum(r["clip_low"] + r["clip_high"] for r in logged) > 0


def test_seed_minus_one_is_drawn_and_recorded(make_config: Callable[..., RLConfig]) -> None:
    trainer, _ = fit(make_config({"trainer": {"seed": -1, "num_training_steps": 1}}))
    config_json = json.loads((trainer.run_dir / "config.json").read_text())
    seed = config_json["resolved_seed"]
    assert isinstance(seed, int) and seed >= 0
    assert config_json["trainer"]["seed"] == -1
    assert summary(trainer.run_dir)["seed"] == seed == trainer.seed


# --------------------------------------------------------------------------- 8. errors


def fails(config: RLConfig, error: type[Exception], match: str) -> None:
    """Training ``config`` raises ``error`` before any run directory is made."""
    with pytest.raises(error, match=match):
        train(config, progress=False)
    assert not (config.output_dir / config.experiment).exists()


def test_model_path_that_does_not_exist(
    workspace: Path, make_config: Callable[..., RLConfig]
) -> None:
    fails(
        make_config(model=workspace / "nowhere"),
        ConfigError,
        r"model_path .*nowhere does not exist",
    )


def test_directory_without_a_model(workspace: Path, make_config: Callable[..., RLConfig]) -> None:
    empty = workspace / "empty"
    empty.mkdir()
    fails(
        make_config(model=empty),
        ConfigError,
        r"empty holds no model.*checkpoint\.json.*config\.json",
    )


def test_lengths_beyond_the_gpt_context(
    gpt_run: Path, gpt_prompts: Path, make_config: Callable[..., RLConfig]
) -> None:
    config = make_config(
        {"data": {"max_prompt_len": 30, "max_gen_len": 8}}, model=gpt_run, data=gpt_prompts
    )
    fails(config, ConfigError, r"max_prompt_len \(30\) \+ data.max_gen_len \(8\) exceeds .*\(32\)")


def test_thinking_layer_start_past_the_layers(make_config: Callable[..., RLConfig]) -> None:
    config = make_config({"trainer": {"use_dual_gradients": True, "thinking_layer_start": 5}})
    fails(config, ConfigError, r"thinking_layer_start \(5\) is past the policy's 2 layers")


def test_unknown_reward_name(make_config: Callable[..., RLConfig]) -> None:
    config = make_config({"rewards": [{"name": "numeric_mach"}]})
    fails(config, ConfigError, r"Unknown reward 'numeric_mach'\. Did you mean 'numeric_match'")


def test_bad_jsonl_line_is_named(workspace: Path, make_config: Callable[..., RLConfig]) -> None:
    data = write_jsonl(
        workspace / "bad.jsonl",
        [{"prompt": "3+4=", "completion": "7"}, '{"prompt": "1+2=", "completion": ', {}],
    )
    fails(make_config(data=data), DatasetError, r"bad\.jsonl.*line 2")


def test_chat_template_without_one(make_config: Callable[..., RLConfig]) -> None:
    config = make_config({"data": {"use_chat_template": True}})
    fails(config, ConfigError, r"use_chat_template is true but .* has no chat template")


# --------------------------------------------------------------------------- evaluation


def test_eval_generates_max_new_tokens_and_refuses_more_than_the_context(
    make_config: Callable[..., RLConfig],
) -> None:
    from mlharness.errors import EvaluationError
    from mlharness.rl.evaluate import evaluate

    result = train(make_config(), progress=False)
    report = evaluate(
        run_dir=result.run_dir,
        checkpoint=None,
        config=None,
        benchmarks=["human_eval"],
        limit=1,
        max_new_tokens=40,
    )
    record = report["results"]["human_eval"]["records"][0]
    completion = record.get("completion") or record["completions"][0]
    # A random char model rarely stops early: 40 characters, and never more.
    assert 0 < len(completion) <= 40
    with pytest.raises(EvaluationError, match="leaves no room for a prompt"):
        evaluate(
            run_dir=result.run_dir,
            checkpoint=None,
            config=None,
            benchmarks=["human_eval"],
            limit=1,
            max_new_tokens=128,
        )
