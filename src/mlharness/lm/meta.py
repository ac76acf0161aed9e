"""``meta.json`` of prepared token data: what its ids mean (tokenizer, vocabulary, dtype).

Its own module because both the preparers that write it and the tokenizers rebuilt from it
read it; neither has to import the other to do so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlharness.errors import DatasetError

PREPARE_HINT = "run `mlx prepare <experiment> --config ...` to create it"


def load_meta(data_dir: Path) -> dict[str, Any]:
    """The prepared data's ``meta.json``; missing or unreadable is a ``DatasetError``."""
    path = data_dir / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing: {PREPARE_HINT}.") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{path} cannot be read ({exc}): {PREPARE_HINT} anew.") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} does not hold a JSON object: {PREPARE_HINT} anew.")
    return meta


DATA_IDENTITY = ("tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens")
"""The fields of meta.json that change when the same ids come to mean other tokens."""


def data_changes(
    run_meta: dict[str, Any], run_dir: Path, meta: dict[str, Any], data_dir: Path
) -> list[str]:
    """What differs between the data a run started from and the data prepared now.

    The run keeps the meta.json (and tokenizer.json) it started from. Data prepared anew with
    another tokenizer or text has ids that mean other tokens, or point past the model's
    embedding table; preparing the same text again changes nothing here.
    """
    changed = [k for k in DATA_IDENTITY if run_meta.get(k) != meta.get(k)]
    if (run_meta.get("source") or {}).get("sha256") != (meta.get("source") or {}).get("sha256"):
        changed.append("source text")
    tokenizer = (run_dir / "tokenizer.json", data_dir / "tokenizer.json")
    if any(f.is_file() for f in tokenizer) and not (
        all(f.is_file() for f in tokenizer)
        and tokenizer[0].read_bytes() == tokenizer[1].read_bytes()
    ):
        changed.append("tokenizer.json")
    return changed
