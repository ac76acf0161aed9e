"""Benchmark the tabular engine against scikit-learn, side by side on this machine.

Run it from the repository root with the project's virtual environment::

    .venv/bin/python bench/tabular.py                  # full run, a few minutes
    .venv/bin/python bench/tabular.py --quick          # smaller smoke version, seconds
    .venv/bin/python bench/tabular.py --json bench.json  # also save every figure as JSON

(``make bench`` runs the full version.) Both sides run in this one process, interleaved
repeat by repeat, so a busy machine slows them alike; still, close other heavy work first,
and read the load average printed at the top before trusting a ratio.

Sections, each printed as a table followed by its targets (PASS / MISS):

1. Closed-form linear regression on 100,000 x 100 float64 (seeded synthetic data with
   an intercept). ``mlharness`` minimises mean((Xw+b-y)^2) + l2 ||w||^2, so
   ``Ridge(alpha=0.1)`` is compared with ``l2 = 0.1 / n`` and ``LinearRegression()`` with
   ``l2 = 0``: the same objective, hence the same coefficients. Times are medians of
   ``--repeats`` fits after one warm-up. "fit" is exactly what ``train_step`` does minus
   its closing loss evaluation (input checks + the ridge solve); "train_step" adds that
   loss (one more validation pass and a matrix-vector product over X), reported apart
   because scikit-learn's ``fit`` computes no loss. Ratios are ours / sklearn, so below
   1 means we are faster. Δcoef is the largest absolute coefficient difference.
2. MLP on ``make_classification(20000, 20 features, 3 classes)``, standardised: a
   20-64-3 ReLU/softmax network, Adam lr 0.001, 20 epochs of batch 32 with per-epoch
   shuffling, ours through ``TrainingLoop`` (no validation split, no checkpoints, no
   progress bar) against ``MLPClassifier`` with the same settings. Throughput is
   training samples processed per second (n x epochs / wall time, median of
   ``--mlp-repeats``); ratio is ours / sklearn, so above 1 means we are faster. The
   loop's own overhead (data preparation and per-epoch metrics) and a bare loop identical
   to ``TrainingLoop._run_epoch`` are reported too, so the loop's cost is visible.
3. CLI start-up: wall time of the ``mlx`` console script (``--help`` and a dry run of
   ``experiments/example.json``) in fresh processes, whether ``mlx --help`` imports torch
   or scikit-learn, and, for reference, the import time of scikit-learn and torch.

Timing: ``time.perf_counter`` wall time; one untimed warm-up per candidate; in-process
candidates are interleaved repeat by repeat, each timed call preceded by a 0.3 s pause and a
``gc.collect()`` (numpy's and scipy's separate OpenBLAS pools busy-wait after a call and
would otherwise slow whichever call comes next). A "Note: repeats varied" line means the
machine was busy; rerun. The JSON file keeps every individual time.

Speed is measured here, never by timed tests (the design notes: "Speed is measured in
bench/").
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from report import finish, heading, table  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/, where the `mlx` console script lives

SETTLE_SECONDS = 0.3  # pause before each timed in-process call, see settle()
BUSY_LOAD_PER_CPU = 0.5  # 1-minute load average per usable CPU above which we warn
NOISY_SPREAD = 1.3  # repeats varying more than this (max/min) get a warning

# Targets, printed next to the results.
COEF_TOLERANCE = 1e-8
MAX_RIDGE_TIME_RATIO = 1.2
MIN_MLP_SPEED_RATIO = 1.0
MAX_ACCURACY_GAP_POINTS = 1.0
MAX_HELP_SECONDS = 0.3
HEAVY_MODULES = ("torch", "sklearn")
# Reported (not a target) so a regression in start-up is easy to trace.
NOTABLE_MODULES = (
    "numpy",
    "scipy",
    "pydantic",
    "yaml",
    "rich",
    "matplotlib",
    "tensorboard",
    "sklearn",
    "torch",
)


# --------------------------------------------------------------------------- helpers


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call (perf_counter) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def settle() -> None:
    """Let the previous call's BLAS worker threads go idle before the next timed call.

    numpy and scipy each load their own OpenBLAS, whose threads busy-wait for ~0.1 s after
    a call; on a 2-core machine a numpy call started meanwhile (ours, right after scikit-
    learn's scipy ``lstsq``) runs up to 2x slower. Pausing removes that cross-talk.
    """
    gc.collect()
    time.sleep(SETTLE_SECONDS)


def interleaved(
    candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Time every candidate ``repeats`` times, round-robin after ``warmup`` untimed rounds,
    so drifting machine load affects all candidates alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            settle()
            times[name].append(timed(fn)[0])
    return times


def spread(times: dict[str, list[float]]) -> float:
    """Largest max/min ratio among the candidates' repeats: above ~1.3 the machine was busy."""
    return max(max(v) / min(v) for v in times.values())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# --------------------------------------------------------------------------- machine


def machine_facts() -> dict[str, Any]:
    import sklearn

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "blas": _blas_info(),
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
    }
    return facts


