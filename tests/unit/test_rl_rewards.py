"""GRPO rewards: text helpers, every built-in reward's edge cases, the registry, user reward
files, and the weighted reward set (a failing reward scores 0 and training goes on)."""

from __future__ import annotations

import doctest
import importlib
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mlharness.errors import ConfigError
from mlharness.rl.config import rl_config_from_raw
from mlharness.rl.rewards import (
    BaseReward,
    RewardContext,
    RewardRegistry,
    RewardSet,
    count_words,
    extract_code,
    extract_numbers,
    load_reward_sources,
    parse_choice,
    split_regions,
)
from mlharness.rl.rewards.base import checked_specs
from mlharness.rl.rewards.format import FormatStructure
from mlharness.rl.rewards.text import final_number

pytestmark = pytest.mark.unit

BUILTINS = [
    "answer_quality",
    "code_execution",
    "exact_match",
    "format_structure",
    "mcq_accuracy",
    "numeric_match",
    "response_length_penalty",
    "semantic_similarity",
    "steps_coverage",
    "tag_structure",
    "thinking_quality",
]
REFERENCE_REWARDS = [
    "exact_match",
    "mcq_accuracy",
    "numeric_match",
    "semantic_similarity",
    "steps_coverage",
]


@pytest.fixture
def registry() -> Iterator[type[RewardRegistry]]:
    """The registry, restored afterwards, so test rewards do not leak into other tests."""
    saved = dict(RewardRegistry._rewards)
    modules = set(sys.modules)
    yield RewardRegistry
    RewardRegistry._rewards.clear()
    RewardRegistry._rewards.update(saved)
    for name in set(sys.modules) - modules:
        if name.startswith(("mlharness_user_rewards", "my_reward_pkg")):
            del sys.modules[name]


def think(thinking: str, answer: str) -> str:
    return f"<think>{thinking}</think>{answer}"


REASONING = (
    "Natalia sold 48 clips in April and half as many in May, which is 48 / 2 = 24 clips. "
    "Together that makes 48 + 24 = 72 clips, so the total number of clips she sold in "
    "April and May is 72. Let me double check: half of 48 is 24, and 48 plus 24 is 72."
)

# name: (config, good context, bad context)
CASES: dict[str, tuple[dict[str, Any], RewardContext, RewardContext]] = {
    "format_structure": (
        {"min_think_length": 5, "think_length_target_min": 20, "think_length_target_max": 80},
        RewardContext(think(REASONING, " She sold 72 clips altogether.")),
        RewardContext("She sold 72 clips altogether."),
    ),
    "thinking_quality": (
        {"target_length_min": 20, "target_length_max": 80, "excessive_length_threshold": 120},
        RewardContext(think(REASONING, " 72")),
        RewardContext(think("hmm " * 200, " 72")),
    ),
    "answer_quality": (
        {},
        RewardContext(think(REASONING, " She sold 72 clips altogether.")),
        RewardContext(think(REASONING, " Hmm, I'm not sure. Sorry, I don't know.")),
    ),
    "semantic_similarity": (
        {},
        RewardContext(
            think("...", " Natalia sold 72 clips in April and May."),
            reference_completion="In April and May Natalia sold 72 clips.",
        ),
        RewardContext(
            think("...", " Bananas are yellow fruit."),
            reference_completion="In April and May Natalia sold 72 clips.",
        ),
    ),
    "steps_coverage": (
        {},
        RewardContext(
            REASONING,
            reference_completion="1. Half of 48 is 24.\n2. Add 48 and 24 to get 72.\n#### 72",
        ),
        RewardContext(
            "The answer is 72.",
            reference_completion="1. Half of 48 is 24.\n2. Add 48 and 24 to get 72.\n#### 72",
        ),
    ),
    "mcq_accuracy": (
        {},
        RewardContext(think("Paris is in France.", " The answer is (B)."), meta={"answer": "B"}),
        RewardContext(think("Hmm.", " The answer is (C)."), meta={"answer": "B"}),
    ),
    "code_execution": (
        {"timeout": 5},
        RewardContext(
            think("Double it.", "\n```python\ndef double(x):\n    return 2 * x\n```"),
            test_cases=["assert double(2) == 4", "assert double(0) == 0"],
        ),
        RewardContext(
            think("Double it.", "\n```python\ndef double(x):\n    return x + 2\n```"),
            test_cases=["assert double(2) == 4", "assert double(0) == 0"],
        ),
    ),
    "response_length_penalty": (
        {"max_words": 20, "penalty_per_word": 0.01},
        RewardContext("A short answer of seven words here."),
        RewardContext("word " * 100),
    ),
    "exact_match": (
        {},
        RewardContext(think("France's capital.", " Paris."), reference_completion="paris"),
        RewardContext(think("France's capital.", " Lyon."), reference_completion="paris"),
    ),
    "numeric_match": (
        {},
        RewardContext(
            think(REASONING, " She sold 72 clips."), reference_completion="48/2=24\n#### 72"
        ),
        RewardContext(
            think(REASONING, " She sold 96 clips."), reference_completion="48/2=24\n#### 72"
        ),
    ),
}
CASES["tag_structure"] = CASES["format_structure"]


