"""Tokenizers: characters, tiktoken encodings (GPT-2 BPE), byte-level BPE trained on the corpus,
and a pretrained model's own Hugging Face tokenizer (``hf:PATH``).

All four satisfy one small :class:`Tokenizer` protocol, and each describes itself with a
JSON ``spec()`` stored in ``meta.json``, from which :func:`load_tokenizer` rebuilds it; no
pickle. Each also has ``encode_array``, the fast path ``mlx prepare`` uses on a whole corpus.
tiktoken, tokenizers and transformers are imported only when a tokenizer that needs them is
built.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import numpy as np
import numpy.typing as npt

from mlharness.errors import DatasetError
from mlharness.lm.meta import PREPARE_HINT, load_meta
from mlharness.runs.io import atomic_write_text

if TYPE_CHECKING:
    import tiktoken
    import tokenizers

TokenIds = npt.NDArray[np.uint32]

BPE_FILE = "tokenizer.json"
_UNKNOWN = 2**32 - 1  # CharTokenizer's id for characters outside its vocabulary


class Tokenizer(Protocol):
    """What the trainer and sampler need from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def spec(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- characters


class CharTokenizer:
    """One token per character, ids in code-point order, as nanoGPT's ``shakespeare_char``.

    The vocabulary is the corpus's own characters, so it is stored in full in the spec; a
    prompt with any other character cannot be encoded.
    """

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        # A histogram of code points: 10x faster than sorted(set(text)) on a large corpus.
        present = np.flatnonzero(np.bincount(_code_points(text)))
        return cls("".join(map(chr, present.tolist())))

    @cached_property
    def _table(self) -> TokenIds:
        """Code point -> id lookup; unknown code points hold the sentinel 2**32 - 1.

        At most 1.1 M entries (4.4 MB) even for the highest code point, and one NumPy
        gather then encodes a whole corpus at hundreds of MB/s.
        """
        codes = _code_points(self.chars)
        table = np.full(int(codes.max(initial=0)) + 1, _UNKNOWN, dtype=np.uint32)
        table[codes] = np.arange(len(codes), dtype=np.uint32)
        return table

    def encode_array(self, text: str) -> TokenIds:
        codes = _code_points(text)
        table = self._table
        if codes.size and int(codes.max()) >= len(table):
            self._unknown(text, codes >= len(table))
        ids: TokenIds = table[codes]
        if codes.size and int(ids.max()) == _UNKNOWN:
            self._unknown(text, ids == _UNKNOWN)
        return ids

    def _unknown(self, text: str, mask: npt.NDArray[np.bool_]) -> NoReturn:
        char = text[int(np.argmax(mask))]
        raise DatasetError(
            f"Character {char!r} (U+{ord(char):04X}) is not in this char-level vocabulary of "
            f"{self.vocab_size} characters; use only characters of the training text."
        )

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.encode_array(text).tolist()
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join([self.chars[i] for i in ids])

    def spec(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.chars}


def _code_points(text: str) -> TokenIds:
    # surrogatepass: a lone surrogate (from a badly decoded prompt) becomes an unknown
    # character instead of an encoding error.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


# --------------------------------------------------------------------------- tiktoken

_TIKTOKEN_HOST = "openaipublic.blob.core.windows.net"  # where tiktoken's own encodings live
_CACHE_WAIT = 3.0  # seconds; a cached encoding loads well within this
_PROBE_TIMEOUT = 3.0


class TiktokenTokenizer:
    """A tiktoken encoding such as ``gpt2`` (nanoGPT's ``shakespeare`` and openwebtext).

    Text is encoded with ``encode_ordinary``: ``<|endoftext|>`` in a corpus or a prompt is
    plain text, so training data and prompts are tokenized alike.
    """

    def __init__(self, encoding: str | tiktoken.Encoding) -> None:
        self.encoding = load_encoding(encoding) if isinstance(encoding, str) else encoding
        self.vocab_size: int = self.encoding.n_vocab

    def encode_array(self, text: str) -> TokenIds:
        # tiktoken's Rust core releases the GIL, so pieces cut where the whole text has a
        # token boundary anyway encode in parallel threads: tiny Shakespeare took 51 ms on 2
        # cores against 101 ms in one call. encode_to_numpy skips the Python int list.
        pieces = split_for_batching(text)
        if len(pieces) == 1:
            return self._encode_numpy(text)
        with ThreadPoolExecutor(min(len(pieces), os.cpu_count() or 1)) as pool:
            return np.concatenate(list(pool.map(self._encode_numpy, pieces)))

    def _encode_numpy(self, text: str) -> TokenIds:
        # No special tokens allowed and none disallowed: encode_ordinary's semantics.
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))

    def spec(self) -> dict[str, Any]:
        return {"type": "tiktoken", "encoding": self.encoding.name}