def _blas_info() -> list[str]:
    """BLAS libraries loaded in this process (numpy's and scipy's), via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        config: Any = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return [f"{blas.get('name', '?')} {blas.get('version', '?')} (numpy build config)"]
    return [
        f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
        f"{p.get('num_threads')} threads, {p.get('threading_layer', '?')}) "
        f"{Path(p.get('filepath', '')).name}"
        for p in threadpool_info()
        if p.get("user_api") == "blas"
    ]


def print_machine(facts: dict[str, Any]) -> None:
    heading("Machine")
    print(f"python {facts['python']} on {facts['platform']} ({facts['processor']})")
    print(f"CPUs: {facts['cpu_count']} ({facts['cpus_usable']} usable by this process)")
    print(f"load average (1/5/15 min): {' / '.join(map(str, facts['load_average_1_5_15']))}")
    cpus = facts["cpus_usable"] or facts["cpu_count"] or 1
    if facts["load_average_1_5_15"][0] > BUSY_LOAD_PER_CPU * cpus:
        print(
            "Warning: other processes are using the CPUs; multi-threaded BLAS slows down "
            "badly when oversubscribed, so times (and even ratios) will be noisy."
        )
    print(f"numpy {facts['numpy']}, scikit-learn {facts['sklearn']}")
    for blas in facts["blas"]:
        print(f"BLAS: {blas}")
    if facts["thread_env"]:
        print(f"thread settings: {facts['thread_env']}")


# --------------------------------------------------------------------------- 1. linear


def linear_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with varied scales and non-zero means, and y = X w + 3 + noise."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 2.0, size=d)
    offsets = rng.uniform(-3.0, 3.0, size=d)
    X = rng.standard_normal((n, d)) * scales + offsets
    w = rng.normal(size=d)
    y = X @ w + 3.0 + 0.5 * rng.standard_normal(n)
    return np.ascontiguousarray(X), y


def bench_linear(n: int, d: int, repeats: int) -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression as SkLinearRegression
    from sklearn.linear_model import Ridge

    from mlharness.tabular.linear import LinearRegression

    X, y = linear_data(n, d)
    alpha = 0.1
    cases = {"ridge": (alpha / n, lambda: Ridge(alpha=alpha)), "ols": (0.0, SkLinearRegression)}
    results: dict[str, Any] = {"n_samples": n, "n_features": d, "repeats": repeats, "cases": {}}
    for case, (l2, make_sklearn) in cases.items():
        model = LinearRegression(l2_regularization=l2)
        sk_models: list[Any] = []

        def sk_fit(make: Callable[[], Any] = make_sklearn, keep: list[Any] = sk_models) -> None:
            keep[:] = [make().fit(X, y)]

        times = interleaved(
            {
                "fit": partial(model.fit, X, y),
                "train_step": partial(model.train_step, X, y),
                "loss": partial(model.loss, X, y),
                "sklearn": sk_fit,
            },
            repeats,
        )
        sk = sk_models[0]
        med = {k: median(v) for k, v in times.items()}
        results["cases"][case] = {
            "l2_regularization": l2,
            "sklearn_estimator": repr(make_sklearn()),
            "sklearn_solver": getattr(sk, "solver_", None),
            "seconds": times,
            "median_seconds": med,
            "ratio_fit": med["fit"] / med["sklearn"],
            "ratio_train_step": med["train_step"] / med["sklearn"],
            "loss_share_of_train_step": med["loss"] / med["train_step"],
            "spread_max_over_min": spread(times),
            "max_abs_coef_diff": float(np.max(np.abs(model.coef_ - sk.coef_))),
            "abs_intercept_diff": float(abs(model.intercept_ - float(sk.intercept_))),
        }
    return results


def print_linear(res: dict[str, Any]) -> None:
    heading(
        f"1. Closed-form linear regression, {res['n_samples']:,} x {res['n_features']} float64 "
        f"(median of {res['repeats']}, ms)"
    )
    rows = []
    names = {
        "ridge": ("Ridge(alpha=0.1)", "l2=0.1/n"),
        "ols": ("LinearRegression()", "l2=0"),
    }
    for case, r in res["cases"].items():
        sk_name, ours = names[case]
        med = r["median_seconds"]
        solver = f" [{r['sklearn_solver']}]" if r["sklearn_solver"] else ""
        rows.append(
            [
                f"{sk_name}{solver} vs ours {ours}",
                ms(med["fit"]),
                ms(med["train_step"]),
                ms(med["sklearn"]),
                f"{r['ratio_fit']:.2f}",
                f"{r['ratio_train_step']:.2f}",
                f"{r['max_abs_coef_diff']:.1e}",
                f"{r['abs_intercept_diff']:.1e}",
            ]
        )
    print(
        table(
            [
                "comparison",
                "ours fit",
                "ours train_step",
                "sklearn fit",
                "ratio fit",
                "ratio step",
                "max|Δcoef|",
                "|Δintercept|",
            ],
            rows,
        )
    )
    ridge = res["cases"]["ridge"]
    share = max(r["loss_share_of_train_step"] for r in res["cases"].values())
    print(
        f"train_step = fit + loss evaluation; the loss alone takes "
        f"{ms(ridge['median_seconds']['loss'])} ms, up to {share:.0%} of train_step."
    )
    noisy = max(r["spread_max_over_min"] for r in res["cases"].values())
    if noisy > NOISY_SPREAD:
        print(f"Note: repeats varied up to {noisy:.2f}x (max/min); the machine was busy.")
    coef_ok = all(
        max(r["max_abs_coef_diff"], r["abs_intercept_diff"]) <= COEF_TOLERANCE
        for r in res["cases"].values()
    )
    print("Targets:")
    print(
        f"  coefficients and intercept equal to {COEF_TOLERANCE:g} (both comparisons): "
        f"{verdict(coef_ok)}"
    )
    print(
        f"  fit at most {MAX_RIDGE_TIME_RATIO}x Ridge's time: {ridge['ratio_fit']:.2f}x "
        f"{verdict(ridge['ratio_fit'] <= MAX_RIDGE_TIME_RATIO)}  "
        f"(train_step, loss included: {ridge['ratio_train_step']:.2f}x "
        f"{verdict(ridge['ratio_train_step'] <= MAX_RIDGE_TIME_RATIO)})"
    )
    res["targets"] = {
        "coefficients_equal": coef_ok,
        "fit_time_vs_ridge": ridge["ratio_fit"] <= MAX_RIDGE_TIME_RATIO,
    }


# --------------------------------------------------------------------------- 2. MLP


def bench_mlp(epochs: int, repeats: int, n_samples: int = 20_000) -> dict[str, Any]:
    from sklearn.datasets import make_classification
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from mlharness.tabular.datasets import BaseDataset, Task
    from mlharness.tabular.loop import TrainingLoop
    from mlharness.tabular.mlp import MLP

    X, y = make_classification(
        n_samples=n_samples, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    X = StandardScaler().fit_transform(X)
    y = y.astype(np.int64)
    batch_size, seed, lr = 32, 0, 0.001

    class InMemory(BaseDataset):
        """The arrays above, as the one protocol TrainingLoop reads."""

        name = "in_memory"

        def generate(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
            return X, y

        @property
        def task(self) -> Task:
            return "classification"

        @property
        def n_samples(self) -> int:
            return len(y)

        @property
        def n_features(self) -> int:
            return int(X.shape[1])

        @property
        def n_classes(self) -> int:
            return 3

        def _parameters(self) -> dict[str, Any]:
            return {}

    def make_model() -> MLP:
        return MLP(
            [20, 64, 3],
            activation="relu",
            output_activation="softmax",
            seed=seed,
            optimizer_config={"optimizer_type": "adam", "learning_rate": lr},
        )

    def make_loop(n_epochs: int) -> TrainingLoop:
        return TrainingLoop(
            make_model(),
            InMemory(),
            epochs=n_epochs,
            batch_size=batch_size,
            seed=seed,
            validation_fraction=0.0,
            shuffle=True,
            standardize=False,
            progress=False,
        )

    def make_sklearn(n_epochs: int) -> MLPClassifier:
        return MLPClassifier(
            hidden_layer_sizes=(64,),
            solver="adam",
            batch_size=batch_size,
            max_iter=n_epochs,
            learning_rate_init=lr,
            alpha=0.0,
            tol=0,
            n_iter_no_change=10**9,
            shuffle=True,
            random_state=seed,
        )

    trained: dict[str, Any] = {}

    def ours_loop(n_epochs: int = epochs) -> None:
        loop = make_loop(n_epochs)
        loop.train()
        trained["loop"] = loop

    def ours_bare(n_epochs: int = epochs) -> None:
        # The same split, shuffles and steps as TrainingLoop, without its per-epoch metrics.
        loop = make_loop(n_epochs)
        X_tr, _, y_tr, _ = loop.prepare_data()
        rng = np.random.default_rng(seed)
        for _ in range(n_epochs):
            loop._run_epoch(X_tr, y_tr, rng)
        trained["bare"] = loop.model

    def sklearn_fit(n_epochs: int = epochs) -> None:
        clf = make_sklearn(n_epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        trained["sklearn"] = clf

    # Warm-up: one epoch of each, untimed.
    ours_loop(1)
    ours_bare(1)
    sklearn_fit(1)
    times = interleaved(
        {"ours_loop": ours_loop, "ours_bare": ours_bare, "sklearn": sklearn_fit},
        repeats,
        warmup=0,
    )
    med = {k: median(v) for k, v in times.items()}
    processed = n_samples * epochs
    speed = {k: processed / v for k, v in med.items()}

    loop = trained["loop"]
    clf = trained["sklearn"]
    ours_acc = float(np.mean(loop.model.predict(X).argmax(axis=1) == y))
    bare_acc = float(np.mean(trained["bare"].predict(X).argmax(axis=1) == y))
    sk_acc = float(clf.score(X, y))

    # TrainingLoop's own cost: data preparation once, epoch metrics every epoch.
    empty_X, empty_y = X[:0], y[:0]
    prep = median([timed(loop.prepare_data)[0] for _ in range(5)])
    metric = median(
        [timed(lambda: loop.epoch_metrics(1, 0.0, empty_X, empty_y))[0] for _ in range(20)]
    )
    overhead = prep + epochs * metric

    return {
        "n_samples": n_samples,
        "epochs": epochs,
        "batch_size": batch_size,
        "repeats": repeats,
        "sklearn_n_iter": int(clf.n_iter_),
        "spread_max_over_min": spread(times),
        "seconds": times,
        "median_seconds": med,
        "samples_per_second": speed,
        "ratio_loop": speed["ours_loop"] / speed["sklearn"],
        "ratio_bare": speed["ours_bare"] / speed["sklearn"],
        "train_accuracy": {"ours_loop": ours_acc, "ours_bare": bare_acc, "sklearn": sk_acc},
        "loop_overhead_seconds": overhead,
        "loop_overhead_share": overhead / med["ours_loop"],
        "loop_final_train_loss": loop.history[-1]["loss"],
        "sklearn_final_train_loss": float(clf.loss_),
    }


def print_mlp(res: dict[str, Any]) -> None:
    heading(
        f"2. MLP 20-64-3 relu/softmax, Adam lr 0.001, {res['epochs']} epochs x batch "
        f"{res['batch_size']} on {res['n_samples']:,} samples (median of {res['repeats']})"
    )
    med, speed, acc = res["median_seconds"], res["samples_per_second"], res["train_accuracy"]
    rows = [
        [label, f"{med[key]:.2f}", f"{speed[key]:,.0f}", ratio, f"{acc[key]:.2%}"]
        for label, key, ratio in (
            ("ours, TrainingLoop", "ours_loop", f"{res['ratio_loop']:.2f}"),
            ("ours, bare _run_epoch loop", "ours_bare", f"{res['ratio_bare']:.2f}"),
            ("sklearn MLPClassifier", "sklearn", "1.00"),
        )
    ]
    print(table(["trainer", "seconds", "samples/s", "ratio", "train accuracy"], rows))
    print(
        f"Headline is TrainingLoop: its overhead (data prep + {res['epochs']} epoch-metric "
        f"passes) is {res['loop_overhead_seconds'] * 1e3:.0f} ms, "
        f"{res['loop_overhead_share']:.1%} of its time."
    )
    print(
        f"Final mean train loss: ours {res['loop_final_train_loss']:.4f} (mean over the last "
        f"epoch's batches), sklearn {res['sklearn_final_train_loss']:.4f}; sklearn ran "
        f"{res['sklearn_n_iter']} epochs."
    )
    if res["spread_max_over_min"] > NOISY_SPREAD:
        print(
            f"Note: repeats varied up to {res['spread_max_over_min']:.2f}x (max/min); "
            "the machine was busy."
        )
    gap = (acc["ours_loop"] - acc["sklearn"]) * 100
    fast_ok = res["ratio_loop"] >= MIN_MLP_SPEED_RATIO
    acc_ok = abs(gap) <= MAX_ACCURACY_GAP_POINTS
    print("Targets:")
    print(f"  at least as fast as sklearn: {res['ratio_loop']:.2f}x {verdict(fast_ok)}")
    print(
        f"  train accuracy within {MAX_ACCURACY_GAP_POINTS:g} point: {gap:+.2f} points "
        f"{verdict(acc_ok)}"
    )
    res["targets"] = {"at_least_as_fast": fast_ok, "accuracy_within_1_point": acc_ok}


# --------------------------------------------------------------------------- 3. CLI


def wall_times(cmd: Sequence[str], repeats: int, cwd: Path = REPO) -> list[float]:
    """Wall time of ``cmd`` in a fresh process, ``repeats`` times after one warm-up."""

    def run() -> None:
        subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)

    run()
    return [timed(run)[0] for _ in range(repeats)]


def modules_after_help() -> dict[str, Any]:
    """Run ``mlharness.cli.main(["--help"])`` in a fresh interpreter; report what it imported."""
    code = (
        "import json, sys\n"
        "from mlharness.cli import main\n"
        "rc = main(['--help'])\n"
        f"names = {list(NOTABLE_MODULES)!r}\n"
        "print('\\n' + json.dumps({'exit_code': rc, "
        "'imported': [m for m in names if m in sys.modules], "
        "'n_modules': len(sys.modules)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def slowest_imports(cmd_args: Sequence[str], top: int = 6) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (``-X importtime``) for ``mlx ARGS``."""
    code = "import sys; from mlharness.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *cmd_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    totals: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1]) / 1e6
        except ValueError:
            continue
        name = parts[2].rstrip()
        if name.startswith(" ") and not name.startswith("  "):  # a top-level import
            root = name.strip()
            totals[root] = totals.get(root, 0.0) + cumulative
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def bench_cli(repeats: int) -> dict[str, Any]:
    mlx = BIN / "mlx"
    if not mlx.exists():
        raise SystemExit(f"No `mlx` console script next to {sys.executable}; pip install -e .")
    commands = {
        "mlx --help": [str(mlx), "--help"],
        "mlx run-experiment --dry-run": [
            str(mlx),
            "run-experiment",
            "--dry-run",
            "--config",
            "experiments/example.json",
        ],
        'python -c "pass"': [sys.executable, "-c", "pass"],
        'python -c "import sklearn"': [sys.executable, "-c", "import sklearn"],
    }
    if importlib.util.find_spec("torch") is not None:
        commands['python -c "import torch"'] = [sys.executable, "-c", "import torch"]
    settle()  # this process's BLAS threads must not compete with the child processes
    times = {label: wall_times(cmd, repeats) for label, cmd in commands.items()}
    return {
        "repeats": repeats,
        "torch_installed": 'python -c "import torch"' in commands,
        "seconds": times,
        "median_seconds": {k: median(v) for k, v in times.items()},
        "after_help": modules_after_help(),
        "slowest_imports": {
            "mlx --help": slowest_imports(["--help"]),
            "mlx run-experiment --dry-run": slowest_imports(
                ["run-experiment", "--dry-run", "--config", "experiments/example.json"]
            ),
        },
    }


