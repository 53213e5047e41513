"""What `logger=[tensorboard]` (and `logger=[mlflow]`) costs a default run (target: <= 5%).

The default experiment (`mlcli train`: digits, MLP, Adam, 5 folds x 20 epochs) with and without
a logger, interleaved (plain, logged, plain, logged ...), several repeats; medians and the ratio.

* ``--mode process`` (default): each run a whole `mlcli train` process, so the logger's imports
  (tensorboard, protobuf; mlflow, SQLAlchemy) count; every run into a fresh outputs root (a run
  key already done would be skipped).
* ``--mode inprocess``: `runner.run` in one warm process (the imports paid once, before timing):
  the cost per run of writing the events themselves.

    .venv/bin/python bench/logger_overhead.py [--mode process|inprocess] [--repeats 5]
        [--logger tensorboard] [ARGS ...]   # ARGS: overrides for every run, e.g. epochs=5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_process(root: Path, overrides: list[str]) -> float:
    """Seconds of one whole `mlcli train` process writing into ``root``."""
    command = [sys.executable, "-m", "mlcli", "train", "progress=false",
               f"outputs_root={root}", *overrides]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stdout[-2000:]}")
    return elapsed


def run_inprocess(root: Path, overrides: list[str]) -> float:
    """Seconds of one `runner.run` call in this process, into ``root``."""
    from mlcli import runner
    from mlcli.config.compose import compose_job

    cfg = compose_job(["progress=false", f"outputs_root={root}", *overrides], None, "config")
    started = time.perf_counter()
    outcome = runner.run(cfg, root / "run")
    elapsed = time.perf_counter() - started
    if outcome.state != "COMPLETED":
        raise SystemExit(f"{overrides}: {outcome.state} {outcome.error}")
    return elapsed


def main() -> None:
    """Print the medians of each case and the logged/plain ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["process", "inprocess"], default="process")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--logger", default="tensorboard", help="e.g. tensorboard, mlflow")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = run_process if args.mode == "process" else run_inprocess
    cases = {"plain": [], f"logger=[{args.logger}]": [f"logger=[{args.logger}]"]}
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):  # the first round warms caches up, and is not counted
            for name, extra in cases.items():
                root = Path(tmp) / f"{name.split('=')[0]}{i}"
                elapsed = run(root, [*args.overrides, *extra])
                if i:
                    times[name].append(elapsed)
    plain, logged = (statistics.median(t) for t in times.values())
    print(f"mode {args.mode}, {args.repeats} interleaved repeats, overrides {args.overrides}")
    print("| case | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
              f"{max(values):.3f} |")  # fmt: skip
    verdict = "ok" if logged / plain <= 1.05 else "OVER 5%"
    print(
        f"\nlogged / plain = {logged / plain:.3f} ({(logged / plain - 1) * 100:+.1f}%, {verdict})"
    )


if __name__ == "__main__":
    main()
