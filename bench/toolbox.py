"""The course toolbox's reference results: each model family on a dataset that exercises it.

Every experiment runs through mlcli's runner (the code path of `mlcli train`, with the overrides
printed in the table, so each row can be rerun by hand), one thread, seed 0. The references are
computed in the same run on the same splits: an AR(9) least-squares fit for sunspots, the curve's
noise variance, the HMM's Bayes-optimal (forward-backward) tagging accuracy on the test rows.
Prints markdown tables (docs/benchmarks.md, "Reference results") and writes them to
``--out``/toolbox.md.

    .venv/bin/python bench/toolbox.py                  # everything (~12 min on one core)
    .venv/bin/python bench/toolbox.py --only cnn curve # some experiments (names: --list)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlcli import runner
from mlcli.config import register_schemas
from mlcli.config.compose import compose_job
from mlcli.config.targets import instantiate
from mlcli.cv import hold_out_test, make_folds

Summary = dict[str, tuple[float, float]]


@dataclass
class Experiment:
    """One mlcli run and what it must show."""

    name: str
    title: str
    overrides: str  # as typed after `mlcli train`
    metric: str  # e.g. "val/acc": reported as fold mean ± std at the final epoch
    target: str = ""
    check: Callable[[Summary, dict[str, float]], bool] | None = None
    reference: Callable[[Any], dict[str, float]] | None = None
    extra_metrics: list[str] = field(default_factory=list)


def _mean(summary: Summary, key: str) -> float:
    return summary[key][0]


# ---- references computed on the experiment's own data and splits -----------------------------


def _dataset_and_splits(cfg: Any) -> tuple[Any, np.ndarray, np.ndarray, list[Any]]:
    dataset = runner.build_dataset(cfg)
    dev, test = hold_out_test(
        dataset, float(cfg.dataset.test_fraction), int(cfg.dataset.get("seed", 0))
    )
    folds = make_folds(instantiate(cfg.cv, "cv"), dataset, dev)
    return dataset, dev, test, folds


def ar_least_squares(cfg: Any) -> dict[str, float]:
    """Test MSE of an AR(window) least-squares fit (with intercept) on each fold's training rows."""
    dataset, _, test, folds = _dataset_and_splits(cfg)
    x = np.c_[np.ones(len(dataset.X)), dataset.X.reshape(len(dataset.X), -1)].astype(np.float64)
    y = dataset.y.astype(np.float64)
    mses = []
    for train, _ in folds:
        coef, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
        mses.append(float(np.mean((x[test] @ coef - y[test]) ** 2)))
    return {"ar_test_mse": float(np.mean(mses))}


def curve_noise(cfg: Any) -> dict[str, float]:
    """The curve's noise variance: the lowest MSE any model can reach on unseen points."""
    dataset = runner.build_dataset(cfg)
    return {"noise_variance": float(dataset.meta["noise_variance"])}


def bayes_tagging(cfg: Any) -> dict[str, float]:
    """Bayes-optimal accuracy (true HMM's posterior marginals) on the test rows' real tokens."""
    dataset, _, test, _ = _dataset_and_splits(cfg)
    y, best = dataset.y[test], dataset.meta["bayes_predictions"][test]
    real = y != -100
    return {
        "bayes_test_acc": float((best[real] == y[real]).mean()),
        "bayes_acc_all": float(dataset.meta["bayes_accuracy"]),
    }


# ---- the experiments ---------------------------------------------------------------------------

SEQ2SEQ = "dataset=seq_reverse model=transformer model.dropout=0.0 cv=holdout epochs=15 optim=adam"

