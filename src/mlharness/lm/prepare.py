"""``mlx prepare``: source text -> ``train.bin``, ``val.bin``, ``meta.json`` (seed 004's lifecycle).

A preparer (one module per experiment in :mod:`mlharness.lm.experiments`) only says where
its text comes from, as a :class:`Source`: a local file, a file to download once, or text
it generates. Everything else is shared: reading and checking the text, tokenizing it
with ``prepare.tokenizer``, splitting, and writing nanoGPT's format (raw little-endian
``uint16`` ids, ``uint32`` for larger vocabularies) plus a JSON ``meta.json`` instead of
nanoGPT's pickle. Because a source is known before it is read, :func:`artifacts_current`
can tell cheaply whether the files on disk still match it, which ``mlx loop`` uses to skip
this step.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlharness.errors import ConfigError, DatasetError
from mlharness.lm import sft
from mlharness.lm.meta import load_meta
from mlharness.lm.registry import Preparer, get
from mlharness.lm.tokenizers import (
    BPE_FILE,
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    TiktokenTokenizer,
    hf_tokenizer_digest,
    local_hf_dir,
)
from mlharness.runs.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from mlharness.lm.config import LMConfig, PrepareConfig

META_FORMAT = 1
ARTIFACTS = ("train.bin", "val.bin", "meta.json")
DOWNLOAD_TIMEOUT = 5.0  # seconds; offline, a download must fail at once, not hang


@dataclass(frozen=True)
class PrepareContext:
    """What a preparer gets: the config, the input file if one was given, the output directory."""

    config: LMConfig
    input_path: Path | None  # --input, else prepare.input; absolute
    data_dir: Path


@dataclass(frozen=True)
class Source:
    """Where a preparer's text comes from. Nothing is read or downloaded yet.

    ``path``: a UTF-8 file; when it is missing and ``url`` is set, it is downloaded there
    first. ``text``: generated text, for preparers that make their own data. ``sft``: the
    text is a JSONL of prompt/completion pairs for supervised fine-tuning (:mod:`.sft`).
    """

    path: Path | None = None
    url: str | None = None
    text: str | None = None
    sft: bool = False


@dataclass(frozen=True)
class PrepareReport:
    data_dir: Path
    tokenizer: dict[str, Any]
    vocab_size: int
    dtype: str
    train_tokens: int
    val_tokens: int
    source_sha256: str
    source_bytes: int
    seconds: float
    skipped: bool  # the artifacts were current, nothing was written


def refuse_input(ctx: PrepareContext, makes: str = "its text") -> None:
    """For preparers that generate their data: an input file given to them would otherwise
    be ignored without a word, and the user would train on something other than the text
    they meant (seed 004: missing or wrong inputs are errors, never silent fallbacks)."""
    if ctx.input_path is not None:
        raise ConfigError(
            f"The {ctx.config.preparer} experiment generates {makes} and takes no input file, "
            f"but {ctx.input_path} was given: remove --input (or prepare.input from the "
            "config) and run again."
        )
    if ctx.config.prepare.url is not None:
        raise ConfigError(
            f"The {ctx.config.preparer} experiment generates {makes} and downloads nothing, "
            f"but prepare.url is {ctx.config.prepare.url}: remove it from the config and run "
            "again."
        )


def input_file(ctx: PrepareContext) -> Source:
    """The usual source: ``--input`` (or ``prepare.input``), else ``<data_dir>/input.txt``,
    downloaded from ``prepare.url`` when that is set and the file is missing."""
    if ctx.input_path is not None:
        return Source(path=ctx.input_path)
    return Source(path=ctx.data_dir / "input.txt", url=ctx.config.prepare.url)


# --------------------------------------------------------------------------- prepare


def prepare_data(
    config: LMConfig,
    input_path: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Write the experiment's token files, unless they are current and ``force`` is false.

    ``input_path`` (``mlx prepare --input``) wins over ``prepare.input``. The validation
    split is the last ``val_fraction`` of the *tokens* (nanoGPT cuts 90/10 by characters
    before tokenizing; cutting the token stream gives exactly the requested fraction).
    """
    started = time.perf_counter()
    preparer = get(config.preparer)
    ctx = _context(config, input_path)
    if not force and artifacts_current(config, input_path):
        return _report(ctx.data_dir, load_meta(ctx.data_dir), started, skipped=True)
    say = _reporter(progress)
    source = _source(preparer, ctx)
    text, origin = _load(source, preparer.name, say)
    if source.sft:
        return _prepare_sft(ctx, preparer.name, text, origin, progress, started)
    say(f"Tokenizing {origin['bytes'] / 1e6:.1f} MB with {config.prepare.tokenizer}")
    tokenizer = _build_tokenizer(config.prepare, text)
    ids = tokenizer.encode_array(text)
    n_val = max(1, round(len(ids) * config.prepare.val_fraction))
    n_train = len(ids) - n_val
    if n_train < 1:
        raise DatasetError(
            f"The source text gives only {len(ids)} token(s), too few to split into training "
            "and validation data: use a longer text."
        )
    meta = _meta(config, preparer.name, tokenizer, n_train, n_val, origin)
    say(f"Writing {n_train:,} training and {n_val:,} validation tokens to {ctx.data_dir}")
    stored = np.dtype(meta["dtype"]).newbyteorder("<")
    files = {
        "train.bin": ids[:n_train].astype(stored).tobytes(),
        "val.bin": ids[n_train:].astype(stored).tobytes(),
    }
    _write(ctx.data_dir, files, meta, tokenizer)
    return _report(ctx.data_dir, meta, started, skipped=False)


