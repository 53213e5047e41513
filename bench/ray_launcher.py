"""A sweep through ``hydra/launcher=ray`` (a local Ray started and stopped by mlcli) against the
same sweep through the basic launcher, as whole ``mlcli train -m`` processes in the same run.

Each round runs both (interleaved, each in a fresh directory, so nothing is skipped) and
records the wall time; the Ray run also reports how long ``ray.init`` took (from its log lines)
and how many Ray processes were left 10 s after it ended (must be 0). Medians, the ratio and the
load average before and after are printed.

    .venv/bin/python bench/ray_launcher.py [--repeats 3] [--jobs 4]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

import psutil

FAST = ["dataset=wine", "model=linear", "epochs=2", "cv.n_splits=2", "progress=false"]


def ray_processes(before: set[int]) -> int:
    """Ray's processes (servers, agents, workers) that were not there before."""
    count = 0
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        name = process.info["name"] or ""
        if process.pid not in before and (
            name.startswith("ray::") or name in ("raylet", "gcs_server") or "/ray/" in command
        ):
            count += 1
    return count


def run(args: list[str]) -> tuple[float, str]:
    """Wall seconds and output of one ``mlcli train`` (which must succeed), in a fresh dir."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mlcli", "train", *args], cwd=tmp, capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"mlcli train {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout + done.stderr


def init_seconds(output: str) -> float:
    """From mlcli's 'starting a local Ray instance' to Ray's 'Started a local Ray instance'."""
    stamps = []
    for pattern in (r"\[([\d-]+ [\d:,]+)\]\[HYDRA\] starting a local Ray", r"([\d-]+ [\d:,]+)\s+"
                    r"INFO worker\.py:\d+ -- Started a local Ray"):  # fmt: skip
        match = re.search(pattern, output)
        if match is None:
            return float("nan")
        stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return (stamps[1] - stamps[0]).total_seconds()


def main() -> None:
    """Interleave the two launchers; print medians, the ratio and the load."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=4, help="seeds of the sweep")
    options = parser.parse_args()
    sweep = ["-m", "seed=" + ",".join(str(n) for n in range(options.jobs)), *FAST]
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores")
    basic, ray, inits, left = [], [], [], []
    for _ in range(options.repeats):
        basic.append(run(sweep)[0])
        before = {p.pid for p in psutil.process_iter()}
        wall, output = run([*sweep, "hydra/launcher=ray"])
        ray.append(wall)
        inits.append(init_seconds(output))
        time.sleep(10)
        left.append(ray_processes(before))
    b, r = statistics.median(basic), statistics.median(ray)
    print(f"{options.jobs}-job sweep, basic launcher: median {b:.1f} s ({basic})")
    print(f"{options.jobs}-job sweep, hydra/launcher=ray: median {r:.1f} s ({ray})")
    print(f"ratio ray / basic: {r / b:.2f}; ray.init: median {statistics.median(inits):.1f} s")
    print(f"Ray processes left 10 s after each Ray sweep: {left}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