EXPERIMENTS = [
    Experiment(
        "cnn",
        "1. CNN on digits (5-fold)",
        "model=cnn dataset=digits cv=kfold cv.n_splits=5 epochs=20 optim=adam optim.lr=3e-3",
        "val/acc",
        "val acc ≥ 0.98",
        lambda s, r: _mean(s, "val/acc") >= 0.98,
        extra_metrics=["test/acc"],
    ),
    Experiment(
        "sunspots-linear",
        "2. linear on sunspots (window 9)",
        "model=linear dataset=sunspots dataset.window=9 epochs=200 batch_size=32 optim=adam "
        "optim.lr=0.01 scheduler=cosine",
        "test/mse",
        "test MSE within 10% of AR(9) least squares",
        lambda s, r: _mean(s, "test/mse") <= 1.10 * r["ar_test_mse"],
        ar_least_squares,
        ["val/mse"],
    ),
    Experiment(
        "sunspots-mlp",
        "2. mlp on sunspots (window 9)",
        "model=mlp model.hidden=[32] dataset=sunspots dataset.window=9 epochs=200 batch_size=32 "
        "optim=adam optim.lr=3e-3 scheduler=cosine",
        "test/mse",
        "(next to linear)",
        None,
        ar_least_squares,
        ["val/mse"],
    ),
    Experiment(
        "curve-relu_sum",
        "3. relu_sum on curve",
        "model=relu_sum model.n_units=20 dataset=curve epochs=150 batch_size=32 optim=adam "
        "optim.lr=1e-2 scheduler=cosine metric=val/mse",
        "val/mse",
        "val MSE ≤ 1.5 × noise variance",
        lambda s, r: _mean(s, "val/mse") <= 1.5 * r["noise_variance"],
        curve_noise,
    ),
    Experiment(
        "curve-linear",
        "3. linear on curve",
        "model=linear dataset=curve epochs=50 batch_size=32 optim=adam optim.lr=1e-2 "
        "scheduler=cosine metric=val/mse",
        "val/mse",
        "val MSE > 1.5 × noise variance (cannot fit)",
        lambda s, r: _mean(s, "val/mse") > 1.5 * r["noise_variance"],
        curve_noise,
    ),
    Experiment(
        "mnist1d-mlp",
        "4. mlp on MNIST-1D",
        "model=mlp model.hidden=[100,100] dataset=mnist1d dataset.normalize=none cv=holdout "
        "cv.val_fraction=0.1 epochs=60 batch_size=100 optim=adam optim.lr=1e-2",
        "test/acc",
        "test acc 0.68 ± 0.05 (paper: 0.68)",
        lambda s, r: abs(_mean(s, "test/acc") - 0.68) <= 0.05,
    ),
    Experiment(
        "mnist1d-cnn1d",
        "4. cnn1d on MNIST-1D",
        "model=cnn1d dataset=mnist1d cv=holdout epochs=20 batch_size=100 optim=adam "
        "optim.lr=3e-3 scheduler=cosine",
        "test/acc",
        "test acc ≥ 0.90 (paper CNN: 0.94)",
        lambda s, r: _mean(s, "test/acc") >= 0.90,
    ),
    Experiment(
        "vowels-attention",
        "5. attention on JapaneseVowels",
        "model=attention dataset=japanese_vowels cv=kfold cv.n_splits=5 epochs=30 batch_size=32 "
        "optim=adam optim.lr=1e-3 scheduler=cosine",
        "test/acc",
        "test acc ≥ 0.97 (published: 0.98-0.99)",
        lambda s, r: _mean(s, "test/acc") >= 0.97,
        extra_metrics=["val/acc"],
    ),
    Experiment(
        "hmm-attention",
        "6. attention head=token on hmm_tagging",
        "model=attention model.head=token dataset=hmm_tagging cv=holdout epochs=25 batch_size=32 "
        "optim=adam optim.lr=1e-3 scheduler=cosine",
        "test/acc",
        "within 2 points of the Bayes-optimal accuracy",
        lambda s, r: _mean(s, "test/acc") >= r["bayes_test_acc"] - 0.02,
        bayes_tagging,
        ["val/acc"],
    ),
    Experiment(
        "reverse-transformer",
        "7. transformer on seq_reverse",
        f"{SEQ2SEQ} optim.lr=2e-3 scheduler=inverse_sqrt scheduler.warmup_steps=200",
        "test/exact_match",
        "held-out exact match ≥ 0.95",
        lambda s, r: _mean(s, "test/exact_match") >= 0.95,
        extra_metrics=["test/token_acc", "val/exact_match"],
    ),
]

# 8. An optimizer comparison on one task, and warmup vs none on the transformer task.
OPTIMIZER_TASK = "model=mlp dataset=digits cv=kfold cv.n_splits=5 epochs=10"
OPTIMIZERS = {
    "sgd": "optim=sgd optim.lr=0.05",
    "sgd+momentum": "optim=sgd optim.lr=0.05 optim.momentum=0.9",
    "adagrad": "optim=adagrad optim.lr=0.05",
    "rmsprop": "optim=rmsprop optim.lr=1e-3",
    "adam": "optim=adam optim.lr=1e-3",
    "adamw": "optim=adamw optim.lr=1e-3 optim.weight_decay=0.01",
}
WARMUP_TASK = f"{SEQ2SEQ} model.norm_first=false scheduler=inverse_sqrt"  # post-LN, as published
NO_WARMUP = "scheduler.warmup=none scheduler.timescale=200"
LINEAR_WARMUP = "scheduler.warmup=linear scheduler.warmup_steps=200"
WARMUPS = {
    "none, lr 2e-3": f"optim.lr=2e-3 {NO_WARMUP}",
    "linear 200 steps, lr 2e-3": f"optim.lr=2e-3 {LINEAR_WARMUP}",
    "none, lr 1e-2": f"optim.lr=1e-2 {NO_WARMUP}",
    "linear 200 steps, lr 1e-2": f"optim.lr=1e-2 {LINEAR_WARMUP}",
}


