"""``mlx lit RUN_DIR``: LIT (the Learning Interpretability Tool) on an lm run's GPT.

The run's GPT becomes a LIT model and passages of the run's validation split a LIT dataset,
so LIT's own modules show what the model does with text it did not train on: the sampler's
continuation of each passage beside the real one (Generated Text, with BLEU/ROUGE in
Metrics), the likeliest next tokens and their probabilities, gradient salience over the
passage's tokens (Salience Maps), and a passage embedding to project (Embeddings).

lit-nlp pins numpy below 2 and brings many packages, so it lives in its own environment
(``make lit-env``); only ``mlx lit`` imports this module, after checking lit_nlp is there.
"""

# lit_nlp lives in .venv-lit (make lit-env), not in the .venv pyright checks against.
# pyright: reportMissingImports=false

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from lit_nlp import app as lit_app
from lit_nlp.api import components as lit_components
from lit_nlp.api import dataset as lit_dataset
from lit_nlp.api import dtypes as lit_dtypes
from lit_nlp.api import layout as lit_layout
from lit_nlp.api import model as lit_model
from lit_nlp.api import types as lit_types
from lit_nlp.components import core
from werkzeug import serving

from mlharness.errors import ModelError
from mlharness.lm.evaluate import checkpoint_dir, run_config, split_tokens
from mlharness.lm.model import GPT
from mlharness.lm.sampler import load_model, run_tokenizer
from mlharness.lm.tokenizers import Tokenizer
from mlharness.runs.checkpoints import newest_trained_run
from mlharness.runs.device import resolve_device

TOP_K = 10
"""Next-token candidates listed per position."""

MAX_PROMPT = 128
"""Tokens of a passage's prompt at most (less for a model whose block_size is smaller)."""


@dataclass(frozen=True)
class Sampling:
    """How the model continues a prompt: the run's [sample] settings, as ``mlx sample``."""

    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float
    seed: int