def print_cli(res: dict[str, Any]) -> None:
    heading(f"3. CLI start-up, fresh processes (median of {res['repeats']}, wall time)")
    med = res["median_seconds"]
    rows = [
        [label, ms(sec), f"{min(res['seconds'][label]) * 1e3:.1f}"] for label, sec in med.items()
    ]
    if not res["torch_installed"]:
        rows.append(['python -c "import torch"', "-", "not installed"])
    print(table(["command", "median ms", "min ms"], rows))
    after = res["after_help"]
    print(
        f"After mlharness.cli.main(['--help']) (fresh `python -c`, exit code "
        f"{after['exit_code']}, {after['n_modules']} modules loaded): notable modules "
        f"imported: {', '.join(after['imported']) or 'none'}."
    )
    for label, top in res["slowest_imports"].items():
        listed = ", ".join(f"{name} {sec * 1e3:.0f}" for name, sec in top)
        print(f"Slowest top-level imports of `{label}` (-X importtime, ms): {listed}")
    heavy = [m for m in HEAVY_MODULES if m in after["imported"]]
    help_s = med["mlx --help"]
    print("Targets:")
    print(
        f"  mlx --help under {MAX_HELP_SECONDS} s: {help_s:.3f} s "
        f"{verdict(help_s < MAX_HELP_SECONDS)}"
    )
    print(
        f"  neither torch nor sklearn imported by --help: "
        f"{'imported ' + ', '.join(heavy) if heavy else 'neither'} {verdict(not heavy)}"
    )
    res["targets"] = {"help_fast": help_s < MAX_HELP_SECONDS, "help_light": not heavy}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark mlharness's tabular engine against scikit-learn.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller, fast smoke version: 20,000-row regression, 3 MLP epochs, fewer repeats",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="linear-regression repeats (default 7; quick 3)"
    )
    parser.add_argument(
        "--mlp-repeats", type=int, default=None, help="MLP training repeats (default 3; quick 1)"
    )
    parser.add_argument(
        "--cli-repeats", type=int, default=None, help="CLI start-up repeats (default 5; quick 3)"
    )
    parser.add_argument(
        "--only",
        choices=("linear", "mlp", "cli"),
        action="append",
        help="run only this section (repeatable)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    for name in ("repeats", "mlp_repeats", "cli_repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    n_linear = 20_000 if quick else 100_000
    repeats = args.repeats or (3 if quick else 7)
    mlp_epochs = 3 if quick else 20
    mlp_repeats = args.mlp_repeats or (1 if quick else 3)
    cli_repeats = args.cli_repeats or (3 if quick else 5)
    sections = set(args.only or ("linear", "mlp", "cli"))

    started = time.perf_counter()
    facts = machine_facts()
    print(f"mlharness tabular benchmark{' (--quick)' if quick else ''}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print_machine(facts)
    report: dict[str, Any] = {"quick": quick, "machine": facts, "sections": {}}

    if "linear" in sections:
        res = bench_linear(n_linear, 100, repeats)
        print_linear(res)
        report["sections"]["linear"] = res
    if "mlp" in sections:
        res = bench_mlp(mlp_epochs, mlp_repeats)
        print_mlp(res)
        report["sections"]["mlp"] = res
    if "cli" in sections:
        res = bench_cli(cli_repeats)
        print_cli(res)
        report["sections"]["cli"] = res

    finish(report, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