def load_encoding(name: str) -> tiktoken.Encoding:
    """``tiktoken.get_encoding``, except that offline it fails within seconds, helpfully.

    tiktoken downloads an encoding's files with ``requests.get`` and no timeout unless its
    cache (``TIKTOKEN_CACHE_DIR``) holds them, so on a network that drops packets it would
    hang for minutes. The load therefore runs in a daemon thread: if it has not finished
    after a few seconds and the download host does not answer, we stop waiting (the thread
    is abandoned and ends with the process).
    """
    import tiktoken

    if name not in tiktoken.registry.ENCODINGS and name not in tiktoken.list_encoding_names():
        known = ", ".join(sorted(tiktoken.list_encoding_names()))
        raise DatasetError(
            f"tiktoken has no encoding '{name}'. Use one of {known} "
            '(for example prepare.tokenizer = "tiktoken:gpt2").'
        )
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["encoding"] = tiktoken.get_encoding(name)
        except Exception as exc:  # reported below, in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=load, name=f"tiktoken-{name}", daemon=True)
    worker.start()
    worker.join(_CACHE_WAIT)
    if worker.is_alive() and _reachable(_TIKTOKEN_HOST):
        worker.join()  # a real download on a working network: let it take its time
    if "encoding" in outcome:
        encoding: tiktoken.Encoding = outcome["encoding"]
        return encoding
    error = outcome.get("error")
    reason = f"{type(error).__name__}: {error}" if error else f"{_TIKTOKEN_HOST} did not answer"
    raise DatasetError(
        f"The tiktoken encoding '{name}' could not be downloaded ({reason}). Offline, set "
        "TIKTOKEN_CACHE_DIR to a directory holding the cached encoding files, or use "
        'prepare.tokenizer = "char" or "bpe".'
    ) from error


def _reachable(host: str, port: int = 443, timeout: float = _PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds.

    In a thread because socket timeouts do not bound the DNS lookup, which can itself hang.
    """
    answers: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answers.append(True)
        except OSError:
            answers.append(False)

    probe = threading.Thread(target=connect, name=f"probe-{host}", daemon=True)
    probe.start()
    probe.join(timeout)
    return answers == [True]


# --------------------------------------------------------------------------- byte-level BPE


class BPETokenizer:
    """GPT-2-style byte-level BPE trained on the corpus with Hugging Face ``tokenizers``.

    Byte-level, so any text encodes (no unknown token) and decoding is exact. Saved as
    ``tokenizer.json`` beside the token files; that file is the tokenizer.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, text_or_path: str | Path, vocab_size: int) -> BPETokenizer:
        """Train on ``text_or_path``: a ``str`` is the text itself, a ``Path`` a UTF-8 file."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        text = text_or_path if isinstance(text_or_path, str) else text_or_path.read_text("utf-8")
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(split_for_batching(text), trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        if not path.is_file():
            raise DatasetError(f"The BPE tokenizer file {path} is missing: {PREPARE_HINT}.")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DatasetError(
                f"The BPE tokenizer file {path} cannot be read ({exc}): {PREPARE_HINT} anew."
            ) from exc

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.tokenizer.to_str())

    def encode_array(self, text: str) -> TokenIds:
        pieces = split_for_batching(text)
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets we do not need.
        encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode_batch(pieces)
        return np.concatenate([np.asarray(e.ids, dtype=np.uint32) for e in encodings])

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def spec(self) -> dict[str, Any]:
        return {"type": "bpe", "vocab_size": self.vocab_size}


def split_for_batching(text: str, size: int = 1 << 16) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` characters that tokenize exactly as the whole.

    The pieces let ``tokenizers`` and tiktoken encode in parallel. The pre-tokenizer patterns
    of GPT-2 and of tiktoken's later encodings (cl100k, o200k) end a piece at a newline that
    follows a non-space character and precedes a letter or digit, so cutting just after one
    changes no token; a cut elsewhere could ("\\n\\n", "\\n  x" and o200k's ":\\n/" split
    differently when cut).
    """
    pieces: list[str] = []
    start, last = 0, len(text) - 1
    while len(text) - start > size:
        cut = text.find("\n", start + size, last)
        while cut != -1 and (text[cut - 1].isspace() or not text[cut + 1].isalnum()):
            cut = text.find("\n", cut + 1, last)
        if cut == -1:
            break
        pieces.append(text[start : cut + 1])
        start = cut + 1
    pieces.append(text[start:])
    return pieces


# --------------------------------------------------------------------------- Hugging Face

