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

    .venv/bin/python bench/multirun_overhead.py [--jobs 4] [--repeats 5] [--baseline DIR]

``--baseline DIR`` times another checkout (``PYTHONPATH=DIR``) in the same rounds, interleaved.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIVIAL = ["dataset=iris", "model=linear", "epochs=1", "cv=holdout", "progress=false"]
REFERENCE = "python -c 'import torch' (reference)"
ONE_JOB = "mlcli train, 1 trivial job"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its children) of one run of
    ``command`` (which must succeed) in a fresh directory."""
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return wall, cpu


def main() -> None:
    """Print the medians and ratios, interleaving the cases (and the trees)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4, help="N: sweeps of N and 2N jobs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alongside")
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
    trees = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    load_before = os.getloadavg()[0]
    times = {(t, c, k): [] for t in trees for c in cases for k in ("wall", "cpu")}
    for repeat in range(args.repeats + 1):
        for name, command in cases.items():
            order = list(trees.items()) if repeat % 2 == 0 else list(trees.items())[::-1]
            for tree, root in order:
                env = {**os.environ, "PYTHONPATH": str(root)}
                wall, cpu = timed(command, env)
                if repeat:
                    times[tree, name, "wall"].append(wall)
                    times[tree, name, "cpu"].append(cpu)
    load_after = os.getloadavg()[0]
    print(
        f"median of {args.repeats} interleaved rounds after a warm-up; load average "
        f"{load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores; "
        "CPU s: user + system of the process and its children"
    )
    print("| tree | case | median s | min s | median CPU s |")
    print("|---|---|---|---|---|")
    for tree in trees:
        for name in cases:
            wall, cpu = times[tree, name, "wall"], times[tree, name, "cpu"]
            print(
                f"| {tree} | {name} | {statistics.median(wall):.2f} | {min(wall):.2f} "
                f"| {statistics.median(cpu):.2f} |"
            )
    small, large = f"mlcli train -m, {n} trivial jobs", f"mlcli train -m, {2 * n} trivial jobs"
    for tree in trees:
        for kind, pick in (("median", statistics.median), ("min-to-min", min)):
            for clock in ("wall", "cpu"):
                fig = {c: pick(times[tree, c, clock]) for c in cases}
                ratio = fig[ONE_JOB] / fig[REFERENCE]
                per_job = (fig[large] - fig[small]) / n
                print(
                    f"{tree}, {clock} {kind}: trivial job / `import torch` {ratio:.2f} "
                    f"(target <= 2.0{' ok' if ratio <= 2.0 else ' MISSED'}); per extra job "
                    f"({n} vs {2 * n} jobs) {per_job:.3f} s "
                    f"(target <= 0.15{_verdict(per_job)})"
                )


def _verdict(per_job: float) -> str:
    """A per-job figure against its target; a negative one is load noise, not a result."""
    if per_job < 0:
        return "; negative: the load swamped it, measure again"
    return " ok" if per_job <= 0.15 else " MISSED"


if __name__ == "__main__":
    main()
