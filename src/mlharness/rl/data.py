"""The GRPO data layer: prompts with reference completions, from JSONL or pre-tokenized NPY.

Two formats (seed 002's "Dataset Format"):

* **JSONL**, one object per line with string ``prompt`` and ``completion`` and optional
  ``system``, ``test_cases`` and ``meta``. The file is streamed line by line (DESIGN:
  "JSONL is streamed"), and a bad line is reported with its file and line number: it fails
  the load (``data.on_invalid = "fail"``) or is counted and skipped (``"skip"``).
* **NPY**, written by :func:`preprocess` (``mlx preprocess``): ``<prefix>_prompts.npy`` and
  ``<prefix>_completions.npy``, each a 2-D ``int32`` array of token ids, one row per
  example, right-padded with ``-1``. Plain arrays load with ``allow_pickle=False`` (DESIGN
  decision 4: no pickle on load paths), so the ragged rows are padded rather than stored as
  an object array. A JSONL sidecar ``<prefix>_extra.jsonl`` carries ``system``,
  ``test_cases`` and ``meta`` per row, which token ids cannot, so rewards such as
  ``code_execution`` still work after preprocessing.

NPY prompts are stored already formatted (chat template and system prompt applied) and
already cut to ``max_prompt_len``. Such examples carry their ids in
:attr:`Example.prompt_ids`; :func:`encode_prompt` uses those ids as they are instead of
formatting the decoded text a second time, which would wrap a template in a template.

:class:`PromptStream` turns a list of examples into the endless, seeded, resumable order in
which the trainer draws prompts. Nothing here imports torch: the data layer runs in
``mlx preprocess`` and in tests without it.
"""

from __future__ import annotations

import codecs
import io
import json
import operator
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from mlharness.errors import CheckpointError, DatasetError, MlxError
from mlharness.runs.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "COMPLETIONS_SUFFIX",
    "EXTRA_SUFFIX",
    "PAD_ID",
    "PROMPTS_SUFFIX",
    "Example",
    "LoadReport",
    "PreprocessReport",
    "PromptStream",
    "TextTokenizer",
    "encode_prompt",
    "load_examples",
    "load_jsonl",
    "load_npy",
    "npy_files",
    "preprocess",
]

PAD_ID = -1  # padding of the NPY rows; token ids are >= 0
PROMPTS_SUFFIX = "_prompts.npy"
COMPLETIONS_SUFFIX = "_completions.npy"
EXTRA_SUFFIX = "_extra.jsonl"
MAX_REASONS = 5  # skipped lines named in a warning and kept in LoadReport.skip_reasons

_SKIP_HINT = 'Fix the line, or set data.on_invalid = "skip" to skip bad lines.'
_PREPROCESS_HINT = "mlx preprocess --config FILE --output-train-path PREFIX"
_INT32_MAX = int(np.iinfo(np.int32).max)


@dataclass(frozen=True)
class Example:
    """One prompt with its reference completion and what rewards may need besides.

    ``index`` is the record's 0-based position in its source: the count of non-blank lines
    before it in a JSONL file (skipped lines keep their numbers, so it is not always the
    position in the returned list), the row in an NPY file. ``line`` is the 1-based JSONL
    line, for messages; ``None`` for NPY rows.

    ``prompt_ids`` is set only for pre-tokenized (NPY) examples: the formatted, truncated
    prompt exactly as stored. ``prompt`` then holds those ids decoded, template included.
    """

    prompt: str
    completion: str
    system: str | None = None
    test_cases: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    line: int | None = None
    prompt_ids: tuple[int, ...] | None = None

    @property
    def where(self) -> str:
        """Where the example came from, for error messages: ``line 7`` or ``row 3``."""
        if self.line is not None:
            return f"line {self.line}"
        return f"row {self.index}" if self.prompt_ids is not None else f"example {self.index}"


