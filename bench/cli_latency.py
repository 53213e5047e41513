"""Whole-process latency of the commands a user waits on: help and rejected input.

Runs each command as a fresh process (warm-up once, then the median of N runs) and prints the
medians next to the targets (`mlcli --help` < 0.3 s, a rejected config < 3 s). The reference in the
same run is a bare `python -c pass`, so the interpreter's own start-up is visible.

    .venv/bin/python bench/cli_latency.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLCLI = [sys.executable, "-m", "mlcli"]
CASES = {
    "python -c pass (reference)": ([sys.executable, "-c", "pass"], 0, None),
    "mlcli --help": ([*MLCLI, "--help"], 0, 0.3),
    "mlcli train --help": ([*MLCLI, "train", "--help"], 0, 0.5),
    "mlcli train model=cnnn": ([*MLCLI, "train", "model=cnnn"], 2, 3.0),
    "mlcli train optim.lr=abc": ([*MLCLI, "train", "optim.lr=abc"], 2, 3.0),
    "mlcli train optim.lrr=1": ([*MLCLI, "train", "optim.lrr=1"], 2, 3.0),
    "mlcli train -m optim.lr=0.1,abc": ([*MLCLI, "train", "-m", "optim.lr=0.1,abc"], 2, 3.0),
}


def measure(command: list[str], expected_code: int, repeats: int, cwd: Path) -> list[float]:
    """Wall seconds of each run of ``command`` (after one warm-up run)."""
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != expected_code:
            raise SystemExit(f"{command}: exit {done.returncode}, expected {expected_code}")
        if i:
            times.append(elapsed)
    return times


def main() -> None:
    """Print a markdown table of median latencies."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"| command | median s | min s | target s |  (python {sys.version.split()[0]})")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (command, code, target) in CASES.items():
            times = measure(command, code, args.repeats, Path(tmp))
            median = statistics.median(times)
            verdict = "" if target is None else (" ok" if median < target else " SLOW")
            print(f"| `{name}` | {median:.3f} | {min(times):.3f} | {target or '-'}{verdict} |")
        leftovers = list(Path(tmp).iterdir())
    print(f"\nrun dirs written by rejected commands: {len(leftovers)}")


if __name__ == "__main__":
    main()