def _meta(
    config: LMConfig,
    preparer: str,
    tokenizer: CharTokenizer | TiktokenTokenizer | BPETokenizer | HFTokenizer,
    n_train: int,
    n_val: int,
    origin: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": META_FORMAT,
        "experiment": config.experiment,
        "preparer": preparer,
        "tokenizer": tokenizer.spec(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size),
        "train_tokens": n_train,
        "val_tokens": n_val,
        "source": origin,
        "settings": _settings(config.prepare),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _prepare_sft(
    ctx: PrepareContext,
    preparer: str,
    text: str,
    origin: dict[str, Any],
    progress: bool,
    started: float,
) -> PrepareReport:
    """Prompt/completion pairs -> ids, loss mask and example offsets per split (:mod:`.sft`);
    the validation split is the last ``val_fraction`` of the examples (at least one)."""
    prepare = ctx.config.prepare
    where = str(origin.get("path", preparer))
    pairs = sft.read_pairs(text, where)
    tokenizer = _build_tokenizer(prepare, sft.plain_text(pairs))
    encoded = sft.encode_pairs(
        pairs, tokenizer, prepare.sft, where, progress and sys.stderr.isatty()
    )
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * prepare.val_fraction)))
    n_val_tokens = int(encoded.offsets[-1] - encoded.offsets[-1 - n_val])
    meta = _meta(
        ctx.config, preparer, tokenizer, len(encoded.ids) - n_val_tokens, n_val_tokens, origin
    )
    meta["settings"]["sft"] = prepare.sft.model_dump()
    meta["sft"] = {
        "train_examples": len(pairs) - n_val,
        "val_examples": n_val,
        "chat_template": encoded.chat_template,
        "eos_id": encoded.eos_id,
        "target_tokens": int(encoded.mask.sum()),
    }
    _write(ctx.data_dir, sft.split_files(encoded, n_val, meta["dtype"]), meta, tokenizer)
    return _report(ctx.data_dir, meta, started, skipped=False)


