"""Tokenizers: round trips, specs, rebuilding from meta.json, and tiktoken offline."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load

from mlharness.errors import DatasetError
from mlharness.lm import tokenizers as tk
from mlharness.lm.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    load_tokenizer,
    split_for_batching,
)

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n  indented line\n\t tabbed\nthe end, the end.\n"
) * 20


def local_encoding() -> tiktoken.Encoding:
    """A tiktoken encoding built offline: the 256 bytes plus a few merges."""
    ranks = {bytes([i]): i for i in range(256)}
    for rank, token in enumerate([b"th", b"he", b"the", b" t", b" the", b"ea"], start=256):
        ranks[token] = rank
    return tiktoken.Encoding(
        name="test_bytes",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 300},
    )


# --------------------------------------------------------------------------- char


def test_char_round_trip_and_vocabulary() -> None:
    tok = CharTokenizer.from_text("hello, wörld\n")
    assert tok.chars == "\n ,dehlorwö"  # sorted by code point
    assert tok.vocab_size == 11
    ids = tok.encode("hello wörld")
    assert ids[:2] == [tok.chars.index("h"), tok.chars.index("e")]
    assert tok.decode(ids) == "hello wörld"
    assert tok.encode("") == []
    assert tok.spec() == {"type": "char", "chars": "\n ,dehlorwö"}


def test_char_encode_array_matches_a_python_lookup() -> None:
    text = "Wie geht's? Grüße 👋 und 日本語\n" * 50
    tok = CharTokenizer.from_text(text)
    stoi = {c: i for i, c in enumerate(tok.chars)}
    assert tok.encode_array(text).tolist() == [stoi[c] for c in text]


@pytest.mark.parametrize("prompt", ["abz", "ab😀"])  # inside and above the lookup table
def test_char_unknown_character_is_a_clear_error(prompt: str) -> None:
    tok = CharTokenizer.from_text("abc")
    char = prompt[-1]
    with pytest.raises(DatasetError) as info:
        tok.encode(prompt)
    assert str(info.value) == (
        f"Character {char!r} (U+{ord(char):04X}) is not in this char-level vocabulary of 3 "
        "characters; use only characters of the training text."
    )


# --------------------------------------------------------------------------- bpe


def test_bpe_train_save_load_round_trip(tmp_path: Path) -> None:
    tok = BPETokenizer.train(TEXT, vocab_size=300)
    assert tok.vocab_size == 300
    assert tok.spec() == {"type": "bpe", "vocab_size": 300}
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT.encode())  # it learned merges
    assert tok.decode(ids) == TEXT
    assert tok.encode_array(TEXT).tolist() == ids

    tok.save(tmp_path / "tokenizer.json")
    again = BPETokenizer.load(tmp_path / "tokenizer.json")
    assert again.vocab_size == 300
    assert again.encode(TEXT) == ids
    assert again.decode(again.encode("unseen: ☃ é")) == "unseen: ☃ é"  # byte-level: no unknowns


def test_bpe_trains_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    assert BPETokenizer.train(path, 280).encode(TEXT) == BPETokenizer.train(TEXT, 280).encode(TEXT)


def test_bpe_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        BPETokenizer.load(tmp_path / "tokenizer.json")
    assert str(info.value) == (
        f"The BPE tokenizer file {tmp_path / 'tokenizer.json'} is missing: run "
        "`mlx prepare <experiment> --config ...` to create it."
    )


def test_split_for_batching_cuts_only_where_tokens_cannot_change() -> None:
    pieces = split_for_batching(TEXT, size=40)
    assert len(pieces) > 10
    assert "".join(pieces) == TEXT
    for left, right in itertools.pairwise(pieces):
        assert left.endswith("\n") and not left[-2].isspace() and not right[0].isspace()
    tok = BPETokenizer.train(TEXT, vocab_size=300)
    whole = tok.encode(TEXT)
    assert [i for piece in pieces for i in tok.encode(piece)] == whole
    assert split_for_batching("") == [""]
    assert split_for_batching("no newline at all " * 10, size=5) == ["no newline at all " * 10]


# tiktoken's pre-tokenizer patterns for cl100k_base and o200k_base (tiktoken_ext.openai_public).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
# Seams where a careless cut would change tokens, in every pattern above.
SEAMS = (
    "a\n\nb c\n\n\nd e:\n/f g:\n\nh x  \nY \n  z 7\n8 12\n345 \u00e9\n\u00fc it\n's "
    "end.\nNext (\n) q\n\tr s \n t u\r\nv w\n"
) * 3


@pytest.mark.parametrize(
    "pattern", [GPT2_PATTERN, CL100K_PATTERN, O200K_PATTERN], ids=["gpt2", "cl100k", "o200k"]
)
def test_split_for_batching_keeps_tiktoken_tokens(pattern: str) -> None:
    """Cut at every allowed place, the pieces encode to the whole text's ids.

    The merges join the characters around each seam, so a cut that moved a pre-token
    boundary would change an id."""
    ranks = {bytes([i]): i for i in range(256)}
    merges = [b"\n\n", b":\n", b"\n/", b":\n/", b" \n", b"  \n", b"\n ", b"\n8", b".\n", b"\r\n"]
    for rank, token in enumerate(merges, start=256):
        ranks[token] = rank
    enc = tiktoken.Encoding(name="seams", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    pieces = split_for_batching(SEAMS, size=1)
    assert len(pieces) > 10 and "".join(pieces) == SEAMS
    assert [i for piece in pieces for i in enc.encode_ordinary(piece)] == enc.encode_ordinary(SEAMS)


# --------------------------------------------------------------------------- tiktoken


def test_tiktoken_with_a_local_encoding() -> None:
    tok = TiktokenTokenizer(local_encoding())
    assert tok.vocab_size == 301
    ids = tok.encode("the theatre")
    assert ids[0] == 258  # "the" merged
    assert tok.decode(ids) == "the theatre"
    assert tok.encode_array(TEXT).tolist() == tok.encode(TEXT)
    assert tok.encode("<|endoftext|>") != [300]  # special tokens are plain text
    # Over 64k characters the text is encoded in pieces, in parallel threads.
    long = ("<|endoftext|>" + TEXT) * 60
    assert len(split_for_batching(long)) > 2
    assert tok.encode_array(long).tolist() == tok.encode(long)
    assert tok.spec() == {"type": "tiktoken", "encoding": "test_bytes"}


def test_load_tokenizer_from_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    char = load_tokenizer(tmp_path, {"tokenizer": {"type": "char", "chars": "ab"}})
    assert isinstance(char, CharTokenizer) and char.decode([1, 0]) == "ba"

    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_bytes", local_encoding())
    tik = load_tokenizer(tmp_path, {"tokenizer": {"type": "tiktoken", "encoding": "test_bytes"}})
    assert isinstance(tik, TiktokenTokenizer) and tik.vocab_size == 301

    BPETokenizer.train(TEXT, 270).save(tmp_path / "tokenizer.json")
    bpe = load_tokenizer(tmp_path, {"tokenizer": {"type": "bpe", "vocab_size": 270}})
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 270

    with pytest.raises(DatasetError) as info:
        load_tokenizer(tmp_path, {"tokenizer": {"type": "sentencepiece"}})
    assert str(info.value) == (
        f"{tmp_path / 'meta.json'} describes no tokenizer this version knows "
        "({'type': 'sentencepiece'}): run `mlx prepare <experiment> --config ...` to create "
        "it anew."
    )


def test_load_tokenizer_without_meta_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_tokenizer(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'meta.json'} is missing: run `mlx prepare <experiment> --config ...` "
        "to create it."
    )


@pytest.fixture
def no_tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty tiktoken cache, and gpt2 not loaded in this process."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    yield


@pytest.mark.usefixtures("no_tiktoken_cache")
def test_tiktoken_offline_fails_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(blobpath: str) -> bytes:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    with pytest.raises(DatasetError) as info:
        TiktokenTokenizer("gpt2")
    assert str(info.value) == (
        "The tiktoken encoding 'gpt2' could not be downloaded (ConnectionError: Name or "
        "service not known). Offline, set TIKTOKEN_CACHE_DIR to a directory holding the "
        'cached encoding files, or use prepare.tokenizer = "char" or "bpe".'
    )


@pytest.mark.usefixtures("no_tiktoken_cache")
def test_tiktoken_download_that_hangs_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network that drops packets: requests.get would wait for minutes; we do not."""
    release = threading.Event()

    def hang(blobpath: str) -> bytes:
        release.wait(10)
        raise ConnectionError("released")

    monkeypatch.setattr(tiktoken.load, "read_file", hang)
    monkeypatch.setattr(tk, "_CACHE_WAIT", 0.05)
    monkeypatch.setattr(tk, "_reachable", lambda host: False)
    try:
        with pytest.raises(DatasetError) as info:
            TiktokenTokenizer("gpt2")
    finally:
        release.set()
        for thread in threading.enumerate():
            if thread.name == "tiktoken-gpt2":
                thread.join(5)
    assert "(openaipublic.blob.core.windows.net did not answer)" in str(info.value)
    assert "set TIKTOKEN_CACHE_DIR" in str(info.value)


def test_tiktoken_unknown_encoding() -> None:
    with pytest.raises(DatasetError) as info:
        TiktokenTokenizer("gpt5")
    assert str(info.value).startswith("tiktoken has no encoding 'gpt5'. Use one of ")
    assert "gpt2" in str(info.value)


def test_reachable_is_false_for_a_closed_port() -> None:
    assert tk._reachable("127.0.0.1", port=9, timeout=1.0) is False
