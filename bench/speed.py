"""mlcli training speed against a hand-written PyTorch loop, measured in the same process.

The task (issue 9): digits, MLP 64-128-10, batch 64, 20 epochs, 5-fold CV, Adam (lr 1e-2), one
torch thread. The reference is the loop a practitioner writes over pre-built tensors: per fold a
fresh model and optimizer, a seeded permutation per epoch, forward / loss / backward / step, the
validation accuracy after every epoch. mlcli does the same work through its own code paths:

* ``fit (1 fold)``: :func:`mlcli.train.fit` on one fold (tensors built, as in the reference);
* ``run, sequential``: ``runner.run`` end to end, all folds (data, folds, fit, results written);
* ``run, stacked``: the same with ``stack_folds=on`` (the folds trained as one stacked model);
* ``cnn run``: the compute-bound CNN (``model=cnn``), its folds one after another on one core,
  against ``parallel_folds=2`` (two fold processes, one thread each: both cores).

Each case is measured ``--repeats`` times after one warm-up, the cases interleaved round-robin so
that load from other processes hits them alike; the medians and their ratios are printed.

    .venv/bin/python bench/speed.py [--repeats 5] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mlcli import runner
from mlcli.config.compose import compose_job
from mlcli.config.targets import instantiate
from mlcli.cv import hold_out_test, make_folds
from mlcli.data.preprocess import fold_tensors
from mlcli.engine.loop import FoldData, batches_per_epoch, fit
from mlcli.engine.optim import build_optimizer


def reference_fold(data: FoldData, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """The hand-written loop: returns the final validation accuracy."""
    torch.manual_seed(seed)
    n_in, n_out = data.x_train[0].numel(), int(data.y_train.max()) + 1
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, n_out))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    acc = 0.0
    for _ in range(epochs):
        permutation = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = permutation[start : start + batch_size]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = (model(data.x_val).argmax(-1) == data.y_val).float().mean().item()
    return acc


def main() -> None:
    """Measure, interleaved, and print a markdown table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated words: cases to run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    base = [f"epochs={args.epochs}", "progress=false", "device=cpu", "threads=1"]
    cfg = compose_job(base, None, "config")
    dataset = runner.build_dataset(cfg)
    dev_idx, test_idx = hold_out_test(dataset, float(cfg.dataset.test_fraction), 0)
    folds = make_folds(instantiate(cfg.cv, "cv", []), dataset, dev_idx)
    cpu = torch.device("cpu")
    fold_data = [fold_tensors(dataset, tr, va, test_idx, cfg.dataset, cpu) for tr, va in folds]
    lr, batch = float(cfg.optim.lr), int(cfg.batch_size)
    accs: dict[str, list[float]] = {}

    def reference_all() -> None:
        accs["reference"] = [
            reference_fold(d, args.epochs, batch, lr, k) for k, d in enumerate(fold_data)
        ]

    def reference_one() -> None:
        reference_fold(fold_data[0], args.epochs, batch, lr, 0)

    def mlcli_fit_one() -> None:
        torch.manual_seed(0)
        model = instantiate(
            cfg.model, "model", [], in_shape=dataset.in_shape, out_features=dataset.out_features
        )
        optimizer = build_optimizer(cfg.optim, model.parameters(), [])  # as mlcli builds it
        steps = args.epochs * batches_per_epoch(len(fold_data[0].x_train), batch)
        scheduler = instantiate(cfg.scheduler, "scheduler", [])(optimizer, total_steps=steps)
        fit(
            model,
            optimizer,
            scheduler,
            fold_data[0],
            task=dataset.task,
            epochs=args.epochs,
            batch_size=batch,
            generator=torch.Generator().manual_seed(0),
        )

    def mlcli_run(name: str, *overrides: str) -> Callable[[], None]:
        job = compose_job([*base, *overrides], None, "config")

        def _run() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                outcome = runner.run(job, Path(tmp))
                assert outcome.state == "COMPLETED", outcome
                frame = __import__("mlcli.rundir", fromlist=["x"]).read_results(
                    Path(tmp) / "results.parquet"
                )
                final = [
                    r["value"]
                    for r in frame
                    if r["split"] == "val" and r["metric"] == "acc" and r["epoch"] == args.epochs
                ]
                accs[name] = final

        return _run

    cases: dict[str, Callable[[], None]] = {
        "reference, 1 fold": reference_one,
        "mlcli fit, 1 fold": mlcli_fit_one,
        "reference, 5 folds": reference_all,
        "mlcli run, sequential": mlcli_run("sequential", "stack_folds=off"),
        "mlcli run, stacked": mlcli_run("stacked", "stack_folds=on"),
        # The compute-bound CNN: one core (sequential folds) against both (2 fold processes).
        "cnn run, 1 core": mlcli_run("cnn 1 core", "model=cnn", "stack_folds=off"),
        "cnn run, parallel_folds=2": mlcli_run(
            "cnn parallel_folds=2", "model=cnn", "stack_folds=off", "parallel_folds=2"
        ),
    }
    if args.only:
        cases = {k: v for k, v in cases.items() if any(w in k for w in args.only.split(","))}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(args.repeats + 1):
        for name, case in cases.items():
            started = time.perf_counter()
            case()
            if repeat:  # the first round is the warm-up (imports, allocator, dynamo)
                times[name].append(time.perf_counter() - started)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"digits MLP 64-128-10, batch {batch}, {args.epochs} epochs, {len(folds)} folds, Adam, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"median of {args.repeats} interleaved repeats after a warm-up, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(cnn rows: ratio to the cnn on one core)"
    )
    print("| case | median s | ratio | min s | target |")
    print("|---|---|---|---|---|")
    refs = {
        "1 fold": med.get("reference, 1 fold", float("nan")),
        "5 folds": med.get("reference, 5 folds", float("nan")),
        "cnn": med.get("cnn run, 1 core", float("nan")),
    }
    targets = {
        "mlcli fit, 1 fold": 1.05,
        "mlcli run, sequential": 1.05,
        "mlcli run, stacked": 0.40,
        "cnn run, parallel_folds=2": 0.70,
    }
    for name, value in med.items():
        ref = next((refs[k] for k in ("1 fold", "cnn") if k in name), refs["5 folds"])
        target = targets.get(name)
        verdict = (
            ""
            if target is None
            else f"<= {target}" + (" ok" if value / ref <= target else " MISSED")
        )
        print(f"| {name} | {value:.3f} | {value / ref:.2f} | {min(times[name]):.3f} | {verdict} |")
    for name, values in accs.items():
        print(f"val acc per fold, {name}: {np.round(values, 4).tolist()}")


if __name__ == "__main__":
    main()
