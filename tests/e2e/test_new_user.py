"""What a new user typing configs by hand meets first, through the real `mlx` command."""

from __future__ import annotations

from pathlib import Path

from e2e_helpers import Mlx

ROOT = Path(__file__).resolve().parents[2]


def test_a_typo_in_an_lm_config_is_an_error_not_two_thousand_iterations(ws: Path, mlx: Mlx) -> None:
    """Seeds 001/004 are strict: a typo'd [trian] section once trained on the defaults."""
    text = (ROOT / "experiments" / "shakespeare_char_cpu_fast.toml").read_text(encoding="utf-8")
    (ws / "c.toml").write_text(text + "\n[trian]\nmax_iters = 5\n", encoding="utf-8")
    result = mlx("train", "shakespeare_char", "--config", "c.toml", "--dry-run", check=1)
    assert result.stderr.startswith("Error: Configuration validation failed")
    assert "Unknown configuration key 'trian' (did you mean 'train'?)" in result.stderr
    assert not (ws / "runs").exists()


def test_a_typo_in_an_rl_config_is_an_error(ws: Path, mlx: Mlx) -> None:
    (ws / "r.yaml").write_text("kind: rl\ntrainr: {}\n", encoding="utf-8")
    result = mlx("train", "--config", "r.yaml", "--dry-run", check=1)
    assert "Unknown configuration key 'trainr' (did you mean 'trainer'?)" in result.stderr


def test_a_bad_sample_flag_is_named_as_typed(ws: Path, mlx: Mlx) -> None:
    text = (ROOT / "experiments" / "shakespeare_char_cpu_fast.toml").read_text(encoding="utf-8")
    (ws / "c.toml").write_text(text, encoding="utf-8")
    result = mlx("sample", "shakespeare_char", "--config", "c.toml", "--temperature", "0", check=1)
    assert "Invalid value for 'sample.temperature' (--temperature 0.0)" in result.stderr


def test_an_empty_hugging_face_config_gets_one_sentence(ws: Path, mlx: Mlx) -> None:
    (ws / "model").mkdir()
    (ws / "model" / "config.json").write_text("{}", encoding="utf-8")
    (ws / "t.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n', encoding="utf-8")
    (ws / "r.yaml").write_text(
        "kind: rl\nmodel: {model_path: model}\ndata: {train_path: t.jsonl}\n"
        "rewards: [{name: exact_match}]\n",
        encoding="utf-8",
    )
    result = mlx("train", "--config", "r.yaml", check=1)
    assert "has a config.json without a model_type" in result.stderr
    assert "sentencepiece" not in result.stderr and len(result.stderr.splitlines()) == 1
