"""Rewards for what an answer says: its tone, its closeness to a reference, its steps.

The reference-based ones share one policy for a missing reference: they return
``missing_reference_reward`` (default 0.0) for every completion of that prompt. A constant
within a prompt's group gives GRPO no advantage either way, so such prompts neither teach
nor mislead, and 0.0 keeps them from inflating the logged mean reward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from mlharness.rl.rewards.base import BaseReward, RewardContext, RewardRegistry
from mlharness.rl.rewards.text import content_words, count_words, split_regions

DEFAULT_PHRASES = (
    "as an ai",
    "as a language model",
    "i cannot",
    "i can't",
    "i'm not sure",
    "i am not sure",
    "i don't know",
    "i do not know",
    "i apologize",
    "sorry",
    "let me think",
    "hmm",
)
"""Hedges, refusals and thinking-aloud that do not belong in a final answer."""


def answer_text(context: RewardContext, use_answer_region: bool = True) -> str:
    """The text a reward judges: the answer region, or the whole text without tags.

    An unclosed think block has no answer region, so it yields "" (no answer given).
    """
    r = split_regions(context.generated_text, context.think_start_tag, context.think_end_tag)
    if use_answer_region:
        return r.answer
    return " ".join(p for p in (r.prefix, r.thinking, r.answer) if p)


def reference_text(context: RewardContext) -> str | None:
    """The reference's answer (its answer region when it has think tags), or None."""
    ref = context.reference_completion
    if ref is None or not str(ref).strip():
        return None
    r = split_regions(str(ref), context.think_start_tag, context.think_end_tag)
    return r.answer or r.thinking or None