def token_dtype(vocab_size: int) -> str:
    """``uint16`` while every id fits (ids run 0 .. vocab_size - 1), else ``uint32``."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def _write(
    data_dir: Path,
    files: dict[str, bytes],
    meta: dict[str, Any],
    tokenizer: CharTokenizer | TiktokenTokenizer | BPETokenizer | HFTokenizer,
) -> None:
    """Each file is atomic; for the set, meta.json goes first and comes back last, so a
    crash in between leaves no meta.json and the directory never counts as current."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "meta.json").unlink(missing_ok=True)
    (data_dir / BPE_FILE).unlink(missing_ok=True)  # a stale one would mislead readers
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(data_dir / BPE_FILE)
    for name, data in files.items():
        atomic_write_bytes(data_dir / name, data)
    atomic_write_json(data_dir / "meta.json", meta)


def _build_tokenizer(
    prepare: PrepareConfig, text: str
) -> CharTokenizer | TiktokenTokenizer | BPETokenizer | HFTokenizer:
    name = prepare.tokenizer
    if name == "char":
        return CharTokenizer.from_text(text)
    if name == "bpe":
        return BPETokenizer.train(text, prepare.bpe_vocab_size)
    if name.startswith("hf:"):
        return HFTokenizer.load(name[3:])
    return TiktokenTokenizer(name.removeprefix("tiktoken:"))


def _settings(prepare: PrepareConfig) -> dict[str, Any]:
    """The options that change the token files for the same source text."""
    settings: dict[str, Any] = {
        "tokenizer": prepare.tokenizer,
        "val_fraction": prepare.val_fraction,
    }
    if prepare.tokenizer == "bpe":
        settings["bpe_vocab_size"] = prepare.bpe_vocab_size
    if prepare.tokenizer.startswith("hf:"):  # the same directory with another tokenizer in it
        directory = local_hf_dir(prepare.tokenizer[3:], "prepare.tokenizer")
        settings["hf_tokenizer_sha256"] = hf_tokenizer_digest(directory)
    return settings


def _source(preparer: Preparer, ctx: PrepareContext) -> Source:
    """The preparer's source; a generated one with an input file given is refused here
    too, so a new generating preparer that forgets :func:`refuse_input` cannot ignore it."""
    source: Source = preparer.fn(ctx)
    if source.text is not None:
        refuse_input(ctx)
    return source


def _context(config: LMConfig, input_path: Path | None) -> PrepareContext:
    given = input_path if input_path is not None else config.prepare.input
    resolved = Path(given).expanduser().resolve() if given is not None else None
    return PrepareContext(config=config, input_path=resolved, data_dir=config.data_dir)


def _report(data_dir: Path, meta: dict[str, Any], started: float, skipped: bool) -> PrepareReport:
    return PrepareReport(
        data_dir=data_dir,
        tokenizer=meta["tokenizer"],
        vocab_size=int(meta["vocab_size"]),
        dtype=meta["dtype"],
        train_tokens=int(meta["train_tokens"]),
        val_tokens=int(meta["val_tokens"]),
        source_sha256=meta["source"]["sha256"],
        source_bytes=int(meta["source"]["bytes"]),
        seconds=time.perf_counter() - started,
        skipped=skipped,
    )


def _reporter(progress: bool) -> Callable[[str], None]:
    """A line per stage on stderr, for people watching a terminal; silent otherwise."""
    if progress and sys.stderr.isatty():
        return lambda message: print(f"prepare: {message}", file=sys.stderr, flush=True)
    return lambda message: None


# --------------------------------------------------------------------------- sources


