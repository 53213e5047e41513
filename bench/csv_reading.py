"""How long ``dataset=csv`` takes to read and check a file, against pandas' plain ``read_csv``.

mlcli reads with Python's ``csv`` module (to know every row's line) and checks each column
(missing cells, numbers, task); ``pandas.read_csv`` only parses. Both run here on the same
generated file, shaped like a homework file (id, 20 features, a 3-class target).

    .venv/bin/python bench/csv_reading.py [ROWS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlcli.data import csv


def cpu_seconds(call, repeats: int = 3) -> float:
    """Best CPU time of ``repeats`` calls (process time: robust on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def main(rows: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 20)).round(4))
    frame.columns = [f"feature_{i}" for i in range(1, 21)]
    frame.insert(0, "id", np.arange(1, rows + 1))
    frame["target"] = rng.integers(0, 3, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "homework.csv"
        frame.to_csv(path, index=False)
        ours = cpu_seconds(lambda: csv(str(path), "target", drop=["id"]))
        reference = cpu_seconds(lambda: pd.read_csv(path))
    print(f"{rows} rows x 22 columns")
    print(f"mlcli dataset=csv (read + check): {ours:.3f} s CPU ({ours / rows * 1e6:.1f} µs/row)")
    print(f"pandas.read_csv (parse only):     {reference:.3f} s CPU")
    print(f"ratio: {ours / reference:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
