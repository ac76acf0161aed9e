"""Hostile config input through the real ``mlx`` command: what used to hang or print a
traceback now ends at once with one ``Error:`` line naming the field (issue 14, section 3).

The in-process tests (tests/unit/test_config_limits.py) cover every class; these check the
command as a person runs it. ``timeout`` is a guard against a hang, not a speed test.
"""

from __future__ import annotations

from pathlib import Path

from e2e_helpers import Mlx, error_lines, regression, snapshot, write_config

BOMB = "name: bomb\n" + "".join(
    f"{b}: &{b} [" + ", ".join([f"*{a}" if a else '"lol"'] * 9) + "]\n"
    for a, b in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _refused(mlx: Mlx, ws: Path, *args: str, env: dict[str, str] | None = None) -> str:
    before = snapshot(ws)
    result = mlx(*args, check=1, env=env, timeout=60)
    assert snapshot(ws) == before
    [message] = error_lines(result.stderr)
    return message


def test_an_alias_bomb_and_a_50_mb_file_end_with_an_error(mlx: Mlx, ws: Path) -> None:
    (ws / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    message = _refused(mlx, ws, "run-experiment", "--dry-run", "--config", "bomb.yaml")
    assert "bomb.yaml expands to more than 10,000 values (reached at 'i[8]" in message
    with (ws / "huge.json").open("wb") as f:
        f.truncate(50 * 2**20)
    message = _refused(mlx, ws, "run-experiment", "--config", "huge.json")
    assert "huge.json is 50.0 MiB; a config file may hold at most 256 KiB" in message


def test_deep_nesting_and_long_integers_end_with_an_error(mlx: Mlx, ws: Path) -> None:
    deep = "[" * 1000 + "]" * 1000
    (ws / "deep.json").write_text(f'{{"name": "x", "training": {{"params": {deep}}}}}')
    message = _refused(mlx, ws, "run-experiment", "--dry-run", "--config", "deep.json")
    assert "'training.params[0][0][0][0]...[0]' in deep.json (line 1, column 68)" in message
    assert "nested more than 32 levels deep" in message
    write_config(ws / "c.json", regression())
    big = "1" * 5000
    message = _refused(mlx, ws, "run-experiment", "-c", "c.json", "--set", f"training.epochs={big}")
    assert "'training.epochs' in --set is an integer of 5,000 digits" in message
    env = {"MLX_OVERRIDES": '{"output": {"directory": "runs\\u0000x"}}'}
    message = _refused(mlx, ws, "run-experiment", "--dry-run", "-c", "c.json", env=env)
    assert "'output.directory' in MLX_OVERRIDES holds a NUL byte" in message