class GPTLitModel(lit_model.Model):  # type: ignore[misc]
    """Our GPT as a LIT model: one prompt in, generation and per-token analyses out."""

    def __init__(
        self, model: GPT, tokenizer: Tokenizer, sampling: Sampling, top_k: int = TOP_K
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.top_k = min(top_k, model.config.vocab_size)

    @classmethod
    def init_spec(cls) -> None:
        """None: the model comes from the run, LIT's UI cannot load another one."""
        return None

    def input_spec(self) -> dict[str, Any]:
        return {
            "prompt": lit_types.TextSegment(),
            "target": lit_types.TextSegment(required=False),
        }

    def output_spec(self) -> dict[str, Any]:
        return {
            "response": lit_types.GeneratedText(parent="target"),
            "next_tokens": lit_types.GeneratedTextCandidates(),
            "tokens": lit_types.Tokens(parent="prompt"),
            "token_probs": lit_types.TokenScores(align="tokens"),
            "pred_tokens": lit_types.TokenTopKPreds(align="tokens"),
            "token_embs": lit_types.TokenEmbeddings(align="tokens"),
            "token_grads": lit_types.TokenGradients(align="tokens", grad_for="token_embs"),
            "embedding": lit_types.Embeddings(),
            "loss": lit_types.Scalar(min_val=0, max_val=10),
        }

    def predict(self, inputs: Iterable[dict[str, Any]], **kw: Any) -> Iterator[dict[str, Any]]:
        for example in inputs:
            ids = self.encode(example["prompt"])
            yield {**self.analyse(ids), "response": self.generate(ids)}

    def encode(self, prompt: str) -> list[int]:
        try:
            ids = self.tokenizer.encode(prompt)
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"The prompt cannot be encoded by this run's tokenizer ({exc}): use only "
                "characters that occur in the training text."
            ) from exc
        if not ids:
            raise ModelError("The prompt encodes to no tokens: give at least one character.")
        return ids

    def generate(self, ids: list[int]) -> str:
        """The continuation ``mlx sample --start PROMPT --num-samples 1`` would print."""
        s = self.sampling
        device = self.model.wte.weight.device
        generator = torch.Generator(device=device).manual_seed(s.seed)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out = self.model.generate(
            idx,
            s.max_new_tokens,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            generator=generator,
        )
        return self.tokenizer.decode(out[0, len(ids) :].tolist())

    def analyse(self, ids: list[int]) -> dict[str, Any]:
        """Per-token probabilities, embeddings and gradients of the prompt's last block_size
        tokens, from one forward and backward pass."""
        ids = ids[-self.model.config.block_size :]
        logits, embs, hidden = self._forward(ids)
        probs = F.softmax(logits.detach(), dim=-1)  # (T, V): the next token at each position
        grads, loss = torch.zeros_like(embs[0]), 0.0
        if len(ids) > 1:
            # Salience of each input token for the passage's own likelihood: the gradient of
            # its summed next-token loss with respect to the token embeddings.
            targets = torch.tensor(ids[1:], device=logits.device)
            total = F.cross_entropy(logits[:-1], targets, reduction="sum")
            grads = torch.autograd.grad(total, embs)[0][0]
            loss = float(total.detach()) / len(targets)
        top = torch.topk(probs, self.top_k, dim=-1)
        indices, values = top.indices.tolist(), top.values.tolist()
        pred_tokens = [
            [(self.token_text(i), p) for i, p in zip(row_i, row_p, strict=True)]
            for row_i, row_p in zip(indices, values, strict=True)
        ]
        seen = probs[:-1].gather(1, torch.tensor([ids[1:]], device=probs.device).T)[:, 0]
        return {
            "tokens": [self.token_text(i) for i in ids],
            "token_probs": [0.0, *seen.tolist()],  # nothing precedes the first token
            "pred_tokens": pred_tokens,
            "next_tokens": pred_tokens[-1],
            "token_embs": embs[0].detach().cpu().numpy(),
            "token_grads": grads.cpu().numpy(),
            "embedding": hidden.mean(dim=0).cpu().numpy(),
            "loss": loss,
        }

    def _forward(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (T, V), token embeddings (1, T, C) that require grad, final hidden (T, C).

        The model's own forward runs; hooks hand back the embedding table's output as a
        leaf to differentiate against, and keep what the final LayerNorm returns.
        """
        kept: dict[str, torch.Tensor] = {}

        def leaf(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            kept["embs"] = output.detach().requires_grad_(True)
            return kept["embs"]

        def hidden(module: Any, args: Any, output: torch.Tensor) -> None:
            kept["hidden"] = output.detach()

        hooks = [
            self.model.wte.register_forward_hook(leaf),
            self.model.ln_f.register_forward_hook(hidden),
        ]
        try:
            idx = torch.tensor([ids], dtype=torch.long, device=self.model.wte.weight.device)
            with torch.enable_grad():
                logits, _ = self.model(idx, all_logits=True)
        finally:
            for hook in hooks:
                hook.remove()
        return logits[0], kept["embs"], kept["hidden"][0]

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])


class TokenProbability(lit_components.Interpreter):  # type: ignore[misc]
    """Each prompt token shaded by the probability the model gave it after the tokens before
    it, so Salience Maps shows where the text surprised the model beside the gradients."""

    def run(
        self,
        inputs: list[dict[str, Any]],
        model: Any,
        dataset: Any,
        model_outputs: list[dict[str, Any]] | None = None,
        config: Any = None,
    ) -> list[dict[str, Any]]:
        outputs = list(model.predict(inputs)) if model_outputs is None else model_outputs
        return [
            {"token_probs": lit_dtypes.TokenSalience(o["tokens"], o["token_probs"])}
            for o in outputs
        ]

    def is_compatible(self, model: Any, dataset: Any) -> bool:
        return "token_probs" in model.output_spec()

    def meta_spec(self) -> dict[str, Any]:
        return {"saliency": lit_types.TokenSalience(autorun=True, signed=False)}


def passages(
    tokens: np.ndarray, tokenizer: Tokenizer, count: int, prompt_len: int, target_len: int
) -> list[dict[str, str]]:
    """``count`` passages spread evenly over the split: a prompt and the text that follows.

    Each starts at a line's beginning where one lies within half a prompt of its even spot,
    so that prompts read as text rather than from the middle of a word.

    >>> from mlharness.lm.tokenizers import CharTokenizer
    >>> tok = CharTokenizer("\\nabcdefgh")
    >>> passages(np.array(tok.encode("hgfedcb\\nabcdefg")), tok, 2, 4, 2)
    [{'prompt': 'hgfe', 'target': 'dc'}, {'prompt': 'abcd', 'target': 'ef'}]
    """
    span, reach = prompt_len + target_len, prompt_len // 2
    if len(tokens) < span + reach:
        raise ModelError(
            f"The validation split has {len(tokens)} tokens, too few for a passage of "
            f"{span + reach}: prepare more text, or use a run with a larger validation split."
        )
    spots = np.linspace(0, len(tokens) - span - reach, count).round().astype(np.int64)
    starts = sorted({_line_start(tokens, tokenizer, int(s), reach) for s in spots})
    return [
        {
            "prompt": tokenizer.decode(tokens[s : s + prompt_len].tolist()),
            "target": tokenizer.decode(tokens[s + prompt_len : s + span].tolist()),
        }
        for s in starts
    ]


def _line_start(tokens: np.ndarray, tokenizer: Tokenizer, start: int, reach: int) -> int:
    """The first position in ``[start, start + reach)`` that follows a newline, else start."""
    for i in range(start, start + reach):
        if i == 0 or tokenizer.decode([int(tokens[i - 1])]).endswith("\n"):
            return i
    return start


def load(
    run_dir: Path, checkpoint: str | None = None, examples: int = 64
) -> tuple[GPTLitModel, lit_dataset.Dataset, Path]:
    """The run's GPT as a LIT model, passages of its validation split, and the checkpoint;
    an experiment's directory of runs stands for its newest trained run.

    The checkpoint is chosen as ``mlx sample`` and ``mlx eval`` choose it (best, else last);
    the passages come from the data the run trained on, checked as ``mlx eval`` checks it.
    """
    if examples < 1:
        raise ModelError(f"--examples must be at least 1; got {examples}.")
    if not (run_dir / "checkpoints").is_dir():  # an experiment's directory: its newest run
        newest, _ = newest_trained_run(run_dir)
        if newest is None:
            raise ModelError(
                f"{run_dir} is neither a trained lm run nor an experiment's directory holding "
                "one: pass a run directory (runs/<experiment>/<run>)."
            )
        run_dir = newest
    chosen = checkpoint_dir(run_dir, checkpoint)
    config = run_config(chosen)
    hf_run = f"{run_dir} fine-tuned a Hugging Face model; mlx lit serves runs of our own GPT."
    if config.init_from.startswith("hf:"):  # refused before loading needs transformers
        raise ModelError(hf_run)
    model, _ = load_model(chosen, resolve_device(config.sample.device), config.sample.use_ema)
    if not isinstance(model, GPT):
        raise ModelError(hf_run)
    tokenizer = run_tokenizer(run_dir)
    prompt_len = min(MAX_PROMPT, max(1, model.config.block_size // 2))
    s = config.sample
    sampling = Sampling(prompt_len, s.temperature, s.top_k, s.top_p, s.seed)
    val = split_tokens(config, run_dir)["val"]
    spec = {"prompt": lit_types.TextSegment(), "target": lit_types.TextSegment()}
    dataset = lit_dataset.Dataset(
        spec=spec,
        examples=passages(val, tokenizer, examples, prompt_len, prompt_len),
        description=f"{examples} passages of {run_dir.name}'s validation split: a prompt of "
        f"{prompt_len} tokens and the {prompt_len} tokens that follow it.",
    )
    return GPTLitModel(model, tokenizer, sampling), dataset, chosen


_modules = lit_layout.LitModuleName
LAYOUT = lit_layout.LitCanonicalLayout(
    left={
        "Passages": [_modules.DataTableModule],
        "Embeddings": [_modules.EmbeddingsModule],
    },
    upper={
        "Generated text": [_modules.GeneratedTextModule],
        "Edit a passage": [_modules.DatapointEditorModule],
    },
    lower={
        "Salience": [_modules.SalienceMapModule],
        "Metrics": [_modules.MetricsModule],
        "Loss": [_modules.ScalarModule],
    },
    description="An lm run's GPT on passages of its validation split.",
)


def app(model: GPTLitModel, dataset: lit_dataset.Dataset, name: str) -> Any:
    """LIT's WSGI app serving the model and dataset, with a layout for a language model."""
    import lit_nlp

    client = Path(str(lit_nlp.__file__)).parent / "client" / "build" / "default"
    models = {name: model}
    return lit_app.LitApp(
        models,
        {"val": dataset},
        interpreters=core.default_interpreters(models) | {"Token probability": TokenProbability()},
        layouts={"lm": LAYOUT},
        default_layout="lm",
        model_loaders={},
        dataset_loaders={},
        client_root=str(client),
        page_title=f"LIT: {name}",
    )


def serve(
    run_dir: Path,
    *,
    checkpoint: str | None = None,
    port: int = 0,
    examples: int = 64,
    out: TextIO = sys.stdout,
) -> None:
    """Serve LIT on the run at 127.0.0.1 until Ctrl+C stops it; port 0 picks a free one.

    The socket is bound here, before werkzeug sees it: a taken port is then one sentence
    instead of werkzeug's exit, and the URL printed is one that already accepts connections.
    """
    model, dataset, chosen = load(run_dir, checkpoint, examples)
    run = chosen.resolve().parent.parent
    wsgi = app(model, dataset, f"{run.parent.name}-{run.name}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ModelError(
            f"Cannot listen on port {port} ({exc.strerror}): pick another --port, or leave it "
            "out for a free one."
        ) from None
    sock.listen(64)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = serving.make_server("127.0.0.1", 0, wsgi, threaded=True, fd=sock.fileno())
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()  # the server holds its own duplicate of the descriptor
    try:
        out.write(f"LIT on {chosen} with {len(dataset)} validation passages\n")
        out.write(f"Serving at {url} (Ctrl+C stops it)\n")
        out.flush()
        server.serve_forever()  # returns on Ctrl+C: werkzeug swallows the KeyboardInterrupt
    except KeyboardInterrupt:  # one that came before serving began
        server.server_close()
    out.write("Stopped.\n")
