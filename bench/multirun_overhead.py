"""Start-up of ``mlcli train`` and the per-job overhead of a basic-launcher multirun.

Whole processes, timed with ``time.perf_counter`` (one warm-up, then the median of ``--repeats``):

* ``python -c "import torch"``: the floor every training process pays (reference, same run);
* one trivial job (iris, linear model, 1 epoch, hold-out): ``mlcli train`` start-up + a job;
* ``-m seed=0,...,N-1`` with the same trivial job: (time(N) - time(1)) / (N - 1) is the cost of
  one more job inside a sweep (Hydra's job set-up, run dir, results, summary).

    .venv/bin/python bench/multirun_overhead.py [--jobs 9] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIVIAL = ["dataset=iris", "model=linear", "epochs=1", "cv=holdout", "progress=false"]


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of one run of ``command`` (which must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    """Print the medians, interleaving the cases."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    seeds = ",".join(str(i) for i in range(args.jobs))
    mlcli = [sys.executable, "-m", "mlcli", "train"]
    cases = {
        "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
        "mlcli train, 1 trivial job": [*mlcli, *TRIVIAL],
        f"mlcli train -m, {args.jobs} trivial jobs": [*mlcli, "-m", *TRIVIAL, f"seed={seeds}"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats + 1):
            for name, command in cases.items():
                elapsed = timed(command, Path(tmp))
                if repeat:
                    times[name].append(elapsed)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"| case | median s |  (median of {args.repeats}, after a warm-up)")
    print("|---|---|")
    for name, value in med.items():
        print(f"| {name} | {value:.2f} |")
    one, many = med["mlcli train, 1 trivial job"], med[f"mlcli train -m, {args.jobs} trivial jobs"]
    per_job = (many - one) / (args.jobs - 1)
    print(f"\nper-job overhead in a basic-launcher multirun: {per_job:.3f} s")
    print(f"mlcli train start-up beyond `import torch`: {one - med[next(iter(med))]:.2f} s")


if __name__ == "__main__":
    main()
