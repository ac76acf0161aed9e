"""Optional: llama.cpp itself (through llama-cpp-python) loads and runs our GGUF exports.

llama-cpp-python builds llama.cpp from source when pip installs it (about 10 minutes on 2
cores), so it is not a dependency and these tests skip without it; docs/lm.md gives the
command. llama.cpp tokenizes text into our ids; its logits differ from ours by its GELU
(the tanh approximation, read from a float16 table on the CPU), within 5e-2, and its
greedy tokens agree with ours wherever our top two logits are not a near tie.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip(
        "llama-cpp-python is not installed (it builds llama.cpp from source, about 10 "
        "minutes on 2 cores: pip install llama-cpp-python); see docs/lm.md, Export",
        allow_module_level=True,
    )

torch = pytest.importorskip("torch")
tiktoken = pytest.importorskip("tiktoken")

sys.path.insert(0, str(Path(__file__).parents[1]))

from export_support import local_encoding  # noqa: E402
from mlharness.lm.export import export  # noqa: E402
from mlharness.lm.export_gguf import GGUF_FILE  # noqa: E402
from mlharness.lm.sampler import load_model  # noqa: E402
from mlharness.lm.tokenizers import load_tokenizer  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402

TEXTS = ["the theatre ended.", "First Citizen:\nBefore we proceed, hear me speak.", "Ünïcode 日本"]


def quiet(_: str) -> None:
    """Export's console lines, unwanted in these tests."""


def llama(path: Path, n_ctx: int) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=1)


def llama_logits(llm: Any, ids: list[int]) -> Any:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))


def our_logits(checkpoint: Path, ids: list[int]) -> Any:
    model, _ = load_model(checkpoint, torch.device("cpu"))
    with torch.no_grad():
        return model(torch.tensor([ids]), all_logits=True)[0][0]


@pytest.mark.parametrize("tokenizer", ["char", "tiktoken:test_export"])
def test_llama_cpp_runs_the_gguf_with_our_ids_and_logits(
    tiny_lm: Any, monkeypatch: pytest.MonkeyPatch, tokenizer: str
) -> None:
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "test_export", local_encoding())
    cfg = tiny_lm({"prepare": {"tokenizer": tokenizer}, "train": {"max_iters": 20}})
    run = train(cfg, progress=False).run_dir
    result = export(run, "gguf", say=quiet)
    block_size = cfg.model.block_size
    llm = llama(result.out / GGUF_FILE, block_size)
    ours = load_tokenizer(run)
    texts = TEXTS if tokenizer != "char" else [t for t in TEXTS if set(t) <= set(ours.chars)]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ours.encode(text)

    ids = torch.randint(
        0, ours.vocab_size, (block_size,), generator=torch.Generator().manual_seed(0)
    )
    theirs = llama_logits(llm, ids.tolist())
    exact = our_logits(result.checkpoint, ids.tolist())
    assert (theirs - exact).abs().max().item() < 5e-2
    top2 = exact.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-2
    assert torch.equal(theirs.argmax(-1)[clear], exact.argmax(-1)[clear])
