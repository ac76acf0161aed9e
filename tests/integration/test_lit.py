"""``mlx lit``: our GPT as a LIT model, checked against our sampler, and LIT's server on it.

These need lit-nlp, which lives in its own environment: ``make lit-test`` creates
.venv-lit (``make lit-env``) and runs them there. Elsewhere they skip, saying so.
"""

from __future__ import annotations

import doctest
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "lit_nlp", reason="lit-nlp is not installed here: run 'make lit-test' (.venv-lit) for these"
)
torch = pytest.importorskip("torch")

from lit_nlp.components import gradient_maps  # noqa: E402
from lit_nlp.lib import validation  # noqa: E402

from lm_support import TINY_LM, corpus_text  # noqa: E402
from mlharness.config import deep_merge  # noqa: E402
from mlharness.lm import lit  # noqa: E402
from mlharness.lm.config import load_lm_config  # noqa: E402
from mlharness.lm.prepare import prepare_data  # noqa: E402
from mlharness.lm.sampler import sample  # noqa: E402
from mlharness.lm.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """One tiny char-level run (its workspace is the current directory while tests run)."""
    ws = tmp_path_factory.mktemp("lit")
    (ws / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        mp.setenv("MLX_WORKSPACE", str(ws))
        mp.delenv("MLX_OVERRIDES", raising=False)
        config = deep_merge(TINY_LM, {"prepare": {"preparer": "text", "input": "corpus.txt"}})
        cfg = load_lm_config(None, "tiny", overrides=config)
        prepare_data(cfg, None, force=True, progress=False)
        run = train(cfg, progress=False).run_dir
        yield run, cfg


@pytest.fixture(scope="module")
def loaded(trained: tuple[Path, Any]) -> tuple[lit.GPTLitModel, Any]:
    model, dataset, _ = lit.load(trained[0], examples=5)
    return model, dataset


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_generation_is_what_mlx_sample_draws(
    trained: tuple[Path, Any], loaded: tuple[lit.GPTLitModel, Any], temperature: float
) -> None:
    _, cfg = trained
    model, dataset = loaded
    prompt = dataset.examples[1]["prompt"]
    model.sampling = lit.Sampling(12, temperature, 5, 1.0, seed=7)
    response = next(model.predict([{"prompt": prompt}]))["response"]
    if temperature == 0.0:  # greedy, which [sample] cannot ask for: the model's own argmax
        ids = torch.tensor([model.encode(prompt)])
        greedy = model.model.generate(ids, 12, temperature=0.0)[0, ids.size(1) :]
        assert response == model.tokenizer.decode(greedy.tolist())
    else:
        settings = {"start": prompt, "num_samples": 1, "max_new_tokens": 12}
        settings |= {"temperature": temperature, "top_k": 5, "seed": 7}
        drawn = sample(cfg.model_copy(update={"sample": cfg.sample.model_copy(update=settings)}))
        assert drawn.samples == [prompt + response]
    assert len(model.encode(response)) == 12


def test_predictions_are_the_models_next_token_probabilities(
    loaded: tuple[lit.GPTLitModel, Any],
) -> None:
    model, dataset = loaded
    vocab = model.model.config.vocab_size
    full = lit.GPTLitModel(model.model, model.tokenizer, model.sampling, top_k=vocab)
    prompt = dataset.examples[0]["prompt"]
    out = full.analyse(full.encode(prompt))
    ids = torch.tensor([full.encode(prompt)])
    with torch.no_grad():
        logits, _ = model.model(ids, all_logits=True)
    expected = torch.softmax(logits[0], dim=-1)
    assert len(out["pred_tokens"]) == len(out["tokens"]) == ids.size(1)
    for position, candidates in enumerate(out["pred_tokens"]):
        probs = [p for _, p in candidates]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert probs == sorted(probs, reverse=True)
        best = int(expected[position].argmax())
        assert candidates[0] == (
            model.tokenizer.decode([best]),
            pytest.approx(float(expected[position, best]), rel=1e-5),
        )
    assert out["next_tokens"] == out["pred_tokens"][-1]
    following = expected[:-1].gather(1, ids[:, 1:].T)[:, 0].tolist()
    assert out["token_probs"] == pytest.approx([0.0, *following], rel=1e-5)
    assert len(model.analyse(model.encode(prompt))["pred_tokens"][0]) == lit.TOP_K


def test_salience_has_one_gradient_per_token_and_lit_interprets_it(
    loaded: tuple[lit.GPTLitModel, Any],
) -> None:
    model, dataset = loaded
    example = dataset.examples[2]
    out = next(model.predict([example]))
    n_tokens, n_embd = len(out["tokens"]), model.model.config.n_embd
    assert out["token_embs"].shape == out["token_grads"].shape == (n_tokens, n_embd)
    assert out["embedding"].shape == (n_embd,)
    assert abs(out["token_grads"]).sum() > 0 and out["loss"] > 0
    interpreters = {
        "token_grads": (gradient_maps.GradientNorm(), gradient_maps.GradientDotInput()),
        "token_probs": (lit.TokenProbability(),),
    }
    for field, field_interpreters in interpreters.items():
        for interpreter in field_interpreters:
            assert interpreter.is_compatible(model, dataset)
            salience = interpreter.run([example], model, dataset, model_outputs=[out])
            assert salience is not None
            assert len(salience[0][field].salience) == n_tokens


def test_passages_start_at_lines_and_are_the_validation_text(
    trained: tuple[Path, Any], loaded: tuple[lit.GPTLitModel, Any]
) -> None:
    _, cfg = trained
    model, dataset = loaded
    text = model.tokenizer.decode(np.fromfile(cfg.data_dir / "val.bin", np.uint16).tolist())
    assert len(dataset.examples) == 5
    for example in dataset.examples:
        assert example["prompt"] + example["target"] in text
    assert doctest.testmod(lit).failed == 0  # passages' line-start example


def test_an_experiments_directory_stands_for_its_newest_run(trained: tuple[Path, Any]) -> None:
    run, _ = trained
    assert lit.load(run.parent, examples=1)[2] == lit.load(run, examples=1)[2]
    with pytest.raises(lit.ModelError, match="neither a trained lm run nor an experiment"):
        lit.load(run / "samples", examples=1)


def test_runs_and_prompts_it_cannot_serve_are_one_sentence(
    trained: tuple[Path, Any], loaded: tuple[lit.GPTLitModel, Any], tmp_path: Path
) -> None:
    model, _ = loaded
    with pytest.raises(lit.ModelError, match=r"^The prompt cannot be encoded .*training text\.$"):
        model.encode("\u2603")
    with pytest.raises(lit.ModelError, match=r"^The prompt encodes to no tokens: give"):
        model.encode("")
    with pytest.raises(lit.ModelError, match=r"^The validation split has 7 tokens, too few"):
        lit.passages(np.zeros(7, np.uint16), model.tokenizer, 2, 4, 2)
    run = shutil.copytree(trained[0], tmp_path / "run")  # as if it had fine-tuned GPT-2
    for meta in run.glob("checkpoints/*/checkpoint.json"):
        record = json.loads(meta.read_text())
        record["config"]["init_from"] = "hf:models/gpt2"
        meta.write_text(json.dumps(record))
    with pytest.raises(lit.ModelError, match="fine-tuned a Hugging Face model; mlx lit serves"):
        lit.load(run)


def test_outputs_match_the_spec_lit_checks(loaded: tuple[lit.GPTLitModel, Any]) -> None:
    model, dataset = loaded
    model.sampling = lit.Sampling(4, 0.8, None, 1.0, seed=1)
    validation.validate_model(model, dataset.slice[:2], report_all=True)


def _follow(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout, line by line, then "" once it has closed."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str], marker: str, timeout: float) -> str:
    """Lines up to the one holding ``marker``; "" if output ended or time ran out first."""
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return ""
        if not line:
            return ""
        seen += line
    return seen


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_server_answers_lits_api_and_stops_on_ctrl_c(trained: tuple[Path, Any]) -> None:
    run, _ = trained
    env = {**os.environ, "MLX_WORKSPACE": os.getcwd(), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "mlharness", "lit", str(run), "--examples", "3"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines = _follow(proc)
    try:
        printed = _read_until(lines, "Serving at ", timeout=120)
        assert printed, f"mlx lit did not start serving: {proc.kill() or proc.communicate()[1]}"
        url = printed.split("Serving at ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        info = _post(url + "get_info", {})
        name = f"tiny-{run.name}"  # the experiment and the run
        assert list(info["models"]) == [name]
        assert "val" in info["datasets"]
        assert "response" in info["models"][name]["spec"]["output"]
        data = _post(url + "get_dataset?dataset_name=val", {})
        assert len(data) == 3 and {"prompt", "target"} <= set(data[0]["data"])
        preds = _post(
            url + f"get_preds?model={name}&dataset_name=val&requested_types=GeneratedText",
            {"inputs": data[:1]},
        )
        assert isinstance(preds[0]["response"], str) and preds[0]["response"]
        for interpreter, field in (
            ("Grad+L2+Norm", "token_grads"),
            ("Token+probability", "token_probs"),
        ):
            salience = _post(
                url
                + f"get_interpretations?model={name}&dataset_name=val&interpreter={interpreter}",
                {"inputs": data[:1]},
            )
            assert len(salience[0][field]["salience"]) == len(salience[0][field]["tokens"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=60)
    assert proc.returncode == 130, err
    assert _read_until(lines, "\n", timeout=10) == "Stopped.\n"
    assert "Traceback" not in err


def test_a_taken_port_is_one_sentence(trained: tuple[Path, Any]) -> None:
    import socket

    run, _ = trained
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "mlharness", "lit", str(run), "--port", str(port)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"Error: Cannot listen on port {port} ("), result.stderr
    assert "Traceback" not in result.stderr
