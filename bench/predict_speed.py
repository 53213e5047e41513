"""``mlcli predict`` on 100,000 CSV rows with an MLP run dir, as a whole process.

Trains one small MLP run on a homework-shaped file (mlcli's test generator: 65 columns, a
repeated per-day header, 44 MB for 100,000 rows), then times ``mlcli predict RUN_DIR --data
rows.csv`` on 100,000 rows of the same shape (median of several runs), against a reference
process that does the same job by hand the usual way: import torch and pandas, read the CSV,
scale it, run one MLP forward and write the CSV. Prints both (wall and CPU seconds), their ratio,
the load average before and after, and the size of the run's ``models/`` folder (5 fold
models). ``mlcli predict`` serves an MLP run in numpy (:mod:`mlcli.inference`), reads the CSV
with pyarrow and imports neither torch nor pandas, so it beats the reference by their imports.

    .venv/bin/python bench/predict_speed.py [--rows 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from tests.homework import write_homework  # noqa: E402

MLCLI = str(Path(sys.executable).with_name("mlcli"))
REFERENCE = """
import sys, numpy as np, pandas as pd, torch
frame = pd.read_csv(sys.argv[1])
x = torch.from_numpy(frame.drop(columns=["id"]).to_numpy(np.float32))
x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
layers = [torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)]
model = torch.nn.Sequential(*layers)
with torch.no_grad():
    y = model(x)[:, 0].numpy()
pd.DataFrame({"id": frame["id"], "tested_positive": y}).to_csv(sys.argv[2], index=False)
"""


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its threads) of one whole
    process, which must succeed. On a machine other processes load, CPU time is what the
    command costs; wall time is what it costs when it has a core to itself."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "big").mkdir()
        train, _, _ = write_homework(folder, n_train=1000, n_test=10)
        _, rows, _ = write_homework(folder / "big", n_train=10, n_test=args.rows, seed=1)
        subprocess.run(
            [MLCLI, "train", "dataset=csv", f"dataset.path={train}", "dataset.drop=[id]",
             "dataset.target=tested_positive.2", "model=mlp", "epochs=5", "progress=false",
             "final=ensemble"],
            cwd=folder, check=True, capture_output=True,
        )  # fmt: skip
        (run_dir,) = [p.parent for p in (folder / "outputs").rglob("status.json")]
        size = sum(p.stat().st_size for p in (run_dir / "models").iterdir())
        predict = [MLCLI, "predict", str(run_dir), "--data", str(rows), "--out", "sub.csv"]
        reference = [sys.executable, "-c", REFERENCE, str(rows), "ref.csv"]
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both alike
            ours.append(timed(predict, folder))
            theirs.append(timed(reference, folder))
        n_lines = sum(1 for _ in (folder / "sub.csv").open()) - 1
        assert n_lines == args.rows, n_lines
    for name, times in (("mlcli predict", ours), ("reference", theirs)):
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        print(f"{name}: {args.rows:,} CSV rows: wall {wall:.2f} s, CPU {cpu:.2f} s (median of "
              f"{args.repeats}; walls {', '.join(f'{t[0]:.2f}' for t in times)})")  # fmt: skip
    ratio = statistics.median(t[1] for t in ours) / statistics.median(t[1] for t in theirs)
    print(
        f"CPU ratio mlcli/reference: {ratio:.2f}x; the run's models/ folder: {size / 1024:.0f} KiB"
    )
    after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {after}")


if __name__ == "__main__":
    main()