def create(name: str, **overrides: Any) -> BaseReward:
    config = dict(CASES[name][0])
    config.update(overrides)
    return RewardRegistry.create(name, config)


def score(reward: BaseReward, context: RewardContext) -> float:
    value = reward.compute(context)["reward"]
    assert isinstance(value, float) and 0.0 <= value <= 1.0, value
    return value


def with_text(context: RewardContext, text: str) -> RewardContext:
    return RewardContext(
        text,
        prompt=context.prompt,
        reference_completion=context.reference_completion,
        test_cases=context.test_cases,
        meta=context.meta,
    )


# ------------------------------------------------------------------------------ helpers


def test_split_regions_handles_missing_unclosed_repeated_and_malformed_tags() -> None:
    plain = split_regions("just an answer")
    assert (plain.thinking, plain.answer, plain.has_tags) == ("", "just an answer", False)

    ok = split_regions("<think> a b </think> c ")
    assert (ok.thinking, ok.answer, ok.well_formed, ok.closed) == ("a b", "c", True, True)

    no_start = split_regions("a b</think>c")  # the chat template opened the block
    assert (no_start.thinking, no_start.answer, no_start.well_formed) == ("a b", "c", False)

    unclosed = split_regions("pre <think>still thinking")
    assert (unclosed.thinking, unclosed.answer, unclosed.prefix) == ("still thinking", "", "pre")
    assert unclosed.unclosed and not unclosed.closed

    repeated = split_regions("<think>a</think>b<think>c</think>d")
    assert (repeated.thinking, repeated.answer, repeated.well_formed) == ("a", "b c d", False)
    assert (repeated.start_count, repeated.end_count) == (2, 2)

    sloppy = split_regions("<Think >a</ THINK> b")
    assert (sloppy.thinking, sloppy.answer) == ("a", "b")

    backwards = split_regions("x</think>y<think>z")
    assert (backwards.thinking, backwards.answer) == ("x", "y z")

    custom = split_regions("[R]why[/R] so", "[R]", "[/R]")
    assert (custom.thinking, custom.answer, custom.well_formed) == ("why", "so", True)

    no_format = split_regions("<think>a</think> b", "", "")  # tags switched off
    assert (no_format.thinking, no_format.answer) == ("", "<think>a</think> b")


def test_words_and_numbers() -> None:
    assert count_words("  one two\nthree ") == 3
    assert count_words("") == 0
    assert extract_numbers("x2 costs $1,234.50 or -3, 4,5 and .5") == [1234.5, -3.0, 4.0, 5.0, 0.5]
    assert final_number("a\n#### 1,000") == 1000.0
    assert final_number(r"so \boxed{12} and then 13") == 12.0
    assert final_number("no numbers") is None