# The files that define a Hugging Face tokenizer, whichever of them a directory has.
HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


def local_hf_dir(path: str | Path, setting: str) -> Path:
    """``path`` as a local directory, or an error that says how to get one offline.

    mlx never downloads a model at run time, so a hub name such as ``gpt2`` or
    ``Qwen/Qwen2-0.5B`` that is not also a local directory is refused before anything loads.
    """
    directory = Path(path).expanduser()
    if directory.is_dir():
        return directory.resolve()
    name = str(path)
    raise DatasetError(
        f'{setting} = "hf:{name}" names no local directory, and mlx does not download models: '
        f"download it once (e.g. `hf download {name} --local-dir models/{Path(name).name}`) and "
        f'set {setting} = "hf:models/{Path(name).name}".'
    )


def hf_tokenizer_digest(directory: Path) -> str:
    """sha256 over the tokenizer files of ``directory``: changes when the tokenizer does."""
    digest = hashlib.sha256()
    found = [name for name in HF_TOKENIZER_FILES if (directory / name).is_file()]
    if not found:
        raise DatasetError(
            f"{directory} holds no tokenizer files ({', '.join(HF_TOKENIZER_FILES[:2])}, ...): "
            "point hf:PATH at a directory written by save_pretrained with its tokenizer."
        )
    for name in found:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return digest.hexdigest()


class HFTokenizer:
    """A pretrained model's own tokenizer, loaded from its local directory.

    Text is encoded without special tokens (no BOS/EOS added), like tiktoken's
    ``encode_ordinary``: a prepared corpus and a prompt are tokenized alike. The spec
    records the directory and a digest of its tokenizer files, so data whose tokenizer has
    since changed is found out instead of being read with other ids.
    """

    def __init__(self, directory: Path, tokenizer: Any) -> None:
        self.directory = directory
        self.tokenizer = tokenizer
        self.vocab_size: int = len(tokenizer)

    @classmethod
    def load(cls, directory: str | Path, setting: str = "prepare.tokenizer") -> HFTokenizer:
        found = local_hf_dir(directory, setting)
        hf_tokenizer_digest(found)  # no tokenizer files: say so before transformers does
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise DatasetError(
                'hf: tokenizers need transformers: pip install "mlharness[hf]".'
            ) from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(found), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"Cannot load the tokenizer in {found}: {exc}.") from exc
        return cls(found, tokenizer)

    def encode_array(self, text: str) -> TokenIds:
        # The Rust tokenizer encodes the pieces in parallel; the slow Python ones in turn.
        pieces = split_for_batching(text)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            encodings = backend.encode_batch(pieces, add_special_tokens=False)
            return np.concatenate([np.asarray(e.ids, dtype=np.uint32) for e in encodings])
        return np.concatenate([np.asarray(self.encode(p), dtype=np.uint32) for p in pieces])

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids))
        return text

    def spec(self) -> dict[str, Any]:
        return {
            "type": "hf",
            "path": str(self.directory),
            "sha256": hf_tokenizer_digest(self.directory),
            "vocab_size": self.vocab_size,
        }


def load_hf_spec(spec: dict[str, Any]) -> HFTokenizer:
    """The tokenizer of an ``hf`` spec, refused if its files changed since the spec was made."""
    tokenizer = HFTokenizer.load(spec["path"])
    if tokenizer.spec()["sha256"] != spec.get("sha256"):
        raise DatasetError(
            f"The tokenizer files in {spec['path']} changed since this data was prepared, so "
            f"its token ids may mean other tokens: {PREPARE_HINT} anew."
        )
    return tokenizer


# --------------------------------------------------------------------------- from meta.json


def load_tokenizer(data_dir: Path, meta: dict[str, Any] | None = None) -> Tokenizer:
    """Rebuild the tokenizer that prepared ``data_dir`` from its ``meta.json`` spec."""
    if meta is None:
        meta = load_meta(data_dir)
    spec = meta.get("tokenizer")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "char" and isinstance(spec, dict) and isinstance(spec.get("chars"), str):
        return CharTokenizer(spec["chars"])
    if kind == "tiktoken" and isinstance(spec, dict) and isinstance(spec.get("encoding"), str):
        return TiktokenTokenizer(spec["encoding"])
    if kind == "bpe":
        return BPETokenizer.load(data_dir / BPE_FILE)
    if kind == "hf" and isinstance(spec, dict) and isinstance(spec.get("path"), str):
        return load_hf_spec(spec)
    raise DatasetError(
        f"{data_dir / 'meta.json'} describes no tokenizer this version knows ({spec!r}): "
        f"{PREPARE_HINT} anew."
    )
