"""Tokenizers as exports spell them: GPT-2's byte alphabet, merges rebuilt from tiktoken
ranks, and (where GPT-2's files are cached offline) GPT-2's own vocab.bpe and encoding."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")

from mlharness.lm.export_tokenizer import (  # noqa: E402
    byte_alphabet,
    byte_level,
    hf_tokenizer,
    vocabulary,
)
from mlharness.lm.tokenizers import TiktokenTokenizer  # noqa: E402

GPT2_FILES = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  naïve 日本 👋 x's 12345"


def test_byte_alphabet_is_gpt2s() -> None:
    alphabet = byte_alphabet()
    assert len(set(alphabet)) == 256
    assert set(alphabet) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    assert byte_level(b" \n\t") == "ĠĊĉ" and byte_level("é".encode()) == "Ã©"
    assert byte_level(b"Az~") == "Az~"  # printable bytes stand for themselves


def test_merges_are_rebuilt_from_ranks_and_encode_as_tiktoken() -> None:
    ranks = {bytes([i]): i for i in range(256)}
    for token in [b"he", b"ll", b"hell", b"o ", b"hello ", b"wo", b"rl", b"worl"]:
        ranks[token] = len(ranks)
    enc = tiktoken.Encoding(
        name="test_merges",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={},
    )
    tok = TiktokenTokenizer(enc)
    vocab = vocabulary(tok)
    assert vocab.merges == [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("o", "Ġ"),
        ("hell", "oĠ"),  # "hello " by BPE with the merges before it: he, ll, hell, then "o "
        ("w", "o"),
        ("r", "l"),
        ("wo", "rl"),
    ]
    assert vocab.tokens[256:] == ["he", "ll", "hell", "oĠ", "helloĠ", "wo", "rl", "worl"]
    hf = hf_tokenizer(tok)
    for text in ["hello world", "hello  hello world's", TEXT]:
        assert hf.encode(text).ids == enc.encode_ordinary(text), text


def _gpt2_cached() -> Path | None:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = Path(cache or Path(tempfile.gettempdir()) / "data-gym-cache")
    names = ("vocab.bpe", "encoder.json")
    files = [folder / hashlib.sha1((GPT2_FILES + n).encode()).hexdigest() for n in names]
    return files[0] if all(f.is_file() for f in files) else None


@pytest.mark.skipif(
    _gpt2_cached() is None,
    reason="GPT-2's BPE files are not in the tiktoken cache (offline: bench/tiktoken_gpt2.py "
    "fills a TIKTOKEN_CACHE_DIR with them)",
)
def test_gpt2_merges_equal_gpt2s_vocab_bpe_and_encode_alike() -> None:
    vocab_bpe = _gpt2_cached()
    assert vocab_bpe is not None
    tok = TiktokenTokenizer("gpt2")
    vocab = vocabulary(tok)
    lines = vocab_bpe.read_text(encoding="utf-8").splitlines()[1:]
    assert [f"{a} {b}" for a, b in vocab.merges] == [line for line in lines if line]
    assert vocab.eos_id == 50256 and vocab.pre_tokenizer == "gpt-2"
    hf = hf_tokenizer(tok)
    assert hf.encode(TEXT * 20).ids == tok.encode(TEXT * 20)


def test_a_token_that_is_no_merge_of_earlier_ones_is_refused() -> None:
    from mlharness.errors import ModelError

    ranks = {bytes([i]): i for i in range(256)}
    ranks[b"abc"] = 256  # neither "ab" nor "bc" ranks before it
    enc = tiktoken.Encoding(
        name="bad", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={}
    )
    with pytest.raises(ModelError, match=r"b'abc' \(id 256\) is not a merge of tokens ranked"):
        vocabulary(TiktokenTokenizer(enc))
