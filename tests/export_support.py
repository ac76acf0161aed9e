"""Load an exported model the way a user without this project would: a fresh Python whose
``sys.path`` holds nothing of ``mlharness``, with only torch and transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# Runs in the subprocess. The editable install puts src/ on sys.path through a .pth file:
# every entry that holds an mlharness package goes, and the import must then fail.
CLEAN_LOADER = r"""
import importlib.util, json, sys
from pathlib import Path
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "mlharness").exists()]
assert importlib.util.find_spec("mlharness") is None, "mlharness is still importable"
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def answer(req):
    out = {}
    tok = AutoTokenizer.from_pretrained(req["dir"])
    out["encoded"] = [tok(text).input_ids for text in req.get("texts", [])]
    out["decoded"] = [tok.decode(ids) for ids in req.get("decode", [])]
    if "ids" not in req and "prompt" not in req:
        return out
    model = AutoModelForCausalLM.from_pretrained(req.get("base", req["dir"]), dtype=torch.float32)
    if "base" in req:  # req["dir"] is a PEFT adapter for that base model
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, req["dir"])
    model = model.eval()
    with torch.no_grad():
        if "ids" in req:
            out["logits"] = model(torch.tensor(req["ids"])).logits.tolist()
        if "prompt" in req:
            prompt = torch.tensor([req["prompt"]])
            seq = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=req["new"],
                min_new_tokens=req["new"], do_sample=False,
            )
            out["generated"] = seq[0].tolist()
            out["generated_text"] = tok.decode(seq[0])
    return out

answers = [answer(req) for req in json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))]
out = {"answers": answers, "modules": sorted(m for m in sys.modules if m.startswith("mlharness"))}
print(json.dumps(out))
"""


def load_cleanly(directory: Path, **request: Any) -> dict[str, Any]:
    """Ask a clean interpreter about the export in ``directory``: ``texts`` to encode,
    ``decode`` id lists, ``ids`` (batch, T) for logits, ``prompt`` + ``new`` to generate;
    with ``base``, ``directory`` is a PEFT adapter loaded on top of that model."""
    return load_all_cleanly([(directory, request)])[0]


def load_all_cleanly(requests: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """:func:`load_cleanly` for several exports in one interpreter (each start costs
    seconds of importing torch and transformers)."""
    where = requests[0][0].parent
    req = where / f"{requests[0][0].name}.request.json"
    body = [{"dir": str(directory), **request} for directory, request in requests]
    req.write_text(json.dumps(body), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", CLEAN_LOADER, str(req)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=where,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["modules"] == []
    answers: list[dict[str, Any]] = answer["answers"]
    return answers


def local_encoding() -> Any:
    """A GPT-2-patterned tiktoken encoding built offline: the 256 bytes, merges of merges
    (" the" is " " + "the", not " t" + "he"), and <|endoftext|>."""
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    for token in [b"th", b"he", b"the", b" t", b" the", b"ea", b"en", b" e", b" en", b"d."]:
        ranks[token] = len(ranks)
    return tiktoken.Encoding(
        name="test_export",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )


def gpt2_bpe_model_dir(directory: Path, text: str, vocab_size: int = 300) -> Path:
    """A tiny random GPT-2 with GPT-2's kind of tokenizer (byte-level BPE, ``<|endoftext|>``),
    trained on ``text`` by ``mlx prepare``'s BPE trainer, saved as a Hugging Face directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from mlharness.lm.tokenizers import BPETokenizer

    bpe = BPETokenizer.train(text, vocab_size).tokenizer
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    eos = tok.eos_token_id
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok),
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory
