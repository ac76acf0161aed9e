"""Weights to start from: a nanoGPT ``ckpt.pt``, a checkpoint of one of our lm runs, or a
local Hugging Face causal LM.

An lm config's ``init_from = "PREFIX:PATH"`` names the source; :data:`SOURCES` maps each
prefix to its loader. Every loader returns a :class:`Pretrained`: the model's shape (its
``model_args``), its weights (under our GPT's parameter names, or a Hugging Face model's
own), and what its token ids mean, which the trainer holds against the prepared data.

nanoGPT's files are pickles. ``ckpt.pt`` is read with ``torch.load(weights_only=True)``,
which builds only tensors and plain containers and refuses any other class without
importing it; the char-level ``meta.pkl`` with an unpickler that refuses every class.
Neither can run code from the file. torch is imported only by the functions that need it.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlharness.errors import CheckpointError, DatasetError
from mlharness.lm import checkpoints as ckpt
from mlharness.runs import checkpoints as run_ckpt

if TYPE_CHECKING:
    import torch

    from mlharness.lm.hf_model import HFModel
    from mlharness.lm.model import GPT
    from mlharness.lm.tokenizers import Tokenizer

NANOGPT_FILE = "ckpt.pt"
META_PKL = "meta.pkl"
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
GPT2_VOCAB = 50257  # tiktoken's gpt2 encoding; nanoGPT pads its models' to 50,304
GPT2_SPEC: dict[str, Any] = {"type": "tiktoken", "encoding": "gpt2"}


@dataclass
class Pretrained:
    """A model to start from, in our GPT's terms."""

    kind: str  # the init_from prefix: nanogpt | run | hf
    path: Path  # the file or checkpoint directory read
    model_args: dict[str, Any]  # GPTConfig's fields
    state: dict[str, torch.Tensor]  # our GPT's names; the tied lm_head may be absent
    tokenizer: dict[str, Any]  # a meta.json tokenizer spec: what the ids mean
    tokenizer_dir: Path  # where a spec's files (a BPE tokenizer.json) lie
    iteration: int

    def record(self) -> dict[str, Any]:
        """What a run started from it keeps in its config.json."""
        return {"kind": self.kind, "path": str(self.path), "iter": self.iteration}

    def build_tokenizer(self) -> Tokenizer:
        from mlharness.lm.tokenizers import load_tokenizer

        return load_tokenizer(self.tokenizer_dir, {"tokenizer": self.tokenizer})


# ----------------------------------------------------------------------------- nanoGPT


def nanogpt_file(path: Path) -> Path:
    """``path`` itself, or the ``ckpt.pt`` in the directory ``path``."""
    if path.is_dir():
        path = path / NANOGPT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"No nanoGPT checkpoint at {path}: give the path of a ckpt.pt, or of the "
            "directory (nanoGPT's out_dir) that holds one."
        )
    return path


def read_nanogpt(file: Path) -> dict[str, Any]:
    """The checkpoint's dict, unpickled with ``weights_only=True``; checked for its keys."""
    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: ours is below
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise _not_nanogpt(file, "it is not a file written by torch.save") from None
        raise CheckpointError(
            f"{file} holds pickled Python objects ({found.group(1)}), which mlx does not "
            "load because unpickling them can run any code: load it in nanoGPT and save "
            "its model, model_args, iter_num and config again as tensors and plain values."
        ) from None
    except Exception as exc:  # torch reports garbage as EOFError, KeyError, RuntimeError...
        raise _not_nanogpt(file, f"torch.load failed with {type(exc).__name__}") from None
    if not isinstance(loaded, dict):
        raise _not_nanogpt(file, f"it holds a {type(loaded).__name__}, not a dict")
    missing = [k for k in ("model", "model_args") if not isinstance(loaded.get(k), dict)]
    if missing:
        raise _not_nanogpt(file, f"its dict lacks {' and '.join(missing)}")
    return loaded


def _not_nanogpt(file: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{file} is not a nanoGPT checkpoint ({why}): nanoGPT's train.py writes ckpt.pt as a "
        "dict of model, model_args, iter_num, best_val_loss and config."
    )