class TextTokenizer(Protocol):
    """What the data layer needs from the policy's tokenizer.

    ``format_prompt`` turns a raw prompt (and system prompt) into the text the policy sees:
    the chat template when the policy uses one, else the prompt itself (the system prompt
    then is the tokenizer adapter's call). Keeping it on the tokenizer means the data layer
    never needs to know which kind of model it feeds.
    """

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def format_prompt(self, prompt: str, system: str | None) -> str: ...


@dataclass
class LoadReport:
    """What a load did, for the log: examples loaded, lines skipped and the first reasons."""

    path: Path
    loader_type: Literal["jsonl", "npy"] = "jsonl"
    loaded: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)  # first MAX_REASONS, "line 7: ..."

    def summary(self) -> str:
        """One sentence for the log."""
        text = f"Loaded {self.loaded} examples from {self.path} ({self.loader_type})"
        if self.skipped:
            text += f"; skipped {self.skipped} invalid lines ({'; '.join(self.skip_reasons)}"
            text += ", ...)" if self.skipped > len(self.skip_reasons) else ")"
        return text + "."

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.skip_reasons) < MAX_REASONS:
            self.skip_reasons.append(reason)


# --------------------------------------------------------------------------- JSONL


class _InvalidRecord(Exception):
    """A record that breaks the format; the message says how, the caller says where."""


_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "null" if value is None else f"a {type(value).__name__}")


def _optional_fields(
    record: Mapping[str, Any],
) -> tuple[str | None, list[str] | None, dict[str, Any]]:
    """Check and return ``system``, ``test_cases`` and ``meta``; ``null`` means absent."""
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise _InvalidRecord(f"field 'system' must be a string, got {_type_name(system)}")
    test_cases = record.get("test_cases")
    if test_cases is not None:
        if not isinstance(test_cases, list):
            raise _InvalidRecord(
                f"field 'test_cases' must be a list of strings, got {_type_name(test_cases)}"
            )
        for i, case in enumerate(test_cases):
            if not isinstance(case, str):
                raise _InvalidRecord(
                    f"field 'test_cases' must be a list of strings, but item {i} is "
                    f"{_type_name(case)}"
                )
    meta = record.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise _InvalidRecord(f"field 'meta' must be a JSON object, got {_type_name(meta)}")
    return system, test_cases, meta


