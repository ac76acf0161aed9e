"""mlx prepare: registry, token files and meta.json, skipping current data, every error."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiktoken

from mlharness.errors import ConfigError, DatasetError
from mlharness.lm import prepare as prep
from mlharness.lm import registry
from mlharness.lm.config import ArithmeticConfig, LMConfig, load_lm_config
from mlharness.lm.experiments.arithmetic import generate_problems
from mlharness.lm.experiments.shakespeare_char import TINY_SHAKESPEARE_URL
from mlharness.lm.meta import load_meta
from mlharness.lm.prepare import artifacts_current, prepare_data, token_dtype
from mlharness.lm.registry import available, experiment_defaults
from mlharness.lm.tokenizers import load_tokenizer

SHAKESPEARE = Path(__file__).parents[3] / "shared" / "data" / "tinyshakespeare.txt"
BUILT_INS = [
    "arithmetic",
    "bundestag_char",
    "bundestag_tiktoken",
    "sft",
    "shakespeare",
    "shakespeare_char",
    "text",
]
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def config(experiment: str, **prepare: Any) -> LMConfig:
    prepare = {k: str(v) if isinstance(v, Path) else v for k, v in prepare.items()}
    return load_lm_config(None, experiment, overrides={"prepare": prepare} if prepare else None)


def read_tokens(data_dir: Path, meta: dict[str, Any]) -> np.ndarray[Any, Any]:
    train = np.memmap(data_dir / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(data_dir / "val.bin", dtype=meta["dtype"], mode="r")
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    return np.concatenate([train, val])


@pytest.fixture
def corpus(workspace: Path) -> Path:
    """A small UTF-8 text with a few non-ASCII characters."""
    path = workspace / "corpus.txt"
    lines = [f"Zeile {i}: Grüße aus dem Bundestag, Rede Nummer {i * 7}.\n" for i in range(300)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def shakespeare() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} (tiny-shakespeare) is not present beside the repository")
    return SHAKESPEARE


# --------------------------------------------------------------------------- registry


def test_registry_discovers_every_built_in() -> None:
    assert available() == BUILT_INS
    assert all(prep.get(name).description for name in BUILT_INS)


def test_experiment_defaults() -> None:
    assert experiment_defaults("shakespeare") == {
        "prepare": {"tokenizer": "tiktoken:gpt2", "url": TINY_SHAKESPEARE_URL}
    }
    assert experiment_defaults("shakespeare_char")["prepare"]["tokenizer"] == "char"
    assert experiment_defaults("arithmetic")["model"]["block_size"] == 32
    assert experiment_defaults("no_such_experiment") == {}
    experiment_defaults("shakespeare")["prepare"]["tokenizer"] = "bpe"  # a copy each time
    assert experiment_defaults("shakespeare")["prepare"]["tokenizer"] == "tiktoken:gpt2"


def test_defaults_reach_the_config(workspace: Path) -> None:
    cfg = load_lm_config(None, "shakespeare")
    assert cfg.prepare.tokenizer == "tiktoken:gpt2"
    assert cfg.prepare.url == TINY_SHAKESPEARE_URL
    assert load_lm_config(None, "arithmetic").model.block_size == 32
    assert cfg.data_dir == workspace / "data" / "shakespeare"


def test_register_refuses_a_second_module_with_the_same_name() -> None:
    def impostor(ctx: prep.PrepareContext) -> prep.Source:
        return prep.Source(text="x")

    with pytest.raises(ValueError, match="Preparer 'text' is registered twice"):
        registry.register("text")(impostor)


def test_unknown_preparer(workspace: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare_data(config("mystery"), progress=False)
    assert str(info.value) == (
        "No preparer named 'mystery' is registered (without prepare.preparer, the experiment "
        "name is used). Available preparers: arithmetic, bundestag_char, bundestag_tiktoken, "
        "sft, shakespeare, shakespeare_char, text. Set prepare.preparer to one of them, for "
        'example "text" for your own text file.'
    )


def test_prepare_does_not_import_torch() -> None:
    code = (
        "import sys, mlharness.lm.prepare, mlharness.lm.registry as r; r.available(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- token files


def test_char_prepare_writes_nanogpt_files_and_meta(workspace: Path, shakespeare: Path) -> None:
    cfg = config("shakespeare_char")
    report = prepare_data(cfg, shakespeare, progress=False)
    data = shakespeare.read_bytes()
    text = data.decode("utf-8")

    meta = json.loads((cfg.data_dir / "meta.json").read_text(encoding="utf-8"))
    created_at = meta.pop("created_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created_at)
    chars = "".join(sorted(set(text)))
    assert meta == {
        "format": 1,
        "experiment": "shakespeare_char",
        "preparer": "shakespeare_char",
        "tokenizer": {"type": "char", "chars": chars},
        "vocab_size": 65,
        "dtype": "uint16",
        "train_tokens": 1_003_855,
        "val_tokens": 111_539,
        "source": {
            "path": str(shakespeare.resolve()),
            "sha256": report.source_sha256,
            "bytes": len(data),
        },
        "settings": {"tokenizer": "char", "val_fraction": 0.1},
    }
    assert report.train_tokens + report.val_tokens == len(text)
    assert (report.vocab_size, report.dtype, report.skipped) == (65, "uint16", False)
    assert sorted(p.name for p in cfg.data_dir.iterdir()) == ["meta.json", "train.bin", "val.bin"]

    tokens = read_tokens(cfg.data_dir, meta)
    tokenizer = load_tokenizer(cfg.data_dir)
    assert tokenizer.decode(tokens.tolist()) == text
    assert (cfg.data_dir / "train.bin").read_bytes()[:4] == np.array(
        tokenizer.encode("Fi"), dtype="<u2"
    ).tobytes()  # raw little-endian uint16, nanoGPT's format


def test_bpe_prepare_writes_tokenizer_json(workspace: Path, corpus: Path) -> None:
    cfg = config("text", tokenizer="bpe", bpe_vocab_size=300)
    report = prepare_data(cfg, corpus, progress=False)
    assert report.tokenizer == {"type": "bpe", "vocab_size": 300}
    assert (cfg.data_dir / "tokenizer.json").is_file()
    meta = load_meta(cfg.data_dir)
    assert meta["settings"] == {"tokenizer": "bpe", "val_fraction": 0.1, "bpe_vocab_size": 300}
    tokens = read_tokens(cfg.data_dir, meta)
    assert load_tokenizer(cfg.data_dir).decode(tokens.tolist()) == corpus.read_text("utf-8")
    assert artifacts_current(cfg, corpus)
    (cfg.data_dir / "tokenizer.json").unlink()
    assert not artifacts_current(cfg, corpus)

    char = config("text")  # same data dir, char now: the stale tokenizer.json goes away
    prepare_data(char, corpus, progress=False)
    (cfg.data_dir / "tokenizer.json").write_text("{}")
    prepare_data(char, corpus, force=True, progress=False)
    assert not (cfg.data_dir / "tokenizer.json").exists()


def test_tiktoken_prepare_with_a_local_encoding(
    workspace: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranks = {bytes([i]): i for i in range(256)} | {b"er": 256, b"de": 257, b" R": 258}
    encoding = tiktoken.Encoding(
        name="test_bytes",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 259},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_bytes", encoding)
    cfg = config("bundestag_tiktoken", tokenizer="tiktoken:test_bytes")
    report = prepare_data(cfg, corpus, progress=False)
    assert report.tokenizer == {"type": "tiktoken", "encoding": "test_bytes"}
    assert (report.vocab_size, report.dtype) == (260, "uint16")
    text = corpus.read_text("utf-8")
    assert report.train_tokens + report.val_tokens == len(encoding.encode_ordinary(text))
    tokens = read_tokens(cfg.data_dir, load_meta(cfg.data_dir))
    assert load_tokenizer(cfg.data_dir).decode(tokens.tolist()) == text


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [
        (65, "uint16"),
        (50_257, "uint16"),
        (65_536, "uint16"),
        (65_537, "uint32"),
        (200_019, "uint32"),
    ],
)
def test_token_dtype(vocab_size: int, dtype: str) -> None:
    assert token_dtype(vocab_size) == dtype  # 65_536 ids run 0..65_535: still uint16


def test_uint32_files_when_the_vocabulary_is_large(
    workspace: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranks = {bytes([i]): i for i in range(256)}
    encoding = tiktoken.Encoding(
        name="test_big",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 70_000},
    )
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_big", encoding)
    cfg = config("text", tokenizer="tiktoken:test_big")
    report = prepare_data(cfg, corpus, progress=False)
    assert (report.vocab_size, report.dtype) == (70_001, "uint32")
    size = (cfg.data_dir / "val.bin").stat().st_size
    assert size == 4 * report.val_tokens


def test_input_argument_wins_over_prepare_input(workspace: Path, corpus: Path) -> None:
    other = workspace / "other.txt"
    other.write_text("abcabc" * 10, encoding="utf-8")
    report = prepare_data(config("text", input=other), corpus, progress=False)
    assert report.vocab_size == len(set(corpus.read_text("utf-8")))
    report = prepare_data(config("text", input=other), force=True, progress=False)
    assert report.vocab_size == 3


def test_progress_lines_only_on_a_terminal(
    workspace: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    prepare_data(config("text"), corpus, progress=False)
    assert terminal.getvalue() == ""
    prepare_data(config("text"), corpus, force=True, progress=True)
    assert terminal.getvalue().startswith("prepare: Tokenizing 0.0 MB with char\n")


# --------------------------------------------------------------------------- arithmetic


def test_arithmetic_format_and_determinism(workspace: Path) -> None:
    problems = ArithmeticConfig(num_examples=500, max_operand=50, operations=["+", "-", "*"])
    text = generate_problems(problems)
    lines = text.splitlines()
    assert len(lines) == 500 and text.endswith("\n")
    seen = set()
    for line in lines:
        match = re.fullmatch(r"(\d+)([-+*])(\d+)=(\d+)", line)
        assert match, line
        a, op, b, c = match.groups()
        seen.add(op)
        assert int(a) <= 50 and int(b) <= 50
        assert int(c) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    assert seen == {"+", "-", "*"}

    first = prepare_data(config("arithmetic"), progress=False)
    bytes_a = (workspace / "data" / "arithmetic" / "train.bin").read_bytes()
    prepare_data(config("arithmetic"), force=True, progress=False)
    assert (workspace / "data" / "arithmetic" / "train.bin").read_bytes() == bytes_a
    other = config("arithmetic", arithmetic={"seed": 7})
    assert not artifacts_current(other)
    second = prepare_data(other, progress=False)
    assert (workspace / "data" / "arithmetic" / "train.bin").read_bytes() != bytes_a
    assert first.source_sha256 != second.source_sha256
    meta = load_meta(workspace / "data" / "arithmetic")
    assert meta["source"]["generator"] == "arithmetic"
    assert meta["train_tokens"] + meta["val_tokens"] == meta["source"]["bytes"] > 0
    assert set(meta["tokenizer"]["chars"]) == set("0123456789+=\n")


# --------------------------------------------------------------------------- current or not


def test_artifacts_current_tracks_source_and_settings(workspace: Path, corpus: Path) -> None:
    cfg = config("text")
    assert not artifacts_current(cfg, corpus)
    first = prepare_data(cfg, corpus, progress=False)
    assert artifacts_current(cfg, corpus)

    skipped = prepare_data(cfg, corpus, progress=False)
    assert skipped.skipped and skipped.train_tokens == first.train_tokens
    assert not prepare_data(cfg, corpus, force=True, progress=False).skipped

    assert not artifacts_current(config("text", val_fraction=0.2), corpus)
    assert not artifacts_current(config("text", tokenizer="bpe"), corpus)
    assert not artifacts_current(config("text", preparer="bundestag_char"), corpus)

    with corpus.open("a", encoding="utf-8") as f:
        f.write("one more line\n")
    assert not artifacts_current(cfg, corpus)
    prepare_data(cfg, corpus, progress=False)
    assert artifacts_current(cfg, corpus)
    (cfg.data_dir / "val.bin").unlink()
    assert not artifacts_current(cfg, corpus)


def test_download_once_then_current_by_url(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, float]] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        calls.append((url, timeout))
        return io.BytesIO(b"To be, or not to be: that is the question.\n" * 20)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    cfg = config("shakespeare_char")
    prepare_data(cfg, progress=False)
    assert calls == [(TINY_SHAKESPEARE_URL, 5.0)]
    meta = load_meta(cfg.data_dir)
    assert meta["source"]["url"] == TINY_SHAKESPEARE_URL
    assert meta["source"]["path"] == str(cfg.data_dir / "input.txt")

    prepare_data(cfg, force=True, progress=False)
    assert len(calls) == 1  # the local copy is reused
    (cfg.data_dir / "input.txt").unlink()
    assert artifacts_current(cfg)  # same URL, no local copy: current
    assert not artifacts_current(config("shakespeare_char", url="https://example.org/x.txt"))


def test_data_from_a_local_copy_is_current_without_input(
    workspace: Path, corpus: Path, no_download: None
) -> None:
    from mlharness.lm import runner

    cfg = config("shakespeare_char")  # its default source is a download
    prepare_data(cfg, corpus, progress=False)
    assert artifacts_current(cfg)  # the loop without --input: no download, no re-prepare
    assert runner.prepare_if_needed(cfg) is None
    assert prepare_data(cfg, progress=False).skipped
    assert artifacts_current(cfg, corpus)  # the same file given again

    corpus.unlink()  # like a deleted download: the artifacts are all there is
    assert artifacts_current(cfg)
    assert not artifacts_current(cfg, corpus)  # but a file given now must exist
    assert not artifacts_current(config("shakespeare_char", tokenizer="bpe"))
    assert not artifacts_current(config("shakespeare_char", val_fraction=0.2))


def test_data_from_a_local_copy_is_stale_when_another_input_is_given(
    workspace: Path, corpus: Path, no_download: None
) -> None:
    cfg = config("shakespeare_char")
    prepare_data(cfg, corpus, progress=False)
    other = workspace / "other.txt"
    other.write_text("To be, or not to be.\n" * 20, encoding="utf-8")
    assert not artifacts_current(cfg, other)
    assert not artifacts_current(config("shakespeare_char", input=other))
    report = prepare_data(cfg, other, progress=False)
    assert not report.skipped and report.vocab_size == len(set(other.read_text("utf-8")))
    assert load_meta(cfg.data_dir)["source"]["path"] == str(other)
    assert artifacts_current(cfg)

    with other.open("a", encoding="utf-8") as f:
        f.write("one more line\n")  # the recorded file changed: no longer current
    assert not artifacts_current(cfg)
    assert not prepare_data(cfg, other, progress=False).skipped


def test_data_from_a_given_file_stays_current_without_a_default_download(
    workspace: Path, corpus: Path, no_download: None
) -> None:
    cfg = config("bundestag_char")  # no download, and no data/bundestag_char/input.txt
    prepare_data(cfg, corpus, progress=False)
    assert artifacts_current(cfg)
    default = cfg.data_dir / "input.txt"  # the default file, once there, is the source
    default.write_text("Etwas ganz anderes.\n" * 20, encoding="utf-8")
    assert not artifacts_current(cfg)
    assert not prepare_data(cfg, progress=False).skipped
    assert load_meta(cfg.data_dir)["source"]["path"] == str(default)


# --------------------------------------------------------------------------- errors


def test_download_failure_says_to_pass_input(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cfg = config("shakespeare")
    with pytest.raises(DatasetError) as info:
        prepare_data(cfg, progress=False)
    assert str(info.value) == (
        f"{TINY_SHAKESPEARE_URL} could not be downloaded (<urlopen error [Errno -2] Name or "
        "service not known>). Pass --input PATH with a local copy (for example "
        f"../shared/data/tinyshakespeare.txt), or save it as {cfg.data_dir / 'input.txt'}."
    )
    assert not cfg.data_dir.exists() or not any(cfg.data_dir.iterdir())


def test_missing_input_file(workspace: Path) -> None:
    with pytest.raises(DatasetError) as info:
        prepare_data(config("text"), workspace / "nope.txt", progress=False)
    assert str(info.value) == (
        f"Input file {workspace / 'nope.txt'} does not exist: provide it, or pass --input "
        "PATH (or set prepare.input) to a UTF-8 text file."
    )


@pytest.mark.parametrize("via", ["--input", "prepare.input"])
def test_arithmetic_refuses_an_input_file(workspace: Path, via: str) -> None:
    missing = workspace / "does_not_exist.txt"
    cfg = config("arithmetic", input=missing) if via == "prepare.input" else config("arithmetic")
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg, missing if via == "--input" else None, progress=False)
    assert str(info.value) == (
        f"The arithmetic experiment generates its problems and takes no input file, but "
        f"{missing} was given: remove --input (or prepare.input from the config) and run again."
    )
    assert not (workspace / "data" / "arithmetic").exists()  # nothing written


def test_arithmetic_refuses_a_url(workspace: Path) -> None:
    cfg = config("arithmetic", url="https://example.org/text.txt")
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg, progress=False)
    assert str(info.value) == (
        "The arithmetic experiment generates its problems and downloads nothing, but "
        "prepare.url is https://example.org/text.txt: remove it from the config and run again."
    )


def test_arithmetic_refuses_an_input_file_when_current(workspace: Path, corpus: Path) -> None:
    cfg = config("arithmetic")
    prepare_data(cfg, progress=False)
    with pytest.raises(ConfigError, match="takes no input file"):
        artifacts_current(cfg, corpus)  # the loop's check refuses it too, not only prepare


def test_any_generated_source_refuses_an_input_file(
    workspace: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def generated(ctx: prep.PrepareContext) -> prep.Source:
        return prep.Source(text="abc\n" * 10)

    monkeypatch.setitem(registry._REGISTRY, "gen", registry.Preparer("gen", generated, {}, "test"))
    assert not prepare_data(config("gen"), progress=False).skipped
    with pytest.raises(ConfigError) as info:
        prepare_data(config("gen"), corpus, force=True, progress=False)
    assert str(info.value) == (
        f"The gen experiment generates its text and takes no input file, but {corpus} was "
        "given: remove --input (or prepare.input from the config) and run again."
    )


def test_every_file_preparer_reads_the_given_input(workspace: Path, corpus: Path) -> None:
    for name in BUILT_INS:
        ctx = prep.PrepareContext(config(name), corpus, workspace / "data" / name)
        if name == "arithmetic":
            with pytest.raises(ConfigError, match="takes no input file"):
                prep.get(name).fn(ctx)
        else:
            assert prep.get(name).fn(ctx).path == corpus, name


def test_bundestag_without_input_names_the_file_to_provide(workspace: Path) -> None:
    with pytest.raises(DatasetError) as info:
        prepare_data(config("bundestag_char"), progress=False)
    expected = workspace / "data" / "bundestag_char" / "input.txt"
    assert str(info.value) == (
        f"Input file {expected} does not exist: provide it, or pass --input PATH (or set "
        "prepare.input) to a UTF-8 text file."
    )


def test_input_is_a_directory(workspace: Path) -> None:
    with pytest.raises(DatasetError) as info:
        prepare_data(config("text"), workspace, progress=False)
    assert str(info.value) == (
        f"Input {workspace} is a directory, not a text file: pass --input PATH (or set "
        "prepare.input) to a UTF-8 text file."
    )


def test_empty_input(workspace: Path) -> None:
    path = workspace / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        prepare_data(config("text"), path, progress=False)
    assert str(info.value) == (
        f"Input file {path} is empty: put the training text in it, or pass --input PATH (or "
        "set prepare.input) to a UTF-8 text file."
    )


def test_bad_utf8_names_the_byte_offset(workspace: Path) -> None:
    path = workspace / "latin1.txt"
    path.write_bytes("Grüße\n".encode("latin-1"))
    with pytest.raises(DatasetError) as info:
        prepare_data(config("text"), path, progress=False)
    assert str(info.value) == (
        f"Input file {path} is not valid UTF-8: byte 0xfc at offset 2 (invalid start byte). "
        "Convert it to UTF-8 (for example with `iconv -f latin1 -t utf-8`) and prepare again."
    )


def test_text_too_short_to_split(workspace: Path) -> None:
    path = workspace / "one.txt"
    path.write_text("a", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        prepare_data(config("text"), path, progress=False)
    assert str(info.value) == (
        "The source text gives only 1 token(s), too few to split into training and "
        "validation data: use a longer text."
    )


def test_load_meta_missing_or_broken(workspace: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_meta(workspace)
    assert str(info.value) == (
        f"{workspace / 'meta.json'} is missing: run `mlx prepare <experiment> --config ...` "
        "to create it."
    )
    (workspace / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"meta\.json cannot be read \(Expecting"):
        load_meta(workspace)
    (workspace / "meta.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="does not hold a JSON object"):
        load_meta(workspace)
