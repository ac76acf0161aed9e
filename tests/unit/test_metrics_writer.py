"""MetricsWriter: NDJSON per record, JSON/Markdown/curves on close, TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlharness.metrics import MetricsWriter as PublicMetricsWriter
from mlharness.runs.metrics import MetricsWriter, tensorboard_tag

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(tb_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_public_import_path_is_the_same_class() -> None:
    assert PublicMetricsWriter is MetricsWriter


def test_ndjson_is_written_per_log_and_readable_before_close(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path / "metrics", "exp", plot=False)
    path = tmp_path / "metrics" / "metrics.ndjson"
    writer.log({"epoch": 1, "loss": 0.5})
    assert _ndjson(path) == [{"epoch": 1, "loss": 0.5}]
    writer.log({"epoch": 2, "loss": 0.25, "accuracy": 0.9})
    assert _ndjson(path) == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "accuracy": 0.9}]
    # Whole-history files only appear on close.
    assert not (tmp_path / "metrics" / "metrics.json").exists()
    assert not (tmp_path / "metrics" / "metrics.md").exists()
    writer.close()
    assert _ndjson(path)[-1] == {"epoch": 2, "loss": 0.25, "accuracy": 0.9}


def test_close_writes_json_md_and_curves(tmp_path: Path) -> None:
    out = tmp_path / "metrics"
    with MetricsWriter(out, "my_experiment") as writer:
        for epoch in range(1, 4):
            writer.log(
                {
                    "epoch": epoch,
                    "loss": 1.0 / epoch,
                    "val_loss": 1.5 / epoch,
                    "accuracy": 0.5 + 0.1 * epoch,
                }
            )
    data = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert data == {
        "experiment": "my_experiment",
        "final_metrics": {"epoch": 3, "loss": 1 / 3, "val_loss": 0.5, "accuracy": 0.8},
        "metrics": [
            {"epoch": 1, "loss": 1.0, "val_loss": 1.5, "accuracy": 0.6},
            {"epoch": 2, "loss": 0.5, "val_loss": 0.75, "accuracy": 0.7},
            {"epoch": 3, "loss": 1 / 3, "val_loss": 0.5, "accuracy": 0.8},
        ],
    }
    assert (out / "metrics.md").read_text(encoding="utf-8") == (
        "# Metrics: my_experiment\n"
        "\n"
        "## Final metrics\n"
        "\n"
        "| Metric | Value |\n"
        "|---|---|\n"
        "| epoch | 3 |\n"
        "| loss | 0.333333 |\n"
        "| val_loss | 0.5 |\n"
        "| accuracy | 0.8 |\n"
        "\n"
        "## History (3 records)\n"
        "\n"
        "| epoch | loss | val_loss | accuracy |\n"
        "|---|---|---|---|\n"
        "| 1 | 1 | 1.5 | 0.6 |\n"
        "| 2 | 0.5 | 0.75 | 0.7 |\n"
        "| 3 | 0.333333 | 0.5 | 0.8 |\n"
    )
    png = out / "curves.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 1000


def test_explicit_final_metrics_and_close_is_idempotent(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.log({"epoch": 1, "loss": 2.0})
    writer.close({"loss": 1.5, "status": "done"})
    first = (tmp_path / "metrics.json").read_bytes()
    writer.close()
    assert (tmp_path / "metrics.json").read_bytes() == first
    assert json.loads(first)["final_metrics"] == {"loss": 1.5, "status": "done"}
    assert not (tmp_path / "curves.png").exists()  # plot=False


def test_empty_writer(tmp_path: Path) -> None:
    MetricsWriter(tmp_path, "exp").close()
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == {
        "experiment": "exp",
        "final_metrics": {},
        "metrics": [],
    }
    assert (tmp_path / "metrics.md").read_text(encoding="utf-8") == "# Metrics: exp\n\n"
    assert (tmp_path / "metrics.ndjson").read_text(encoding="utf-8") == ""
    assert not (tmp_path / "curves.png").exists()


def test_nan_and_inf_become_null_in_every_file(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", tensorboard_dir=tmp_path / "tb")
    writer.log({"epoch": 1, "loss": 1.0, "val_loss": float("nan")})
    writer.log({"epoch": 2, "loss": np.float64("inf"), "val_loss": np.float32("-inf")})
    writer.close()
    for name in ("metrics.ndjson", "metrics.json"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "NaN" not in text and "Infinity" not in text, name
    assert _ndjson(tmp_path / "metrics.ndjson") == [
        {"epoch": 1, "loss": 1.0, "val_loss": None},
        {"epoch": 2, "loss": None, "val_loss": None},
    ]
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["final_metrics"] == {"epoch": 2, "loss": None, "val_loss": None}
    assert data["metrics"][0]["val_loss"] is None
    md = (tmp_path / "metrics.md").read_text(encoding="utf-8")
    assert "nan" not in md.lower() and "inf" not in md.lower()
    assert "| 1 | 1 |  |" in md  # null shows as an empty cell
    assert writer.history == [
        {"epoch": 1, "loss": 1.0, "val_loss": None},
        {"epoch": 2, "loss": None, "val_loss": None},
    ]
    # TensorBoard skips non-finite points rather than storing NaN.
    assert _scalars(tmp_path / "tb") == {"train/loss": [(1, 1.0)]}


def test_numpy_values_are_written_as_plain_json(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.log({"epoch": np.int64(1), "loss": np.float32(0.5), "cm": np.eye(2, dtype=np.int64)})
    writer.close()
    assert _ndjson(tmp_path / "metrics.ndjson") == [
        {"epoch": 1, "loss": 0.5, "cm": [[1, 0], [0, 1]]}
    ]


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("loss", "train/loss"),
        ("accuracy", "train/accuracy"),
        ("val_loss", "val/loss"),
        ("val_accuracy", "val/accuracy"),
        ("val_r2", "val/r2"),
        ("train/loss", "train/loss"),
        ("eval/reward", "eval/reward"),
        ("validation", "train/validation"),
    ],
)
def test_tensorboard_tag(key: str, tag: str) -> None:
    assert tensorboard_tag(key) == tag


def test_tensorboard_events_hold_the_scalars(tmp_path: Path) -> None:
    tb = tmp_path / "logs" / "tb"
    writer = MetricsWriter(tmp_path / "metrics", "exp", tensorboard_dir=tb, plot=False)
    for epoch in (1, 2, 3):
        writer.log(
            {
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "val_loss": 2.0 / epoch,
                "val_accuracy": 0.25 * epoch,
                "note": "text is not a scalar",
                "flag": True,
            }
        )
    writer.close()
    scalars = _scalars(tb)
    assert sorted(scalars) == ["train/loss", "val/accuracy", "val/loss"]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]
    for tag, expected in (
        ("train/loss", [1.0, 0.5, 1 / 3]),
        ("val/loss", [2.0, 1.0, 2 / 3]),
        ("val/accuracy", [0.25, 0.5, 0.75]),
    ):
        np.testing.assert_allclose([v for _, v in scalars[tag]], expected, rtol=1e-6)


def test_tensorboard_receives_numpy_scalars(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", tensorboard_dir=tmp_path / "tb", plot=False)
    writer.log({"epoch": np.int64(1), "loss": np.float32(0.5), "count": np.int64(7)})
    writer.log({"epoch": np.int64(2), "loss": np.float64(0.25), "count": np.int64(9)})
    writer.close()
    scalars = _scalars(tmp_path / "tb")
    assert scalars == {"train/loss": [(1, 0.5), (2, 0.25)], "train/count": [(1, 7.0), (2, 9.0)]}


def test_custom_step_key_and_missing_step(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", step_key="iter", tensorboard_dir=tmp_path / "tb")
    writer.log({"iter": 100, "loss": 3.0})
    writer.log({"loss": 2.0})  # no step: its position in the history
    writer.close()
    assert _scalars(tmp_path / "tb") == {"train/loss": [(100, 3.0), (2, 2.0)]}
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC


def _tables(md: str, section: str = "History") -> list[list[list[str]]]:
    """The tables of one ``## section`` of metrics.md, each a list of rows of cells."""
    body = md.split(f"## {section} (", 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = []
    for block in body.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert set(rows[1]) <= {"|", "-"}, rows[1]
            tables.append(
                [[c.strip() for c in r.strip("|").split(" | ")] for r in [rows[0], *rows[2:]]]
            )
    return tables


def _history_rows(md: str, section: str = "History") -> list[list[str]]:
    [only] = _tables(md, section)
    return only[1:]


def test_markdown_keeps_short_histories_whole(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.history = [{"epoch": e, "loss": float(e)} for e in range(1, 101)]
    md = writer.markdown(writer.final_metrics())
    assert "## History (100 records)" in md
    assert [int(r[0]) for r in _history_rows(md)] == list(range(1, 101))
    assert "records shown" not in md
    writer.close()


@pytest.mark.parametrize(("n", "stride"), [(101, 2), (102, 2), (250, 3), (1000, 10), (1001, 11)])
def test_markdown_samples_long_histories(tmp_path: Path, n: int, stride: int) -> None:
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.history = [{"epoch": e, "loss": 1.0 / e} for e in range(1, n + 1)]
    md = writer.markdown(writer.final_metrics())
    assert f"## History ({n} records)" in md
    epochs = [int(r[0]) for r in _history_rows(md)]
    assert (
        f"{len(epochs)} of {n} records shown: one in every {stride}, and the last. "
        "The full history is in metrics.json and metrics.ndjson beside this file."
    ) in md
    assert epochs[0] == 1
    assert epochs[-1] == n  # the last record is always shown
    assert len(epochs) <= 101
    assert epochs[:-1] == list(range(1, n + 1, stride))[: len(epochs) - 1]
    assert epochs == sorted(set(epochs))
    writer.close()


def test_markdown_history_has_the_union_of_keys(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.log({"epoch": 1, "loss": 1.0})
    writer.log({"epoch": 2, "loss": 0.5, "val_loss": 0.75})
    md = writer.markdown({})
    assert "| epoch | loss | val_loss |" in md
    assert "| 1 | 1 |  |" in md
    assert "## Final metrics" not in md
    writer.close()


def test_appends_to_an_existing_ndjson(tmp_path: Path) -> None:
    (tmp_path / "metrics.ndjson").write_text('{"epoch": 1, "loss": 1.0}\n', encoding="utf-8")
    writer = MetricsWriter(tmp_path, "exp", plot=False)
    writer.log({"epoch": 2, "loss": 0.5})
    writer.close()
    assert _ndjson(tmp_path / "metrics.ndjson") == [
        {"epoch": 1, "loss": 1.0},
        {"epoch": 2, "loss": 0.5},
    ]