def _parse_record(raw: bytes, lineno: int) -> dict[str, Any]:
    """Decode and parse one line into a JSON object, or say what is wrong with it."""
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # editors on Windows add one
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InvalidRecord(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
            "save the file as UTF-8"
        ) from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _InvalidRecord(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise _InvalidRecord(f"not a JSON object but {_type_name(record)}")
    return record


def _example_from_record(record: Mapping[str, Any], index: int, line: int) -> Example:
    for name in ("prompt", "completion"):
        if name not in record:
            raise _InvalidRecord(f"missing required field '{name}'")
        if not isinstance(record[name], str):
            raise _InvalidRecord(f"field '{name}' must be a string, got {_type_name(record[name])}")
    if not record["prompt"].strip():
        raise _InvalidRecord("field 'prompt' is empty; the policy needs text to respond to")
    system, test_cases, meta = _optional_fields(record)
    return Example(
        prompt=record["prompt"],
        completion=record["completion"],
        system=system,
        test_cases=test_cases,
        meta=meta,
        index=index,
        line=line,
    )


def load_jsonl(
    path: Path, *, on_invalid: Literal["fail", "skip"] = "fail"
) -> tuple[list[Example], LoadReport]:
    """Read a JSONL dataset line by line into examples.

    Fields other than ``prompt``, ``completion``, ``system``, ``test_cases`` and ``meta``
    are ignored, so files made for other tools load unchanged; put what rewards need into
    ``meta``. Blank lines are ignored. A bad line raises :class:`DatasetError` naming file
    and line (``on_invalid="fail"``), or is counted and skipped with one warning at the end
    (``"skip"``). Raises :class:`DatasetError` too when the file is missing or holds no
    usable example.
    """
    path = Path(path)
    _check_jsonl_path(path)
    report = LoadReport(path=path, loader_type="jsonl")
    examples: list[Example] = []
    index = 0
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    examples.append(_example_from_record(_parse_record(raw, lineno), index, lineno))
                except _InvalidRecord as exc:
                    if on_invalid == "fail":
                        raise DatasetError(f"{path} line {lineno}: {exc}. {_SKIP_HINT}") from None
                    report._skip(f"line {lineno}: {exc}")
                index += 1
    except OSError as exc:
        raise DatasetError(f"Cannot read dataset file {path}: {exc.strerror or exc}.") from exc
    report.loaded = len(examples)
    if not examples:
        if report.skipped:
            raise DatasetError(
                f"{path} has no valid example: all {report.skipped} lines were invalid "
                f"({'; '.join(report.skip_reasons)}). Fix the file; see docs/rl-data.md."
            )
        raise DatasetError(
            f"{path} holds no examples. Write one JSON object per line with string fields "
            '"prompt" and "completion" (see docs/rl-data.md).'
        )
    if report.skipped:
        more = ", ..." if report.skipped > len(report.skip_reasons) else ""
        warnings.warn(
            f"Skipped {report.skipped} invalid line(s) of {path} "
            f"({'; '.join(report.skip_reasons)}{more}); loaded {report.loaded} examples.",
            UserWarning,
            stacklevel=2,
        )
    return examples, report


def _check_jsonl_path(path: Path) -> None:
    """Fail early, and helpfully, for a missing file or an NPY dataset given as JSONL."""
    npy_hint = (
        'It looks like a preprocessed NPY dataset: set data.loader_type = "npy", or point '
        "data.train_path at the JSONL file."
    )
    if path.is_dir():
        raise DatasetError(f"Dataset path {path} is a directory, not a JSONL file. {npy_hint}")
    if path.suffix == ".npy":
        raise DatasetError(f"Dataset path {path} is a .npy file, not JSONL. {npy_hint}")
    if not path.exists():
        prefix = _npy_prefix(path, "train")
        if _prefix_files(prefix)[0].exists():
            raise DatasetError(f"Dataset file {path} does not exist. {npy_hint}")
        raise DatasetError(
            f"Dataset file {path} does not exist. Provide a JSONL file with one JSON object "
            'per line holding string fields "prompt" and "completion" (see docs/rl-data.md).'
        )


# --------------------------------------------------------------------------- NPY


def _npy_prefix(path: Path, default_name: str) -> Path:
    """``data/`` -> ``data/<default_name>``; ``data/train_prompts.npy`` or ``data/train.npy``
    (and ``.json``, as in seed 002's ``--output-train-path data/train.json``) -> ``data/train``.
    """
    path = Path(path)
    if path.is_dir():
        return path / default_name
    name = path.name
    for suffix in (PROMPTS_SUFFIX, COMPLETIONS_SUFFIX, EXTRA_SUFFIX, ".npy", ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def _prefix_files(prefix: Path) -> tuple[Path, Path, Path]:
    return (
        prefix.with_name(prefix.name + PROMPTS_SUFFIX),
        prefix.with_name(prefix.name + COMPLETIONS_SUFFIX),
        prefix.with_name(prefix.name + EXTRA_SUFFIX),
    )


def npy_files(path: Path, default_name: str = "train") -> tuple[Path, Path, Path]:
    """The prompts, completions and sidecar files that an NPY ``path`` stands for.

    ``path`` is a directory (holding ``<default_name>_*``), a prefix (``data/train``), or
    any of the files themselves.
    """
    return _prefix_files(_npy_prefix(path, default_name))


def _load_token_array(file: Path) -> npt.NDArray[np.integer[Any]]:
    """Load one padded token array and check its shape and dtype.

    Memory-mapped, so a large file is paged in as its rows are checked and decoded instead
    of being read whole before anything happens.
    """
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(
            f"{file} is not a readable NumPy .npy array ({exc}). NPY datasets are written by "
            f"`{_PREPROCESS_HINT}`."
        ) from exc
    if not isinstance(array, np.ndarray):  # an .npz archive loads as NpzFile
        raise DatasetError(f"{file} is an .npz archive; expected a single .npy array.")
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise DatasetError(
            f"{file} must be a 2-D integer array (one row of token ids per example, padded "
            f"with {PAD_ID}); it has shape {array.shape} and dtype {array.dtype}."
        )
    return array


def _row_lengths(array: npt.NDArray[np.integer[Any]], file: Path) -> npt.NDArray[np.intp]:
    """Token count of each row; padding must be ``-1`` and only at the end of a row."""
    if array.dtype.kind == "u":
        return np.full(array.shape[0], array.shape[1], dtype=np.intp)
    below = np.argwhere(array < PAD_ID)
    if below.size:
        r, c = (int(v) for v in below[0])
        raise DatasetError(
            f"{file} row {r} holds {int(array[r, c])}: token ids are >= 0 and {PAD_ID} is "
            "the padding."
        )
    present = array >= 0
    lengths: npt.NDArray[np.intp] = present.sum(axis=1)
    expected = np.arange(array.shape[1]) < lengths[:, None]
    mismatched = np.flatnonzero((present != expected).any(axis=1))
    if mismatched.size:
        raise DatasetError(
            f"{file} row {int(mismatched[0])} has padding ({PAD_ID}) before a token id; "
            "padding goes only at the end of a row."
        )
    return lengths


def _read_extra(file: Path, rows: int) -> list[tuple[str | None, list[str] | None, dict[str, Any]]]:
    """The sidecar's (system, test_cases, meta) per row; empty rows when it is absent."""
    if not file.exists():
        return [(None, None, {})] * rows
    extras: list[tuple[str | None, list[str] | None, dict[str, Any]]] = []
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                extras.append(_optional_fields(_parse_record(raw, lineno)))
            except _InvalidRecord as exc:
                raise DatasetError(
                    f"{file} line {lineno}: {exc}. Re-run `{_PREPROCESS_HINT}` to rewrite it."
                ) from None
    if len(extras) != rows:
        raise DatasetError(
            f"{file} has {len(extras)} rows but the token arrays have {rows}; the sidecar "
            f"must hold one line per example. Re-run `{_PREPROCESS_HINT}`."
        )
    return extras


def _decode_row(tokenizer: TextTokenizer, ids: list[int], file: Path, row: int) -> str:
    try:
        return tokenizer.decode(ids)
    except Exception as exc:  # any tokenizer's failure: out-of-vocabulary ids, mostly
        raise DatasetError(
            f"{file} row {row} cannot be decoded by this model's tokenizer ({exc!r}); was it "
            "preprocessed with another tokenizer? Re-run `mlx preprocess` with this model."
        ) from exc


def load_npy(
    path: Path, tokenizer: TextTokenizer, default_name: str = "train"
) -> tuple[list[Example], LoadReport]:
    """Load a preprocessed NPY dataset and decode it back to text for the rewards.

    ``path`` is the directory holding ``train_prompts.npy`` and ``train_completions.npy``,
    a prefix (``data/train``), or either ``.npy`` file. The optional sidecar
    ``<prefix>_extra.jsonl`` restores ``system``, ``test_cases`` and ``meta``. Examples
    keep their stored prompt ids in :attr:`Example.prompt_ids`.
    """
    path = Path(path)
    prefix = _npy_prefix(path, default_name)
    prompts_file, completions_file, extra_file = _prefix_files(prefix)
    _check_npy_files(path, prefix, prompts_file, completions_file)
    prompts = _load_token_array(prompts_file)
    completions = _load_token_array(completions_file)
    prompt_lengths, completion_lengths = _checked_lengths(
        prompts, completions, prompts_file, completions_file
    )
    rows = int(prompts.shape[0])
    extras = _read_extra(extra_file, rows)
    examples: list[Example] = []
    for row in range(rows):
        prompt_ids: list[int] = prompts[row, : prompt_lengths[row]].tolist()
        completion_ids: list[int] = completions[row, : completion_lengths[row]].tolist()
        system, test_cases, meta = extras[row]
        examples.append(
            Example(
                prompt=_decode_row(tokenizer, prompt_ids, prompts_file, row),
                completion=_decode_row(tokenizer, completion_ids, completions_file, row),
                system=system,
                test_cases=test_cases,
                meta=meta,
                index=row,
                prompt_ids=tuple(prompt_ids),
            )
        )
    return examples, LoadReport(path=path, loader_type="npy", loaded=rows)


def _check_npy_files(path: Path, prefix: Path, prompts_file: Path, completions_file: Path) -> None:
    """Both token files exist, or an error that says what the user pointed at instead."""
    missing = [f for f in (prompts_file, completions_file) if not f.exists()]
    if not missing:
        return
    hint = ""
    if path.is_file() and path.suffix == ".jsonl":
        hint = ' It looks like a JSONL file: set data.loader_type = "jsonl".'
    elif prefix.parent.is_dir():
        found = sorted(p.name for p in prefix.parent.glob(f"*{PROMPTS_SUFFIX}"))
        if found:
            hint = f" {prefix.parent} holds {', '.join(found)}: point at one of those."
    raise DatasetError(
        f"No NPY dataset at {path}: expected {prompts_file} and {completions_file} "
        f"({', '.join(str(f) for f in missing)} missing). Create them with "
        f"`{_PREPROCESS_HINT}`.{hint}"
    )


def _checked_lengths(
    prompts: np.ndarray, completions: np.ndarray, prompts_file: Path, completions_file: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's prompt and completion lengths, once the two arrays are known to pair up
    row by row and every row to hold a prompt."""
    if prompts.shape[0] != completions.shape[0]:
        raise DatasetError(
            f"{prompts_file} has {prompts.shape[0]} rows but {completions_file} has "
            f"{completions.shape[0]}; both must hold one row per example. Re-run "
            f"`{_PREPROCESS_HINT}`."
        )
    if prompts.shape[0] == 0:
        raise DatasetError(f"{prompts_file} holds no examples. Re-run `{_PREPROCESS_HINT}`.")
    prompt_lengths = _row_lengths(prompts, prompts_file)
    completion_lengths = _row_lengths(completions, completions_file)
    empty = np.flatnonzero(prompt_lengths == 0)
    if empty.size:
        raise DatasetError(
            f"{prompts_file} row {int(empty[0])} has no prompt tokens; every example needs a "
            f"prompt. Re-run `{_PREPROCESS_HINT}`."
        )
    return prompt_lengths, completion_lengths


def load_examples(
    path: Path,
    loader_type: Literal["jsonl", "npy"],
    tokenizer: TextTokenizer | None,
    on_invalid: Literal["fail", "skip"] = "fail",
    split: str = "train",
) -> tuple[list[Example], LoadReport]:
    """Load ``path`` with the loader ``data.loader_type`` names (the trainer's one entry).

    ``split`` names the files an NPY *directory* holds (``train_*`` or ``val_*``).

    NPY needs the tokenizer to decode the stored ids; JSONL ignores it. ``on_invalid``
    applies to JSONL only: NPY files are machine-written, so a bad one always fails.
    ``loader_type`` is the schema's (``DataConfig.loader_type``), which admits only these two.
    """
    if loader_type == "jsonl":
        return load_jsonl(path, on_invalid=on_invalid)
    if tokenizer is None:
        raise ValueError("Loading an NPY dataset needs the policy's tokenizer to decode it.")
    return load_npy(path, tokenizer, split)


# --------------------------------------------------------------------------- prompts


def _prompt_ids(tokenizer: TextTokenizer, example: Example, system_prompt: str | None) -> list[int]:
    if example.prompt_ids is not None:  # stored formatted: formatting again would nest it
        return list(example.prompt_ids)
    text = tokenizer.format_prompt(example.prompt, example.system or system_prompt)
    try:
        return tokenizer.encode(text)
    except MlxError as exc:  # e.g. a character outside a char-level vocabulary
        raise DatasetError(f"Prompt at {example.where}: {exc}") from exc


def encode_prompt(
    tokenizer: TextTokenizer,
    example: Example,
    max_prompt_len: int,
    system_prompt: str | None = None,
) -> tuple[list[int], bool]:
    """The prompt's token ids as the policy sees them, and whether they were cut.

    The prompt is formatted with ``format_prompt(example.prompt, example.system or
    system_prompt)`` and only the **last** ``max_prompt_len`` tokens are kept: the end of
    a prompt (the question, the template's assistant header) is what the completion must
    follow, while its beginning is often boilerplate. Pre-tokenized examples use their
    stored ids unformatted. ``max_prompt_len`` is the rl schema's, checked (positive) there.
    """
    ids = _prompt_ids(tokenizer, example, system_prompt)
    if not ids:
        raise DatasetError(
            f"The prompt at {example.where} encodes to no tokens; give it some text."
        )
    truncated = len(ids) > max_prompt_len
    return (ids[-max_prompt_len:] if truncated else ids), truncated


# --------------------------------------------------------------------------- preprocess


@dataclass
class PreprocessReport:
    """What :func:`preprocess` wrote: counts, truncations and the file prefixes."""

    train_count: int
    val_count: int
    skipped: int  # examples whose prompt encodes to no tokens
    prompt_truncated: int  # prompts longer than max_prompt_len (their tail was kept)
    completion_truncated: int  # completions longer than max_gen_len (their head was kept)
    train_path: Path  # prefix: <train_path>_prompts.npy, _completions.npy, _extra.jsonl
    val_path: Path
    max_prompt_tokens: int = 0  # width of the prompt arrays (longest stored prompt)
    max_completion_tokens: int = 0
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the log."""
        return (
            f"Wrote {self.train_count} training examples to {self.train_path}_* and "
            f"{self.val_count} validation examples to {self.val_path}_*; "
            f"{self.prompt_truncated} prompts and {self.completion_truncated} completions "
            f"were truncated, {self.skipped} examples skipped."
        )


def _check_ids(ids: list[int], example: Example, what: str) -> None:
    if ids and (min(ids) < 0 or max(ids) > _INT32_MAX):
        raise DatasetError(
            f"The {what} at {example.where} has token ids outside 0..{_INT32_MAX}, which "
            "an int32 NPY file cannot hold."
        )


def _padded(rows: Sequence[list[int]]) -> npt.NDArray[np.int32]:
    width = max((len(r) for r in rows), default=0)
    array = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, ids in enumerate(rows):
        array[i, : len(ids)] = ids
    return array


def _save_npy(file: Path, array: npt.NDArray[np.int32]) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(file, buffer.getvalue())


def _extra_line(example: Example) -> str:
    record: dict[str, Any] = {}
    if example.system is not None:
        record["system"] = example.system
    if example.test_cases is not None:
        record["test_cases"] = example.test_cases
    if example.meta:
        record["meta"] = example.meta
    return json.dumps(record, ensure_ascii=False)


def _write_split(prefix: Path, tok: _Tokenized, rows: Sequence[int]) -> list[Path]:
    """Write the examples ``rows`` of ``tok`` under ``prefix``; return the files."""
    prompts_file, completions_file, extra_file = _prefix_files(prefix)
    # The sidecar first and the prompts last: a crash in between leaves row counts that
    # disagree, which load_npy reports, rather than a new prompts file with old extras.
    atomic_write_text(extra_file, "".join(_extra_line(tok.examples[i]) + "\n" for i in rows))
    _save_npy(completions_file, _padded([tok.completions[i] for i in rows]))
    _save_npy(prompts_file, _padded([tok.prompts[i] for i in rows]))
    return [prompts_file, completions_file, extra_file]


@contextmanager
def _progress(total: int, enabled: bool | None) -> Iterator[Callable[[], None]]:
    """A rich bar on stderr while tokenizing, when a person watches; a no-op otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]tokenize"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("tokenize", total=total)
        yield lambda: bar.advance(task)


def preprocess(
    examples: Sequence[Example],
    tokenizer: TextTokenizer,
    *,
    output_train: Path,
    output_val: Path,
    max_prompt_len: int,
    max_gen_len: int,
    val_fraction: float,
    seed: int,
    system_prompt: str | None = None,
    progress: bool | None = None,
) -> PreprocessReport:
    """Tokenize examples into train and validation NPY datasets (``mlx preprocess``).

    Prompts are formatted as in training (:func:`encode_prompt`: chat template, system
    prompt, last ``max_prompt_len`` tokens), so the trainer uses the stored ids as they are;
    completions keep their first ``max_gen_len`` tokens. The examples are shuffled with
    ``seed`` and ``round(n * val_fraction)`` of them (at least 1, at most n - 1) held out.
    ``output_train`` and ``output_val`` are prefixes (``data/train`` writes
    ``data/train_prompts.npy``, ``data/train_completions.npy``, ``data/train_extra.jsonl``);
    a ``.npy``/``.json`` suffix is dropped, an existing directory gets ``train``/``val``.
    Every file is written atomically. ``progress``: a bar on stderr (default: on a TTY).
    The lengths and ``val_fraction`` are the rl schema's (``DataConfig``), checked there.
    """
    train_prefix, val_prefix = _split_prefixes(output_train, output_val)
    tok = _tokenize(examples, tokenizer, max_prompt_len, max_gen_len, system_prompt, progress)
    if tok.skipped:
        warnings.warn(
            f"Skipped {tok.skipped} example(s) whose prompt encodes to no tokens.",
            UserWarning,
            stacklevel=2,
        )
    n = len(tok.examples)
    if n < 2:
        raise DatasetError(
            f"Preprocessing needs at least 2 examples to hold one out for validation; got {n}."
        )
    n_val = min(n - 1, max(1, int(n * val_fraction + 0.5)))
    order = np.random.default_rng(seed).permutation(n).tolist()
    files = _write_split(train_prefix, tok, order[n_val:]) + _write_split(
        val_prefix, tok, order[:n_val]
    )
    return PreprocessReport(
        train_count=n - n_val,
        val_count=n_val,
        skipped=tok.skipped,
        prompt_truncated=tok.prompt_truncated,
        completion_truncated=tok.completion_truncated,
        train_path=train_prefix,
        val_path=val_prefix,
        max_prompt_tokens=max(len(p) for p in tok.prompts),
        max_completion_tokens=max((len(c) for c in tok.completions), default=0),
        files=files,
    )


def _split_prefixes(output_train: Path, output_val: Path) -> tuple[Path, Path]:
    train_prefix = _npy_prefix(Path(output_train), "train")
    val_prefix = _npy_prefix(Path(output_val), "val")
    if train_prefix.resolve() == val_prefix.resolve():
        raise DatasetError(
            f"The training and validation outputs are the same ({train_prefix}); give "
            "--output-train-path and --output-val-path different prefixes."
        )
    return train_prefix, val_prefix


@dataclass
class _Tokenized:
    """The examples ``preprocess`` keeps, their ids, and what it cut or left out."""

    examples: list[Example] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)
    completions: list[list[int]] = field(default_factory=list)
    prompt_truncated: int = 0
    completion_truncated: int = 0
    skipped: int = 0  # prompts that encode to no tokens


def _tokenize(
    examples: Sequence[Example],
    tokenizer: TextTokenizer,
    max_prompt_len: int,
    max_gen_len: int,
    system_prompt: str | None,
    progress: bool | None,
) -> _Tokenized:
    """Each example's prompt ids as training formats them (the last ``max_prompt_len``) and
    its completion's first ``max_gen_len`` ids."""
    out = _Tokenized()
    with _progress(len(examples), progress) as advance:
        for example in examples:
            ids = _prompt_ids(tokenizer, example, system_prompt)
            advance()
            if not ids:
                out.skipped += 1
                continue
            if len(ids) > max_prompt_len:
                out.prompt_truncated += 1
                ids = ids[-max_prompt_len:]
            try:
                completion = tokenizer.encode(example.completion)
            except MlxError as exc:
                raise DatasetError(f"Completion at {example.where}: {exc}") from exc
            if len(completion) > max_gen_len:
                out.completion_truncated += 1
                completion = completion[:max_gen_len]
            _check_ids(ids, example, "prompt")
            _check_ids(completion, example, "completion")
            out.examples.append(example)
            out.prompts.append(ids)
            out.completions.append(completion)
    return out


# --------------------------------------------------------------------------- stream


class PromptStream:
    """Endless, seeded, resumable stream of examples: a new permutation every epoch when shuffle.

    Epoch ``e``'s order is ``np.random.default_rng([seed, e]).permutation(n)``, a pure
    function of seed and epoch, so the whole state is two ints (:meth:`state_dict`) that a
    checkpoint stores with ``torch.save`` and loads with ``weights_only=True``; no RNG
    object is pickled, and a resumed run draws exactly the prompts an uninterrupted one
    would have.
    """

    def __init__(self, examples: Sequence[Example], *, shuffle: bool, seed: int) -> None:
        if len(examples) == 0:
            raise DatasetError("There are no examples to draw prompts from.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (resolve -1 to a drawn seed first); got {seed}.")
        self._examples = examples
        self._shuffle = shuffle
        self._seed = seed
        self._epoch = 0
        self._position = 0
        self._order: list[int] = []
        self._order_epoch = -1

    @property
    def epoch(self) -> int:
        """Completed passes over the examples (0 during the first)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Examples already drawn in the current epoch."""
        return self._position

    def __len__(self) -> int:
        return len(self._examples)

    def _current_order(self) -> list[int]:
        if self._order_epoch != self._epoch:
            n = len(self._examples)
            if self._shuffle:
                self._order = (
                    np.random.default_rng([self._seed, self._epoch]).permutation(n).tolist()
                )
            else:
                self._order = list(range(n))
            self._order_epoch = self._epoch
        return self._order

    def take(self, n: int) -> list[Example]:
        """The next ``n`` examples, continuing into the next epoch (and its order) as needed."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}.")
        out: list[Example] = []
        while len(out) < n:
            order = self._current_order()
            stop = min(len(order), self._position + n - len(out))
            out.extend(self._examples[i] for i in order[self._position : stop])
            self._position = stop
            if self._position == len(order):
                self._epoch += 1
                self._position = 0
        return out

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position", "size"}`` as plain ints; ``size`` detects a changed dataset."""
        return {"epoch": self._epoch, "position": self._position, "size": len(self._examples)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue where the stream that produced ``state`` stopped.

        If the dataset's size changed since, the order cannot match the original run's:
        that is warned about, and a position beyond the end starts the next epoch.
        """
        values: dict[str, int] = {}
        for key in ("epoch", "position"):
            if key not in state:
                raise CheckpointError(f"The data stream state lacks '{key}': {dict(state)!r}.")
            try:
                values[key] = operator.index(state[key])
            except TypeError:
                raise CheckpointError(
                    f"The data stream state's '{key}' must be an int; got {state[key]!r}."
                ) from None
            if values[key] < 0:
                raise CheckpointError(f"The data stream state's '{key}' is negative: {state!r}.")
        epoch, position = values["epoch"], values["position"]
        size = state.get("size")
        if size is not None and operator.index(size) != len(self._examples):
            warnings.warn(
                f"The dataset has {len(self._examples)} examples but had {size} when the "
                "checkpoint was written; resumed prompts will not follow the original order.",
                UserWarning,
                stacklevel=2,
            )
        if position >= len(self._examples):
            epoch, position = epoch + 1, 0
        self._epoch, self._position = epoch, position
