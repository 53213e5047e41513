"""Start-up of ``mlcli train`` and the per-job overhead of a basic-launcher multirun.

Whole processes, timed with ``time.perf_counter`` (one warm-up round, then ``--repeats`` rounds,
the cases interleaved within each round so that load from other processes hits them alike):

* ``python -c "import torch"``: the floor every training process pays (reference, same run);
* one trivial job (iris, linear model, 1 epoch, hold-out): ``mlcli train`` start-up + a job;
  target: at most 2.0 × the reference;
* ``-m seed=...`` with N and with 2N of the same trivial jobs: (time(2N) - time(N)) / N is the
  cost of one more job inside a sweep (Hydra's job set-up, run dir, results, summary); target:
  at most 0.15 s.

Every command runs in a fresh directory: a job that found its run key COMPLETED would be skipped
(mlcli's resume) and time a skip, not a job. Medians and min-to-min figures (fastest run over
fastest run) are printed with the load average before and after.

    .venv/bin/python bench/multirun_overhead.py [--jobs 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TRIVIAL = ["dataset=iris", "model=linear", "epochs=1", "cv=holdout", "progress=false"]
REFERENCE = "python -c 'import torch' (reference)"
ONE_JOB = "mlcli train, 1 trivial job"


def timed(command: list[str]) -> float:
    """Wall seconds of one run of ``command`` (which must succeed) in a fresh directory."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    """Print the medians and ratios, interleaving the cases."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4, help="N: sweeps of N and 2N jobs")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.jobs
    mlcli = [sys.executable, "-m", "mlcli", "train"]

    def sweep(jobs: int) -> list[str]:
        return [*mlcli, "-m", *TRIVIAL, "seed=" + ",".join(str(i) for i in range(jobs))]

    cases = {
        REFERENCE: [sys.executable, "-c", "import torch"],
        ONE_JOB: [*mlcli, *TRIVIAL],
        f"mlcli train -m, {n} trivial jobs": sweep(n),
        f"mlcli train -m, {2 * n} trivial jobs": sweep(2 * n),
    }
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(args.repeats + 1):
        for name, command in cases.items():
            elapsed = timed(command)
            if repeat:
                times[name].append(elapsed)
    load_after = os.getloadavg()[0]
    med = {name: statistics.median(t) for name, t in times.items()}
    low = {name: min(t) for name, t in times.items()}
    print(
        f"| case | median s | min s |  (median of {args.repeats} interleaved rounds after a "
        f"warm-up; load average {load_before:.1f} before, {load_after:.1f} after, on "
        f"{os.cpu_count()} cores)"
    )
    print("|---|---|---|")
    for name in cases:
        print(f"| {name} | {med[name]:.2f} | {low[name]:.2f} |")
    ratio, ratio_low = med[ONE_JOB] / med[REFERENCE], low[ONE_JOB] / low[REFERENCE]
    small, large = f"mlcli train -m, {n} trivial jobs", f"mlcli train -m, {2 * n} trivial jobs"
    per_job, per_job_low = (med[large] - med[small]) / n, (low[large] - low[small]) / n
    print(
        f"\ntrivial job / `import torch`: {ratio:.2f} (min-to-min {ratio_low:.2f}); target <= 2.0"
        + (" ok" if ratio <= 2.0 else " MISSED")
    )
    print(
        f"per extra job in a basic-launcher multirun ({n} vs {2 * n} jobs): {per_job:.3f} s "
        f"(min-to-min {per_job_low:.3f} s); target <= 0.15 s"
        + (" ok" if per_job <= 0.15 else " MISSED")
    )


if __name__ == "__main__":
    main()
