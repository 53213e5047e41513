"""A 20-trial TPE study against a 3×3 grid over the same ranges (issue 6).

digits, MLP with one hidden layer, Adam, 20 epochs, 5-fold CV (mlcli's defaults), searching the
learning rate (log, 1e-4 to 1e-1) and the hidden width (log, 16 to 256):

* grid: ``mlcli train -m optim.lr=1e-4,10**-2.5,1e-1 model.hidden.0=16,64,256`` (the basic
  sweeper; the points are each range's ends and its log-middle);
* TPE: ``mlcli train -m hydra/sweeper=mlcli_optuna hydra.sweeper.n_trials=20 hydra.sweeper.seed=S``
  with ``optim.lr=tag(log,interval(1e-4,1e-1)) model.hidden.0=int(tag(log,interval(16,256)))``.

Both run as whole ``mlcli train`` processes into a fresh outputs dir each; the objective of every
run is its fold-mean validation accuracy at the final epoch (what the Optuna sweeper optimizes).
Prints each search's best point, its value and wall time.

    .venv/bin/python bench/optuna_vs_grid.py [--seed 0] [--trials 20] [--epochs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mlcli.sweeps import scan_runs
from mlcli.sweeps.study import objective

MLCLI = [sys.executable, "-m", "mlcli", "train", "-m", "progress=false"]
GRID_LR = ["0.0001", "0.0031622776601683794", "0.1"]
GRID_WIDTH = ["16", "64", "256"]


def run(args: list[str], cwd: Path) -> float:
    """Run ``mlcli train ARGS`` in ``cwd``; its wall time in seconds (fails loudly)."""
    start = time.perf_counter()
    done = subprocess.run([*MLCLI, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = done.stdout[-3000:] + done.stderr[-3000:]
        sys.exit(f"mlcli train {' '.join(args)} failed:\n{output}")
    return time.perf_counter() - start


def main() -> None:
    """Run both searches; print their best points."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    options = parser.parse_args()
    common = ["dataset=digits", "model=mlp", "optim=adam", f"epochs={options.epochs}"]

    with tempfile.TemporaryDirectory() as grid_dir, tempfile.TemporaryDirectory() as tpe_dir:
        grid_s = run(
            [*common, f"optim.lr={','.join(GRID_LR)}", f"model.hidden.0={','.join(GRID_WIDTH)}"],
            Path(grid_dir),
        )
        grid = []
        for record in scan_runs(Path(grid_dir) / "outputs"):
            config = yaml.safe_load((record.run_dir / "config.yaml").read_text())
            values = objective(record.run_dir).values
            value = values[0] if values else None
            grid.append((value, config["optim"]["lr"], config["model"]["hidden"][0]))
        tpe_s = run(
            [
                *common,
                "hydra/sweeper=mlcli_optuna",
                f"hydra.sweeper.n_trials={options.trials}",
                f"hydra.sweeper.seed={options.seed}",
                "optim.lr=tag(log,interval(1e-4,1e-1))",
                "model.hidden.0=int(tag(log,interval(16,256)))",
            ],
            Path(tpe_dir),
        )
        (path,) = (Path(tpe_dir) / "outputs").rglob("optimization_results.yaml")
        study = yaml.safe_load(path.read_text())

    grid.sort(key=lambda row: -(row[0] if row[0] is not None else -1.0))
    print(f"digits MLP, Adam, {options.epochs} epochs, 5-fold CV; objective: fold-mean val/acc")
    print(f"{'search':<28} {'runs':>5} {'best val/acc':>13} {'lr':>10} {'width':>6} {'wall s':>7}")
    best_value, best_lr, best_width = grid[0]
    print(f"{'3x3 grid (basic sweeper)':<28} {len(grid):>5} {best_value:>13.4f} {best_lr:>10.3g} "
          f"{best_width:>6} {grid_s:>7.1f}")  # fmt: skip
    params = study["best_params"]
    print(f"{f'TPE, seed {options.seed} (optuna)':<28} {sum(study['n_trials'].values()):>5} "
          f"{study['best_value']:>13.4f} {params['optim.lr']:>10.3g} "
          f"{params['model.hidden.0']:>6} {tpe_s:>7.1f}")  # fmt: skip
    print("grid points (val/acc, lr, width):")
    for value, lr, width in grid:
        print(f"  {value:.4f}  {lr:<10.3g} {width}")
    verdict = "at least as good as" if study["best_value"] >= best_value else "WORSE than"
    print(f"TPE's best is {verdict} the grid's best ({study['best_value'] - best_value:+.4f})")


if __name__ == "__main__":
    main()
