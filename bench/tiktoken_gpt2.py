"""Fill a ``TIKTOKEN_CACHE_DIR`` with tiktoken's GPT-2 encoding on a machine without internet.

tiktoken downloads the ``gpt2`` encoding's two files (``vocab.bpe`` and ``encoder.json``)
from openaipublic.blob.core.windows.net, which a machine that can reach only the package
registries cannot do. The same 50,256 ranks ship on PyPI, inside the ``openai-whisper``
source distribution (``whisper/assets/gpt2.tiktoken``). This script rebuilds the two files
from those ranks, checks them against the SHA-256 digests tiktoken itself pins, and writes
them under the names tiktoken's cache uses::

    .venv/bin/python bench/tiktoken_gpt2.py /tmp/tiktoken-cache
    TIKTOKEN_CACHE_DIR=/tmp/tiktoken-cache .venv/bin/python bench/lm.py --only prepare

Without ``--ranks FILE`` it fetches the sdist with ``pip download`` (no install, no
dependencies). Only files whose digests match are written, so the cache holds exactly
what tiktoken would have downloaded (it verifies them again on every load).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

_BASE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
# The digests tiktoken pins for these URLs (tiktoken_ext/openai_public.py, gpt2()).
EXPECTED = {
    _BASE + "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    _BASE + "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
WHISPER = "openai-whisper==20250625"
RANKS_MEMBER = "whisper/assets/gpt2.tiktoken"
ENDOFTEXT = "<|endoftext|>"


def read_ranks(text: str) -> dict[bytes, int]:
    """A ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    ranks = {}
    for line in text.splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def data_gym_alphabet() -> dict[int, str]:
    """GPT-2's byte-to-unicode table, in the order of the single bytes' ranks.

    Printable bytes stand for themselves and rank first; the other 68 become chr(256),
    chr(257), ... (tiktoken's ``data_gym_to_mergeable_bpe_ranks`` reads files this way).
    """
    alphabet = {b: chr(b) for b in range(256) if chr(b).isprintable() and chr(b) != " "}
    for n, b in enumerate(b for b in range(256) if b not in alphabet):
        alphabet[b] = chr(256 + n)
    return alphabet


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair whose merge made ``token``: BPE on its bytes with the merges ranked before it."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        candidates = [
            (r, i)
            for i in range(len(parts) - 1)
            if (r := ranks.get(parts[i] + parts[i + 1], rank)) < rank
        ]
        if not candidates:
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of earlier tokens")
        _, i = min(candidates)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is a single byte ranked after 255")
    return parts[0], parts[1]


def data_gym_files(ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """``vocab.bpe`` and ``encoder.json`` in GPT-2's original layout, from mergeable ranks."""
    alphabet = data_gym_alphabet()
    by_rank = sorted(ranks, key=ranks.__getitem__)
    if [ranks[t] for t in by_rank] != list(range(len(by_rank))) or by_rank[:256] != [
        bytes([b]) for b in alphabet
    ]:
        raise ValueError(
            "the ranks must be 0..n-1, the 256 single bytes first in GPT-2's data-gym order"
        )

    def gym(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    merges = []
    for token in by_rank[256:]:
        left, right = _merge_of(token, ranks[token], ranks)
        merges.append(f"{gym(left)} {gym(right)}")
    vocab_bpe = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
    encoder = {gym(t): ranks[t] for t in by_rank}
    encoder[ENDOFTEXT] = len(by_rank)
    return vocab_bpe.encode(), json.dumps(encoder).encode()


def write_cache(ranks: dict[bytes, int], cache_dir: Path) -> list[Path]:
    """Write both files under tiktoken's cache names, refusing any whose digest differs."""
    vocab_bpe, encoder_json = data_gym_files(ranks)
    written = []
    cache_dir.mkdir(parents=True, exist_ok=True)
    for url, data in zip(EXPECTED, (vocab_bpe, encoder_json), strict=True):
        digest = hashlib.sha256(data).hexdigest()
        if digest != EXPECTED[url]:
            raise ValueError(
                f"the rebuilt {url.rsplit('/', 1)[1]} has SHA-256 {digest}, not tiktoken's "
                f"{EXPECTED[url]}: these ranks are not GPT-2's."
            )
        path = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written.append(path)
    return written


def whisper_ranks() -> str:
    """``gpt2.tiktoken`` from the openai-whisper sdist, fetched with pip into a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--dest", tmp, WHISPER],
            check=True,
        )  # fmt: skip
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(RANKS_MEMBER))
            handle = tar.extractfile(member)
            assert handle is not None
            return handle.read().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", type=Path, help="the directory for TIKTOKEN_CACHE_DIR")
    parser.add_argument(
        "--ranks", type=Path, help=f"a local gpt2.tiktoken (default: fetch {WHISPER} with pip)"
    )
    args = parser.parse_args(argv)
    text = args.ranks.read_text() if args.ranks else whisper_ranks()
    try:
        paths = write_cache(read_ranks(text), args.cache_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    print(f"export TIKTOKEN_CACHE_DIR={args.cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