def nanogpt_model_args(args: Mapping[str, Any], file: Path) -> dict[str, Any]:
    """nanoGPT's model_args, which are our GPTConfig's fields exactly; any other is refused."""
    from mlharness.lm.model import GPTConfig

    missing = [k for k in MODEL_ARGS if k not in args]
    extra = sorted(set(args) - set(MODEL_ARGS))
    if missing or extra:
        what = f"lack {', '.join(missing)}" if missing else f"add {', '.join(extra)}"
        raise CheckpointError(
            f"The model_args of {file} {what}: it was written by a modified nanoGPT whose "
            f"model this GPT cannot rebuild (it takes {', '.join(MODEL_ARGS)})."
        )
    return GPTConfig(**{k: args[k] for k in MODEL_ARGS}).to_dict()


def nanogpt_state(model: Mapping[str, Any], file: Path) -> dict[str, torch.Tensor]:
    """nanoGPT's state dict under our names.

    nanoGPT nests the layers in ``transformer.`` (``transformer.h.0.attn.c_attn.weight``;
    ours: ``h.0.attn.c_attn.weight``); a compiled run's keys start with ``_orig_mod.``.
    Without flash attention it also stored each layer's causal mask as ``attn.bias``, a
    constant our GPT does not keep. Its ``lm_head`` is tied to ``wte`` as ours is.
    """
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.items():
        name = key.removeprefix("_orig_mod.").removeprefix("transformer.")
        if re.fullmatch(r"h\.\d+\.attn\.bias", name) and tensor.dim() == 4:
            continue  # the causal mask buffer; c_attn's bias is h.N.attn.c_attn.bias
        state[name] = tensor
    head, wte = state.get("lm_head.weight"), state.get("wte.weight")
    if head is not None and wte is not None:
        if not head.equal(wte):
            raise CheckpointError(
                f"{file} has an lm_head that differs from its token embedding (wte), but "
                "this GPT ties the two as nanoGPT does: the checkpoint is of another model."
            )
        del state["lm_head.weight"]  # stored once, as our checkpoints store it
    return state


class _Refused(pickle.UnpicklingError):
    """The pickle names a class or function (its ``module.name`` is the message)."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers only: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Refused(f"{module}.{name}")


def read_meta_pkl(path: Path) -> str:
    """The characters of nanoGPT's char-level ``meta.pkl``, in id order (its ``itos``)."""
    try:
        with path.open("rb") as f:
            meta = _PlainUnpickler(f).load()
    except _Refused as exc:
        raise DatasetError(
            f"{path} holds pickled Python objects ({exc}); mlx reads only nanoGPT's "
            "char-level meta.pkl, a dict of strings and integers, and unpickles no objects "
            "because that can run code."
        ) from None
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{path} cannot be read as nanoGPT's meta.pkl ({exc}).") from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    chars = _chars(itos) if isinstance(itos, dict) else None
    if not chars:
        raise DatasetError(
            f"{path} is not nanoGPT's char-level meta.pkl: it needs 'itos', a dict from the "
            "ids 0..n-1 to single characters."
        )
    return chars


def _chars(itos: dict[Any, Any]) -> str | None:
    """The characters of ids 0..n-1, or None unless ``itos`` maps exactly those to characters."""
    if any(type(k) is not int for k in itos) or set(itos) != set(range(len(itos))):
        return None
    chars = [itos[i] for i in range(len(itos))]
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
        return None
    return "".join(chars)


