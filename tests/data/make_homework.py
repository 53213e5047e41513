"""Write ``homework.csv``: a file shaped like a course homework (id, feature_1..5, target).

150 rows, 3 classes that a linear model separates well but not perfectly. Seeded, so re-running
this script gives the same file: ``python tests/data/make_homework.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def main() -> None:
    rng = np.random.default_rng(2024)
    n, n_features = 150, 5
    X = rng.normal(size=(n, n_features))
    weights = rng.normal(size=(n_features, 3))
    y = np.argmax(X @ weights + 0.5 * rng.normal(size=(n, 3)), axis=1)
    header = ["id", *(f"feature_{i}" for i in range(1, n_features + 1)), "target"]
    lines = [",".join(header)]
    for i in range(n):
        lines.append(",".join([str(i + 1), *(f"{v:.4f}" for v in X[i]), str(y[i])]))
    (Path(__file__).parent / "homework.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
