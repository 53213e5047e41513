"""Critical-point analysis: its cost next to a training epoch, and where digits MLPs end up.

1. Cost: Lanczos (k=5 largest and smallest Hessian eigenvalues) on a ~100k-parameter MLP
   (digits, hidden [512, 128]) versus one training epoch of the same model, both timed in this
   process (median of repeats), one torch thread.
2. Study: digits MLPs over seeds × hidden widths, trained by mlcli with `analysis=hessian`
   (exact Hessian); the verdict of every fold's final point, counted.

    .venv/bin/python bench/critical_points.py [--seeds 3] [--epochs 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from mlcli import runner
from mlcli.analysis import FlatModel, analyze, loss_function
from mlcli.config.compose import compose_job
from mlcli.data import digits
from mlcli.models import mlp


def cost(repeats: int) -> None:
    """Print the Lanczos analysis time against one training epoch of the same model."""
    torch.manual_seed(0)
    data = digits()
    x = torch.from_numpy(data.X).reshape(len(data.X), -1) / 16.0
    y = torch.from_numpy(data.y)
    model = mlp((64,), 10, hidden=(512, 128))
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> None:
        for index in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    epoch()  # warm-up (and move away from the initialization)
    epoch_times, analysis_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        epoch()
        epoch_times.append(time.perf_counter() - started)
        model.eval()
        flat = FlatModel(model, x, y, loss_function("classification"))
        started = time.perf_counter()
        found = analyze(flat.loss, flat.flat(), exact_max_params=0, k=5, lanczos_tol=1e-4)
        analysis_times.append(time.perf_counter() - started)
        model.train()
    e, a = statistics.median(epoch_times), statistics.median(analysis_times)
    print(f"model: MLP 64-512-128-10, {n_params:,} parameters; loss on all {len(x)} rows")
    print(f"one training epoch (batch 64): {e:.3f} s (median of {repeats})")
    print(f"Hessian analysis ({found.method}): {a:.3f} s (median of {repeats})")
    print(f"analysis / epoch = {a / e:.1f}")
    print(f"last point: grad norm {found.grad_norm:.3g}, eigenvalues [{found.min_eig:.3g}, "
          f"{found.max_eig:.3g}] -> {found.verdict}\n")  # fmt: skip


def study(seeds: int, epochs: int, widths: list[int]) -> None:
    """Train digits MLPs with analysis=hessian and count the verdicts of the final points."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in widths:
            for seed in range(seeds):
                cfg = compose_job(
                    [
                        f"model.hidden=[{width}]", f"seed={seed}", f"epochs={epochs}",
                        "cv=kfold", "cv.n_splits=3", "batch_size=256", "progress=false",
                        "analysis=hessian", "analysis.hessian.exact_max_params=3000",
                        "analysis.hessian.grad_tol=0.01",
                    ],
                    None,
                    "config",
                )  # fmt: skip
                run_dir = Path(tmp) / f"w{width}-s{seed}"
                runner.run(cfg, run_dir)
                for path in sorted((run_dir / "analysis").glob("fold*.json")):
                    for finding in json.loads(path.read_text())["findings"]:
                        rows.append({"width": width, **finding})
    print(f"digits MLP, {epochs} epochs of Adam (batch 256), 3 folds × {seeds} seeds per width;")
    print("verdict at each fold's final weights (grad_tol 0.01, exact Hessian):\n")
    print("| hidden width | parameters | local minimum | saddle point | flat | not critical | "
          "median grad norm | median min_ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for width in widths:
        found = [r for r in rows if r["width"] == width]
        counts = Counter(r["verdict"] for r in found)
        print(
            f"| {width} | {found[0]['n_params']:,} | {counts['local minimum']} | "
            f"{counts['saddle point']} | {counts['flat']} | {counts['not critical']} | "
            f"{statistics.median(r['grad_norm'] for r in found):.3g} | "
            f"{statistics.median(r['min_ratio'] for r in found):.3f} |"
        )


def main() -> None:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cost(args.repeats)
    study(args.seeds, args.epochs, widths=[4, 8, 16, 32])


if __name__ == "__main__":
    main()
