"""bench/tiktoken_gpt2.py: data-gym files rebuilt from mergeable ranks load back in tiktoken."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "tiktoken_gpt2.py"
spec = importlib.util.spec_from_file_location("tiktoken_gpt2", SCRIPT)
assert spec is not None and spec.loader is not None
gpt2_cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpt2_cache)
EXPECTED = dict(gpt2_cache.EXPECTED)


def trained_ranks() -> dict[bytes, int]:
    """Mergeable ranks as BPE training makes them: merges of merges, and non-printable bytes."""
    ranks = {bytes([b]): rank for rank, b in enumerate(gpt2_cache.data_gym_alphabet())}
    for token in [b"th", b"e ", b"the ", b"\n\n", b"\xc3\xa9", b"\xc3\xa9t", b"the \n\n", b"ab"]:
        ranks[token] = len(ranks)
    return ranks


def test_rebuilt_files_load_back_to_the_same_ranks(tmp_path: Path) -> None:
    ranks = trained_ranks()
    vocab_bpe, encoder_json = gpt2_cache.data_gym_files(ranks)
    assert vocab_bpe.startswith(b"#version: 0.2\n") and vocab_bpe.endswith(b"\n")
    assert json.loads(encoder_json)["<|endoftext|>"] == len(ranks)
    (tmp_path / "vocab.bpe").write_bytes(vocab_bpe)
    (tmp_path / "encoder.json").write_bytes(encoder_json)
    loaded = data_gym_to_mergeable_bpe_ranks(
        str(tmp_path / "vocab.bpe"), str(tmp_path / "encoder.json")
    )
    assert loaded == ranks
    enc = tiktoken.Encoding(name="t", pat_str=r"[\s\S]+", mergeable_ranks=loaded, special_tokens={})
    assert enc.encode_ordinary("the \n\n") == [ranks[b"the \n\n"]]


def test_ranks_that_are_not_merges_are_refused() -> None:
    ranks = trained_ranks()
    ranks[b"xyz"] = len(ranks)  # no "xy" or "yz" before it
    with pytest.raises(ValueError, match="is not a merge of earlier tokens"):
        gpt2_cache.data_gym_files(ranks)
    in_byte_order = {bytes([i]): i for i in range(256)}
    with pytest.raises(ValueError, match="data-gym order"):
        gpt2_cache.data_gym_files(in_byte_order)


def test_only_gpt2s_exact_files_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ranks_file = tmp_path / "toy.tiktoken"
    lines = [f"{base64.b64encode(t).decode()} {r}\n" for t, r in trained_ranks().items()]
    ranks_file.write_text("".join(lines))
    assert gpt2_cache.read_ranks(ranks_file.read_text()) == trained_ranks()
    assert gpt2_cache.main([str(tmp_path / "cache"), "--ranks", str(ranks_file)]) == 1
    assert "these ranks are not GPT-2's" in capsys.readouterr().err
    assert not any((tmp_path / "cache").glob("*"))


def test_written_files_are_what_tiktoken_reads_from_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the toy files' digests pinned, tiktoken finds them in the cache, offline."""
    ranks = trained_ranks()
    files = gpt2_cache.data_gym_files(ranks)
    digests = {
        url: hashlib.sha256(data).hexdigest() for url, data in zip(EXPECTED, files, strict=True)
    }
    monkeypatch.setattr(gpt2_cache, "EXPECTED", digests)
    gpt2_cache.write_cache(ranks, tmp_path)

    def offline(url: str) -> bytes:
        raise ConnectionError(f"no network for {url}")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    vocab_url, encoder_url = digests
    loaded = data_gym_to_mergeable_bpe_ranks(
        vocab_url, encoder_url, digests[vocab_url], digests[encoder_url]
    )
    assert loaded == ranks