def run_one(name: str, overrides: str, out: Path) -> tuple[Summary, float, Any]:
    """Run one experiment into ``out/name``; return its summary, wall seconds and config."""
    args = [*overrides.split(), "progress=false", "threads=1", "seed=0"]
    cfg = compose_job(args, None, "config")
    started = time.perf_counter()
    outcome = runner.run(cfg, out / name)
    seconds = time.perf_counter() - started
    if outcome.state != "COMPLETED":
        raise RuntimeError(f"{name}: {outcome.state} {outcome.error}")
    print(f"[{name}] {seconds:.0f}s {json.dumps(outcome.summary)}", flush=True)
    n_folds = json.loads((out / name / "status.json").read_text())["n_folds"]
    return {**outcome.summary, "n_folds": (float(n_folds), 0.0)}, seconds, cfg


def _fmt(summary: Summary, key: str) -> str:
    mean, std = summary[key]
    one_fold = summary["n_folds"][0] == 1
    return f"{mean:.4f}" if one_fold else f"{mean:.4f} ± {std:.4f}"


def _by_epoch(run_dir: Path, key: str, epochs: list[int]) -> list[str]:
    """Fold mean ± std of ``key`` (e.g. ``val/loss``) at each of ``epochs``."""
    import pandas as pd

    frame = pd.read_parquet(run_dir / "results.parquet")
    split, metric = key.split("/", 1)
    frame = frame[(frame["split"] == split) & (frame["metric"] == metric)]
    cells = []
    for epoch in epochs:
        values = frame.loc[frame["epoch"] == epoch, "value"]
        std = f" ± {values.std():.3f}" if len(values) > 1 else ""
        cells.append(f"{values.mean():.3f}{std}")
    return cells


def _comparison(
    task: str, arms: dict[str, str], prefix: str, curve: str, final: str, out: Path
) -> list[str]:
    """Run each arm of a comparison; one table row per arm: ``curve`` by epoch, then ``final``."""
    epochs = int(next(a for a in task.split() if a.startswith("epochs=")).split("=")[1])
    marks = sorted({1, 2, epochs // 4, epochs // 2, epochs} - {0})
    rows = [
        f"| {prefix} | overrides | " + " | ".join(f"epoch {e}" for e in marks) + f" | {final} "
        "| time |",
        "|---|---|" + "---|" * len(marks) + "---|---|",
    ]
    for label, overrides in arms.items():
        name = f"{prefix}-{label.replace(',', '').replace(' ', '_')}"
        summary, seconds, _ = run_one(name, f"{task} {overrides}", out)
        cells = [label, f"`{overrides}`", *_by_epoch(out / name, curve, marks)]
        cells += [_fmt(summary, final), f"{seconds:.0f} s"]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    """Run the experiments and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="experiment names (see --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/toolbox"))
    args = parser.parse_args()
    names = [e.name for e in EXPERIMENTS] + ["optimizers", "warmup"]
    if args.list:
        print("\n".join(names))
        return
    chosen = set(args.only or names)
    register_schemas()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Machine: {platform.machine()}, torch {torch.__version__}, one thread, seed 0. "
        "Fold mean ± std (sample std) at the final epoch; `test/*` is the held-out test split "
        "(evaluated once per fold, after the last epoch).",
        "",
        "| experiment | `mlcli train ...` | result | reference | target | met | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for experiment in EXPERIMENTS:
        if experiment.name not in chosen:
            continue
        summary, seconds, cfg = run_one(experiment.name, experiment.overrides, args.out)
        reference = experiment.reference(cfg) if experiment.reference else {}
        result = f"{experiment.metric} {_fmt(summary, experiment.metric)}"
        result += "".join(f"<br>{m} {_fmt(summary, m)}" for m in experiment.extra_metrics)
        ref_text = "<br>".join(f"{k} {v:.4f}" for k, v in reference.items()) or "-"
        met = "-"
        if experiment.check is not None:
            met = "yes" if experiment.check(summary, reference) else "**no**"
        cells = [experiment.title, f"`{experiment.overrides}`", result, ref_text]
        cells += [experiment.target, met, f"{seconds:.0f} s"]
        lines.append("| " + " | ".join(cells) + " |")
        print("\n".join(lines[-1:]), flush=True)

    if "optimizers" in chosen:
        lines += ["", f"Optimizers on `{OPTIMIZER_TASK}` (val/loss by epoch, fold mean ± std):", ""]
        lines += _comparison(OPTIMIZER_TASK, OPTIMIZERS, "optim", "val/loss", "val/acc", args.out)
    if "warmup" in chosen:
        lines += ["", f"Warmup on `{WARMUP_TASK}` (val/exact_match by epoch):", ""]
        lines += _comparison(WARMUP_TASK, WARMUPS, "warmup", "val/exact_match",
                             "test/exact_match", args.out)  # fmt: skip

    text = "\n".join(lines)
    (args.out / "toolbox.md").write_text(text + "\n", encoding="utf-8")
    print("\n" + text)


if __name__ == "__main__":
    main()