def test_extract_code_prefers_python_fences_and_accepts_bare_code() -> None:
    text = "```\nx = 1\n```\n```python\ny = 2\n```\n```python\nz = 3"  # last fence unclosed
    assert extract_code(text) == "y = 2\n\nz = 3"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("Sure! Here is how.") == ""
    assert extract_code("```js\nlet x = 1\n```") == ""


def test_parse_choice_is_robust_and_refuses_hedges() -> None:
    assert parse_choice("The answer is (c).") == "C"
    assert parse_choice("Answer: D") == "D"
    assert parse_choice(r"\boxed{A}") == "A"
    assert parse_choice("b") == "B"
    assert parse_choice("B) Paris") == "B"
    assert parse_choice("answer is a number") is None
    assert parse_choice("Either (A) or (B)") is None
    assert parse_choice("Option A is wrong, so the answer is C") == "C"
    assert parse_choice("The answer is (E)", letters="ABCD") is None


@pytest.mark.parametrize(
    "module", ["text", "format", "content", "match", "code", "base"], ids=lambda m: m
)
def test_docstring_examples_hold(module: str) -> None:
    mod = importlib.import_module(f"mlharness.rl.rewards.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# ---------------------------------------------------------------------- every built-in


def test_importing_the_package_registers_every_builtin() -> None:
    assert set(BUILTINS) <= set(RewardRegistry.names())
    assert RewardRegistry.get("tag_structure") is RewardRegistry.get("format_structure")
    assert RewardRegistry.get("format_structure") is FormatStructure


@pytest.mark.parametrize("name", BUILTINS)
def test_good_scores_above_bad(name: str) -> None:
    reward = create(name)
    _, good, bad = CASES[name]
    assert score(reward, good) > score(reward, bad)


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_gets_the_low_default(name: str, text: str) -> None:
    reward = create(name)
    assert score(reward, with_text(CASES[name][1], text)) == 0.0


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("text", ["a", "7", "<", "</think>", "<think>"])
def test_very_short_text_stays_in_range_and_below_the_good_case(name: str, text: str) -> None:
    reward = create(name)
    _, good, _ = CASES[name]
    assert score(reward, with_text(good, text)) <= score(reward, good)


@pytest.mark.parametrize("name", BUILTINS)
def test_unclosed_thinking_has_no_answer(name: str) -> None:
    reward = create(name)
    _, good, _ = CASES[name]
    start, _, rest = good.generated_text.partition("</think>")
    unclosed = score(reward, with_text(good, start + " " + rest.replace("```", "")))
    if name in ("response_length_penalty", "steps_coverage"):  # they read the whole text
        assert unclosed <= 1.0
    else:
        assert unclosed < score(reward, good)


@pytest.mark.parametrize("name", BUILTINS)
def test_sloppy_tags_read_like_proper_ones(name: str) -> None:
    reward = create(name)
    _, good, _ = CASES[name]
    sloppy = good.generated_text.replace("<think>", "< Think >").replace("</think>", "</THINK>")
    assert score(reward, with_text(good, sloppy)) == pytest.approx(score(reward, good), abs=0.3)
    if name not in ("format_structure", "tag_structure"):  # exactness is its business
        assert score(reward, with_text(good, sloppy)) == pytest.approx(score(reward, good))


@pytest.mark.parametrize("name", REFERENCE_REWARDS)
def test_missing_reference_gives_the_configured_default(name: str) -> None:
    _, good, _ = CASES[name]
    bare = RewardContext(good.generated_text)
    result = create(name).compute(bare)
    assert result["reward"] == 0.0 and result["missing_reference"] is True
    assert create(name, missing_reference_reward=0.3).compute(bare)["reward"] == 0.3


def test_rewards_without_a_reference_do_not_need_one() -> None:
    for name in ("format_structure", "thinking_quality", "answer_quality"):
        _, good, _ = CASES[name]
        assert score(create(name), RewardContext(good.generated_text)) > 0.5


@pytest.mark.parametrize("name", BUILTINS)
def test_docstring_documents_every_option(name: str) -> None:
    cls = RewardRegistry.get(name)
    doc = cls.__doc__ or ""
    for key in cls.defaults:
        assert f"``{key}``" in doc, f"{cls.__name__} does not document {key}"


@pytest.mark.parametrize("name", BUILTINS)
def test_a_non_context_is_rejected(name: str) -> None:
    with pytest.raises(TypeError, match="RewardContext"):
        create(name).compute("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("format_structure", {"min_think_length": -1}, r"'min_think_length' option .* >= 0"),
        (
            "format_structure",
            {"think_length_target_min": 100, "think_length_target_max": 90},
            r"'think_length_target_min' .* must not exceed 'think_length_target_max'",
        ),
        ("thinking_quality", {"target_length_min": "forty"}, r"must be an integer >= 1"),
        ("thinking_quality", {"excessive_length_threshold": 50}, r"must not exceed"),
        ("answer_quality", {"phrase_penalty": 2}, r"'phrase_penalty' .* <= 1"),
        ("answer_quality", {"phrases": "hmm"}, r"'phrases' .* list of strings"),
        ("semantic_similarity", {"method": "bert"}, r"'method' .* one of 'tfidf'"),
        ("semantic_similarity", {"apply_length_penalty": "yes"}, r"must be true or false"),
        ("steps_coverage", {"match_threshold": 1.5}, r"'match_threshold'"),
        ("mcq_accuracy", {"letters": "abcd"}, r"upper-case letters"),
        ("code_execution", {"timeout": 0}, r"'timeout' .* >= 0.1"),
        ("code_execution", {"memory_mb": 10}, r"'memory_mb' .* >= 64"),
        ("response_length_penalty", {"max_words": 1.5}, r"must be an integer"),
        ("response_length_penalty", {"penalty_per_word": float("nan")}, r"penalty_per_word"),
        ("exact_match", {"case_sensitive": 1}, r"true or false"),
        ("numeric_match", {"tolerance": -1}, r"'tolerance'"),
        ("numeric_match", {"missing_reference_reward": 2}, r"missing_reference_reward"),
    ],
)
def test_invalid_options_fail_at_construction(name: str, config: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        RewardRegistry.create(name, config)
    assert f"reward '{name}'" in str(info.value)


def test_unknown_options_warn_with_a_suggestion(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        RewardRegistry.create("format_structure", {"min_think_lenght": 3})
    assert "Did you mean 'min_think_length'?" in caplog.text


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        RewardRegistry.create("exact_match", ["strip"])  # type: ignore[arg-type]
    assert str(info.value) == (
        "Configuration validation failed:\n"
        "  - Invalid value for 'config': Input should be a valid dictionary"
    )


# -------------------------------------------------------------------- reward specifics


def test_format_structure_ranks_structures() -> None:
    r = create("format_structure")
    text = REASONING
    values = [
        score(r, RewardContext(f"<think>{text}</think> Answer is 72.")),  # well formed
        score(r, RewardContext(f"{text}</think> Answer is 72.")),  # opening tag missing
        score(r, RewardContext(f"<think>{text}</think> 72 <think>again</think> 72")),  # repeats
        score(r, RewardContext(f"<think>{text}")),  # never closed
        score(r, RewardContext(f"{text} Answer is 72.")),  # no tags
    ]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert values[0] == 1.0 and values[-1] == 0.0


def test_thinking_quality_penalizes_rambling_and_loops() -> None:
    r = create("thinking_quality")
    words = REASONING.split()
    right = score(r, RewardContext(think(REASONING, "72")))
    short = score(r, RewardContext(think(" ".join(words[:5]), "72")))
    rambling = score(r, RewardContext(think(" ".join(words * 6), "72")))
    assert right > short and right > rambling
    assert score(r, RewardContext("no thinking at all: 72")) == 0.0


def test_response_length_penalty_matches_the_seed_example() -> None:
    r = RewardRegistry.create("response_length_penalty", {})
    assert (r.max_words, r.penalty_per_word) == (150, 0.005)  # type: ignore[attr-defined]
    assert score(r, RewardContext("w " * 150)) == 1.0
    assert score(r, RewardContext("w " * 250)) == pytest.approx(0.5)
    assert score(r, RewardContext("w " * 1000)) == 0.0


def test_answer_quality_catches_leaked_tags_and_repeats() -> None:
    r = create("answer_quality")
    assert score(r, RewardContext(think("x", " It is 72."))) == 1.0
    assert score(r, RewardContext(think("x", " It is 72.") + "</think>")) == 0.75
    assert score(r, RewardContext(think("x", " It is 72. It is 72."))) == 0.75
    assert score(r, RewardContext(think("x", " ?!"))) == 0.0
    capped = RewardRegistry.create("answer_quality", {"max_penalty": 0.5})
    assert score(capped, RewardContext(think("x", " Hmm, sorry, I don't know."))) == 0.5


def test_semantic_similarity_penalties() -> None:
    ref = "In April and May Natalia sold 72 clips."
    long_answer = " In April and May Natalia sold 72 clips. " + "More words follow here. " * 10
    ctx = RewardContext(think("x", long_answer), reference_completion=ref)
    plain = score(create("semantic_similarity"), ctx)
    length = score(create("semantic_similarity", apply_length_penalty=True), ctx)
    verbose = score(create("semantic_similarity", apply_verbosity_penalty=True), ctx)
    assert plain > length > 0 and plain > verbose > 0
    tiny = RewardContext(think("x", " 72"), reference_completion=ref)
    assert score(create("semantic_similarity"), tiny) < 0.5  # shorter than min_length
    exact_short = RewardContext(think("x", " 72"), reference_completion="72")
    assert score(create("semantic_similarity"), exact_short) == pytest.approx(1.0)
    punctuation = RewardContext(think("x", " ?!"), reference_completion=ref)
    assert score(create("semantic_similarity"), punctuation) == 0.0


def test_steps_coverage_reads_steps_from_meta_or_reference() -> None:
    r = create("steps_coverage")
    meta = RewardContext("Boil water and steep the tea.", meta={"steps": "boil water\nadd milk"})
    assert score(r, meta) == 0.5
    sentences = RewardContext(
        "First we boil the water.", reference_completion="Boil the water. Add milk."
    )
    assert score(r, sentences) == 0.5
    assert score(r, RewardContext("x", meta={"steps": ["the and"]})) == 0.0  # no keywords
    assert create("steps_coverage").compute(RewardContext("x", meta={"steps": []}))[
        "missing_reference"
    ]


def test_mcq_accuracy_reads_the_correct_letter_many_ways() -> None:
    r = create("mcq_accuracy")
    answer = think("France.", " Answer: B")
    choices = ["Lyon", "Paris", "Nice"]
    for meta in (
        {"answer": "B"},
        {"correct": "(b)"},
        {"answer": 1},
        {"answer": "Paris", "choices": choices},
    ):
        assert score(r, RewardContext(answer, meta=meta)) == 1.0, meta
    assert score(r, RewardContext(answer, reference_completion="The answer is B.")) == 1.0
    by_text = RewardContext(think("x", " paris"), meta={"answer": "B", "choices": choices})
    assert score(r, by_text) == 1.0
    beyond = RewardContext(think("x", " The answer is (D)"), meta={"answer": 1, "choices": choices})
    assert score(r, beyond) == 0.0
    hedge = RewardContext(think("x", " (A) or (B)"), meta={"answer": "B"})
    assert score(r, hedge) == 0.0


def test_exact_match_options() -> None:
    ctx = RewardContext(think("x", "  Paris  is  nice. "), reference_completion="paris is nice")
    assert score(create("exact_match"), ctx) == 1.0
    assert score(create("exact_match", case_sensitive=True), ctx) == 0.0
    assert score(create("exact_match", strip=False), ctx) == 0.0
    whole = RewardContext("Paris", reference_completion="paris")
    assert score(create("exact_match"), whole) == 1.0  # no tags: the whole text is the answer
    meta = RewardContext(think("x", "42"), meta={"answer": 42})
    assert score(create("exact_match"), meta) == 1.0


def test_numeric_match_forms_and_tolerance() -> None:
    r = create("numeric_match")
    assert score(r, RewardContext("So it costs $1,200.", reference_completion="#### 1200")) == 1.0
    assert score(r, RewardContext("#### 72", reference_completion="it is 72")) == 1.0
    assert score(r, RewardContext(think("x", " 72.0000000001"), meta={"answer": 72})) == 1.0
    assert score(r, RewardContext(think("x", " 72.1"), meta={"answer": "72"})) == 0.0
    loose = create("numeric_match", tolerance=0.01)
    assert score(loose, RewardContext(think("x", " 72.5"), meta={"answer": 72})) == 1.0
    assert score(r, RewardContext(think("x", " seventy-two"), meta={"answer": 72})) == 0.0
    # The number in the thinking does not count when the answer has none.
    assert score(r, RewardContext(think("72", " I give up"), meta={"answer": 72})) == 0.0


def test_code_execution_partial_credit_and_untested_code() -> None:
    good, _bad = CASES["code_execution"][1], CASES["code_execution"][2]
    half = RewardContext(good.generated_text, test_cases=["assert double(2) == 4", "assert 0"])
    strict = RewardRegistry.create("code_execution", {"partial_credit": False})
    lenient = RewardRegistry.create("code_execution", {})
    assert [score(lenient, half), score(strict, half)] == [0.5, 0.0]
    untested = RewardContext(good.generated_text)
    crashing = RewardContext("```python\nraise ValueError\n```")
    assert [r["reward"] for r in lenient.compute_batch([untested, crashing])] == [0.5, 0.0]
    syntax = lenient.compute(RewardContext("```python\ndef f(:\n```", test_cases=["f()"]))
    assert syntax == {"reward": 0.0, "status": "syntax"}


def test_code_execution_ignores_an_early_exit() -> None:
    r = RewardRegistry.create("code_execution", {})
    for exit_call in ("import sys; sys.exit(0)", "import os; os._exit(0)", "exec = print"):
        text = f"```python\ndef f():\n    return 0\n{exit_call}\n```"
        result = r.compute(RewardContext(text, test_cases=["assert f() == 1"]))
        assert result["reward"] == 0.0, exit_call


# ------------------------------------------------------------------------------ registry


def test_unknown_reward_suggests_the_closest_name(registry: type[RewardRegistry]) -> None:
    with pytest.raises(ConfigError) as info:
        registry.get("semantic_similarty")
    message = str(info.value)
    assert "Unknown reward 'semantic_similarty'. Did you mean 'semantic_similarity'?" in message
    # Other tests may have registered rewards of their own: check the built-ins are listed.
    assert "Available rewards: answer_quality, " in message and "code_execution" in message
    assert "reward_sources" in message
    with pytest.raises(ConfigError, match=r"Unknown reward 'zzz'\. Available rewards"):
        registry.create("zzz", {})


def test_a_name_cannot_be_taken_twice(registry: type[RewardRegistry]) -> None:
    class Mine(BaseReward):
        def compute(self, context: RewardContext) -> dict[str, Any]:
            return {"reward": 1.0}

    with pytest.raises(ConfigError, match=r"'exact_match' is already registered by .*ExactMatch"):
        registry.register("exact_match")(Mine)
    registry.register("mine")(Mine)
    registry.register("mine")(Mine)  # the same class again is fine
    assert registry.create("mine", {}).name == "mine"
    with pytest.raises(ConfigError, match="subclass of BaseReward"):
        registry.register("other")(int)  # type: ignore[arg-type]


USER_REWARD = """
from mlharness.rl.rewards import BaseReward, RewardContext, RewardRegistry

@RewardRegistry.register("shouting")
class Shouting(BaseReward):
    \"\"\"Share of upper-case letters.\"\"\"

    defaults = {"bonus": 0.0}

    def compute(self, context: RewardContext) -> dict:
        letters = [c for c in context.generated_text if c.isalpha()]
        share = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
        return {"reward": min(1.0, share + self.number("bonus", minimum=0))}
"""


def test_a_user_reward_file_registers_and_scores(
    registry: type[RewardRegistry], tmp_path: Path
) -> None:
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "shout.py").write_text(USER_REWARD, encoding="utf-8")
    assert load_reward_sources(["rewards/shout.py"], base_dir=tmp_path) == ["shouting"]
    assert load_reward_sources([str(tmp_path / "rewards" / "shout.py")]) == []  # loaded once
    rewards = RewardSet([{"name": "shouting", "weight": 2.0, "config": {"bonus": 0.25}}])
    scores = rewards.score([RewardContext("ABcd"), RewardContext("")])
    assert scores.per_reward["shouting"].tolist() == [0.75, 0.25]
    assert scores.total.tolist() == [1.5, 0.5]


def test_a_user_reward_module_registers(
    registry: type[RewardRegistry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "my_reward_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "loud.py").write_text(USER_REWARD, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward_sources(["my_reward_pkg.loud"]) == ["shouting"]


def test_reward_source_errors_say_what_to_do(
    registry: type[RewardRegistry], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match=r"'nope.py' was not found \(looked for .*nope.py\)"):
        load_reward_sources(["nope.py"], base_dir=tmp_path)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'broken.py' .* failed with RuntimeError: boom\. Fix"):
        load_reward_sources(["broken.py"], base_dir=tmp_path)
    (tmp_path / "typo.py").write_text("def f(:\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'typo.py' .* failed with SyntaxError"):
        load_reward_sources(["typo.py"], base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"module 'no_such_rewards_mod' cannot be imported.*"):
        load_reward_sources(["no_such_rewards_mod"])
    with pytest.raises(ConfigError, match=r"must be a \.py file path or a module name"):
        load_reward_sources([""])
    (tmp_path / "empty.py").write_text("X = 1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert load_reward_sources(["empty.py"], base_dir=tmp_path) == []
    assert "registered no reward" in caplog.text


# ---------------------------------------------------------------------------- reward set


def test_reward_set_sums_weighted_rewards() -> None:
    specs = [
        {"name": "exact_match", "weight": 0.5},
        SimpleNamespace(name="response_length_penalty", weight=2.0, config={"max_words": 1}),
        {"name": "exact_match", "weight": 1.0, "config": {"case_sensitive": True}},
    ]
    rewards = RewardSet(specs)
    assert rewards.names == ["exact_match", "response_length_penalty", "exact_match_2"]
    contexts = [
        RewardContext("Paris", reference_completion="paris"),
        RewardContext("Lyon is big", reference_completion="paris"),
    ]
    scores = rewards.score(contexts)
    assert scores.per_reward["exact_match"].tolist() == [1.0, 0.0]
    assert scores.per_reward["exact_match_2"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(scores.per_reward["response_length_penalty"], [1.0, 0.99])
    np.testing.assert_allclose(scores.total, [0.5 * 1 + 2 * 1.0, 0.5 * 0 + 2 * 0.99])
    assert scores.total.dtype == np.float64
    assert scores.means()["reward/exact_match"] == 0.5
    assert scores.details["response_length_penalty"][1] == {"words": 3}
    assert RewardSet([{"name": "exact_match"}]).score([]).total.shape == (0,)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [],
            "Invalid value for 'rewards': List should have at least 1 item after validation, not 0",
        ),
        ([{"weight": 1}], "Missing required field: 'rewards.0.name'"),
        (
            [{"name": "exact_match", "weight": "heavy"}],
            "Invalid value for 'rewards.0.weight': Input should be a valid number, unable to "
            "parse string as a number (got 'heavy')",
        ),
        (
            [{"name": "exact_match"}, SimpleNamespace(name="exact_match", weight=math.inf)],
            "Invalid value for 'rewards.1.weight': Input should be a finite number (got inf)",
        ),
        (
            [{"name": "exact_match", "config": [1]}],
            "Invalid value for 'rewards.0.config': Input should be a valid dictionary",
        ),
    ],
)
def test_reward_set_checks_python_specs_by_the_config_schemas_rules(
    specs: list[Any], message: str
) -> None:
    # One place for each rule: the rl schema's `rewards` field (RewardSpec). A Python
    # caller's specs meet those rules, worded as a config file's would be.
    with pytest.raises(ConfigError) as info:
        RewardSet(specs)
    assert str(info.value) == f"Configuration validation failed:\n  - {message}"


def test_an_unknown_reward_name_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'exact_match'"):
        RewardSet([{"name": "exact_matc"}])


def test_a_bad_spec_in_a_config_is_one_schema_error(tmp_path: Path) -> None:
    raw = {
        "model": {"model_path": str(tmp_path)},
        "data": {"train_path": str(tmp_path / "t.jsonl")},
        "rewards": [{"name": "exact_match", "weight": "heavy", "config": [1]}],
    }
    with pytest.raises(ConfigError) as info:
        rl_config_from_raw(raw, tmp_path)
    assert str(info.value) == (
        "Configuration validation failed:\n"
        "  - Invalid value for 'rewards.0.weight': Input should be a valid number, unable to "
        "parse string as a number (got 'heavy')\n"
        "  - Invalid value for 'rewards.0.config': Input should be a valid dictionary"
    )


def test_a_loaded_configs_specs_are_used_without_a_second_check(tmp_path: Path) -> None:
    raw = {
        "model": {"model_path": str(tmp_path)},
        "data": {"train_path": str(tmp_path / "t.jsonl")},
        "rewards": [{"name": "exact_match", "weight": 2}, {"name": "code_execution"}],
    }
    specs = rl_config_from_raw(raw, tmp_path).rewards
    assert checked_specs(specs) == specs and checked_specs(specs)[0] is specs[0]
    # A Python caller's specs take the same defaults as a config's (sandbox.backend).
    python = checked_specs([{"name": "exact_match", "weight": 2}, {"name": "code_execution"}])
    assert python == specs


def test_a_failing_reward_scores_zero_and_training_goes_on(
    registry: type[RewardRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    @registry.register("flaky")
    class Flaky(BaseReward):
        def compute(self, context: RewardContext) -> dict[str, Any]:
            if "bad" in context.generated_text:
                raise RuntimeError("cannot score this")
            if "nan" in context.generated_text:
                return {"reward": float("nan")}
            if "none" in context.generated_text:
                return {"score": 1.0}
            return {"reward": 1.0}

    @registry.register("broken_batch")
    class BrokenBatch(BaseReward):
        def compute(self, context: RewardContext) -> dict[str, Any]:
            return {"reward": 0.5}

        def compute_batch(self, contexts: Any) -> list[dict[str, Any]]:
            raise RuntimeError("batch path is buggy")

    rewards = RewardSet(
        [
            {"name": "flaky", "weight": 1.0},
            {"name": "broken_batch", "weight": 1.0},
            {"name": "response_length_penalty", "weight": 1.0},
        ]
    )
    contexts = [RewardContext(t) for t in ("good", "bad", "nan", "none")]
    with caplog.at_level(logging.WARNING):
        for _step in range(3):  # a training loop keeps calling
            scores = rewards.score(contexts)
    assert scores.per_reward["flaky"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert scores.per_reward["broken_batch"].tolist() == [0.5] * 4  # sample by sample
    assert scores.total.tolist() == [2.5, 1.5, 1.5, 1.5]
    assert scores.failures == {"flaky": 3, "broken_batch": 0, "response_length_penalty": 0}
    assert rewards.failures["flaky"] == 9
    assert "cannot score this" in scores.details["flaky"][1]["error"]
    warnings = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(warnings) == 2  # once for flaky, once for broken_batch, not per call