def _load(source: Source, preparer: str, say: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    """The source's text and its ``meta.json`` record (where from, SHA-256, size)."""
    if source.text is not None:
        data = source.text.encode("utf-8")
        return source.text, {"generator": preparer, **_fingerprint(data)}
    if source.path is None:
        raise DatasetError(f"Preparer '{preparer}' named no source text: fix its module.")
    origin: dict[str, Any] = {"path": str(source.path)}
    if source.url is not None:
        origin["url"] = source.url
        if not source.path.exists():
            say(f"Downloading {source.url}")
            _download(source.url, source.path)
    text, data = read_text(source.path)
    return text, {**origin, **_fingerprint(data)}


def _fingerprint(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def read_text(path: Path) -> tuple[str, bytes]:
    """The file's text and bytes; every way it can be unusable is a ``DatasetError`` at once."""
    do = "pass --input PATH (or set prepare.input) to a UTF-8 text file"
    if path.is_dir():
        raise DatasetError(f"Input {path} is a directory, not a text file: {do}.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"Input file {path} does not exist: provide it, or {do}.") from None
    except OSError as exc:
        raise DatasetError(f"Input file {path} cannot be read ({exc.strerror}): {do}.") from exc
    if not data:
        raise DatasetError(f"Input file {path} is empty: put the training text in it, or {do}.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"Input file {path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} ({exc.reason}). Convert it to UTF-8 (for example with "
            "`iconv -f latin1 -t utf-8`) and prepare again."
        ) from None
    return text.removeprefix("\ufeff"), data


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            data: bytes = response.read()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DatasetError(
            f"{url} could not be downloaded ({exc}). Pass --input PATH with a local copy "
            f"(for example ../shared/data/tinyshakespeare.txt), or save it as {dest}."
        ) from exc
    atomic_write_bytes(dest, data)


# --------------------------------------------------------------------------- current?


def artifacts_current(config: LMConfig, input_path: Path | None = None) -> bool:
    """Whether the data directory holds what :func:`prepare_data` would write now.

    True when train.bin, val.bin and meta.json exist (and tokenizer.json for ``bpe``) and
    meta.json records the same preparer, settings (tokenizer included) and source checksum.
    A download whose local copy is gone counts as current when meta.json records the same
    URL. Without an input file given (``--input`` or ``prepare.input``) and without the
    default ``<data_dir>/input.txt``, data made from a file the user gave earlier is
    current unless that file has changed since: the user chose that text explicitly, and
    replacing it by a download of the default corpus would be pointless (the same text)
    and offline impossible. An input file given now is always compared by checksum.
    """
    ctx = _context(config, input_path)
    needed = (*ARTIFACTS, BPE_FILE) if config.prepare.tokenizer == "bpe" else ARTIFACTS
    if not all((ctx.data_dir / name).is_file() for name in needed):
        return False
    try:
        meta = load_meta(ctx.data_dir)
    except DatasetError:
        return False
    preparer = get(config.preparer)
    settings = _settings(config.prepare)
    if "sft" in meta:  # the same preparer always makes SFT data, or never
        settings["sft"] = config.prepare.sft.model_dump()
        if not all((ctx.data_dir / name).is_file() for name in sft.file_names()):
            return False
    if (
        meta.get("format") != META_FORMAT
        or meta.get("preparer") != preparer.name
        or meta.get("settings") != settings
    ):
        return False
    recorded = meta.get("source")
    if not isinstance(recorded, dict):
        return False
    source = _source(preparer, ctx)
    if source.text is not None:
        return bool(recorded.get("sha256") == _fingerprint(source.text.encode("utf-8"))["sha256"])
    if source.path is not None and source.path.is_file():
        return bool(recorded.get("sha256") == _file_sha256(source.path))
    if ctx.input_path is not None:
        return False  # the given file is missing: prepare_data says so
    if source.url is not None and recorded.get("url") == source.url:
        return True
    return _given_file_unchanged(recorded)


def _given_file_unchanged(recorded: dict[str, Any]) -> bool:
    """Whether meta.json's source is a file the user gave (not a download) that is either
    gone, like a deleted download, or still has the recorded checksum."""
    path = recorded.get("path")
    if "url" in recorded or not isinstance(path, str):
        return False
    given = Path(path)
    if not given.exists():
        return True
    return given.is_file() and recorded.get("sha256") == _file_sha256(given)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
