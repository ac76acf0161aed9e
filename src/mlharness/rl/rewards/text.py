"""Text helpers the rewards share: thinking/answer regions, words, numbers, letters.

Model output is messy, small models' most of all: tags go missing, stay open, repeat, or
come out as ``< Think >``. Every reward reads completions through :func:`split_regions`, so
they all agree on what the "answer" of a malformed completion is.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][\w:.-]*)\s*>")


@dataclass(frozen=True)
class Regions:
    """A completion split at its think tags.

    ``thinking`` is the first think block's text; ``answer`` what follows its closing tag;
    both have stray tags removed and are stripped. The rules, in order:

    - no tags at all: no thinking, the whole text is the answer;
    - a closing tag: thinking runs from the first opening tag before it (or from the start,
      when the opening tag is missing, as when a chat template put it into the prompt);
      the answer is everything after it;
    - an opening tag that is never closed: all after it is thinking, and there is no answer
      (the model never finished thinking). Text before it is ``prefix``.

    >>> r = split_regions("<think>2 + 2 is 4</think> 4")
    >>> r.thinking, r.answer, r.well_formed
    ('2 + 2 is 4', '4', True)
    >>> split_regions("<think>still going").answer
    ''
    """

    thinking: str
    answer: str
    prefix: str
    start_count: int
    end_count: int
    closed: bool
    """A closing tag ends the thinking (an opening tag may be missing)."""
    well_formed: bool
    """Exactly one opening tag at the very start and exactly one closing tag after it."""

    @property
    def has_tags(self) -> bool:
        return self.start_count > 0 or self.end_count > 0

    @property
    def unclosed(self) -> bool:
        return self.start_count > 0 and not self.closed


@functools.lru_cache(maxsize=64)
def tag_pattern(tag: str) -> re.Pattern[str]:
    """A pattern for ``tag`` that also matches ``<Think>``, ``< think >``, ``</ think>``."""
    m = _TAG.fullmatch(tag.strip())
    if m is None:  # not an XML-like tag: match it literally
        return re.compile(re.escape(tag))
    slash = r"/\s*" if m.group(1) else ""
    return re.compile(rf"<\s*{slash}{re.escape(m.group(2))}\s*>", re.IGNORECASE)


def split_regions(text: str, start_tag: str = "<think>", end_tag: str = "</think>") -> Regions:
    if not start_tag.strip() or not end_tag.strip():  # a format without thinking
        return Regions("", text.strip(), "", 0, 0, closed=False, well_formed=False)
    start_re, end_re = tag_pattern(start_tag), tag_pattern(end_tag)
    starts, ends = list(start_re.finditer(text)), list(end_re.finditer(text))

    def clean(part: str) -> str:
        return end_re.sub(" ", start_re.sub(" ", part)).strip()

    if not starts and not ends:
        return Regions("", text.strip(), "", 0, 0, closed=False, well_formed=False)
    if not ends:
        first = starts[0]
        return Regions(
            thinking=clean(text[first.end() :]),
            answer="",
            prefix=clean(text[: first.start()]),
            start_count=len(starts),
            end_count=0,
            closed=False,
            well_formed=False,
        )
    close = ends[0]
    opener = next((s for s in starts if s.start() < close.start()), None)
    think_from = opener.end() if opener else 0
    prefix = text[: opener.start()] if opener else ""
    well_formed = len(starts) == 1 and len(ends) == 1 and opener is not None and not prefix.strip()
    return Regions(
        thinking=clean(text[think_from : close.start()]),
        answer=clean(text[close.end() :]),
        prefix=clean(prefix),
        start_count=len(starts),
        end_count=len(ends),
        closed=True,
        well_formed=well_formed,
    )


def count_words(text: str) -> int:
    """Whitespace-separated words: cheap, and what people mean by "a 50-word answer"."""
    return len(text.split())


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str) -> list[str]:
    """Lower-case alphanumeric tokens: the words two texts can share."""
    return _WORD.findall(text.lower())


# Commas only as thousands separators ("1,234"), so "3,4" is two numbers; "$" and a
# leading minus are part of a number; a word character just before a digit ("x2") is not.
_NUMBER = re.compile(
    r"(?<![\w.])(-\s?)?\$?\s?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
)


def extract_numbers(text: str) -> list[float]:
    """Every number in ``text``, in order; ``$1,234.50`` is 1234.5, ``-3`` is -3.

    >>> extract_numbers("He paid $1,234.50 for 3 items, -2 left; 12.5% off")
    [1234.5, 3.0, -2.0, 12.5]
    """
    values = []
    for m in _NUMBER.finditer(text):
        token = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
        try:
            values.append(float(token))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return values


_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")


def final_number(text: str) -> float | None:
    """The number a text gives as its result, or None.

    GSM8K's ``#### 72`` wins, then a LaTeX ``\\boxed{72}``, then the last number.

    >>> final_number("Natalia sold 48/2 = 24 clips in May. 48+24 = 72\\n#### 72")
    72.0
    >>> final_number("So the answer is 1,000 dollars.")
    1000.0
    """
    if "####" in text:
        numbers = extract_numbers(text.rsplit("####", 1)[1])
        if numbers:
            return numbers[0]
    boxed = _BOXED.findall(text)
    if boxed:
        numbers = extract_numbers(boxed[-1])
        if numbers:
            return numbers[0]
    numbers = extract_numbers(text)
    return numbers[-1] if numbers else None
