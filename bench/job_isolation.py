"""What running each job in a forked child process costs, against calling it in-process.

    .venv/bin/python bench/job_isolation.py [--repeats 20]

Both sides run the same tiny job (wine, linear model, 2 folds, 2 epochs) after one warm-up run,
in the same process, with torch pinned to one thread; reported: median wall time per job.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlcli import runner
from mlcli.config.compose import compose_job
from mlcli.sweeps import procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    repeats = parser.parse_args().repeats
    cfg = compose_job(
        ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"],
        None,
        "config",
    )
    runner.preload()
    with tempfile.TemporaryDirectory() as tmp:
        runner.run(cfg, Path(tmp) / "warm-up")
        timings: dict[str, list[float]] = {"in-process": [], "forked child": []}
        for i in range(repeats):
            for name, call in (
                ("in-process", lambda d: runner.run(cfg, d).state),
                ("forked child", lambda d: procs.call_in_child(lambda: runner.run(cfg, d).state)),
            ):
                started = time.perf_counter()
                call(Path(tmp) / f"{name}-{i}")
                timings[name].append(time.perf_counter() - started)
    base = statistics.median(timings["in-process"])
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:>14}: {median * 1e3:7.1f} ms/job  (+{(median - base) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