def nanogpt_tokenizer(file: Path, config: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
    """What the checkpoint's ids mean, found as nanoGPT's sample.py finds it.

    A char-level ``meta.pkl`` beside ckpt.pt, or where nanoGPT keeps it
    (``data/<dataset>/meta.pkl`` of the checkout holding the out_dir); without one,
    GPT-2's BPE, which nanoGPT then assumes.
    """
    places = [file.parent / META_PKL]
    dataset = config.get("dataset")
    if isinstance(dataset, str) and dataset and "/" not in dataset:
        places.append(file.parent.parent / "data" / dataset / META_PKL)
    for meta_pkl in places:
        if meta_pkl.is_file():
            chars = read_meta_pkl(meta_pkl)
            if len(chars) > vocab_size:
                raise DatasetError(
                    f"{meta_pkl} has {len(chars)} characters but the model in {file} only "
                    f"{vocab_size} token ids: it is the meta.pkl of other data."
                )
            return {"type": "char", "chars": chars}
    if vocab_size < GPT2_VOCAB:
        raise DatasetError(
            f"{file} has no meta.pkl beside it (nor in data/{dataset}/ next to its directory), "
            f"and its {vocab_size} token ids are too few for GPT-2's BPE, which nanoGPT "
            "assumes without one: copy the meta.pkl of the data it was trained on beside it."
        )
    return dict(GPT2_SPEC)


def load_nanogpt(path: Path) -> Pretrained:
    """A nanoGPT checkpoint (``ckpt.pt``, or the directory holding it)."""
    file = nanogpt_file(path)
    loaded = read_nanogpt(file)
    args = nanogpt_model_args(loaded["model_args"], file)
    config = loaded.get("config")
    iteration = loaded.get("iter_num", 0)
    return Pretrained(
        kind="nanogpt",
        path=file,
        model_args=args,
        state=nanogpt_state(loaded["model"], file),
        tokenizer=nanogpt_tokenizer(
            file, config if isinstance(config, dict) else {}, args["vocab_size"]
        ),
        tokenizer_dir=file.parent,
        iteration=iteration if isinstance(iteration, int) else 0,
    )


# ----------------------------------------------------------------------------- our runs


def run_checkpoint(path: Path) -> Path:
    """A checkpoint directory as given, or the one ``mlx sample`` takes of a run directory."""
    if (path / run_ckpt.META_FILE).is_file():
        return path
    if (path / "checkpoints").is_dir():
        return run_ckpt.pick_for_sampling(path / "checkpoints").path
    raise CheckpointError(
        f"'{path}' is neither an lm run directory nor one of its checkpoints: init_from = "
        '"run:PATH" takes a run (its best checkpoint, else its last) or a ckpt_* directory.'
    )


def load_run(path: Path) -> Pretrained:
    """One of our lm runs (best checkpoint, else last) or one of its checkpoint directories.

    The weights only: the run's optimizer, schedule and data position stay behind.
    """
    chosen = run_checkpoint(path)
    meta = ckpt.read_meta(chosen)
    if (meta.get("config") or {}).get("kind", "lm") != "lm":
        raise CheckpointError(
            f"{chosen} is a checkpoint of a {meta['config']['kind']} run, not an lm run: "
            'init_from = "run:PATH" takes lm runs.'
        )
    run_dir = chosen.parent.parent
    if not (run_dir / "meta.json").is_file():
        raise CheckpointError(
            f"{run_dir} has no meta.json, so what its token ids mean is unknown: point "
            "init_from at a run directory written by mlx train."
        )
    from mlharness.lm.meta import load_meta

    return Pretrained(
        kind="run",
        path=chosen,
        model_args=dict(meta["model_args"]),
        state=ckpt.load_weights(chosen),
        tokenizer=load_meta(run_dir).get("tokenizer") or {},
        tokenizer_dir=run_dir,
        iteration=int(meta["iter"]),
    )


# ----------------------------------------------------------------------------- Hugging Face


def load_hf(path: Path) -> Pretrained:
    """A local Hugging Face causal LM directory (GPT-2, Llama, Qwen2, ... layouts)."""
    from mlharness.lm import hf_model
    from mlharness.lm.tokenizers import HFTokenizer, local_hf_dir

    directory = local_hf_dir(path, "init_from")
    model = hf_model.load_hf_model(directory)
    return Pretrained(
        kind="hf",
        path=directory,
        model_args=hf_model.hf_model_args(model, directory),
        state=model.state_dict(),
        tokenizer=HFTokenizer.load(directory, "init_from").spec(),
        tokenizer_dir=directory,
        iteration=0,
    )


# ----------------------------------------------------------------------------- init_from


@dataclass(frozen=True)
class Source:
    load: Callable[[Path], Pretrained]
    takes: str  # what PATH names, for messages


SOURCES: dict[str, Source] = {
    "nanogpt": Source(load_nanogpt, "a nanoGPT ckpt.pt or a directory holding one"),
    "run": Source(load_run, "an lm run directory or one of its ckpt_* directories"),
    "hf": Source(load_hf, "a local Hugging Face causal LM directory"),
}
"""``init_from`` prefixes and their loaders (``scratch`` is the absence of a source)."""


def init_from_problem(value: str) -> str | None:
    """Why ``value`` is not an ``init_from`` setting, or None when it is one."""
    prefix, sep, path = value.partition(":")
    if value == "scratch" or (sep and prefix in SOURCES and path.strip()):
        return None
    forms = "; ".join(f"'{name}:PATH' ({s.takes})" for name, s in SOURCES.items())
    return f"init_from '{value}' is not known: use 'scratch' (random weights); {forms}"


def load_source(init_from: str) -> Pretrained:
    """The model that ``init_from`` (not ``scratch``) names."""
    prefix, _, path = init_from.partition(":")
    return SOURCES[prefix].load(Path(path).expanduser())


def describe_tokenizer(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type")
    if kind == "char":
        return f"char-level ids of {len(spec.get('chars', ''))} characters"
    if kind == "tiktoken":
        return f"tiktoken '{spec.get('encoding')}' ids"
    if kind == "bpe":
        return f"byte-level BPE ids ({spec.get('vocab_size')} tokens, its tokenizer.json)"
    if kind == "hf":
        return f"ids of the Hugging Face tokenizer in {spec.get('path')}"
    return f"ids of an unknown tokenizer ({dict(spec)!r})"


def check_vocabulary(source: Pretrained, meta: Mapping[str, Any], data_dir: Path) -> None:
    """The prepared data's ids must mean what the source's meant, and fit its embedding."""
    data_spec = meta.get("tokenizer") or {}
    same = data_spec == source.tokenizer
    if data_spec.get("type") == "hf" == source.tokenizer.get("type"):  # a copy reads alike
        same = data_spec.get("sha256") == source.tokenizer.get("sha256")
    if same and data_spec.get("type") == "bpe":
        files = (source.tokenizer_dir / "tokenizer.json", data_dir / "tokenizer.json")
        same = all(f.is_file() for f in files) and files[0].read_bytes() == files[1].read_bytes()
    if not same:
        theirs = describe_tokenizer(data_spec)
        if theirs == describe_tokenizer(source.tokenizer):
            theirs += " (other ones, or in another order)"
        char = "the same characters, so the " if source.tokenizer.get("type") == "char" else ""
        raise DatasetError(
            f"The model in {source.path} reads {describe_tokenizer(source.tokenizer)}, but the "
            f"data in {data_dir} holds {theirs}: prepare data with the source's tokenizer "
            f'({char}same ids), or set init_from = "scratch".'
        )
    vocab, model_vocab = int(meta["vocab_size"]), int(source.model_args["vocab_size"])
    if vocab > model_vocab:
        raise DatasetError(
            f"The data in {data_dir} has a vocabulary of {vocab} tokens but the model in "
            f"{source.path} only {model_vocab}: prepare data with the source's tokenizer."
        )


def fit_to_run(
    source: Pretrained, chosen: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model args, weights) of a run starting from ``source``: its shape, with the
    ``model.*`` values the config sets itself (``chosen``) only where they can apply.

    As in nanoGPT's fine-tuning: dropout may be changed, and block_size lowered (the
    position embeddings are cut to it); any other value must equal the source's.
    """
    args = dict(source.model_args)
    conflicts = [
        f"model.{k} = {v!r} (the source has {args[k]!r})"
        for k, v in chosen.items()
        if k != "dropout" and v != args[k] and not (k == "block_size" and v < args[k])
    ]
    if conflicts:
        raise CheckpointError(
            f"init_from gives the model the shape of {source.path}, and the config's "
            f"{', '.join(conflicts)} cannot apply to it: remove these from [model] (only "
            "dropout and a smaller block_size may differ)."
        )
    args.update(chosen)
    state = dict(source.state)
    if "wpe.weight" in state and "hf_config" not in args:  # (load_into names it when absent)
        state["wpe.weight"] = state["wpe.weight"][: args["block_size"]]
    return args, state


def base_model(args: Mapping[str, Any], init_from: str, *, adapters: bool = True) -> GPT | HFModel:
    """The model of a run's checkpoints before their weights load into it.

    A LoRA run's checkpoints hold only adapters: its frozen base comes from its source again
    (``init_from``), loaded as the run first loaded it, then the adapter layers are added
    (unless ``adapters`` is false: export hands the bare base to PEFT's own wrapper).
    """
    from mlharness.lm import hf_model

    model = hf_model.build_model(args)
    lora = args.get("lora")
    if lora:
        source = load_source(init_from)
        chosen = {k: args[k] for k in ("block_size", "dropout")}
        hf_model.load_model_state(model, fit_to_run(source, chosen)[1])
        if adapters:
            hf_model.add_lora_layers(model, lora)
    return model
