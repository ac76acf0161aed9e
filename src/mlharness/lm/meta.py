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
