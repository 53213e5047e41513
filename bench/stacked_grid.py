"""A 4-learning-rate × 5-fold grid as whole ``mlcli train -m`` processes: the stacked launcher
against Hydra's basic launcher.

The task (issue 9): digits, MLP 64-128-10, batch 64, 20 epochs, 5-fold CV, Adam, one torch
thread, ``optim.lr=0.001,0.003,0.01,0.03``. Three commands, each a fresh process timed with
``time.perf_counter`` (``--rerun``, so every run trains):

* ``basic, sequential folds``: the basic launcher, ``stack_folds=off`` (one fold after another,
  the issue's "sequentially");
* ``basic, stacked folds``: the basic launcher with the default ``stack_folds=auto`` (each job's
  5 folds as one stacked model);
* ``stacked launcher``: ``hydra/launcher=stacked`` (the 4 jobs × 5 folds as one stacked model).

The commands run interleaved, one warm-up round then ``--repeats`` rounds; the medians and their
ratios are printed, with each job's final validation accuracy (mean over folds) per command.

    .venv/bin/python bench/stacked_grid.py [--repeats 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

LRS = "0.001,0.003,0.01,0.03"


def final_val_acc(root: Path) -> dict[str, float]:
    """Per run key: the final epoch's val/acc, mean over folds (the key's lr in front)."""
    out = {}
    for status_path in sorted(root.rglob("status.json")):
        status = json.loads(status_path.read_text())
        frame = pd.read_parquet(status_path.parent / "results.parquet")
        val = frame[(frame["split"] == "val") & (frame["metric"] == "acc")]
        final = val[val["epoch"] == val["epoch"].max()]
        lr = next(o for o in status["overrides"] if o.startswith("optim.lr="))
        out[lr] = float(final["value"].mean())
    return out


def training_seconds(root: Path) -> float:
    """Seconds spent training inside the process: every job's run (``duration_s``) plus, for
    the stacked launcher, the stacked model's training (``stacked_grid.train_s``, once)."""
    total, stacked = 0.0, 0.0
    for status_path in root.rglob("status.json"):
        status = json.loads(status_path.read_text())
        total += float(status.get("duration_s") or 0.0)
        stacked = max(stacked, float((status.get("stacked_grid") or {}).get("train_s", 0.0)))
    return total + stacked


def main() -> None:
    """Time the three commands, interleaved; print medians, ratios and per-job accuracies."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    common = [
        "-m", f"optim.lr={LRS}", "dataset=digits", "model=mlp", "optim=adam", "batch_size=64",
        f"epochs={args.epochs}", "cv=kfold", "cv.n_splits=5", "threads=1", "device=cpu",
        "progress=false", "--rerun",
    ]  # fmt: skip
    commands = {
        "basic, sequential folds": ["stack_folds=off"],
        "basic, stacked folds": ["stack_folds=auto"],
        "stacked launcher": ["stack_folds=auto", "hydra/launcher=stacked"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    training: dict[str, list[float]] = {name: [] for name in commands}
    accs: dict[str, dict[str, float]] = {}
    load: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats + 1):
            for n, (name, extra) in enumerate(commands.items()):
                root = Path(tmp) / f"r{repeat}-{n}"
                command = [sys.executable, "-m", "mlcli", "train", *common, *extra]
                command.append(f"outputs_root={root}")
                load.append(os.getloadavg()[0])
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                elapsed = time.perf_counter() - started
                if done.returncode != 0:
                    raise SystemExit(f"{name}: exit {done.returncode}\n{done.stdout[-3000:]}")
                if repeat:
                    times[name].append(elapsed)
                    training[name].append(training_seconds(root))
                accs[name] = final_val_acc(root)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"digits MLP 64-128-10, batch 64, {args.epochs} epochs, 5 folds, Adam, lr {LRS}, "
        f"threads=1, whole `mlcli train -m` processes, median of {args.repeats} interleaved "
        f"repeats after a warm-up; load average {statistics.median(load):.1f} "
        f"on {os.cpu_count()} cores"
    )
    print(
        "| command | median s | all s | / basic sequential | / basic stacked folds "
        "| training s (in runs) | training / basic sequential |"
    )
    print("|---|---|---|---|---|---|---|")
    train_med = {name: statistics.median(t) for name, t in training.items()}
    for name, value in med.items():
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        print(
            f"| {name} | {value:.2f} | {runs} | {value / med['basic, sequential folds']:.2f} "
            f"| {value / med['basic, stacked folds']:.2f} | {train_med[name]:.2f} "
            f"| {train_med[name] / train_med['basic, sequential folds']:.2f} |"
        )
    print("\nfinal val acc per job (mean over 5 folds):")
    for name, values in accs.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())))


if __name__ == "__main__":
    main()
