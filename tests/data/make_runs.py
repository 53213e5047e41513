"""Regenerate ``tests/data/runs`` (real runs) and the golden reports in ``tests/data/expected``.

    .venv/bin/python tests/data/make_runs.py

The runs are made by mlcli itself, seeded, on the wine dataset (3 classes, 178 rows), 2-fold
cross-validation, 6 epochs:

* ``runs/sweep/``: a grid ``optim=sgd,adam × optim.lr=0.01,0.1 × seed=0,1`` (8 COMPLETED runs,
  4 configurations with 2 seeds each);
* ``runs/diverged/``: SGD with ``optim.lr=1000``: the training loss overflows (state DIVERGED);
* ``runs/failed/``: SGD with ``optim.nesterov=true`` and no momentum, which torch refuses when the
  optimizer is built (state FAILED).

The golden files are ``mlcli report runs`` run from this directory (so the run dirs in them are
relative): ``report.csv``, ``report.json`` (final epoch) and ``report_best.csv`` (``--at best``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
EXPECTED = HERE / "expected"
COMMON = [
    "dataset=wine",
    "epochs=6",
    "cv.n_splits=2",
    "progress=false",
    "hydra.output_subdir=null",
]
GOLDEN = {
    "report.csv": ["--format", "csv"],
    "report.json": ["--format", "json"],
    "report_best.csv": ["--format", "csv", "--at", "best"],
}


def mlcli(*args: str, expect: int = 0) -> None:
    """Run the mlcli command (a real process, as a user would)."""
    command = [sys.executable, "-m", "mlcli", *args]
    done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, check=False)
    if done.returncode != expect:
        sys.exit(f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")


def main() -> None:
    """Remove and remake every run dir, then the golden reports."""
    shutil.rmtree(RUNS, ignore_errors=True)
    mlcli(
        "train", "-m", "optim=sgd,adam", "optim.lr=0.01,0.1", "seed=0,1", *COMMON,
        f"hydra.sweep.dir={RUNS / 'sweep'}",
    )  # fmt: skip
    mlcli("train", "optim=sgd", "optim.lr=1000", *COMMON, f"hydra.run.dir={RUNS / 'diverged'}",
          expect=1)  # fmt: skip
    mlcli("train", "optim=sgd", "optim.nesterov=true", *COMMON,
          f"hydra.run.dir={RUNS / 'failed'}", expect=1)  # fmt: skip
    for log in RUNS.rglob("*.log"):
        log.unlink()  # Hydra's job logs and error.log hold absolute paths: not needed
    EXPECTED.mkdir(exist_ok=True)
    for name, args in GOLDEN.items():
        mlcli("report", "runs", *args, "--out", str(EXPECTED / name))
    print(f"wrote {RUNS} and {EXPECTED}")


if __name__ == "__main__":
    main()
