"""Our tokenizers in the forms other tools load: a Hugging Face ``tokenizer.json`` and the
vocabulary lists that a GGUF file holds.

Both forms keep our token ids, so an exported model reads and writes the same ids it was
trained on:

- tiktoken encodings (GPT-2 BPE) become a byte-level BPE: tokens are the mergeable ranks
  (rank = id) spelt in GPT-2's byte-to-unicode alphabet, and each token's merge is found
  by running BPE on its bytes with the merges ranked before it, which rebuilds GPT-2's own
  ``vocab.bpe`` (the same way ``bench/tiktoken_gpt2.py`` rebuilds and checks it).
- the byte-level BPE that ``mlx prepare`` trains is already a ``tokenizers`` tokenizer.
- a char-level vocabulary becomes a ``tokenizers`` WordLevel model over single characters
  for Hugging Face; for GGUF, whose "gpt2" tokenizer is byte-level BPE, each character is
  one token in byte-level spelling, and merges join a multi-byte character's bytes.
- a Hugging Face tokenizer (``hf:PATH``) is saved as it is; in GGUF only GPT-2's kind
  (byte-level BPE split by GPT-2's pattern), whose vocabulary and merges are read as the
  BPE ``mlx prepare`` trains.

tokenizers and tiktoken are imported only by the functions that need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import ModelError
from mlharness.lm.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
)
from mlharness.runs.io import atomic_write_json

if TYPE_CHECKING:
    import tiktoken
    import tokenizers

# tiktoken's GPT-2 pre-tokenizer pattern (r50k_pat_str), today's spelling and the original
# one of GPT-2's encoder.py: the same split, which llama.cpp calls the "gpt-2" pre-tokenizer.
GPT2_PATTERNS = frozenset(
    {
        r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
        r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    }
)


@dataclass
class Vocabulary:
    """A tokenizer as BPE files spell it: the token of every id, merges, special tokens.

    ``tokens[i]`` is id i's text in GPT-2's byte-level alphabet (None for an id no token
    has); ``special`` maps the ids of special tokens (``<|endoftext|>``) to their text.
    """

    tokens: list[str | None]
    merges: list[tuple[str, str]]
    special: dict[int, str] = field(default_factory=dict)
    pre_tokenizer: str = "gpt-2"  # llama.cpp's name of the split before BPE

    @property
    def eos_id(self) -> int | None:
        """GPT-2's end-of-text token, when the vocabulary has one."""
        return next((i for i, text in self.special.items() if text == "<|endoftext|>"), None)


@cache
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's byte-to-unicode table: byte b is spelt ``byte_alphabet()[b]``.

    Printable bytes stand for themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD)
    become chr(256), chr(257), ... in byte order, so every token is printable text.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return tuple(table[b] for b in range(256))


def byte_level(data: bytes) -> str:
    alphabet = byte_alphabet()
    return "".join(alphabet[b] for b in data)


# ----------------------------------------------------------------------------- vocabularies


def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    """The byte-level BPE vocabulary of any of our tokenizers (what GGUF stores)."""
    if isinstance(tokenizer, TiktokenTokenizer):
        return _tiktoken_vocabulary(tokenizer.encoding)
    if isinstance(tokenizer, BPETokenizer):
        return _bpe_vocabulary(tokenizer.tokenizer)
    if isinstance(tokenizer, CharTokenizer):
        return _char_vocabulary(tokenizer.chars)
    if isinstance(tokenizer, HFTokenizer):
        return _hf_vocabulary(tokenizer)
    raise ModelError(f"Cannot export a {type(tokenizer).__name__}: no exporter knows it.")


def _hf_vocabulary(tokenizer: HFTokenizer) -> Vocabulary:
    """A Hugging Face tokenizer that is GPT-2's kind: byte-level BPE split by GPT-2's
    pattern (``ByteLevel`` with ``use_regex``), nothing normalized, no prefix space."""
    backend = getattr(tokenizer.tokenizer, "backend_tokenizer", None)
    data = json.loads(backend.to_str()) if backend is not None else {}
    split = data.get("pre_tokenizer") or {}
    gpt2_kind = (
        (data.get("model") or {}).get("type") == "BPE"
        and data.get("normalizer") is None
        and split.get("type") == "ByteLevel"
        and split.get("use_regex", True)
        and not split.get("add_prefix_space")
    )
    if backend is None or not gpt2_kind:
        raise ModelError(
            f"The tokenizer of {tokenizer.directory} is not a byte-level BPE split as GPT-2's, "
            "the only kind this GGUF writer spells: export with --format hf, then run "
            "llama.cpp's convert_hf_to_gguf.py on that directory."
        )
    return _bpe_vocabulary(backend)


