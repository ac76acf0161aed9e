"""Hostile or careless config input (issue 14, section 3): each class is refused with one
``Error: ...`` line naming the field, exit code 1, before anything is run or written.

The CLI runs in this process (``mlharness.cli.main``) on dry runs of all three kinds; a few
cases go straight to the loader. docs/security.md lists the limits these tests pin.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mlharness.cli import main
from mlharness.config import limits, parse_set_items, read_config_file
from mlharness.config.paths import name_problem, path_problem
from mlharness.errors import ConfigError, printable
from mlharness.lm.config import LMConfig
from mlharness.rl.config import RLConfig
from mlharness.tabular.config import ExperimentConfig

BIG = "1" * 5000  # over Python's 4,300-digit limit on int("...")

TABULAR: dict[str, Any] = {
    "name": "exp",
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 50, "n_features": 3}},
    "model": {"name": "linear_regression"},
    "training": {"epochs": 2},
}
LM: dict[str, Any] = {
    "name": "tiny",
    "prepare": {"preparer": "text", "input": "corpus.txt"},
    "train": {"max_iters": 10},
}
RL: dict[str, Any] = {
    "kind": "rl",
    "name": "grpo",
    "model": {"model_path": "model"},
    "data": {"train_path": "train.jsonl"},
    "rewards": [{"name": "numeric_match"}],
}
KINDS = {"tabular": TABULAR, "lm": LM, "rl": RL}


@pytest.fixture
def ws(workspace: Path) -> Path:
    """A workspace with what the rl config points at: a model directory and prompts."""
    (workspace / "model").mkdir()
    (workspace / "model" / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
    (workspace / "train.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    (workspace / "corpus.txt").write_text("hello world\n", encoding="utf-8")
    return workspace


def dry_run(kind: str, config: str, *extra: str) -> list[str]:
    if kind == "tabular":
        return ["run-experiment", "--dry-run", "--config", config, *extra]
    return ["train", "--config", config, "--dry-run", *extra]


def mlx(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run ``mlx ARGS``: exit 1 and an ``Error:`` holding every needle; nothing written."""
    before = _files(Path.cwd())
    code, _, err = mlx(args, capsys)
    assert code == 1, err
    assert err.startswith("Error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert _files(Path.cwd()) == before
    return err


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def write(path: Path, data: dict[str, Any]) -> str:
    """``data`` as JSON, YAML or TOML by the suffix (TOML written by hand: no writer here)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(data), encoding="utf-8")
    elif path.suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    else:
        path.write_text(_toml(data), encoding="utf-8")
    return path.name


def _toml(data: dict[str, Any]) -> str:
    lines = [f"{k} = {_inline(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_inline(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def test_the_example_configs_pass(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for kind, data in KINDS.items():
        for suffix in (".json", ".yaml", ".toml"):
            name = write(ws / f"{kind}{suffix}", data)
            code, out, err = mlx(dry_run(kind, name), capsys)
            assert code == 0, err
            assert "Dry run" in out


# --------------------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("kind", "suffix", "text", "field"),
    [
        ("tabular", ".json", json.dumps(TABULAR).replace('"epochs": 2', f'"epochs": {BIG}'),
         "'training.epochs' in big.json"),
        ("tabular", ".yaml", f"name: e\ntraining: {{epochs: {BIG}}}\n",
         "'training.epochs' in big.yaml"),
        ("tabular", ".yaml", f"name: e\ntraining: {{epochs: 0x{'f' * 5000}}}\n",
         "'training.epochs' in big.yaml"),
        ("lm", ".toml", f'name = "tiny"\n[train]\nmax_iters = {BIG}\n',
         "'train.max_iters' in big.toml (line 3, column 13)"),
        ("lm", ".toml", f'name = "tiny"\n[train]\nx = {{y = [1, {BIG}]}}\n',
         "'train.x.y[1]' in big.toml"),
        ("rl", ".yaml", f"{json.dumps(RL)[:-1]}, trainer: {{seed: 0x{'f' * 3600}}}}}",
         "'trainer.seed' in big.yaml"),
    ],
    ids=["json", "yaml", "yaml-hex", "toml", "toml-inline", "yaml-hex-4335-digits"],
)  # fmt: skip
def test_integers_over_4300_digits_are_refused_in_files(
    ws: Path, capsys: pytest.CaptureFixture[str], kind: str, suffix: str, text: str, field: str
) -> None:
    (ws / f"big{suffix}").write_text(text, encoding="utf-8")
    refused(dry_run(kind, f"big{suffix}"), capsys, field, "at most 4,300 digits")


@pytest.mark.parametrize(
    ("kind", "key"),
    [("tabular", "training.epochs"), ("lm", "train.max_iters"), ("rl", "trainer.seed")],
)
def test_integers_over_4300_digits_are_refused_in_overrides(
    ws: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    key: str,
) -> None:
    config = write(ws / "c.json", KINDS[kind])
    for value in (BIG, "0" + BIG, f"[1, {BIG}]"):
        where = f"'{key}' in --set" if value[0] != "[" else f"'{key}[1]' in --set"
        refused(dry_run(kind, config, "--set", f"{key}={value}"), capsys, where, "4,300 digits")
    section, field = key.split(".")
    monkeypatch.setenv("MLX_OVERRIDES", f'{{"{section}": {{"{field}": {BIG}}}}}')
    refused(dry_run(kind, config), capsys, f"'{key}' in MLX_OVERRIDES", "4,300 digits")


# --------------------------------------------------------------------------- nesting


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 1000, 5000])
@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_deep_nesting_is_refused_naming_the_field(
    ws: Path, capsys: pytest.CaptureFixture[str], suffix: str, depth: int
) -> None:
    text = {
        ".json": f'{{"name": "tiny", "train": {{"extra": {_nested(depth)}}}}}',
        ".yaml": f"name: tiny\ntrain:\n  extra: {_nested(depth)}\n",
        ".toml": f'name = "tiny"\n[train]\nextra = {_nested(depth)}\n',
    }[suffix]
    (ws / f"deep{suffix}").write_text(text, encoding="utf-8")
    refused(dry_run("lm", f"deep{suffix}"), capsys, "'train.extra[0][0]", "more than 32 levels")


def test_deep_nesting_is_refused_in_overrides_and_dotted_keys(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(ws / "c.json", TABULAR)
    deep = f"training.params={_nested(1000)}"
    refused(dry_run("tabular", config, "--set", deep), capsys, "'training.params[0]", "32 levels")
    refused(dry_run("tabular", config, "--set", "a." * 40 + "b=1"), capsys, "'a.a.a", "32 levels")
    (ws / "dotted.toml").write_text('name = "tiny"\n' + "a." * 1200 + "b = 1\n")
    refused(dry_run("lm", "dotted.toml"), capsys, "'a.a.a.a.a.a...", "32 levels")
    monkeypatch.setenv("MLX_OVERRIDES", f'{{"training": {{"params": {_nested(1000)}}}}}')
    refused(dry_run("tabular", config), capsys, "'training.params[0]", "in MLX_OVERRIDES")
    monkeypatch.setenv("MLX_OVERRIDES", '{"training": ' * 1000 + "1" + "}" * 1000)
    refused(dry_run("tabular", config), capsys, "'training.training.training", "32 levels")


def test_a_realistic_depth_is_accepted(ws: Path) -> None:
    nested: Any = 1
    for _ in range(limits.MAX_DEPTH - 2):
        nested = {"k": nested}
    (ws / "ok.json").write_text(json.dumps({"training": {"params": nested}}))
    assert read_config_file("ok.json")["training"]["params"]["k"]["k"]


# --------------------------------------------------------------------------- size and aliases

BOMB = """\
name: exp
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    refused(dry_run("tabular", "bomb.yaml"), capsys, "bomb.yaml expands to more than 10,000 values")
    refused(dry_run("tabular", "bomb.yaml"), capsys, "reached at 'i[8]")


def test_aliases_within_the_bound_still_work(ws: Path) -> None:
    text = "base: &base {epochs: 3, batch_size: 4}\ntraining:\n  <<: *base\n  epochs: 5\n"
    (ws / "merge.yaml").write_text(text, encoding="utf-8")
    assert read_config_file("merge.yaml")["training"] == {"epochs": 5, "batch_size": 4}


def test_a_self_referencing_alias_is_refused(ws: Path) -> None:
    (ws / "loop.yaml").write_text("name: exp\nmodel: &m {params: *m}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'model\.params' in loop\.yaml refers to itself"):
        read_config_file("loop.yaml")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_a_50_mb_config_is_refused_without_reading_it(
    ws: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    with (ws / f"huge{suffix}").open("wb") as f:
        f.truncate(50 * 2**20)  # sparse: 50 MB on paper, nothing on disk
    refused(
        dry_run("tabular", f"huge{suffix}"),
        capsys,
        f"Configuration file huge{suffix} is 50.0 MiB",
        "at most 256 KiB (262,144 bytes)",
    )


def test_many_values_are_refused_even_under_the_size_limit(ws: Path) -> None:
    (ws / "many.yaml").write_text("name: e\nx: [" + "1," * 20_000 + "1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds more than 10,000 values \(reached at 'x\["):
        read_config_file("many.yaml")


# --------------------------------------------------------------------------- NUL, text


@pytest.mark.parametrize(
    ("kind", "section", "field"),
    [
        ("tabular", "output", "directory"),
        ("tabular", "dataset", "path"),
        ("lm", "output", "directory"),
        ("lm", "prepare", "input"),
        ("lm", "prepare", "data_dir"),
        ("rl", "model", "model_path"),
        ("rl", "model", "ref_model_path"),
        ("rl", "data", "train_path"),
        ("rl", "trainer", "output_dir"),
    ],
)
def test_a_nul_byte_in_a_path_is_refused(
    ws: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    section: str,
    field: str,
) -> None:
    data = json.loads(json.dumps(KINDS[kind]))
    data.setdefault(section, {})[field] = "runs/a\0b"
    config = write(ws / "nul.json", data)
    refused(dry_run(kind, config), capsys, f"'{section}.{field}' in nul.json holds a NUL byte")
    config = write(ws / "c.json", KINDS[kind])
    monkeypatch.setenv("MLX_OVERRIDES", json.dumps({section: {field: "a\0b"}}))
    refused(dry_run(kind, config), capsys, f"'{section}.{field}' in MLX_OVERRIDES holds a NUL")


def test_a_lone_surrogate_is_refused(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "s.json").write_text(json.dumps({**TABULAR, "description": "a\ud800b"}))
    refused(dry_run("tabular", "s.json"), capsys, "'description' in s.json", "lone surrogate")


# --------------------------------------------------------------------------- inf and nan

FINITE_FIELDS = [
    ("lm", "train.learning_rate"),
    ("lm", "train.weight_decay"),
    ("lm", "train.grad_clip"),
    ("lm", "sample.temperature"),
    ("rl", "trainer.learning_rate"),
    ("rl", "trainer.grpo_beta"),
    ("rl", "trainer.max_grad_norm"),
    ("rl", "trainer.epsilon"),
    ("rl", "generation.bias_close_think"),
    ("tabular", "dataset.params.noise_std"),
]


@pytest.mark.parametrize(("kind", "key"), FINITE_FIELDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf", ".nan"])
def test_non_finite_floats_are_refused_naming_the_field(
    ws: Path, capsys: pytest.CaptureFixture[str], kind: str, key: str, value: str
) -> None:
    config = write(ws / "c.json", KINDS[kind])
    refused(
        dry_run(kind, config, "--set", f"{key}={value}"),
        capsys,
        f"Invalid value for '{key}': Input should be a finite number",
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_non_finite_floats_are_refused_in_files(
    ws: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    literal = {".json": "Infinity", ".yaml": ".inf", ".toml": "inf"}[suffix]
    text = {
        ".json": f'{{"name": "tiny", "train": {{"learning_rate": {literal}}}}}',
        ".yaml": f"name: tiny\ntrain:\n  learning_rate: {literal}\n",
        ".toml": f'name = "tiny"\n[train]\nlearning_rate = {literal}\n',
    }[suffix]
    (ws / f"inf{suffix}").write_text(text, encoding="utf-8")
    refused(dry_run("lm", f"inf{suffix}"), capsys, "'train.learning_rate'", "finite number")


def _float_fields(model: type[BaseModel], seen: set[type] | None = None) -> Iterator[Any]:
    """(model, field, a non-finite value of its type) for every float field, nested ones too."""
    seen = seen if seen is not None else set()
    if model in seen:
        return
    seen.add(model)
    for name, info in model.model_fields.items():
        for tp in _types(info.annotation):
            if tp is float:
                yield model, name, math.inf
            elif typing.get_origin(tp) is list and float in typing.get_args(tp):
                yield model, name, [math.nan]
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                yield from _float_fields(tp, seen)


def _types(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Annotated:
        return _types(args[0])
    if args and typing.get_origin(tp) not in (list, dict):  # a union
        return [t for a in args for t in _types(a)]
    return [tp]


@pytest.mark.parametrize("schema", [LMConfig, RLConfig, ExperimentConfig])
def test_every_float_field_of_every_schema_must_be_finite(schema: type[BaseModel]) -> None:
    fields = list(_float_fields(schema))
    assert len(fields) >= 3
    for model, name, value in fields:
        with pytest.raises(ValidationError) as info:
            model.model_validate({name: value})
        kinds = {e["type"] for e in info.value.errors() if e["loc"][0] == name}
        assert "finite_number" in kinds, (model.__name__, name, info.value.errors())


# --------------------------------------------------------------------------- model and data paths


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.model_path", "/dev/null", "model.model_path /dev/null is a character device"),
        ("model.model_path", "/", "model.model_path / holds no model"),
        ("model.model_path", "train.jsonl", "is a regular file, not a model directory"),
        ("model.ref_model_path", "/dev/null", "model.ref_model_path /dev/null is a character"),
        ("data.train_path", "/dev/null", "data.train_path /dev/null is a character device"),
        ("data.val_path", "/dev/null", "data.val_path /dev/null is a character device"),
    ],
)
def test_model_and_data_paths_must_be_of_the_expected_kind(
    ws: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, message: str
) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    config = write(ws / "rl.json", RL)
    refused(dry_run("rl", config, "--set", f"{key}={value}"), capsys, message)


@pytest.mark.parametrize("kind", ["tabular", "lm", "rl"])
def test_an_output_directory_that_is_a_file_is_refused(
    ws: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    key = {"tabular": "output.directory", "lm": "output.directory", "rl": "trainer.output_dir"}
    config = write(ws / "c.json", KINDS[kind])
    refused(
        dry_run(kind, config, "--set", f"{key[kind]}=corpus.txt/runs"),
        capsys,
        "corpus.txt' is not a directory: runs need a directory there.",
        f"set {'Output directory' if kind == 'tabular' else key[kind]} ('",
    )


# --------------------------------------------------------------------------- names

BAD_NAMES = {
    "blank": ("   ", "it is blank"),
    "control": ("exp\x1b[2J", "U+001B; remove it"),
    "bidi-override": ("exp\u202egnp.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    "bidi-isolate": ("exp\u2066x", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    "newline": ("exp\nname", "U+000A"),
    "too-long": ("x" * 256, "it is 256 bytes long, and a name holds at most 255 bytes"),
    "too-long-utf8": ("é" * 128, "it is 256 bytes long"),
}


@pytest.mark.parametrize("kind", ["tabular", "lm", "rl"])
@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_bad_experiment_names_are_refused(
    ws: Path, capsys: pytest.CaptureFixture[str], kind: str, case: str
) -> None:
    name, reason = BAD_NAMES[case]
    config = write(ws / "c.json", {**KINDS[kind], "name": name})
    err = refused(dry_run(kind, config), capsys, "must be usable as a directory name", reason)
    assert "\x1b" not in err and "\u202e" not in err and "\u2066" not in err


def test_a_255_byte_name_is_accepted(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(ws / "c.json", {**TABULAR, "name": "x" * 255})
    assert mlx(dry_run("tabular", config), capsys)[0] == 0


def test_a_bad_experiment_argument_is_refused(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", "x" * 300, "--dry-run"], capsys, "name 'xxx", "300 bytes long")
    refused(["train", "bad\u202ename", "--dry-run"], capsys, "name 'bad\\u202ename'")


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("tabular", "output.directory"),
        ("lm", "prepare.data_dir"),
        ("rl", "data.train_path"),
        ("lm", "sample.start"),
    ],
)
def test_path_fields_with_overlong_or_unsafe_components_are_refused(
    ws: Path, capsys: pytest.CaptureFixture[str], kind: str, key: str
) -> None:
    config = write(ws / "c.json", KINDS[kind])
    prefix = "FILE:" if key == "sample.start" else ""
    long = f"{key}={prefix}runs/{'a' * 300}/x"
    refused(dry_run(kind, config, "--set", long), capsys, key, "of 300 bytes", "at most 255")
    bidi = f"{key}={prefix}runs/a\u202eb"
    refused(dry_run(kind, config, "--set", bidi), capsys, key, "U+202E")


def test_name_and_path_rules() -> None:
    assert name_problem("exp-1 (fast)") is None
    assert name_problem("ok.v2") is None
    assert name_problem("..") == 'avoid / \\ : * ? " < > |'
    assert path_problem("runs/" + "x" * 255) is None
    assert path_problem("\t") == "holds the control or invisible character U+0009; remove it"
    assert path_problem("a/" * 2100) == "is 4,200 bytes long; a path holds at most 4,096 bytes"


# --------------------------------------------------------------------------- messages


def test_messages_show_control_characters_escaped(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(ws / "c.json", TABULAR)
    monkeypatch.setenv("MLX_OVERRIDES", json.dumps({"ke\x1by": 1, "training": {"epochs": -1}}))
    code, _, err = mlx(dry_run("tabular", config, "--strict"), capsys)
    assert code == 1
    assert "Unknown configuration key 'ke\\x1by'" in err and "\x1b" not in err


def test_printable_escapes_only_what_a_terminal_would_obey() -> None:
    assert printable("plain, é, 日本\n\ttab") == "plain, é, 日本\n\ttab"
    assert printable("a\x00\x1b\x7f\x9b\u200f\u202e\u2028\ud800") == (
        "a\\x00\\x1b\\x7f\\x9b\\u200f\\u202e\\u2028\\ud800"
    )
    assert printable("x" * 10, 4) == "xxxx..."


def test_set_items_name_the_key_of_a_long_integer() -> None:
    with pytest.raises(ConfigError, match=r"'a\.b\[0\]\.c' in --set is an integer of 5,000"):
        parse_set_items([f"a.b=[{{c: {BIG}}}]"])


def test_locate_finds_keys_in_json_and_toml_text() -> None:
    site = limits.locate('{"a": {"b": [1, ' + _nested(40) + "]}}", toml=False)
    assert site is not None and site.kind == "depth" and site.path[:3] == ("a", "b", 1)
    toml = f'# c\n[t.u]\nx = "{BIG}"\ny = [1, {{z = {BIG}}}]\n'
    site = limits.locate(toml, toml=True)
    assert site is not None and (site.kind, site.line) == ("int", 4)
    assert site.path == ("t", "u", "y", 1, "z")
