"""What `logger=[tensorboard]` (and `logger=[mlflow]`) costs a default run (target: <= 5%).

The default experiment (`mlcli train`: digits, MLP, Adam, 5 folds x 20 epochs) with and without
a logger, interleaved (plain, logged, plain, logged ...), several repeats; medians and the ratio.

* ``--mode process`` (default): each run a whole `mlcli train` process, so the logger's imports
  (tensorboard, protobuf; mlflow, SQLAlchemy) count; one outputs root per case, a new seed per
  round (a run key already done would be skipped); the first round, not counted, makes the
  tracking store (MLflow's SQLite file: its tables take seconds to create, once).
* ``--mode inprocess``: `runner.run` in one warm process (the imports paid once, before timing):
  the cost per run of writing the events themselves.

    .venv/bin/python bench/logger_overhead.py [--mode process|inprocess] [--repeats 5]
        [--logger tensorboard] [ARGS ...]   # ARGS: overrides for every run, e.g. epochs=5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(root: Path, overrides: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, its child processes included) of one whole
    `mlcli train` process writing into ``root``."""
    command = [sys.executable, "-m", "mlcli", "train", "progress=false",
               f"outputs_root={root}", *overrides]  # fmt: skip
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stdout[-2000:]}")
    return elapsed, _children_cpu() - cpu


def run_inprocess(root: Path, overrides: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) of one `runner.run` call."""
    from mlcli import runner
    from mlcli.config.compose import compose_job

    cfg = compose_job(["progress=false", f"outputs_root={root}", *overrides], None, "config")
    started, cpu = time.perf_counter(), time.process_time()
    outcome = runner.run(cfg, root / f"run{len(list(root.glob('run*')))}")  # a new run dir
    elapsed = time.perf_counter() - started
    if outcome.state != "COMPLETED":
        raise SystemExit(f"{overrides}: {outcome.state} {outcome.error}")
    return elapsed, time.process_time() - cpu


def main() -> None:
    """Print the medians of each case and the logged/plain ratios (wall time and CPU time: on
    a loaded machine the wall time of a whole process waits on others, its CPU time does not)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["process", "inprocess"], default="process")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--logger", default="tensorboard", help="e.g. tensorboard, mlflow")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = run_process if args.mode == "process" else run_inprocess
    cases = {"plain": [], f"logger=[{args.logger}]": [f"logger=[{args.logger}]"]}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):  # the first round warms caches up, and is not counted
            for name, extra in cases.items():
                # One outputs root per case, as a user has: the tracking store (MLflow's SQLite
                # file, made in the first, uncounted round) is there for the counted runs; a
                # new seed each round, so that no run is skipped as done.
                root = Path(tmp) / name.split("=")[0]
                measured = run(root, [*args.overrides, *extra, f"seed={1000 + i}"])
                if i:
                    times[name].append(measured)
    print(f"mode {args.mode}, {args.repeats} interleaved repeats, overrides {args.overrides}")
    print("| case | median wall s | min wall s | max wall s | median CPU s |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, values in times.items():
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        medians[name] = (statistics.median(wall), statistics.median(cpu))
        print(f"| {name} | {medians[name][0]:.3f} | {min(wall):.3f} | {max(wall):.3f} | "
              f"{medians[name][1]:.3f} |")  # fmt: skip
    (plain_wall, plain_cpu), (wall, cpu) = medians.values()
    for what, ratio in (("wall", wall / plain_wall), ("CPU", cpu / plain_cpu)):
        verdict = "ok" if ratio <= 1.05 else "OVER 5%"
        print(f"logged / plain, {what}: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%, {verdict})")


if __name__ == "__main__":
    main()