def _tiktoken_vocabulary(encoding: tiktoken.Encoding) -> Vocabulary:
    """Tokens and GPT-2-style merges of a tiktoken encoding; ranks are ids."""
    special = {encoding.encode_single_token(s): s for s in encoding.special_tokens_set}
    ranks: dict[bytes, int] = {}
    tokens: list[str | None] = []
    for i in range(encoding.n_vocab):
        if i in special:
            tokens.append(special[i])
            continue
        try:
            data = encoding.decode_single_token_bytes(i)
        except KeyError:  # an id no token has (cl100k_base skips one)
            tokens.append(None)
            continue
        ranks[data] = i
        tokens.append(byte_level(data))
    merges = [
        (byte_level(left), byte_level(right))
        for data, rank in sorted(ranks.items(), key=lambda item: item[1])
        if len(data) > 1
        for left, right in [_merge_of(data, rank, ranks)]
    ]
    pattern = encoding._pat_str  # tiktoken has no public accessor for it
    return Vocabulary(tokens, merges, special, "gpt-2" if pattern in GPT2_PATTERNS else pattern)


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair whose merge made ``token``: BPE on its bytes with the merges ranked before it."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        candidates = [
            (r, i)
            for i in range(len(parts) - 1)
            if (r := ranks.get(parts[i] + parts[i + 1], rank)) < rank
        ]
        if not candidates:
            raise ModelError(
                f"The tiktoken token {token!r} (id {rank}) is not a merge of tokens ranked "
                "before it, so it has no BPE merge: export this encoding with --format hf."
            )
        _, i = min(candidates)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def _bpe_vocabulary(tokenizer: tokenizers.Tokenizer) -> Vocabulary:
    """The tokens and merges of the byte-level BPE ``mlx prepare`` trained."""
    data = json.loads(tokenizer.to_str())
    tokens: list[str | None] = [None] * tokenizer.get_vocab_size()
    added = data.get("added_tokens") or []
    for text, i in [*data["model"]["vocab"].items(), *((a["content"], a["id"]) for a in added)]:
        tokens[i] = text
    merges = [m if isinstance(m, list) else m.split(" ", 1) for m in data["model"]["merges"]]
    special = {a["id"]: a["content"] for a in added if a.get("special")}
    return Vocabulary(tokens, [(a, b) for a, b in merges], special)


def _char_vocabulary(chars: str) -> Vocabulary:
    """One token per character; merges rebuild a multi-byte character from its bytes."""
    tokens: list[str | None] = [byte_level(c.encode("utf-8")) for c in chars]
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for char in chars:
        data = char.encode("utf-8")
        for end in range(2, len(data) + 1):  # left to right: (b0, b1), (b0b1, b2), ...
            pair = (byte_level(data[: end - 1]), byte_level(data[end - 1 : end]))
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
    return Vocabulary(tokens, merges)


# ----------------------------------------------------------------------------- Hugging Face


def hf_tokenizer(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """A ``tokenizers`` tokenizer that gives our ids for the same text."""
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import Tokenizer as HFTokenizer

        return HFTokenizer.from_str(tokenizer.tokenizer.to_str())  # a copy
    if isinstance(tokenizer, CharTokenizer):
        return _char_tokenizer(tokenizer.chars)
    if isinstance(tokenizer, TiktokenTokenizer):
        return _tiktoken_tokenizer(tokenizer.encoding)
    raise ModelError(f"Cannot export a {type(tokenizer).__name__}: no exporter knows it.")


def _char_tokenizer(chars: str) -> tokenizers.Tokenizer:
    """WordLevel over single characters; decoding joins them with nothing in between.

    No unknown token, as ours: a character outside the vocabulary is an error.
    """
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf


def _tiktoken_tokenizer(encoding: tiktoken.Encoding) -> tokenizers.Tokenizer:
    """Byte-level BPE with the encoding's own pre-tokenizer pattern and GPT-2's merges."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = _tiktoken_vocabulary(encoding)
    ids = {text: i for i, text in enumerate(vocab.tokens) if text is not None}
    hf = HFTokenizer(models.BPE(ids, vocab.merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(encoding._pat_str), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(text, special=True) for text in vocab.special.values()])
    return hf


def save_hf_tokenizer(directory: Path, tokenizer: Tokenizer, block_size: int) -> int | None:
    """``tokenizer.json`` and ``tokenizer_config.json`` in ``directory``; the end-of-text id.

    A Hugging Face tokenizer (``hf:PATH`` data) is saved as it is, with its own special
    tokens; ours get GPT-2's ``<|endoftext|>`` as eos when they have it.
    """
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.tokenizer.save_pretrained(str(directory))
        eos_id: int | None = tokenizer.tokenizer.eos_token_id
        return eos_id
    hf = hf_tokenizer(tokenizer)
    eos = hf.token_to_id("<|endoftext|>")  # GPT-2 BPE has it; our own vocabularies do not
    hf.save(str(directory / "tokenizer.json"))
    config = hf_tokenizer_config(None if eos is None else "<|endoftext|>", block_size)
    atomic_write_json(directory / "tokenizer_config.json", config)
    return eos


def hf_tokenizer_config(eos: str | None, block_size: int) -> dict[str, Any]:
    """``tokenizer_config.json``: the fast tokenizer as written, no text clean-up on decode.

    ``clean_up_tokenization_spaces`` would turn " ." into "." when decoding, which is not
    what the model wrote. GPT-2's end-of-text token is also its bos and unk token.
    """
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    if eos is not None:
        config.update(bos_token=eos, eos_token=eos, unk_token=eos)
    return config
