"""rl data layer: JSONL and NPY loading, every bad input, preprocess, PromptStream, prompts."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlharness.errors import CheckpointError, ConfigError, DatasetError
from mlharness.rl.config import rl_config_from_raw
from mlharness.rl.data import (
    Example,
    PromptStream,
    encode_prompt,
    load_examples,
    load_jsonl,
    load_npy,
    npy_files,
    preprocess,
)

pytestmark = pytest.mark.unit

FIX = 'Fix the line, or set data.on_invalid = "skip" to skip bad lines.'


class CharTok:
    """The TextTokenizer protocol at its simplest: one id per code point."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def format_prompt(self, prompt: str, system: str | None) -> str:
        return f"{system}\n{prompt}" if system else prompt


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Objects are dumped as JSON, strings written verbatim (for broken lines)."""
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def records(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(n)]


def examples(n: int) -> list[Example]:
    return [Example(prompt=f"p{i}", completion=f"c{i}", index=i) for i in range(n)]


# --------------------------------------------------------------------------- JSONL


def test_jsonl_loads_every_field_and_ignores_unknown_ones_and_blank_lines(tmp_path: Path) -> None:
    full = {
        "prompt": "Write factorial.",
        "completion": "def f(n): ...",
        "system": "You are a coder.",
        "test_cases": ["assert f(0) == 1", "assert f(5) == 120"],
        "meta": {"answer": "B", "difficulty": 3},
        "source": "ignored",
    }
    path = write_jsonl(tmp_path / "train.jsonl", full, "", "   ", {"prompt": "p", "completion": ""})
    loaded, report = load_jsonl(path)
    assert report.loaded == 2 and report.skipped == 0 and report.loader_type == "jsonl"
    first, second = loaded
    assert first == Example(
        prompt="Write factorial.",
        completion="def f(n): ...",
        system="You are a coder.",
        test_cases=["assert f(0) == 1", "assert f(5) == 120"],
        meta={"answer": "B", "difficulty": 3},
        index=0,
        line=1,
    )
    assert (second.index, second.line, second.completion) == (1, 4, "")
    assert (second.system, second.test_cases, second.meta, second.prompt_ids) == (
        None,
        None,
        {},
        None,
    )
    assert "Loaded 2 examples" in report.summary()


def test_jsonl_null_optional_fields_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = '{"prompt": "é?", "completion": "ü", "system": null, "test_cases": null, "meta": null}'
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n")
    [ex], _ = load_jsonl(path)
    assert (ex.prompt, ex.completion, ex.system, ex.test_cases, ex.meta) == (
        "é?",
        "ü",
        None,
        None,
        {},
    )


BAD_LINES = [
    ('{"prompt": "p", "completion": ', "not valid JSON"),
    ('["prompt", "completion"]', "not a JSON object but a list"),
    ('"just a string"', "not a JSON object but a string"),
    ({"completion": "c"}, "missing required field 'prompt'"),
    ({"prompt": "p"}, "missing required field 'completion'"),
    ({"prompt": 3, "completion": "c"}, "field 'prompt' must be a string, got an integer"),
    ({"prompt": "p", "completion": None}, "field 'completion' must be a string, got null"),
    ({"prompt": " ", "completion": "c"}, "field 'prompt' is empty"),
    ({"prompt": "p", "completion": "c", "system": 1}, "field 'system' must be a string"),
    ({"prompt": "p", "completion": "c", "test_cases": "x"}, "'test_cases' must be a list"),
    ({"prompt": "p", "completion": "c", "test_cases": ["a", 2]}, "item 1 is an integer"),
    ({"prompt": "p", "completion": "c", "meta": [1]}, "field 'meta' must be a JSON object"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_jsonl_bad_line_fails_with_file_line_and_fix(tmp_path: Path, bad: Any, reason: str) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", *records(2), bad, *records(1))
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 3: ")
    assert reason in message
    assert message.endswith(FIX)


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_jsonl_bad_line_is_skipped_and_counted(tmp_path: Path, bad: Any, reason: str) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", *records(2), bad, *records(1))
    with pytest.warns(UserWarning, match=r"Skipped 1 invalid line\(s\) of .*line 3"):
        loaded, report = load_jsonl(path, on_invalid="skip")
    assert [e.prompt for e in loaded] == ["question 0", "question 1", "question 0"]
    assert [e.index for e in loaded] == [0, 1, 3]  # source positions: the gap stays
    assert (report.loaded, report.skipped) == (3, 1)
    assert report.skip_reasons[0].startswith("line 3: ") and reason in report.skip_reasons[0]


def test_jsonl_skip_warns_once_with_the_first_line_numbers(tmp_path: Path) -> None:
    lines: list[Any] = []
    for _ in range(8):
        lines += [{"prompt": "p"}, records(1)[0]]
    path = write_jsonl(tmp_path / "train.jsonl", *lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, report = load_jsonl(path, on_invalid="skip")
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "Skipped 8 invalid line(s)" in text and "loaded 8 examples" in text
    assert all(f"line {n}:" in text for n in (1, 3, 5, 7, 9)) and "line 11:" not in text
    assert (len(loaded), report.skipped, len(report.skip_reasons)) == (8, 8, 5)
    assert "skipped 8 invalid lines" in report.summary()


def test_jsonl_every_line_invalid_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", {"prompt": "p"}, "nope")
    with pytest.raises(DatasetError, match=r"no valid example: all 2 lines were invalid"):
        load_jsonl(path, on_invalid="skip")


def test_jsonl_missing_file_says_what_to_provide(tmp_path: Path) -> None:
    path = tmp_path / "data" / "train.jsonl"
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)
    assert '"prompt" and "completion"' in str(info.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_jsonl_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=r"holds no examples"):
        load_jsonl(path)


def test_jsonl_bad_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(records(1)[0]).encode()
    path.write_bytes(good + b"\n" + b'{"prompt": "caf\xe9", "completion": "c"}\n' + good + b"\n")
    with pytest.raises(DatasetError, match=r"line 2: not valid UTF-8 \(byte 0xe9 at byte 16\)"):
        load_jsonl(path)
    with pytest.warns(UserWarning, match="line 2: not valid UTF-8"):
        loaded, report = load_jsonl(path, on_invalid="skip")
    assert (len(loaded), report.skipped) == (2, 1)


def test_jsonl_given_an_npy_dataset_points_at_loader_type(tmp_path: Path) -> None:
    preprocess(
        examples(4), CharTok(), output_train=tmp_path / "train", output_val=tmp_path / "val",
        max_prompt_len=8, max_gen_len=8, val_fraction=0.25, seed=0,
    )  # fmt: skip
    for path in (tmp_path, tmp_path / "train_prompts.npy", tmp_path / "train"):
        with pytest.raises(DatasetError, match=re.escape('set data.loader_type = "npy"')):
            load_jsonl(path)


# --------------------------------------------------------------------------- preprocess + NPY


def run_preprocess(tmp_path: Path, exs: Sequence[Example], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "output_train": tmp_path / "data" / "train",
        "output_val": tmp_path / "data" / "val",
        "max_prompt_len": 12,
        "max_gen_len": 5,
        "val_fraction": 0.25,
        "seed": 0,
    }
    return preprocess(exs, CharTok(), **(args | kw))


def test_preprocess_then_load_npy_round_trips_with_truncation_counts(tmp_path: Path) -> None:
    exs = [
        Example(prompt="short", completion="abc", system="S", test_cases=["t1"], meta={"k": 1}),
        Example(prompt="a prompt that is long", completion="0123456789", index=1),  # both cut
        Example(prompt="mid", completion="xyzxyz", index=2),  # completion cut
        Example(prompt="x" * 11, completion="", system="SYS", index=3),  # "SYS\n"+11 > 12: cut
        Example(prompt="q", completion="r", index=4),
        Example(prompt="w", completion="v", index=5),
        Example(prompt="e", completion="u", index=6),
        Example(prompt="t", completion="s", index=7),
    ]
    report = run_preprocess(tmp_path, exs, system_prompt="D")
    assert (report.train_count, report.val_count, report.skipped) == (6, 2, 0)
    assert (report.prompt_truncated, report.completion_truncated) == (2, 2)
    assert report.train_path == tmp_path / "data" / "train"
    assert report.val_path == tmp_path / "data" / "val"
    assert (report.max_prompt_tokens, report.max_completion_tokens) == (12, 5)
    assert sorted(p.name for p in report.files) == sorted(
        f"{s}_{k}"
        for s in ("train", "val")
        for k in ("prompts.npy", "completions.npy", "extra.jsonl")
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        p.name for p in report.files
    )
    assert "6 training examples" in report.summary()

    prompts = np.load(tmp_path / "data" / "train_prompts.npy", allow_pickle=False)
    assert prompts.dtype == np.int32 and prompts.ndim == 2 and prompts.shape[1] == 12
    assert (prompts == -1).any()  # short rows are padded

    loaded: dict[str, Example] = {}
    for name, count in (("train", 6), ("val", 2)):
        got, rep = load_npy(tmp_path / "data" / name, CharTok())
        assert (rep.loaded, rep.loader_type, len(got)) == (count, "npy", count)
        assert [e.index for e in got] == list(range(count))
        loaded |= {e.completion: e for e in got}
    expected = {  # completion -> stored prompt: formatted, tail kept
        "abc": "S\nshort",  # the example's own system wins over system_prompt
        "01234": "that is long",
        "xyzxy": "D\nmid",  # system_prompt for examples without one
        "": "\n" + "x" * 11,
        "r": "D\nq",
    }
    for completion, prompt in expected.items():
        ex = loaded[completion]
        assert ex.prompt == prompt and ex.prompt_ids == tuple(map(ord, prompt))
        assert ex.line is None
        # stored prompts are formatted already: encode_prompt must not format them again
        assert encode_prompt(CharTok(), ex, 100, system_prompt="IGNORED") == (
            list(map(ord, prompt)),
            False,
        )
    assert (loaded["abc"].system, loaded["abc"].test_cases, loaded["abc"].meta) == (
        "S",
        ["t1"],
        {"k": 1},
    )
    assert (loaded["r"].system, loaded["r"].test_cases, loaded["r"].meta) == (None, None, {})
    ids, cut = encode_prompt(CharTok(), loaded["01234"], 4)
    assert (ids, cut) == (list(map(ord, "long")), True)


def test_preprocess_split_is_seeded_and_sized(tmp_path: Path) -> None:
    def split(seed: int, n: int = 20, frac: float = 0.25) -> tuple[list[str], list[str]]:
        out = tmp_path / f"s{seed}_{n}_{frac}"
        report = preprocess(
            examples(n), CharTok(), output_train=out / "train", output_val=out / "val",
            max_prompt_len=8, max_gen_len=8, val_fraction=frac, seed=seed,
        )  # fmt: skip
        train, _ = load_npy(report.train_path, CharTok())
        val, _ = load_npy(report.val_path, CharTok())
        return [e.prompt for e in train], [e.prompt for e in val]

    train, val = split(0)
    assert (len(train), len(val)) == (15, 5)
    assert sorted(train + val) == sorted(f"p{i}" for i in range(20))
    assert split(0) == (train, val)
    assert split(1) != (train, val)
    assert [len(part) for part in split(0, n=2, frac=0.1)] == [1, 1]  # at least one held out
    assert [len(part) for part in split(0, n=3, frac=0.9)] == [1, 2]  # at least one trained


def test_preprocess_needs_two_examples_and_distinct_outputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 2 examples"):
        run_preprocess(tmp_path, examples(1))
    with pytest.raises(DatasetError, match="different prefixes"):
        run_preprocess(tmp_path, examples(4), output_val=tmp_path / "data" / "train.npy")


def test_preprocess_skips_prompts_without_tokens(tmp_path: Path) -> None:
    exs = [*examples(3), Example(prompt="", completion="c", index=3, prompt_ids=())]
    with pytest.warns(UserWarning, match="Skipped 1 example"):
        report = run_preprocess(tmp_path, exs)
    assert (report.skipped, report.train_count + report.val_count) == (1, 3)


def test_preprocess_names_the_line_a_tokenizer_cannot_encode(tmp_path: Path) -> None:
    class Strict(CharTok):
        def encode(self, text: str) -> list[int]:
            if "!" in text:
                raise DatasetError("Character '!' is not in this vocabulary.")
            return super().encode(text)

    exs = [*examples(2), Example(prompt="ok", completion="bad!", index=2, line=3)]
    with pytest.raises(DatasetError, match=r"^Completion at line 3: Character '!'"):
        preprocess(
            exs, Strict(), output_train=tmp_path / "t", output_val=tmp_path / "v",
            max_prompt_len=8, max_gen_len=8, val_fraction=0.5, seed=0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("train_arg", "val_arg", "train_prefix", "val_prefix"),
    [
        ("out/train", "out/val", "out/train", "out/val"),
        ("out/train.json", "out/val.json", "out/train", "out/val"),  # seed 002's spelling
        ("out/train.npy", "out/val.npy", "out/train", "out/val"),
        ("out/a_prompts.npy", "out/b", "out/a", "out/b"),
        ("out", "out", "out/train", "out/val"),  # an existing directory
    ],
)
def test_preprocess_output_path_forms(
    tmp_path: Path, train_arg: str, val_arg: str, train_prefix: str, val_prefix: str
) -> None:
    (tmp_path / "out").mkdir()
    report = preprocess(
        examples(4), CharTok(), output_train=tmp_path / train_arg, output_val=tmp_path / val_arg,
        max_prompt_len=8, max_gen_len=8, val_fraction=0.25, seed=0,
    )  # fmt: skip
    assert (report.train_path, report.val_path) == (tmp_path / train_prefix, tmp_path / val_prefix)
    for prefix in (train_prefix, val_prefix):
        assert (tmp_path / f"{prefix}_prompts.npy").is_file()
        assert (tmp_path / f"{prefix}_completions.npy").is_file()
        assert (tmp_path / f"{prefix}_extra.jsonl").is_file()


@pytest.fixture
def npy_dir(tmp_path: Path) -> Path:
    run_preprocess(tmp_path, examples(8))
    return tmp_path / "data"


@pytest.mark.parametrize(
    "form", ["", "train", "train_prompts.npy", "train_completions.npy", "train.npy", "train.json"]
)
def test_load_npy_path_forms(npy_dir: Path, form: str) -> None:
    loaded, report = load_npy(npy_dir / form if form else npy_dir, CharTok())
    assert (len(loaded), report.loaded) == (6, 6)
    assert npy_files(npy_dir) == (
        npy_dir / "train_prompts.npy",
        npy_dir / "train_completions.npy",
        npy_dir / "train_extra.jsonl",
    )


def test_load_npy_missing_files_say_how_to_make_them(npy_dir: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_npy(npy_dir / "test", CharTok())
    message = str(info.value)
    assert str(npy_dir / "test_prompts.npy") in message and "mlx preprocess" in message
    assert "train_prompts.npy, val_prompts.npy" in message  # what the directory does hold
    (npy_dir / "train_completions.npy").unlink()
    with pytest.raises(DatasetError, match=r"train_completions.npy missing"):
        load_npy(npy_dir, CharTok())


def test_load_npy_of_a_jsonl_file_points_at_loader_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", *records(2))
    with pytest.raises(DatasetError, match=re.escape('set data.loader_type = "jsonl"')):
        load_npy(path, CharTok())


def test_load_npy_mismatched_rows(npy_dir: Path) -> None:
    completions = np.load(npy_dir / "train_completions.npy")
    np.save(npy_dir / "train_completions.npy", completions[:-1])
    with pytest.raises(DatasetError, match=r"has 6 rows but .*train_completions.npy has 5"):
        load_npy(npy_dir, CharTok())


def test_load_npy_sidecar_is_optional_but_must_match(npy_dir: Path) -> None:
    extra = npy_dir / "train_extra.jsonl"
    extra.write_text('{"system": "s"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"has 1 rows but the token arrays have 6"):
        load_npy(npy_dir, CharTok())
    extra.write_text('{"system": "s"}\n' + '{"meta": 3}\n' * 5, encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train_extra.jsonl line 2: field 'meta' must be"):
        load_npy(npy_dir, CharTok())
    extra.unlink()
    loaded, _ = load_npy(npy_dir, CharTok())
    assert all((e.system, e.test_cases, e.meta) == (None, None, {}) for e in loaded)


MALFORMED = [
    (np.arange(6, dtype=np.int32), r"must be a 2-D integer array .* shape \(6,\)"),
    (np.zeros((6, 3), dtype=np.float32), r"must be a 2-D integer array .* dtype float32"),
    (np.array([[1, -1, 2]] * 6, dtype=np.int32), r"row 0 has padding \(-1\) before a token id"),
    (np.array([[1, 2]] * 5 + [[1, -7]], dtype=np.int32), r"row 5 holds -7"),
    (np.array([[-1, -1]] * 6, dtype=np.int32), r"row 0 has no prompt tokens"),
    (np.zeros((0, 3), dtype=np.int32), r"has 0 rows"),
]


@pytest.mark.parametrize(("array", "message"), MALFORMED)
def test_load_npy_malformed_prompt_arrays(npy_dir: Path, array: Any, message: str) -> None:
    np.save(npy_dir / "train_prompts.npy", array)
    with pytest.raises(DatasetError, match=message):
        load_npy(npy_dir, CharTok())


def test_load_npy_refuses_pickles_and_garbage(npy_dir: Path) -> None:
    np.save(npy_dir / "train_prompts.npy", np.array([[1], [2, 3]] * 3, dtype=object))
    with pytest.raises(DatasetError, match=r"not a readable NumPy .npy array"):
        load_npy(npy_dir, CharTok())
    (npy_dir / "train_prompts.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DatasetError, match=r"not a readable NumPy .npy array"):
        load_npy(npy_dir, CharTok())


def test_load_npy_undecodable_ids_blame_the_tokenizer(npy_dir: Path) -> None:
    class Small(CharTok):
        def decode(self, ids: Sequence[int]) -> str:
            return "".join("abcdefghijklmnopqrstuvwxyz"[i - 97] for i in ids)

    with pytest.raises(DatasetError, match=r"row 0 cannot be decoded .* another tokenizer"):
        load_npy(npy_dir, Small())


def test_load_examples_dispatches(tmp_path: Path, npy_dir: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", *records(2), "bad")
    with pytest.warns(UserWarning):
        got, report = load_examples(path, "jsonl", None, on_invalid="skip")
    assert (len(got), report.skipped) == (2, 1)
    got, report = load_examples(npy_dir / "val", "npy", CharTok())
    assert (len(got), report.loader_type) == (2, "npy")
    with pytest.raises(ValueError, match="needs the policy's tokenizer"):
        load_examples(npy_dir, "npy", None)


# --------------------------------------------------------------------------- PromptStream


def drawn(stream: PromptStream, n: int) -> list[int]:
    return [e.index for e in stream.take(n)]


def test_stream_is_deterministic_per_seed() -> None:
    exs = examples(10)
    first = drawn(PromptStream(exs, shuffle=True, seed=3), 35)
    assert first == drawn(PromptStream(exs, shuffle=True, seed=3), 35)
    assert first != drawn(PromptStream(exs, shuffle=True, seed=4), 35)


def test_stream_reshuffles_every_epoch() -> None:
    stream = PromptStream(examples(10), shuffle=True, seed=0)
    epochs = [drawn(stream, 10) for _ in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(10))
    assert stream.epoch == 3 and stream.position == 0
    expected = np.random.default_rng([0, 1]).permutation(10).tolist()
    assert epochs[1] == expected


def test_stream_without_shuffle_keeps_file_order_across_epochs() -> None:
    stream = PromptStream(examples(4), shuffle=False, seed=0)
    assert drawn(stream, 3) == [0, 1, 2]
    assert drawn(stream, 6) == [3, 0, 1, 2, 3, 0]
    assert (stream.epoch, stream.position) == (2, 1)
    assert stream.take(0) == [] and len(stream) == 4


def test_stream_take_spans_several_epochs() -> None:
    stream = PromptStream(examples(3), shuffle=True, seed=1)
    got = drawn(stream, 10)
    assert [sorted(got[i : i + 3]) for i in (0, 3, 6)] == [[0, 1, 2]] * 3
    assert stream.epoch == 3


@pytest.mark.parametrize("k", [0, 1, 3, 7, 10, 23])
def test_stream_resumes_exactly(k: int) -> None:
    exs = examples(10)
    original = PromptStream(exs, shuffle=True, seed=5)
    for _ in range(k):
        original.take(3)
    state = original.state_dict()
    assert all(type(v) is int for v in state.values())
    assert state["epoch"] * 10 + state["position"] == 3 * k
    restored = PromptStream(exs, shuffle=True, seed=5)
    restored.load_state_dict(dict(state))
    assert restored.epoch == original.epoch
    assert drawn(restored, 25) == drawn(original, 25)


def test_stream_state_errors_and_a_changed_dataset() -> None:
    stream = PromptStream(examples(4), shuffle=True, seed=0)
    with pytest.raises(CheckpointError, match="lacks 'position'"):
        stream.load_state_dict({"epoch": 1})
    with pytest.raises(CheckpointError, match="must be an int"):
        stream.load_state_dict({"epoch": 1, "position": 1.5})  # type: ignore[dict-item]
    with pytest.raises(CheckpointError, match="negative"):
        stream.load_state_dict({"epoch": -1, "position": 0})
    with pytest.warns(UserWarning, match="has 4 examples but had 9"):
        stream.load_state_dict({"epoch": 2, "position": 6, "size": 9})
    assert (stream.epoch, stream.position) == (3, 0)  # past the end: the next epoch
    stream.load_state_dict({"epoch": np.int64(1), "position": np.int64(2)})
    assert stream.state_dict() == {"epoch": 1, "position": 2, "size": 4}


def test_stream_needs_examples_and_a_resolved_seed() -> None:
    with pytest.raises(DatasetError, match="no examples"):
        PromptStream([], shuffle=True, seed=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        PromptStream(examples(2), shuffle=True, seed=-1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        PromptStream(examples(2), shuffle=True, seed=0).take(-1)


# --------------------------------------------------------------------------- encode_prompt


def test_encode_prompt_keeps_the_tail() -> None:
    ex = Example(prompt="abcdefgh", completion="")
    assert encode_prompt(CharTok(), ex, 3) == ([ord("f"), ord("g"), ord("h")], True)
    assert encode_prompt(CharTok(), ex, 8) == (list(map(ord, "abcdefgh")), False)


def test_encode_prompt_system_prompts() -> None:
    own = Example(prompt="p", completion="", system="mine")
    none = Example(prompt="p", completion="")
    assert encode_prompt(CharTok(), own, 50, system_prompt="default")[0] == list(
        map(ord, "mine\np")
    )
    assert encode_prompt(CharTok(), none, 50, system_prompt="default")[0] == list(
        map(ord, "default\np")
    )
    assert encode_prompt(CharTok(), none, 50)[0] == [ord("p")]


def test_encode_prompt_errors_name_the_example() -> None:
    class Silent(CharTok):
        def encode(self, text: str) -> list[int]:
            return []

    with pytest.raises(DatasetError, match="at line 4 encodes to no tokens"):
        encode_prompt(Silent(), Example(prompt="p", completion="", line=4), 5)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"loader_type": "csv"},
            "Invalid value for 'data.loader_type': Input should be 'jsonl' or 'npy' (got 'csv')",
        ),
        (
            {"on_invalid": "ignore"},
            "Invalid value for 'data.on_invalid': Input should be 'fail' or 'skip' (got 'ignore')",
        ),
        (
            {"max_prompt_len": 0},
            "Invalid value for 'data.max_prompt_len': Input should be greater than 0 (got 0)",
        ),
        (
            {"max_gen_len": -1},
            "Invalid value for 'data.max_gen_len': Input should be greater than 0 (got -1)",
        ),
        (
            {"val_fraction": 1.0},
            "Invalid value for 'data.val_fraction': Input should be less than 1 (got 1.0)",
        ),
    ],
)
def test_data_options_are_checked_once_by_the_schema(
    tmp_path: Path, data: dict[str, Any], problem: str
) -> None:
    # The loaders take these values from a validated config and do not check them again.
    raw = {
        "model": {"model_path": str(tmp_path)},
        "data": {"train_path": str(tmp_path / "t.jsonl"), **data},
        "rewards": [{"name": "exact_match"}],
    }
    with pytest.raises(ConfigError) as info:
        rl_config_from_raw(raw, tmp_path)
    assert str(info.value) == f"Configuration validation failed:\n  - {problem}"


def test_preprocess_with_a_progress_bar(tmp_path: Path) -> None:
    report = run_preprocess(tmp_path, examples(4), progress=True)
    assert report.train_count + report.val_count == 4