@RewardRegistry.register("answer_quality")
class AnswerQuality(BaseReward):
    """A clean final answer: no hedging, refusals, thinking-aloud, leaked tags or loops.

    Starts at 1.0 and subtracts ``phrase_penalty`` for each listed phrase found in the
    answer region (case-insensitive, each phrase once), once more if think tags leak into
    it (a second opening or closing tag), and once more if a sentence is repeated; the
    total deduction is capped at ``max_penalty``. An empty answer, or one without a single
    letter or digit, scores 0, and so does a think block never closed (there is no
    answer). A short answer is not penalized: "72" can be the whole right answer.

    Options: ``max_penalty`` (1.0), ``phrase_penalty`` (0.25), ``phrases`` (a list of
    lower-case phrases; default :data:`DEFAULT_PHRASES`).

    >>> r = AnswerQuality({})
    >>> r.compute(RewardContext("<think>...</think> The capital of France is Paris."))["reward"]
    1.0
    >>> r.compute(RewardContext("<think>...</think> Hmm, I'm not sure, sorry."))["reward"]
    0.25
    """

    defaults: ClassVar[dict[str, Any]] = {
        "max_penalty": 1.0,
        "phrase_penalty": 0.25,
        "phrases": list(DEFAULT_PHRASES),
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.max_penalty = self.number("max_penalty", minimum=0, maximum=1)
        self.phrase_penalty = self.number("phrase_penalty", minimum=0, maximum=1)
        phrases = self.config.get("phrases", self.defaults["phrases"])
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            from mlharness.errors import ConfigError

            raise ConfigError(
                f"The 'phrases' option of reward '{self.name}' must be a list of strings. "
                f"Got {phrases!r} instead."
            )
        self.phrases = [
            re.compile(r"(?<!\w)" + re.escape(p.lower().strip()) + r"(?!\w)")
            for p in phrases
            if p.strip()
        ]

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        r = split_regions(context.generated_text, context.think_start_tag, context.think_end_tag)
        answer = r.answer
        if not any(ch.isalnum() for ch in answer):
            return {"reward": 0.0, "deductions": 0}
        lower = answer.lower()
        deductions = sum(1 for p in self.phrases if p.search(lower))
        if r.start_count > 1 or r.end_count > 1:
            deductions += 1
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", lower) if s.strip()]
        if len(sentences) != len(set(sentences)):
            deductions += 1
        penalty = min(self.max_penalty, deductions * self.phrase_penalty)
        return {"reward": max(0.0, 1.0 - penalty), "deductions": deductions}


class _ReferenceReward(BaseReward):
    """Shared option for rewards that need a reference: what to return without one."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.missing_reward = self.number("missing_reference_reward", minimum=0, maximum=1)

    def missing(self) -> dict[str, Any]:
        return {"reward": self.missing_reward, "missing_reference": True}


@RewardRegistry.register("semantic_similarity")
class SemanticSimilarity(_ReferenceReward):
    """Closeness of the answer to the reference: TF-IDF cosine similarity (scikit-learn).

    Both texts are vectorized together (unigrams, single characters and digits kept, so
    "4" matches "4") and compared with a sparse cosine; a pair with no shared vocabulary
    at all scores 0. Then, in order:

    - an answer shorter than ``min_length`` characters (or than the reference, if that is
      shorter) is scaled by its share of that length: a terse fragment cannot score high
      by matching one rare word;
    - ``apply_length_penalty``: times ``0.5 + 0.5 * shorter/longer`` (word counts);
    - ``apply_verbosity_penalty``: minus ``verbosity_penalty_strength`` per word beyond
      the reference's length (as a factor, floored at 0).

    Empty text or an unclosed think block scores 0; no reference gives
    ``missing_reference_reward``.

    Options: ``method`` ("tfidf", the only one), ``min_length`` (10),
    ``apply_length_penalty`` (false), ``apply_verbosity_penalty`` (false),
    ``verbosity_penalty_strength`` (0.01), ``use_answer_region`` (true),
    ``missing_reference_reward`` (0.0).

    >>> r = SemanticSimilarity({})
    >>> good = RewardContext("<think>.</think> The sky is blue during the day.",
    ...                      reference_completion="During the day the sky is blue.")
    >>> round(r.compute(good)["reward"], 2)
    1.0
    >>> bad = RewardContext("<think>.</think> Cats purr softly.",
    ...                     reference_completion="During the day the sky is blue.")
    >>> r.compute(bad)["reward"]
    0.0
    """

    defaults: ClassVar[dict[str, Any]] = {
        "method": "tfidf",
        "min_length": 10,
        "apply_length_penalty": False,
        "apply_verbosity_penalty": False,
        "verbosity_penalty_strength": 0.01,
        "use_answer_region": True,
        "missing_reference_reward": 0.0,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.method = self.choice("method", ["tfidf"])
        self.min_length = self.integer("min_length", minimum=0)
        self.length_penalty = self.flag("apply_length_penalty")
        self.verbosity_penalty = self.flag("apply_verbosity_penalty")
        self.verbosity_strength = self.number("verbosity_penalty_strength", minimum=0)
        self.use_answer_region = self.flag("use_answer_region")

    def compute(self, context: RewardContext) -> dict[str, Any]:
        return self.compute_batch([context])[0]

    def compute_batch(self, contexts: Sequence[RewardContext]) -> list[dict[str, Any]]:
        # Imported here: scikit-learn takes a second to import, and most runs never need it.
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics.pairwise import cosine_similarity

        # One vectorizer per pair: a text's score must not depend on its batch neighbours.
        vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", lowercase=True)
        results = []
        for context in contexts:
            self.validate_inputs(context)
            reference = reference_text(context)
            if reference is None:
                results.append(self.missing())
                continue
            answer = answer_text(context, self.use_answer_region)
            if not answer.strip():
                results.append({"reward": 0.0, "similarity": 0.0})
                continue
            try:
                matrix = vectorizer.fit_transform([answer, reference])  # sparse (2, vocab)
                similarity = float(cosine_similarity(matrix[0], matrix[1])[0, 0])
            except ValueError:  # empty vocabulary: nothing but punctuation on one side
                similarity = 0.0
            reward = min(1.0, max(0.0, similarity))
            shortest = min(self.min_length, len(reference.strip()))
            if shortest > 0 and len(answer.strip()) < shortest:
                reward *= len(answer.strip()) / shortest
            a_words, r_words = count_words(answer), count_words(reference)
            if self.length_penalty:
                reward *= 0.5 + 0.5 * min(a_words, r_words) / max(a_words, r_words, 1)
            if self.verbosity_penalty:
                excess = max(0, a_words - r_words)
                reward *= max(0.0, 1.0 - self.verbosity_strength * excess)
            results.append({"reward": reward, "similarity": similarity})
        return results


_STEP_MARKER = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):]|[-*•]|step\s*\d+\s*[-:.)]?)\s*", re.I)
_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "him",
        "his",
        "how",
        "its",
        "may",
        "new",
        "now",
        "old",
        "see",
        "two",
        "who",
        "did",
        "get",
        "let",
        "put",
        "say",
        "she",
        "too",
        "use",
        "this",
        "that",
        "with",
        "from",
        "they",
        "then",
        "than",
        "them",
        "were",
        "what",
        "when",
        "will",
        "into",
        "each",
        "which",
        "their",
        "there",
        "these",
        "those",
        "would",
        "about",
        "after",
        "first",
        "next",
        "finally",
        "step",
    }
)


def parse_steps(text: str) -> list[str]:
    """Steps of a worked solution: its numbered or bulleted lines, else its lines, else
    its sentences.

    >>> parse_steps("1. Add 2 and 3.\\n2. Double it.\\n#### 10")
    ['Add 2 and 3.', 'Double it.']
    """
    lines = [line for line in text.splitlines() if line.strip()]
    marked = [
        _STEP_MARKER.sub("", line, count=1).strip() for line in lines if _STEP_MARKER.match(line)
    ]
    if marked:
        return [m for m in marked if m]
    if len(lines) > 1:
        return [line.strip() for line in lines]
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def step_keywords(step: str) -> set[str]:
    """Words that make a step recognizable: numbers, and words of 3+ letters not stopwords."""
    return {w for w in content_words(step) if w.isdigit() or (len(w) > 2 and w not in _STOPWORDS)}


@RewardRegistry.register("steps_coverage")
class StepsCoverage(_ReferenceReward):
    """The share of required steps the completion covers.

    Steps come from ``meta["steps"]`` (a list, or a text with one step per line), else
    from the reference: its numbered (``1.``, ``Step 2:``) or bulleted lines, else its
    lines, else its sentences. A step counts as covered when at least ``match_threshold``
    of its keywords (numbers and 3+-letter non-stopwords) appear in the completion, by
    default anywhere in it, thinking included (``use_answer_region: true`` to look only
    at the answer). Steps without keywords are dropped.

    Empty text scores 0; no steps (no ``meta["steps"]``, no reference) gives
    ``missing_reference_reward``.

    Options: ``match_threshold`` (0.6), ``use_answer_region`` (false),
    ``missing_reference_reward`` (0.0).

    >>> r = StepsCoverage({})
    >>> ctx = RewardContext("First boil the water, then steep the tea leaves.",
    ...                     meta={"steps": ["boil water", "steep tea leaves", "add milk"]})
    >>> round(r.compute(ctx)["reward"], 3)
    0.667
    """

    defaults: ClassVar[dict[str, Any]] = {
        "match_threshold": 0.6,
        "use_answer_region": False,
        "missing_reference_reward": 0.0,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.threshold = self.number("match_threshold", minimum=0, maximum=1)
        self.use_answer_region = self.flag("use_answer_region")

    def compute(self, context: RewardContext) -> dict[str, Any]:
        self.validate_inputs(context)
        steps = self._steps(context)
        if not steps:
            return self.missing()
        words = set(content_words(answer_text(context, self.use_answer_region)))
        if not words:
            return {"reward": 0.0, "covered": 0, "steps": len(steps)}
        covered = sum(1 for kw in steps if len(kw & words) / len(kw) >= self.threshold)
        return {"reward": covered / len(steps), "covered": covered, "steps": len(steps)}

    def _steps(self, context: RewardContext) -> list[set[str]]:
        raw = context.meta.get("steps")
        if isinstance(raw, str):
            texts = parse_steps(raw)
        elif isinstance(raw, (list, tuple)):
            texts = [str(s) for s in raw]
        else:
            ref = reference_text(context)
            texts = parse_steps(ref) if ref else []
        return [kw for kw in (step_keywords(t) for t in texts) if kw]
