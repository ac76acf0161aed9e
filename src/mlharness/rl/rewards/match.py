"""Rewards for verifiable answers: exact text, a number, a multiple-choice letter.

All score 1.0 or 0.0: right or wrong, the cleanest signal GRPO can get. They judge only
correctness, so a correct one-word answer gets full reward; shape and length are other
rewards' concern. Without a reference they return ``missing_reference_reward`` (0.0),
for the reason :mod:`mlharness.rl.rewards.content` gives.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from mlharness.rl.rewards.base import RewardContext, RewardRegistry
from mlharness.rl.rewards.content import _ReferenceReward, answer_text, reference_text
from mlharness.rl.rewards.text import final_number


@RewardRegistry.register("exact_match")
class ExactMatch(_ReferenceReward):
    """1.0 when the answer equals the reference after normalization, else 0.0.

    The reference is ``reference_completion`` (its answer region if it has think tags),
    else ``meta["answer"]``. Normalization: with ``strip``, surrounding whitespace and a
    final period go and inner whitespace runs become one space; without
    ``case_sensitive``, case is folded. With ``use_answer_region`` (default) only the text
    after the closing think tag is compared, so an unclosed think block scores 0.

    Options: ``strip`` (true), ``case_sensitive`` (false), ``use_answer_region`` (true),
    ``missing_reference_reward`` (0.0).

    >>> r = ExactMatch({})
    >>> r.compute(RewardContext("<think>capital?</think> paris.", reference_completion="Paris"))
    {'reward': 1.0}
    """

    defaults: ClassVar[dict[str, Any]] = {
        "strip": True,
        "case_sensitive": False,
        "use_answer_region": True,
        "missing_reference_reward": 0.0,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.strip = self.flag("strip")
        self.case_sensitive = self.flag("case_sensitive")
        self.use_answer_region = self.flag("use_answer_region")

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        reference = reference_text(context)
        if reference is None and context.meta.get("answer") is not None:
            reference = str(context.meta["answer"])
        if reference is None:
            return self.missing()
        answer = answer_text(context, self.use_answer_region)
        if not answer.strip():
            return {"reward": 0.0}
        return {"reward": float(self._normalize(answer) == self._normalize(reference))}

    def _normalize(self, text: str) -> str:
        if self.strip:
            text = " ".join(text.split()).removesuffix(".").strip()
        return text if self.case_sensitive else text.casefold()


@RewardRegistry.register("numeric_match")
class NumericMatch(_ReferenceReward):
    """1.0 when the answer's final number equals the reference's, within ``tolerance``.

    On both sides the number is GSM8K's ``#### N`` if present, else a LaTeX ``\\boxed{N}``,
    else the last number; commas and ``$`` are dropped (``$1,200`` is 1200). The
    reference is ``reference_completion``, else ``meta["answer"]``. Numbers match when
    ``|a - b| <= tolerance * max(1, |b|)`` (absolute near 0, relative for large values).
    An answer without a number, empty text or an unclosed think block scores 0.

    Options: ``tolerance`` (1e-6), ``use_answer_region`` (true),
    ``missing_reference_reward`` (0.0).

    >>> r = NumericMatch({})
    >>> r.compute(RewardContext("<think>48 + 24</think> She sold $72 clips.",
    ...                         reference_completion="48/2 = 24\\n#### 72"))["reward"]
    1.0
    """

    defaults: ClassVar[dict[str, Any]] = {
        "tolerance": 1e-6,
        "use_answer_region": True,
        "missing_reference_reward": 0.0,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.tolerance = self.number("tolerance", minimum=0)
        self.use_answer_region = self.flag("use_answer_region")

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        expected = self._expected(context)
        if expected is None:
            return self.missing()
        got = final_number(answer_text(context, self.use_answer_region))
        if got is None:
            return {"reward": 0.0, "expected": expected, "got": None}
        ok = math.isfinite(got) and abs(got - expected) <= self.tolerance * max(1.0, abs(expected))
        return {"reward": float(ok), "expected": expected, "got": got}

    @staticmethod
    def _expected(context: RewardContext) -> float | None:
        ref = context.reference_completion
        if ref is not None and str(ref).strip():
            number = final_number(str(ref))
            if number is not None:
                return number
        answer = context.meta.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            return float(answer)
        if isinstance(answer, str):
            return final_number(answer)
        return None


_LETTERS = "ABCDEFGHIJ"
# "The answer is (B)", "Answer: C", "correct option is D": a bare letter must be upper case
# there ("the answer is a number" is not a choice); in parentheses either case counts.
_EXPLICIT = re.compile(
    r"\b(?:answer|option|choice)\b[^A-Za-z0-9\n(]{0,6}(?:is\b[^A-Za-z0-9\n(]{0,3})?"
    r"(?:option\s+|choice\s+)?(?:\(([A-Za-z])\)|([A-Z])\b)",
    re.IGNORECASE,
)
_BOXED_LETTER = re.compile(r"\\boxed\s*\{\s*\(?([A-Za-z])\)?\s*\}")
_ONLY_LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")
_LEADING_LETTER = re.compile(r"^\W*\(?([A-Z])[).:]\s")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def parse_choice(answer: str, letters: str = _LETTERS) -> str | None:
    """The option letter an answer picks, or None when it picks none or hedges.

    >>> parse_choice("I think the answer is (c).")
    'C'
    >>> parse_choice("B) Paris")
    'B'
    >>> parse_choice("Either (A) or (B).") is None
    True
    """
    explicit: list[str] = []
    for m in _EXPLICIT.finditer(answer):
        paren, bare = m.group(1), m.group(2)
        # IGNORECASE also lets a lower-case bare letter through; it is not a choice.
        if bare is not None and not bare.isupper():
            continue
        explicit.append((paren or bare or "").upper())
    explicit = [x for x in explicit if x in letters]
    if explicit:
        return explicit[-1]
    for pattern in (_BOXED_LETTER, _ONLY_LETTER, _LEADING_LETTER):
        found = [str(x).upper() for x in pattern.findall(answer) if str(x).upper() in letters]
        if found:
            return found[-1]
    distinct = {str(x) for x in _PAREN_LETTER.findall(answer) if x in letters}
    return distinct.pop() if len(distinct) == 1 else None


@RewardRegistry.register("mcq_accuracy")
class MCQAccuracy(_ReferenceReward):
    """1.0 when the answer picks the correct multiple-choice letter, else 0.0.

    The correct letter is ``meta["answer"]`` or ``meta["correct"]`` (a letter, a 0-based
    index, or an option's text when ``meta["choices"]`` lists them), else whatever letter
    the reference picks. The answer's letter is read from the answer region, most explicit
    form first: "answer is (B)" / "Answer: B", then ``\\boxed{B}``, then an answer that is
    just a letter or starts with one ("B) Paris"), then a single parenthesized letter.
    Naming two letters without an explicit "answer is" is a hedge and picks nothing. When
    no letter is found but ``meta["choices"]`` is given, an answer equal to one option's
    text picks it. Letters beyond the number of ``meta["choices"]`` (or ``letters``) are
    ignored. Empty text, no letter, or an unclosed think block scores 0.

    Options: ``letters`` ("ABCDEFGHIJ"), ``missing_reference_reward`` (0.0).

    >>> r = MCQAccuracy({})
    >>> r.compute(RewardContext("<think>Paris is in France</think> The answer is (B).",
    ...                         meta={"answer": "B"}))["reward"]
    1.0
    """

    defaults: ClassVar[dict[str, Any]] = {"letters": _LETTERS, "missing_reference_reward": 0.0}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        letters = self.config.get("letters", _LETTERS)
        if not (isinstance(letters, str) and letters.isalpha() and letters.isupper()):
            from mlharness.errors import ConfigError

            raise ConfigError(
                f"The 'letters' option of reward '{self.name}' must be upper-case letters "
                f"such as 'ABCD'. Got {letters!r} instead."
            )
        self.letters = letters

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        choices = context.meta.get("choices") or context.meta.get("options")
        choices = [str(c) for c in choices] if isinstance(choices, (list, tuple)) else None
        letters = self.letters[: len(choices)] if choices else self.letters
        correct = self._correct(context, letters, choices)
        if correct is None:
            return self.missing()
        answer = answer_text(context)
        chosen = parse_choice(answer, letters) if answer.strip() else None
        if chosen is None and choices and answer.strip():
            chosen = _by_text(answer, choices, letters)
        return {"reward": float(chosen == correct), "chosen": chosen, "correct": correct}

    @staticmethod
    def _correct(context: RewardContext, letters: str, choices: list[str] | None) -> str | None:
        for key in ("answer", "correct"):
            value = context.meta.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return letters[value] if 0 <= value < len(letters) else None
            if isinstance(value, str) and value.strip():
                letter = parse_choice(value.strip(), letters)
                if letter is None and choices:
                    letter = _by_text(value, choices, letters)
                if letter is not None:
                    return letter
        reference = reference_text(context)
        return parse_choice(reference, letters) if reference else None


def _by_text(answer: str, choices: list[str], letters: str) -> str | None:
    def norm(s: str) -> str:
        return " ".join(s.casefold().split()).strip(" .")

    matches = [letters[i] for i, c in enumerate(choices[: len(letters)]) if norm(c) == norm(answer)]
    return matches[0] if len(matches) == 1 else None
